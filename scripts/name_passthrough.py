"""How often do names pass from the source to the output? (copy attention's measure)

A *name* is a source word (split on spaces, hyphens and slashes, punctuation stripped from its
ends) that holds an uppercase letter or a digit and appears, as a word, in the reference too:
``HSQL`` (kept in ``HSQL-Datenbank``), ``F4``, ``OpenOffice.org``. Words the reference
translates (``If`` -> ``Wenn``) do not count. For each hypothesis file it prints how many of
those names the hypothesis holds (recall), and the share of sentences that keep all of them.

    python scripts/name_passthrough.py --src test.en --ref test.de \\
        --hyp default=runs/a/test.beam5.hyp --hyp copy=runs/b/test.beam5.hyp [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from nmt.scoring import read_lines

_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_SPLIT = re.compile(r"[\s/\-]+")
_NAME = re.compile(r"[A-Z0-9]")


def words(line: str) -> list[str]:
    """The words of a line, punctuation stripped from their ends."""
    out = []
    for token in _SPLIT.split(line):
        word = _EDGE.sub("", token)
        if word:
            out.append(word)
    return out


def names(src: str, ref: str) -> list[str]:
    """Source words with an uppercase letter or a digit that the reference keeps as they are."""
    kept = set(words(ref))
    return [w for w in dict.fromkeys(words(src)) if _NAME.search(w) and w in kept]


def passthrough(srcs: list[str], refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Names found in the hypotheses (recall), and sentences that keep all of theirs."""
    total = found = sentences = complete = 0
    for src, ref, hyp in zip(srcs, refs, hyps, strict=True):
        wanted = names(src, ref)
        if not wanted:
            continue
        have = set(words(hyp))
        hits = sum(w in have for w in wanted)
        total, found = total + len(wanted), found + hits
        sentences += 1
        complete += hits == len(wanted)
    return {"names": total, "found": found, "recall": found / max(total, 1),
            "sentences_with_names": sentences,
            "sentences_all_kept": complete / max(sentences, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--hyp", action="append", required=True, metavar="LABEL=FILE")
    parser.add_argument("--json")
    args = parser.parse_args()
    srcs, refs = read_lines(args.src), read_lines(args.ref)
    results = {}
    for item in args.hyp:
        label, _, path = item.partition("=")
        if not path:
            print(f"--hyp takes LABEL=FILE, got {item!r}", file=sys.stderr)
            return 2
        results[label] = passthrough(srcs, refs, read_lines(path))
    print("| hypotheses | names kept | recall | sentences keeping all their names |")
    print("|---|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['found']:,} / {r['names']:,} | {r['recall']:.1%} | "
              f"{r['sentences_all_kept']:.1%} of {r['sentences_with_names']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
