"""Glossary benchmark: a glossary extracted from a corpus's training pairs, then the test set
translated with and without it (``--glossary``), side by side in one run.

    python scripts/bench_glossary.py -m runs/bible_new --train data/bible/train \\
        --test data/bible/test --src-lang en --tgt-lang es --out runs/glossary_bible

The glossary: capitalised source words (names, menu and dialog names) seen at least
``--min-count`` times away from the start of a line, each paired with the target word whose
lines overlap with its lines best (Dice coefficient over training lines, at least
``--min-dice``); written to ``OUT/glossary.tsv``. Reported (``OUT/results.json``): test lines
holding a term, the share of their terms placed, the share of those terms that the reference
holds too (how often the glossary is right), BLEU and chrF with and without, seconds of each.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

WORD = re.compile(r"\w+", re.UNICODE)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def extract(src: list[str], tgt: list[str], min_count: int, min_dice: float,
            most: int) -> list[tuple[str, str, float]]:
    """(source word, target word, Dice) for capitalised source words away from line starts."""
    src_sets = [set(WORD.findall(line)) for line in src]
    tgt_sets = [set(WORD.findall(line)) for line in tgt]
    capital = Counter(w for line in src for w in WORD.findall(line)[1:]
                      if w[:1].isupper() and len(w) > 2 and not w.isupper())
    tgt_count = Counter(w for words in tgt_sets for w in words)
    entries = []
    for word, count in capital.most_common():
        if count < min_count or len(entries) >= most:
            break
        rows = [i for i, words in enumerate(src_sets) if word in words]
        together = Counter(w for i in rows for w in tgt_sets[i] if w[:1].isupper())
        if not together:
            continue
        best, both = max(together.items(), key=lambda kv: 2 * kv[1] / (len(rows)
                                                                        + tgt_count[kv[0]]))
        dice = 2 * both / (len(rows) + tgt_count[best])
        if dice >= min_dice:
            entries.append((word, best, dice))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--train", required=True, help="prefix of the training files")
    parser.add_argument("--test", required=True, help="prefix of the test files")
    parser.add_argument("--src-lang", required=True)
    parser.add_argument("--tgt-lang", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--min-count", type=int, default=20)
    parser.add_argument("--min-dice", type=float, default=0.8)
    parser.add_argument("--most", type=int, default=200, help="entries at most")
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()

    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import Translator
    from nmt.scoring import score

    args.out.mkdir(parents=True, exist_ok=True)
    src_train = lines(Path(f"{args.train}.{args.src_lang}"))
    tgt_train = lines(Path(f"{args.train}.{args.tgt_lang}"))
    entries = extract(src_train, tgt_train, args.min_count, args.min_dice, args.most)
    (args.out / "glossary.tsv").write_text(
        "".join(f"{s}\t{t}\n" for s, t, _ in entries), encoding="utf-8")
    glossary = Glossary((s, t) for s, t, _ in entries)
    src = lines(Path(f"{args.test}.{args.src_lang}"))
    ref = lines(Path(f"{args.test}.{args.tgt_lang}"))
    translator = Translator.load(args.model)
    results = {}
    for name, terms in (("without", None), ("with", glossary)):
        start = time.perf_counter()
        hyps = translator.translate(src, beam_size=args.beam_size, glossary=terms)
        seconds = time.perf_counter() - start
        (args.out / f"test.{name}.hyp").write_text("".join(h + "\n" for h in hyps),
                                                    encoding="utf-8")
        scores = score(hyps, [ref])
        results[name] = {"bleu": scores.bleu, "chrf": scores.chrf, "seconds": seconds,
                         "unplaced": len(translator.unplaced)}
    found = [glossary.find(line) for line in src]
    n_terms = sum(len(f) for f in found)
    right = sum(1 for f, r in zip(found, ref, strict=True) for _, t in f
                if t in WORD.findall(r))
    results["glossary_entries"] = len(entries)
    results["test_lines_with_terms"] = sum(1 for f in found if f)
    results["test_terms"] = n_terms
    results["placed_share"] = 1 - results["with"]["unplaced"] / max(n_terms, 1)
    results["reference_holds_term_share"] = right / max(n_terms, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n",
                                           encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
