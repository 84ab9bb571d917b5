"""Your own data: any line-aligned parallel files (or a TSV / JSON-lines file) for train, valid
and test, and two language codes. The recipe to copy and adapt.

    python recipes/from_files.py --train data/train --valid data/dev --test data/test \\
        --src-lang en --tgt-lang fr --out runs/en_fr
    python recipes/from_files.py --train train.tsv --valid dev.tsv --test test.tsv \\
        --src-lang en --tgt-lang fr training.max_minutes=60

``--train data/train`` with ``--src-lang en --tgt-lang fr`` reads ``data/train.en`` and
``data/train.fr``; a path ending in ``.tsv`` (source<TAB>target) or ``.jsonl`` (objects with
keys named by the language codes) is read as such. The model and training settings are in
``recipes/from_files.yaml`` (a mid-sized model that trains on 2 CPU cores); override any of
them as KEY=VALUE.
"""

import argparse
import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus: three locations and two language codes."""
    parser.add_argument("--train", required=True, metavar="PREFIX|FILE",
                        help="training data: a prefix of two files PREFIX.SRC/PREFIX.TGT, or "
                             "a .tsv / .jsonl file")
    parser.add_argument("--valid", metavar="PREFIX|FILE", help="validation data (as --train)")
    parser.add_argument("--test", metavar="PREFIX|FILE", help="test data (as --train)")
    parser.add_argument("--src-lang", required=True, metavar="LANG", help="source language")
    parser.add_argument("--tgt-lang", required=True, metavar="LANG", help="target language")


def values(args: argparse.Namespace) -> dict:
    """The data section from the flags; the format follows the training path's suffix."""
    suffix = Path(args.train).suffix
    fmt = {".tsv": "tsv", ".jsonl": "jsonl"}.get(suffix, "text")
    data = {"format": fmt, "src_lang": args.src_lang, "tgt_lang": args.tgt_lang}
    for split in ("train", "valid", "test"):
        if getattr(args, split):
            data[split] = str(Path(getattr(args, split)).resolve())
    return {"name": f"{args.src_lang}_{args.tgt_lang}", "data": data}


RECIPE = Recipe(
    name="from_files",
    description="A model trained on your own parallel files.",
    config_file=HERE / "from_files.yaml",
    values=values,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
