"""Copy task: a toy recipe that proves the stages connect (generated data, trains in a minute).

Stage 0 writes random word sequences (3-12 words from a 24-word vocabulary) as line-aligned
files ``RUN_DIR/data/{train,valid,test}.{src,tgt}`` whose target is the source; the rest is
the normal pipeline: SentencePiece, a small BiLSTM model, beam search, detokenisation and
sacreBLEU. A correct pipeline scores test BLEU above 90 (the suite checks it).

    python recipes/copy_task.py --out runs/copy
"""

import argparse
import random
import sys
from pathlib import Path

from nmt.fileio import write_text_atomic
from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Corpus size."""
    parser.add_argument("--pairs", type=int, default=6000, metavar="N",
                        help="training pairs to generate (default 6000)")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.out or "runs/copy_task").resolve() / "data"


def values(args: argparse.Namespace) -> dict:
    """Data paths inside the run directory."""
    data = _data_dir(args)
    return {"data": {s: str(data / s) for s in ("train", "valid", "test")}}


def fetch(config, args: argparse.Namespace) -> None:
    """Write the three splits (seeded, so a re-run writes the same data)."""
    data = Path(config.data.train).parent
    for offset, (split, n) in enumerate((("train", args.pairs), ("valid", 200), ("test", 300))):
        rng = random.Random(1234 + offset)
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
                 for _ in range(n)]
        text = "".join(line + "\n" for line in lines)
        for side in (config.data.src_lang, config.data.tgt_lang):
            write_text_atomic(data / f"{split}.{side}", text)


RECIPE = Recipe(
    name="copy_task",
    description="Copy task on generated word sequences (a pipeline check).",
    config_file=HERE / "copy_task.yaml",
    values=values,
    fetch=fetch,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
