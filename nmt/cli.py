"""The ``nmt`` command line: ``prepare``, ``train``, ``translate``, ``evaluate``.

Only the standard library is imported at start-up; each subcommand imports what it needs when
it runs, so ``nmt --help`` and ``nmt translate --help`` answer without loading torch or
datasets. A user mistake (:class:`nmt.errors.NMTError`, a bad flag) prints one line on stderr
and exits with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from nmt import __version__

EXAMPLES_PREPARE = """examples:
  nmt prepare --config run.yaml
  nmt prepare --config run.yaml tokenizer.vocab_size=16000 data.max_len=100
  nmt prepare --dataset bentrevett/multi30k --src-lang de --tgt-lang en --output-dir runs/m30k
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="YAML config of the run (sections data, tokenizer, model, training, "
                             "decoding); defaults apply to what it leaves out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides applied over the file, e.g. model.hidden_size=512")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (cheap: no heavy imports)."""
    parser = _Parser(prog="nmt", description="LSTM neural machine translation: prepare data, "
                     "train, translate and evaluate.",
                     epilog="Run 'nmt COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"nmt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("prepare", help="load and clean a corpus, train SentencePiece, cache ids",
                       description="Load the corpus named by the config (local files or a Hugging "
                       "Face dataset), clean it, train or load the SentencePiece model(s), cache "
                       "the tokenised ids as Arrow and print a summary.",
                       epilog=EXAMPLES_PREPARE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--dataset", metavar="NAME", help="Hugging Face dataset (sets data.dataset "
                   "and, unless --format is given, data.format=hub)")
    p.add_argument("--dataset-config", metavar="NAME", help="its configuration, e.g. de-en")
    p.add_argument("--format", choices=("text", "tsv", "jsonl", "hub", "disk"),
                   help="corpus kind (data.format)")
    p.add_argument("--src-lang", metavar="LANG", help="source language (data.src_lang)")
    p.add_argument("--tgt-lang", metavar="LANG", help="target language (data.tgt_lang)")
    p.add_argument("--output-dir", metavar="DIR", help="run directory (output_dir)")
    p.set_defaults(handler=_cmd_prepare)

    p = sub.add_parser("train", help="train a model from a config",
                       description="Train an LSTM encoder-decoder model as the config says and "
                       "write its model directory into output_dir.")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("translate", help="translate text with a trained model",
                       description="Translate lines of text with a trained model directory: one "
                       "output line per input line, in order.")
    p.add_argument("-m", "--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("-i", "--input", metavar="FILE", help="input text (default: stdin)")
    p.add_argument("-o", "--output", metavar="FILE", help="output text (default: stdout)")
    p.add_argument("--beam-size", type=int, metavar="K", help="beam size (1: greedy)")
    p.set_defaults(handler=_not_yet("translate", "search"))

    p = sub.add_parser("evaluate", help="score hypotheses against references with sacreBLEU",
                       description="Score a hypothesis file against one or more reference files "
                       "with sacreBLEU: BLEU, chrF and TER, with their signatures.")
    p.add_argument("--hyp", metavar="FILE", required=True, help="hypotheses, one per line")
    p.add_argument("--ref", metavar="FILE", required=True, action="append",
                   help="references, one per line (repeat for several references)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--tokenize", metavar="NAME", default=None,
                   help="sacreBLEU tokenizer for BLEU: 13a (default), intl, zh, char, none ... "
                        "(default for the target language with --lang)")
    p.add_argument("--lang", metavar="LANG", help="target language code (picks zh or char "
                   "tokenization for Chinese, Japanese, Korean, Thai)")
    p.set_defaults(handler=_cmd_evaluate)
    return parser


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("nmt").setLevel(logging.INFO)  # files such as train.log get INFO even if -q
    import os

    # per-step bars of datasets add nothing for corpora of this size; our own logs say what ran
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _load(args: argparse.Namespace, values: dict | None = None):
    from nmt.config import load_config

    return load_config(args.config, args.overrides, values)


def _cmd_prepare(args: argparse.Namespace) -> int:
    data = {}  # flags are strings as typed (not YAML: --src-lang no is Norwegian, not false)
    if args.dataset:
        data.update(dataset=args.dataset, format=args.format or "hub")
    elif args.format:
        data["format"] = args.format
    for flag, key in (("dataset_config", "dataset_config"), ("src_lang", "src_lang"),
                      ("tgt_lang", "tgt_lang")):
        if getattr(args, flag):
            data[key] = getattr(args, flag)
    values = {"data": data, **({"output_dir": args.output_dir} if args.output_dir else {})}
    config = _load(args, values)
    from nmt.config import save_config
    from nmt.data import prepare

    prepared = prepare(config)
    save_config(config, config.out / "config.yaml")
    print(prepared.summary())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    config = _load(args)
    from nmt.train import train

    progress = train(config, resume=args.resume, quiet=args.quiet)
    best = (f"best validation BLEU {progress.best_score:.2f}"
            if config.data.valid or config.data.format in ("hub", "disk")
            else f"best training loss {-progress.best_score:.3f}")
    print(f"trained {progress.step} updates ({progress.epoch} epochs, {progress.elapsed:.0f} s); "
          f"{best} at update {progress.best_step}; model directory: {config.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from nmt.evaluate import format_scores, read_lines, score

    hyps = read_lines(args.hyp)
    refs = [read_lines(r) for r in args.ref]
    from nmt.evaluate import bleu_tokenizer

    tokenize = args.tokenize or bleu_tokenizer(args.lang)
    scores = score(hyps, refs, hyp_name=args.hyp, ref_names=args.ref, tokenize=tokenize)
    print(format_scores(scores, as_json=args.json))
    return 0


def _not_yet(command: str, what: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from nmt.errors import NMTError

        raise NMTError(f"'nmt {command}' is not available in this version yet (it arrives with "
                       f"{what}); see the README for what works today")

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmt`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "quiet", False))
    from nmt.errors import NMTError

    try:
        return args.handler(args)
    except NMTError as exc:
        sys.stderr.write(f"nmt {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"nmt {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
