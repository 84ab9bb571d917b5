"""Your own data: any line-aligned parallel files (or a TSV / JSON-lines file) for train, valid
and test, and two language codes. The recipe to copy and adapt.

    python recipes/from_files.py --train data/train --valid data/dev --test data/test \\
        --src-lang en --tgt-lang fr --out runs/en_fr
    python recipes/from_files.py --train train.tsv --valid dev.tsv --test test.tsv \\
        --src-lang en --tgt-lang fr training.max_minutes=60

``--train data/train`` with ``--src-lang en --tgt-lang fr`` reads ``data/train.en`` and
``data/train.fr``; a path ending in ``.tsv`` (source<TAB>target) or ``.jsonl`` (objects with
keys named by the language codes) is read as such, and so are translation memories: ``.tmx``,
``.xlf`` / ``.xliff`` and ``.po``. The model and training settings are in
``recipes/from_files.yaml`` (a mid-sized model that trains on 2 CPU cores); override any of
them as KEY=VALUE.

Fine-tuning a trained model on your data: ``--init-from runs/lohelp_en_de`` starts from that
model's weights and SentencePiece model (a fresh optimizer and schedule) and takes its model
section, so only the training settings come from ``from_files.yaml`` and KEY=VALUE. To keep
more of what the base model knew, train on your data and some of its own:
``--train mine/train --train base/train``.
"""

import argparse
import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus: three locations and two language codes."""
    parser.add_argument("--train", required=True, action="append", metavar="PREFIX|FILE",
                        help="training data: a prefix of two files PREFIX.SRC/PREFIX.TGT, or "
                             "a .tsv / .jsonl / .tmx / .xlf / .po file; given again (files of "
                             "one kind), the sources are read as one corpus")
    parser.add_argument("--valid", metavar="PREFIX|FILE", help="validation data (as --train)")
    parser.add_argument("--test", metavar="PREFIX|FILE", help="test data (as --train)")
    parser.add_argument("--src-lang", required=True, metavar="LANG", help="source language")
    parser.add_argument("--tgt-lang", required=True, metavar="LANG", help="target language")
    parser.add_argument("--init-from", metavar="MODEL_DIR",
                        help="fine-tune this trained model directory (its weights, tokenizer "
                             "and model section) instead of training from scratch")


def values(args: argparse.Namespace) -> dict:
    """The data section from the flags; the format follows the training path's suffix."""
    suffix = Path(args.train[0]).suffix
    fmt = {".tsv": "tsv", ".jsonl": "jsonl", ".tmx": "tmx", ".xlf": "xliff", ".xliff": "xliff",
           ".po": "po"}.get(suffix.lower(), "text")
    data = {"format": fmt, "src_lang": args.src_lang, "tgt_lang": args.tgt_lang}
    for split in ("valid", "test"):
        if getattr(args, split):
            data[split] = str(Path(getattr(args, split)).resolve())
    paths = [str(Path(p).resolve()) for p in args.train]
    data["train"] = paths[0] if len(paths) == 1 else paths
    values = {"name": f"{args.src_lang}_{args.tgt_lang}", "data": data}
    if args.init_from:
        values["training"] = {"init_from": str(Path(args.init_from).resolve())}
        values["model"] = base_model_section(Path(args.init_from))
    return values


def base_model_section(model_dir: Path) -> dict:
    """The shape keys of a trained model's model section (fine-tuning keeps them)."""
    from nmt.config import MODEL_SHAPE_KEYS, load_config, to_dict
    from nmt.errors import ConfigError

    if not (model_dir / "config.yaml").is_file():
        raise ConfigError(f"--init-from {model_dir}: no config.yaml there; give the directory "
                          "of a trained model")
    model = to_dict(load_config(model_dir / "config.yaml").model)
    return {key: model[key] for key in MODEL_SHAPE_KEYS}


RECIPE = Recipe(
    name="from_files",
    description="A model trained on your own parallel files.",
    config_file=HERE / "from_files.yaml",
    values=values,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
