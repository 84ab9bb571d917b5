"""Build a parallel corpus of desktop user-interface messages from Debian packages' gettext
catalogues (``.mo``): English ``msgid`` -> translated ``msgstr``.

    python scripts/extract_mo_corpus.py --lang de --out data/ui-en-de
    python scripts/extract_mo_corpus.py --lang ru --out data/ui-en-ru --packages vlc-l10n gimp

Downloads the packages with ``apt-get download`` (nothing is installed; Debian's archive must be
reachable and ``apt-get update`` run), unpacks them with ``dpkg-deb -x`` into a temporary folder
and reads every ``LANG/LC_MESSAGES/*.mo`` there. Kept pairs: translated (non-empty, not
fuzzy: compiled catalogues hold no fuzzy entries), not identical to the English, context
(``msgctxt``) dropped, the singular of plural entries, keyboard accelerators (``_File``,
``&File``) removed, whitespace collapsed, at least two characters of letters, deduplicated
on the English side (the first translation met wins). The splits are by application, so
that test messages come from applications the training never saw: ``--test-packages`` and
``--valid-packages`` (a mail and calendar back end, a package manager, a document viewer and a
file manager for test; a partition editor, an archive manager, an image viewer, a video
player, a chess game and a backup tool for validation), the rest train. Catalogues of time
zone names (lists of cities, not messages) are left out.

Writes ``OUT/{train,valid,test}.{en,LANG}`` and ``OUT/SOURCES.tsv`` (package, version,
catalogue, pairs, split). The messages keep their packages' licences (GPL, LGPL, MPL and
others, see each package's ``/usr/share/doc/PACKAGE/copyright``); docs/results.md names them.
"""

from __future__ import annotations

import argparse
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

#: Applications with large catalogues, from several desktops and domains (media, finance,
#: graphics, mail, games, system tools); LibreOffice is left out on purpose.
DEFAULT_PACKAGES = (
    "vlc-l10n", "gimp-data", "inkscape", "gnucash-common", "evolution-common",
    "evolution-data-server-common", "gnumeric-common", "gramps", "claws-mail-i18n",
    "pidgin-data", "hexchat-common", "filezilla-common", "audacity-data", "shotwell-common",
    "geany-common", "gnome-control-center-data", "nautilus-data", "rhythmbox-data",
    "gedit-common", "totem-common", "transmission-common", "xfce4-settings", "thunar-data",
    "gparted-common", "brasero-common", "synaptic", "gnome-games-app", "aisleriot",
    "gnome-chess", "network-manager-gnome", "gnome-software-common", "file-roller",
    "eog", "evince-common", "cheese-common", "deja-dup", "gthumb-data", "pitivi",
    "gcompris-qt-data", "lyx-common", "scribus-data", "kmymoney", "digikam-data",
)
TEST_PACKAGES = ("evolution-data-server-common", "synaptic", "evince-common", "nautilus-data")
VALID_PACKAGES = ("gparted-common", "file-roller", "eog", "totem-common", "gnome-chess",
                  "deja-dup")


def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled catalogue (header, context and plurals handled)."""
    data = path.read_bytes()
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        return []
    _, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
    pairs = []
    for i in range(count):
        id_len, id_at = struct.unpack(order + "2I", data[ids_at + 8 * i:ids_at + 8 * i + 8])
        str_len, str_at = struct.unpack(order + "2I", data[strs_at + 8 * i:strs_at + 8 * i + 8])
        msgid = data[id_at:id_at + id_len].decode("utf-8", "replace")
        msgstr = data[str_at:str_at + str_len].decode("utf-8", "replace")
        if not msgid:
            continue  # the header
        msgid = msgid.split("\x04", 1)[-1].split("\x00")[0]
        pairs.append((msgid, msgstr.split("\x00")[0]))
    return pairs


def clean(text: str) -> str:
    """Accelerators removed, escaped and real line breaks made spaces, spaces collapsed."""
    text = re.sub(r"(?<![\w_])[_&~](?=\w)", "", text).replace("\\n", " ")
    return re.sub(r"\s+", " ", text).strip()


def download(packages: list[str], folder: Path) -> list[tuple[str, str, Path]]:
    """Download and unpack each package that exists; (name, version, unpacked root)."""
    unpacked = []
    for name in packages:
        got = subprocess.run(["apt-get", "download", name], cwd=folder, capture_output=True,
                             text=True)
        debs = sorted(folder.glob(f"{name}_*.deb"))
        if got.returncode != 0 or not debs:
            print(f"skipped {name}: {got.stderr.strip().splitlines()[-1:] or 'not found'}",
                  file=sys.stderr)
            continue
        root = folder / name
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        version = debs[0].stem.split("_")[1]
        unpacked.append((name, version, root))
    return unpacked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", required=True, help="target language of the catalogues")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--test-packages", nargs="+", default=list(TEST_PACKAGES))
    parser.add_argument("--valid-packages", nargs="+", default=list(VALID_PACKAGES))
    args = parser.parse_args()
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    sources, seen = [], set()
    with tempfile.TemporaryDirectory(prefix="mo-corpus-") as tmp:
        wanted = list(dict.fromkeys([*args.packages, *args.test_packages, *args.valid_packages]))
        for name, version, root in download(wanted, Path(tmp)):
            split = "test" if name in args.test_packages else \
                "valid" if name in args.valid_packages else "train"
            for mo in sorted(root.glob(f"**/locale/{args.lang}/LC_MESSAGES/*.mo")):
                if "timezones" in mo.stem:
                    continue
                kept = 0
                for english, translated in read_mo(mo):
                    english, translated = clean(english), clean(translated)
                    if not translated or english == translated or english in seen \
                            or sum(c.isalpha() for c in english) < 2:
                        continue
                    seen.add(english)
                    rows[split].append((english, translated))
                    kept += 1
                sources.append((name, version, mo.name, kept, split))
    args.out.mkdir(parents=True, exist_ok=True)
    for split, pairs in rows.items():
        for side, index in (("en", 0), (args.lang, 1)):
            text = "".join(pair[index] + "\n" for pair in pairs)
            (args.out / f"{split}.{side}").write_text(text, encoding="utf-8")
    with open(args.out / "SOURCES.tsv", "w", encoding="utf-8") as handle:
        handle.write("package\tversion\tcatalogue\tpairs\tsplit\n")
        for row in sources:
            handle.write("\t".join(map(str, row)) + "\n")
    print(f"{len(sources)} catalogues from {len({s[0] for s in sources})} packages: "
          + ", ".join(f"{split} {len(pairs):,}" for split, pairs in rows.items()) + " pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
