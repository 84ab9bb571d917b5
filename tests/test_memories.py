"""Translation memories as corpora: TMX, XLIFF 1.2 and 2.0, PO (files written here)."""

import logging
import subprocess
import sys

import pytest

from nmt.config import DataConfig
from nmt.data.memories import Tally, language_matches, read_memory
from nmt.data.sources import load_splits
from nmt.errors import DataError

TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4">
  <header srclang="en-US" datatype="plaintext" segtype="sentence" adminlang="en"
          creationtool="test" creationtoolversion="1" o-tmf="test"/>
  <body>
    <tu>
      <tuv xml:lang="en-US"><seg>Click <bpt i="1">&lt;b&gt;</bpt>Save<ept i="1">&lt;/b&gt;</ept>
        now.</seg></tuv>
      <tuv xml:lang="fr-FR"><seg>Cliquez sur Enregistrer.</seg></tuv>
      <tuv
        xml:lang="de-DE"><seg>Klicken Sie auf <hi type="b">Speichern</hi><ph>{1}</ph>.</seg></tuv>
    </tu>
    <tu>
      <tuv xml:lang="en-US"><seg>Only English here.</seg></tuv>
    </tu>
    <tu>
      <tuv lang="EN"><seg>Open the file…</seg></tuv>
      <tuv lang="de"><seg>Datei öffnen…</seg></tuv>
    </tu>
  </body>
</tmx>
"""

XLIFF12 = """<?xml version="1.0" encoding="UTF-8"?>
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">
  <file original="ui.properties" source-language="en" target-language="de-DE" datatype="plaintext">
    <body>
      <group id="g1">
        <trans-unit id="1"><source>Print <g id="1">all</g> pages<x id="2"/></source>
          <target
            state="translated">Alle <g id="1">Seiten</g> drucken<x id="2"/></target></trans-unit>
      </group>
      <trans-unit id="2"><source>Not yet translated</source></trans-unit>
      <trans-unit id="3"><source>Close</source><target>Schließen</target></trans-unit>
    </body>
  </file>
</xliff>
"""

XLIFF20 = """<?xml version="1.0" encoding="UTF-8"?>
<xliff xmlns="urn:oasis:names:tc:xliff:document:2.0" version="2.0" srcLang="de" trgLang="en">
  <file id="f1">
    <unit id="u1">
      <segment><source>Hallo <pc id="1">Welt</pc>.</source>
        <target>Hello <pc id="1">world</pc>.</target></segment>
      <ignorable><source> </source></ignorable>
      <segment><source>Wie geht es<ph id="2"/>?</source>
        <target>How are you<ph id="2"/>?</target></segment>
    </unit>
    <unit id="u2">
      <segment><source>Nur Quelle</source></segment>
    </unit>
  </file>
</xliff>
"""

PO = r'''# German translation of the test catalogue.
msgid ""
msgstr ""
"Language: de_DE\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

#: src/main.c:10
msgid "Save the document"
msgstr "Dokument speichern"

#, fuzzy
msgid "Delete"
msgstr "Löschen?"

msgid "Untranslated entry"
msgstr ""

msgid "%d file"
msgid_plural "%d files"
msgstr[0] "%d Datei"
msgstr[1] "%d Dateien"

msgid "A long line that "
"continues here"
msgstr "Eine lange Zeile, die "
"hier weitergeht"

#~ msgid "Old"
#~ msgstr "Alt"
'''


def read(kind, text, tmp_path, src="en", tgt="de", name=None):
    path = tmp_path / (name or f"corpus.{kind}")
    path.write_text(text, encoding="utf-8")
    return list(read_memory(kind, str(path), src, tgt))


def test_language_codes_match_by_primary_subtag():
    assert language_matches("de-DE", "de") and language_matches("de_DE", "DE")
    assert language_matches("de", "de-AT") and not language_matches("de-AT", "de-DE")
    assert not language_matches("dsb", "de") and not language_matches(None, "de")
    assert language_matches("zh-Hans-CN", "zh-CN") and language_matches("sr-Latn", "sr-RS")
    assert not language_matches("zh-Hant-TW", "zh-CN")


def test_tmx_units_pick_their_languages_and_strip_inline_codes(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nmt.data.memories"):
        rows = read("tmx", TMX, tmp_path)
    assert rows == [{"src": "Click Save now.", "tgt": "Klicken Sie auf Speichern."},
                    {"src": "Open the file…", "tgt": "Datei öffnen…"}]
    line = caplog.records[-1].getMessage()
    assert "2 of 3 units kept" in line and "4 inline tags stripped from 2 segments" in line
    assert "1 skipped: a language missing or empty" in line


def test_tmx_without_the_languages_is_an_error_naming_those_it_has(tmp_path):
    with pytest.raises(DataError, match="no unit has the languages es and it; the file has "
                                        "de, de-DE, en-US, fr-FR"):
        read("tmx", TMX.replace('lang="EN"', 'lang="en-US"'), tmp_path, "es", "it")


def test_xliff_12_targets_and_units_without_one(tmp_path):
    tally_rows = read("xliff", XLIFF12, tmp_path, name="ui.xlf")
    assert tally_rows == [{"src": "Print all pages", "tgt": "Alle Seiten drucken"},
                          {"src": "Close", "tgt": "Schließen"}]
    with pytest.raises(DataError, match="translates en into de-DE, not fr into de"):
        read("xliff", XLIFF12, tmp_path, "fr", "de", name="ui2.xlf")


def test_xliff_20_units_join_their_segments_and_a_reversed_file_is_swapped(tmp_path):
    rows = read("xliff", XLIFF20, tmp_path)  # the file is de -> en; the config en -> de
    assert rows == [{"src": "Hello world. How are you?", "tgt": "Hallo Welt. Wie geht es?"}]
    assert read("xliff", XLIFF20, tmp_path, "de", "en", name="same.xliff") == [
        {"src": "Hallo Welt. Wie geht es?", "tgt": "Hello world. How are you?"}]


def test_po_entries_plurals_and_what_is_skipped(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nmt.data.memories"):
        rows = read("po", PO, tmp_path)
    assert rows == [{"src": "Save the document", "tgt": "Dokument speichern"},
                    {"src": "%d file", "tgt": "%d Datei"},
                    {"src": "%d files", "tgt": "%d Dateien"},
                    {"src": "A long line that continues here",
                     "tgt": "Eine lange Zeile, die hier weitergeht"}]
    line = caplog.records[-1].getMessage()
    assert "3 of 6 units kept" in line
    assert "1 skipped: fuzzy" in line and "1 skipped: untranslated" in line
    assert "1 skipped: obsolete" in line
    swapped = read("po", PO, tmp_path, "de", "en", name="swapped.po")
    assert swapped[0] == {"src": "Dokument speichern", "tgt": "Save the document"}
    with pytest.raises(DataError, match="a catalogue in de_DE, neither fr"):
        read("po", PO, tmp_path, "en", "fr", name="other.po")


@pytest.mark.parametrize("kind, text, where", [
    ("tmx", TMX.replace("</tu>\n    <tu>", "</tuv>\n    <tu>", 1), "line 12, column 7"),
    ("xliff", XLIFF12.replace("<x id=\"2\"/></source>", "<x id=\"2\"></source>"),
     "line 6, column"),
    ("po", PO.replace('msgid "Delete"', 'a stray line\nmsgid "Delete"'), "syntax error at line 13"),
])
def test_a_malformed_file_names_the_file_and_the_position(tmp_path, kind, text, where):
    with pytest.raises(DataError) as caught:
        read(kind, text, tmp_path)
    assert f"corpus.{kind}" in str(caught.value) and where in str(caught.value)


def test_entities_are_refused_and_a_plain_doctype_is_read(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE tmx [<!ENTITY a "aaaaaaaaaa">]>'
            '<tmx version="1.4"><body><tu><tuv xml:lang="en"><seg>&a;</seg></tuv></tu></body>'
            '</tmx>')
    with pytest.raises(DataError, match="may not declare entities"):
        read("tmx", bomb, tmp_path)
    omegat = TMX.replace('<tmx version="1.4">', '<!DOCTYPE tmx SYSTEM "tmx14.dtd">\n'
                         '<tmx version="1.4">')
    assert len(read("tmx", omegat, tmp_path, name="omegat.tmx")) == 2


def test_units_are_dropped_from_the_tree_once_read(tmp_path):
    """The tree keeps no unit once it is read, so memory stays flat on a large TMX."""
    from nmt.data.memories import _elements

    units = "".join(f'<tu><tuv xml:lang="en"><seg>s{i}</seg></tuv>'
                    f'<tuv xml:lang="de"><seg>z{i}</seg></tuv></tu>' for i in range(3000))
    path = tmp_path / "big.tmx"
    path.write_text(f'<tmx version="1.4"><header/><body>{units}</body></tmx>', encoding="utf-8")
    root, most = None, 0
    for _event, element in _elements(str(path), ("tu",)):
        root = root if root is not None else element
        body = root.find("body")
        most = max(most, len(body) if body is not None else 0)
    # the parser reads 64 KiB at a time: the tree holds that chunk's units at most, never
    # the 230 KB file's 3,000
    assert most < 1000 and len(root.find("body")) == 0


def test_memories_load_as_splits_and_the_cli_reports_a_bad_file(tmp_path):
    (tmp_path / "train.tmx").write_text(TMX, encoding="utf-8")
    (tmp_path / "valid.po").write_text(PO, encoding="utf-8")
    splits = load_splits(DataConfig(format="tmx", train=str(tmp_path / "train.tmx")),
                         tmp_path / "cache", ("train",))
    assert splits["train"]["tgt"] == ["Klicken Sie auf Speichern.", "Datei öffnen…"]
    po = load_splits(DataConfig(format="po", train=str(tmp_path / "valid.po")),
                     tmp_path / "cache", ("train",))["train"]
    assert len(po) == 4 and isinstance(Tally("x").describe(), str)
    (tmp_path / "bad.xlf").write_text(XLIFF12[:300], encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "nmt", "prepare", "data.format=xliff",
                           f"data.train={tmp_path / 'bad.xlf'}",
                           f"output_dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "bad.xlf: malformed XML at line" in proc.stderr
