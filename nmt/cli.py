"""The ``nmt`` command line: ``prepare``, ``train``, ``translate``, ``serve``, ``export``,
``encode``, ``average``, ``evaluate``.

Only the standard library is imported at start-up; each subcommand imports what it needs when
it runs, so ``nmt --help`` and ``nmt translate --help`` answer without loading torch or
datasets. A user mistake (:class:`nmt.errors.NMTError`, a bad flag) prints one line on stderr
and exits with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nmt import __version__
from nmt.config import DATA_FORMATS, LONG_LINES, STOPPING, DecodingConfig
from nmt.console import (
    ArgumentParser,
    parse_args,
    run_reporting_errors,
    setup_logging,
    usable_cores,
)
from nmt.documents import FORMATS
from nmt.errors import ConfigError, DataError

if TYPE_CHECKING:
    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import Translator

#: The decoding settings that translate, serve and evaluate take as flags (--beam-size ...).
DECODING_FLAGS = ("beam_size", "length_penalty", "word_reward", "stopping", "long_lines",
                  "max_len_a", "max_len_b", "batch_tokens")

EXAMPLES_PREPARE = """examples:
  nmt prepare --config run.yaml
  nmt prepare --config run.yaml tokenizer.vocab_size=16000 data.max_len=100
  nmt prepare --dataset bentrevett/multi30k --src-lang de --tgt-lang en --output-dir runs/m30k
"""


EXAMPLES_SERVE = """examples:
  nmt serve -m runs/lohelp_en_de                       # http://127.0.0.1:5000/
  nmt serve -m runs/en_de -m runs/de_en --port 8080 --beam-size 4
  curl -s localhost:5000/translate -H 'Content-Type: application/json' \\
       -d '{"q": "Click OK.", "source": "en", "target": "de"}'
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="YAML config of the run (sections data, tokenizer, model, training, "
                             "decoding); defaults apply to what it leaves out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides applied over the file, e.g. model.hidden_size=512")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (cheap: no heavy imports)."""
    parser = ArgumentParser(prog="nmt", description="LSTM neural machine translation: prepare "
                            "data, train, translate and evaluate.",
                            epilog="Run 'nmt COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"nmt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=ArgumentParser)

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
    p.add_argument("--format", choices=DATA_FORMATS,
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
    p.add_argument("--init-from", metavar="MODEL_DIR",
                   help="fine-tune: start from this trained model's weights and SentencePiece "
                        "model, with a fresh optimizer and schedule (training.init_from; the "
                        "config's model section must have its shapes)")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("translate", help="translate text with a trained model",
                       description="Translate lines of text with a trained model directory: one "
                       "output line per input line, in order (an empty line gives an empty "
                       "line). A document (PO, XLIFF, HTML, Markdown, SRT, WebVTT; by its "
                       "suffix or --format) comes back with its structure kept. Settings not "
                       "given come from the model's decoding config.")
    _add_model_io_args(p, output_help="output text, written atomically (default: stdout)",
                       ensemble=True)
    _add_decoding_args(p)
    p.add_argument("--n-best", type=int, default=1, metavar="N",
                   help="write N lines per input: hypothesis<TAB>score")
    p.add_argument("--alignment", action="store_true",
                   help="after each translation, a tab and its word alignment to the source in "
                        "Moses format (i-j: source word i, target word j, from 0), from the "
                        "attention (torch backend, one model)")
    p.add_argument("--scores", action="store_true",
                   help="after each translation (and alignment), a tab and each target piece's "
                        "log-probability (piece=value, EOS last)")
    p.add_argument("--attention-dir", metavar="DIR",
                   help="write one attention heat map (PNG) per non-empty line into DIR")
    _add_glossary_args(p)
    p.add_argument("--format", choices=FORMATS,
                   help="text: lines (the default for other suffixes and stdin); po, xliff, "
                        "html, md, srt, vtt: a document, translated with its structure kept "
                        "(default: from the input's suffix: .po .pot .xlf .xliff .html .htm .md "
                        ".srt .vtt)")
    p.add_argument("--retranslate", action="store_true",
                   help="po, xliff: translate entries that have a translation too (default: "
                        "fill only the empty ones)")
    p.add_argument("--no-fuzzy", action="store_true",
                   help="po: do not flag the entries the model filled as fuzzy")
    p.add_argument("--no-sentence-split", action="store_true",
                   help="documents: translate each paragraph as one line instead of sentence "
                        "by sentence")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, summary or info logs")
    p.set_defaults(handler=_cmd_translate)

    p = sub.add_parser("serve", help="a LibreTranslate-compatible translation server",
                       description="Serve model directories over LibreTranslate's HTTP API "
                       "(POST /translate, POST /detect, GET /languages, /health, "
                       "/frontend/settings) with a web page at /. Each directory serves the "
                       "language pair of its config; concurrent requests are merged into one "
                       "batched search per model.",
                       epilog=EXAMPLES_SERVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", metavar="DIR", required=True, action="append",
                   help="model directory; repeat it to serve several language pairs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    _add_decoding_args(p)
    _add_glossary_args(p, strict=False)
    p.add_argument("--max-batch-wait", type=float, default=5.0, metavar="MS",
                   help="milliseconds a model's worker waits for more requests to batch "
                        "(default 5; 0: one request per search, no batching across requests)")
    p.add_argument("--batching", choices=("continuous", "gathered"), default="continuous",
                   help="continuous (default): requests join the running beam search between "
                        "steps and are answered when their own sentences are done; gathered: "
                        "requests gathered into one search that runs to its end before the "
                        "next (greedy search, --shortlist and --glossary always batch so)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="searches each model runs at once, each by a thread of its own (and "
                        "a process, see --workers-in; default 0: 2 on a machine of 2 cores or "
                        "more, else 1); torch threads per search: OMP_NUM_THREADS, default "
                        "(cores - 1) / workers, at least 1")
    p.add_argument("--workers-in", choices=("auto", "processes", "threads"), default="auto",
                   help="with --batching continuous, where each worker's search runs: "
                        "processes: a child process each, holding its own copy of the model, "
                        "so that the searches' Python does not wait for each other (more "
                        "sentences/s under load, more memory); threads: in the server's "
                        "process; auto (default): processes on the torch backend, threads on "
                        "ONNX Runtime's")
    p.add_argument("--char-limit", type=int, default=10_000, metavar="N",
                   help="characters of each text of a request, HTML markup included, as "
                        "LibreTranslate counts them (default 10000; 0: no limit)")
    p.add_argument("--batch-limit", type=int, default=128, metavar="N",
                   help="texts in a list q (default 128; 0: no limit)")
    p.add_argument("--queue-limit", type=int, default=4096, metavar="N",
                   help="lines waiting per model; past it requests get 503 at once "
                        "(default 4096)")
    p.add_argument("--body-limit", type=int, default=1 << 20, metavar="BYTES",
                   help="bytes of a request body (default 1 MiB); larger bodies get 413")
    p.add_argument("--file-limit", type=int, default=4 << 20, metavar="BYTES",
                   help="bytes of a POST /translate_file request, the file included (default "
                        "4 MiB); larger uploads get 413")
    p.add_argument("--req-limit", type=int, default=0, metavar="N",
                   help="requests per minute per API key or client address, then 429 "
                        "(default 0: no limit)")
    p.add_argument("--api-keys", metavar="FILE",
                   help="file of API keys, one per line: requests must send one as api_key")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds a request waits for its translation, then 503 (default 60)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="warnings and errors only: no request log, no start-up lines")
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser("export", help="export a model directory as ONNX graphs",
                       description="Write a model directory as ONNX graphs for ONNX Runtime: "
                       "the encoder (with the bridge) and one decoder step, batch and source "
                       "length dynamic, with the config, the SentencePiece model(s) and a "
                       "manifest (opset, versions, input and output names and shapes, file "
                       "hashes). Translate with it: nmt translate -m OUT_DIR. Needs the ONNX "
                       "extra: pip install -e '.[onnx]'.",
                       epilog="examples:\n  nmt export -m runs/lohelp_en_de -o "
                              "exports/lohelp_en_de --int8\n"
                              "  nmt translate -m exports/lohelp_en_de -i in.txt -o out.txt\n"
                              "  nmt translate -m exports/lohelp_en_de --quantize int8 -i "
                              "in.txt -o out.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", metavar="DIR", required=True, action="append",
                   help="model directory (one: an ensemble cannot be exported)")
    p.add_argument("-o", "--output", metavar="OUT_DIR", required=True,
                   help="export directory: new, empty, or an earlier export (replaced)")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 graphs (ONNX Runtime dynamic quantisation); translate "
                        "with them by --quantize int8")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("shortlist", help="make a model's lexical shortlist from its training data",
                       description="Write MODEL_DIR/shortlist.safetensors: for each source "
                       "piece its most probable target pieces (IBM Model 1 on the training "
                       "pairs the model's config names), and the most frequent target pieces. "
                       "nmt translate, evaluate and serve use it with --shortlist. New runs "
                       "get one from nmt prepare (recipe stage 1); this makes one for a model "
                       "trained before, or with other sizes.",
                       epilog="example:\n  nmt shortlist -m runs/lohelp_en_de\n"
                              "  nmt translate -m runs/lohelp_en_de --shortlist -i in.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("--per-source", type=int, default=None, metavar="K",
                   help="target pieces kept per source piece (default 100)")
    p.add_argument("--frequent", type=int, default=None, metavar="N",
                   help="most frequent target pieces always kept (default 500)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(handler=_cmd_shortlist)

    p = sub.add_parser("encode", help="sentence vectors from the encoder",
                       description="Write one fixed-length vector per input line: the top "
                       "encoder layer's final forward and backward hidden states, (N, 2H) "
                       "float32, as a NumPy .npy file, rows in input order.")
    _add_model_io_args(p, output_help="output .npy file", output_required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(handler=_cmd_encode)

    p = sub.add_parser("score", help="log-probability of given translations (forced decoding)",
                       description="Score each line of --hyp as a translation of the same line "
                       "of --src: the model's log-probability of its pieces and EOS, the steps "
                       "beam search takes (equal to the search's score for the same output "
                       "with length penalty 0 and no word reward). One line out per pair.",
                       epilog="examples:\n  nmt score -m runs/lohelp_en_de --src test.en --hyp "
                              "test.hyp -o test.scores\n  nmt score -m runs/lohelp_en_de --src "
                              "test.en --hyp test.de --normalize --token-scores",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", metavar="DIR", required=True, action="append",
                   help="model directory (or ONNX export); repeat it for an ensemble")
    p.add_argument("--src", metavar="FILE", required=True, help="source lines")
    p.add_argument("--hyp", metavar="FILE", required=True,
                   help="translations to score, one per source line")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="scores, written atomically (default: stdout)")
    p.add_argument("--normalize", action="store_true",
                   help="divide each total by its number of target pieces (EOS included)")
    p.add_argument("--token-scores", action="store_true",
                   help="after the total, a tab and each piece's log-probability "
                        "(piece=value, space-separated, EOS last)")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="invalid UTF-8 input: stop with the line number (strict) or replace")
    p.add_argument("--batch-tokens", type=int, metavar="N", help="source tokens per batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default): as nmt translate; fp32 for exact comparisons")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="torch (model directory) or onnx (an export); auto picks by -m")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("average", help="average checkpoints into a new model directory",
                       description="Average the weights of a run's last N checkpoints (or of "
                       "the checkpoint files given) into a new model directory with the run's "
                       "config and SentencePiece model(s).",
                       epilog="examples:\n  nmt average -m runs/big --last 5 -o runs/big-avg5\n"
                              "  nmt average -m runs/big -o runs/avg --checkpoints "
                              "runs/big/checkpoints/step-00030000.safetensors "
                              "runs/big/checkpoints/step-00031000.safetensors",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", metavar="RUN_DIR", required=True, help="training run")
    p.add_argument("--last", type=int, metavar="N", help="average the newest N checkpoints")
    p.add_argument("--checkpoints", nargs="+", metavar="FILE",
                   help="checkpoint files (safetensors) to average instead")
    p.add_argument("-o", "--output", metavar="OUT_DIR", required=True,
                   help="new model directory")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(handler=_cmd_average)

    p = sub.add_parser("evaluate", help="score hypotheses against references with sacreBLEU",
                       description="Score a hypothesis file against one or more reference files "
                       "with sacreBLEU: BLEU, chrF and TER, with their signatures. With -m and "
                       "--src, translate the source first and write the hypotheses beside the "
                       "scores.")
    p.add_argument("--hyp", metavar="FILE", help="hypotheses, one per line")
    p.add_argument("-m", "--model", metavar="DIR", help="translate --src with this model")
    p.add_argument("--src", metavar="FILE", help="source lines to translate (with -m)")
    p.add_argument("--split", choices=("valid", "test"),
                   help="with -m instead of --src/--ref: the split named in the model's "
                        "config.yaml data section (files or a Hugging Face dataset)")
    p.add_argument("--hyp-out", metavar="FILE", help="where -m writes its hypotheses "
                   "(default: MODEL_DIR/SRC_NAME.beamK.hyp); a .json beside them names the "
                   "model's hash, the decoding settings, device and precision")
    _add_decoding_args(p)
    _add_glossary_args(p)
    p.add_argument("--ref", metavar="FILE", action="append", default=[],
                   help="references, one per line (repeat for several references)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--tokenize", metavar="NAME", default=None,
                   help="sacreBLEU tokenizer for BLEU: 13a (default), intl, zh, char, none ... "
                        "(default for the target language with --lang)")
    p.add_argument("--lang", metavar="LANG", help="target language code (picks zh or char "
                   "tokenization for Chinese, Japanese, Korean, Thai); with -m the model's "
                   "data.tgt_lang unless given")
    p.set_defaults(handler=_cmd_evaluate)
    return parser


def _add_model_io_args(p: argparse.ArgumentParser, output_help: str,
                       output_required: bool = False, ensemble: bool = False) -> None:
    """-m MODEL_DIR, -i input text, -o output and --errors (translate, encode)."""
    if ensemble:
        p.add_argument("-m", "--model", metavar="DIR", required=True, action="append",
                       help="model directory; repeat it to decode with an ensemble (the average "
                            "of the models' log-probabilities; shared vocabularies needed)")
    else:
        p.add_argument("-m", "--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("-i", "--input", metavar="FILE", help="input text (default: stdin)")
    p.add_argument("-o", "--output", metavar="FILE", required=output_required, help=output_help)
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="invalid UTF-8 input: stop with the line number (strict) or replace")


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam-size", type=int, metavar="K", help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, metavar="ALPHA",
                   help="GNMT length penalty exponent")
    p.add_argument("--word-reward", type=float, metavar="R",
                   help="beam search: log-probability reward per output token (> 0: longer)")
    p.add_argument("--stopping", choices=STOPPING,
                   help="beam search: a sentence with beam-size finished hypotheses stops when "
                        "no open one would beat the beam-size-th best by ending at the next step "
                        "(early, the default) or could at any length (exact: slower, what "
                        "searching to the length limit finds)")
    p.add_argument("--long-lines", choices=LONG_LINES,
                   help="a line over the model's data.max_len source pieces: translate it in "
                        "parts (split, the default) or its first data.max_len pieces")
    p.add_argument("--max-len-a", type=float, metavar="A", help="max output length a*src+b")
    p.add_argument("--max-len-b", type=int, metavar="B", help="max output length a*src+b")
    p.add_argument("--batch-tokens", type=int, metavar="N", help="source tokens per batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default): bf16 autocast on CUDA and on CPUs where it beats fp32, as "
                        "in training; the precision used is reported")
    p.add_argument("--quantize", choices=("int8",),
                   help="dynamic int8 quantization of the LSTMs and linear layers (CPU); with "
                        "the ONNX backend, the export's int8 graphs (nmt export --int8)")
    p.add_argument("--shortlist", action="store_true",
                   help="lexical shortlist: each batch's output limited to the target pieces "
                        "its source pieces make likely (the model's shortlist.safetensors, from "
                        "nmt shortlist or nmt prepare); faster, may change a few outputs, and "
                        "--n-best scores are then normalised over the shortlist (--scores "
                        "stay the full model's)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="torch: a model directory; onnx: an export of nmt export, run by ONNX "
                        "Runtime on the CPU (pip install -e '.[onnx]'); auto (default): onnx "
                        "for an export, else torch")


def _add_glossary_args(p: argparse.ArgumentParser, strict: bool = True) -> None:
    p.add_argument("--glossary", metavar="TSV",
                   help="source term<TAB>target term per line: where a line holds a source term "
                        "(whole words, case kept), its translation must hold the target term "
                        "(constrained beam search); a term that could not be placed is "
                        "reported with its line")
    if strict:
        p.add_argument("--glossary-strict", action="store_true",
                       help="exit 1 when a glossary term could not be placed (the output is "
                            "written all the same)")


def _flag(key: str) -> str:
    """The command-line flag of a decoding setting: beam_size -> --beam-size."""
    return "--" + key.replace("_", "-")


def _decoding_options(args: argparse.Namespace, **more: object) -> dict[str, Any]:
    """The decoding flags given (None: not given), checked as the config checks the same keys
    (:meth:`nmt.config.DecodingConfig.check_overrides`), before any model is loaded."""
    values = {key: getattr(args, key) for key in DECODING_FLAGS}
    return DecodingConfig.check_overrides({**values, **more}, _flag)


def _read_input(path: str | None, errors: str) -> list[str]:
    """Input lines (file or stdin) split on \n only; invalid UTF-8 named by line number."""
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from None
    from nmt.fileio import split_lines

    try:
        return split_lines(data, path or "stdin", errors)
    except DataError as exc:
        raise DataError(f"{exc} (or pass --errors replace)") from None


def _write_lines(path: str | None, lines: list[str]) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from nmt.fileio import write_text_atomic

    write_text_atomic(path, text)


def _translate_lines(translator: Translator, lines: list[str], options: DecodingConfig,
                     show_progress: bool, glossary: Glossary | None = None,
                     ) -> list[list[tuple[str, float]]]:
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(1 for x in lines if x.strip()), unit="sent", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        results = translator.translate_nbest(lines, options,
                                             progress=bar.update if bar else None,
                                             glossary=glossary)
    finally:
        if bar is not None:
            bar.close()
    _report_truncations(translator.truncated)
    return results


def _report_unplaced(unplaced: list, lines: Sequence[str] | None = None) -> None:
    """One stderr line per glossary term an output does not hold: by line number, or (for a
    document's sentences) with the sentence's start."""
    for miss in unplaced:
        where = (f"line {miss.index + 1}" if lines is None
                 else f"sentence {lines[miss.index][:50]!r}")
        sys.stderr.write(f"nmt: {where}: glossary term {miss.source!r} -> {miss.target!r} "
                         "could not be placed\n")


def _report_truncations(truncated: list) -> None:
    for cut in truncated:
        sys.stderr.write(f"nmt: line {cut.index + 1}: {cut.pieces} source pieces, translated "
                         f"from the first {cut.kept} (the model's data.max_len)\n")


def _idle_threads_sleep() -> None:
    """Before torch loads: its idle OpenMP threads sleep instead of spinning between operations
    (``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets it), leaving the cores to whatever
    else runs: ONNX Runtime (beam search 1.3x faster; docs/export.md), a server's HTTP loop (32
    clients on an AVX2 EPYC: 12.4 -> 21.4 sentences/s, p99 4.5 -> 2.9 s; docs/serving.md)."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _serve_threads(workers: int) -> int:
    """Before torch loads: nmt serve's searches per model (``workers``, 0: 2 where there are
    2 cores or more) and torch threads per search (``OMP_NUM_THREADS``, unless the environment
    sets it: the cores but one, which the HTTP loop keeps, shared by the searches, at least
    one each). Returns the searches per model.

    Measured on 2 cores (an AVX2 EPYC, 32 clients; docs/serving.md): one search of one torch
    thread beat one of two (26.6-37.3 sentences/s against 24.4-30.3, gathered batches), since
    the search's small operations wait for the slower thread while the HTTP loop holds a core;
    two searches of one thread each keep both cores busy (GIL released inside operations)."""
    import os

    cores = usable_cores()
    if workers < 0:
        raise ConfigError(f"--workers must be 0 (automatic) or more, got {workers}")
    workers = workers or min(2, cores)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores - 1) // workers)))
    return workers


def _onnx_threads_sleep(args: argparse.Namespace) -> None:
    """:func:`_idle_threads_sleep` with the ONNX backend, where torch runs only the search's
    glue."""
    from pathlib import Path

    from nmt.layout import RunDir

    models = args.model if isinstance(args.model, list) else [args.model]
    if args.backend == "onnx" or (args.backend == "auto" and any(
            RunDir(Path(m)).is_onnx_export() for m in models)):
        _idle_threads_sleep()


def _cmd_export(args: argparse.Namespace) -> int:
    if len(args.model) > 1:
        raise ConfigError("an ensemble cannot be exported: export each model directory with "
                          "its own nmt export (the ONNX backend runs one model)")
    from nmt.onnx.export import export_model

    manifest = export_model(args.model[0], args.output, int8=args.int8)
    parity = manifest["parity"]
    extra = (f", int8 graphs {parity['int8_max_abs_diff']:.2g}" if args.int8 else "")
    print(f"exported {args.model[0]} to {args.output} (ONNX opset {manifest['onnx_opset']}; "
          f"largest log-probability difference from torch: {parity['fp32_max_abs_diff']:.1e}"
          f"{extra}); translate with: nmt translate -m {args.output}")
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    _onnx_threads_sleep(args)
    overrides = _decoding_options(args, n_best=args.n_best)
    if args.attention_dir and len(args.model) > 1:
        raise ConfigError("--attention-dir shows one model's attention: give a single -m")
    if args.alignment and len(args.model) > 1:
        raise ConfigError("--alignment comes from one model's attention: give a single -m")
    if (args.alignment or args.scores) and args.n_best != 1:
        raise ConfigError("--alignment and --scores describe one translation a line: use them "
                          "without --n-best")
    from nmt.documents import format_of

    fmt = format_of(args.input, args.format)
    if fmt != "text":
        for flag, given in (("--n-best", args.n_best != 1), ("--alignment", args.alignment),
                            ("--scores", args.scores), ("--attention-dir", args.attention_dir)):
            if given:
                raise ConfigError(f"{flag} works on lines: translate a {fmt} document without "
                                  "it (or give --format text)")
    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import Translator

    glossary = Glossary.read(args.glossary) if args.glossary else None
    # the model first: a wrong -m is reported before stdin is read
    translator = Translator.load_ensemble(args.model, args.device, args.precision,
                                          args.quantize, args.backend)
    if args.shortlist:
        translator.use_shortlist(args.model[0])
    if fmt != "text":
        return _translate_document(translator, translator.options(overrides, _flag), fmt, args,
                                   glossary)
    for flag, wanted in (("--attention-dir", args.attention_dir),
                         ("--alignment", args.alignment)):
        if wanted and translator.backend == "onnx":
            raise ConfigError(f"{flag} needs the torch backend: give the model directory, "
                              "not its ONNX export")
    options = translator.options(overrides, _flag)
    lines = _read_input(args.input, args.errors)
    results = _translate_lines(translator, lines, options,
                               show_progress=bool(args.output) and not args.quiet,
                               glossary=glossary)
    unplaced = list(translator.unplaced)
    _report_unplaced(unplaced)
    if args.attention_dir:
        from pathlib import Path

        from nmt.inference.translator import plot_attention

        best = [hyps[0][0] for hyps in results]
        split = options.long_lines == "split"
        limit = translator.config.data.max_len
        for index, (src, tgt, weights) in enumerate(translator.attention(lines, best)):
            if split and src and translator.source_ids(lines[index])[1] > limit:
                sys.stderr.write(f"nmt: line {index + 1}: translated in parts, so it has no "
                                 "attention map (--long-lines truncate gives one)\n")
            elif src:
                plot_attention(Path(args.attention_dir) / f"{index + 1:06d}.png", src, tgt,
                               weights)
    if options.n_best == 1:
        out = [hyps[0][0] for hyps in results]
        if args.alignment or args.scores:
            out = _annotate(translator, lines, out, args.alignment, args.scores)
    else:
        out = [f"{text}\t{score:.4f}" for hyps in results for text, score in hyps]
    _write_lines(args.output, out)
    if args.output and not args.quiet:
        from nmt.device import precision_name

        sys.stderr.write(f"nmt translate: {len(lines)} lines, beam {options.beam_size}, precision "
                         f"{precision_name(translator.dtype)}"
                         f"{' (int8 weights)' if args.quantize else ''} on {translator.device} "
                         f"({translator.backend} backend); "
                         f"written to {args.output}\n")
    return 1 if args.glossary_strict and unplaced else 0


def _translate_document(translator: Translator, options: DecodingConfig, fmt: str,
                        args: argparse.Namespace, glossary: Glossary | None = None) -> int:
    """``nmt translate`` on a document: its units translated, the file written back whole."""
    from nmt.documents import read_document
    from nmt.documents.units import translate_document

    name = args.input or "stdin"
    if args.input is None:
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.input, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise DataError(f"cannot read {args.input}: {exc.strerror}") from None
    extra = {"po": {"retranslate": args.retranslate, "fuzzy": not args.no_fuzzy},
             "xliff": {"retranslate": args.retranslate}}.get(fmt, {})
    document = read_document(data, fmt, name, **extra)
    show = bool(args.output) and not args.quiet

    unplaced = 0

    def translate(lines: list[str]) -> list[str]:
        nonlocal unplaced
        out = [hyps[0][0] for hyps in _translate_lines(translator, lines, options, show,
                                                       glossary)]
        _report_unplaced(translator.unplaced, lines)
        unplaced += len(translator.unplaced)
        return out

    translations, report = translate_document(document, translate,
                                              translator.config.data.src_lang,
                                              sentences=not args.no_sentence_split)
    out = document.render(translations)
    for problem in report.placeholder_errors:
        sys.stderr.write(f"nmt: {name}: {problem}: placeholders changed, left untranslated\n")
    for note in document.notes:
        sys.stderr.write(f"nmt: {name}: {note}\n")
    if args.output is None:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    else:
        from nmt.fileio import write_bytes_atomic

        write_bytes_atomic(args.output, out)
    if args.output and not args.quiet:
        sys.stderr.write(f"nmt translate: {name} ({fmt}): {report.summary()}; written to "
                         f"{args.output}\n")
    return 1 if args.glossary_strict and unplaced else 0


def _annotate(translator: Translator, lines: list[str], out: list[str], alignment: bool,
              scores: bool) -> list[str]:
    """Translations with their word alignment and per-piece log-probabilities appended."""
    from nmt.inference.translator import word_alignment

    fields: list[list[str]] = [[text] for text in out]
    if alignment:
        for row, (src, tgt, weights) in zip(fields, translator.attention(lines, out),
                                            strict=True):
            row.append(" ".join(f"{i}-{j}" for i, j in word_alignment(src, tgt, weights)))
    if scores:
        scored = translator.score(lines, out)
        for index, (row, one) in enumerate(zip(fields, scored, strict=True)):
            row.append("" if not lines[index].strip() else " ".join(
                f"{piece}={value:.4f}" for piece, value
                in zip(one.pieces, one.token_log_probs, strict=True)))
    return ["\t".join(row) for row in fields]


def _cmd_score(args: argparse.Namespace) -> int:
    if args.batch_tokens is not None and args.batch_tokens < 1:
        raise ConfigError(f"--batch-tokens must be at least 1, got {args.batch_tokens}")
    sources, hypotheses = _read_input(args.src, args.errors), _read_input(args.hyp, args.errors)
    if len(sources) != len(hypotheses):
        raise DataError(f"{args.src} has {len(sources)} lines but {args.hyp} has "
                        f"{len(hypotheses)}: give one translation per source line")
    from nmt.inference.translator import Translator

    translator = Translator.load_ensemble(args.model, args.device, args.precision, None,
                                          args.backend)
    out = []
    for scored in translator.score(sources, hypotheses, args.batch_tokens):
        total = scored.log_prob / len(scored.pieces) if args.normalize else scored.log_prob
        line = f"{total:.6f}"
        if args.token_scores:
            line += "\t" + " ".join(f"{piece}={value:.6f}" for piece, value
                                    in zip(scored.pieces, scored.token_log_probs, strict=True))
        out.append(line)
    _write_lines(args.output, out)
    for cut in translator.truncated:
        sys.stderr.write(f"nmt score: line {cut.index + 1}: source cut to its first {cut.kept} "
                         f"of {cut.pieces} pieces (the model's data.max_len), as search cuts "
                         "it\n")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    _idle_threads_sleep()  # whatever the backend: the HTTP loop needs the cores too
    workers = _serve_threads(args.workers)
    options = _decoding_options(args)
    for flag in ("char_limit", "batch_limit", "body_limit", "req_limit"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be 0 (no limit) or more, got "
                              f"{getattr(args, flag)}")
    if args.queue_limit < 1 or args.timeout <= 0 or args.max_batch_wait < 0:
        raise ConfigError("--queue-limit must be at least 1, --timeout above 0 and "
                          "--max-batch-wait 0 or more")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    from nmt.serve.app import Limits
    from nmt.serve.server import check_port, load_models, read_api_keys, run

    check_port(args.host, args.port)
    limits = Limits(args.char_limit, args.batch_limit, args.body_limit, args.req_limit,
                    args.timeout, read_api_keys(args.api_keys) if args.api_keys else None,
                    args.file_limit)
    models = load_models(args.model, args.device, args.precision, args.quantize,
                         args.max_batch_wait / 1000, args.queue_limit, backend=args.backend,
                         decoding=options, glossary=args.glossary,
                         shortlist=args.shortlist, continuous=args.batching == "continuous",
                         workers=workers, workers_in=args.workers_in)
    return run(models, limits, args.host, args.port)


def _cmd_shortlist(args: argparse.Namespace) -> int:
    from nmt.data.shortlist import FREQUENT, PER_SOURCE
    from nmt.inference.evaluate import make_shortlist

    per_source = PER_SOURCE if args.per_source is None else args.per_source
    frequent = FREQUENT if args.frequent is None else args.frequent
    if per_source < 1 or frequent < 0:
        raise ConfigError("--per-source must be at least 1 and --frequent 0 or more")
    path, pairs = make_shortlist(args.model, per_source, frequent)
    print(f"wrote {path} ({per_source} target pieces per source piece, {frequent} frequent, "
          f"from {pairs:,} training pairs); translate with --shortlist")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    lines = _read_input(args.input, args.errors)
    from nmt.inference.translator import Translator

    vectors = Translator.load(args.model, args.device).encode_sentences(lines)
    import numpy as np

    from nmt.fileio import atomic_write

    with atomic_write(args.output, "wb") as handle:
        np.save(handle, vectors)
    if not args.quiet:
        sys.stderr.write(f"nmt encode: {vectors.shape[0]} vectors of size {vectors.shape[1]} "
                         f"written to {args.output}\n")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from nmt.models.weights import average_model_dir

    if (args.last is None) == (args.checkpoints is None):
        raise ConfigError("give either --last N or --checkpoints FILE ...")
    paths = average_model_dir(args.model, args.output, args.last, args.checkpoints)
    print(f"averaged {len(paths)} checkpoints ({paths[0].name} ... {paths[-1].name}) into "
          f"{args.output}")
    return 0


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
    from nmt.data.prepare import prepare_run_dir

    print(prepare_run_dir(config).summary())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    base = {"training": {"init_from": str(Path(args.init_from).resolve())}} \
        if args.init_from else None
    config = _load(args, base)
    if args.resume and args.config:
        from pathlib import Path

        from nmt.layout import RunDir

        run_dir = Path(args.config).resolve().parent
        if RunDir(run_dir).has_training_state() and run_dir != config.out.resolve():
            raise ConfigError(f"{args.config} lies in the run directory {run_dir} but its "
                              f"output_dir is {config.output_dir} (moved or copied?): add "
                              f"output_dir={run_dir} to resume it there")
    from nmt.training.trainer import train

    progress = train(config, resume=args.resume, quiet=args.quiet)
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if progress.validated:  # a validation set was scored: best_score is a BLEU
        best = f"best validation BLEU {progress.best_score:.2f} at update {progress.best_step}"
    else:
        best = (f"no validation set was scored, so no BLEU; the weights kept are those of update "
                f"{progress.best_step}, of lowest training loss {-progress.best_score:.3f}")
    print(f"trained {progress.step} updates ({progress.epoch} epochs, {progress.elapsed:.0f} s); "
          f"{best}; model directory: {config.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from nmt.scoring import evaluate_files, format_scores

    if args.model:
        _onnx_threads_sleep(args)
        if args.hyp or not (args.src or args.split) or (args.src and args.split):
            raise ConfigError("with -m give --src FILE and --ref FILE, or --split valid|test "
                              "(not --hyp)")
        if args.src and not args.ref:
            raise ConfigError("give --ref FILE with --src")
        if args.split and args.ref:
            raise ConfigError(f"--split {args.split} brings its own references: drop --ref")
        from nmt.inference.evaluate import evaluate_model

        result = evaluate_model(args.model, src=args.src, refs=args.ref, split=args.split,
                                hyp_out=args.hyp_out, decoding=_decoding_options(args),
                                device=args.device, precision=args.precision,
                                quantize=args.quantize, backend=args.backend,
                                tokenize=args.tokenize, lang=args.lang, glossary=args.glossary,
                                shortlist=args.shortlist)
        _report_truncations(result.truncated)
        _report_unplaced(result.unplaced)
        sys.stderr.write(f"nmt evaluate: hypotheses written to {result.hypotheses} (precision "
                         f"{result.precision}; settings in {result.meta.name})\n")
        scores = result.scores
    elif not args.hyp or not args.ref:
        raise ConfigError("give --hyp FILE and --ref FILE, or -m MODEL_DIR with --src/--ref or "
                          "--split to translate first")
    else:
        scores = evaluate_files(args.hyp, args.ref, tokenize=args.tokenize, lang=args.lang)
    print(format_scores(scores, as_json=args.json))
    return 1 if args.glossary_strict and args.model and result.unplaced else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmt`` console script."""
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # translate, encode and evaluate keep stderr for what concerns the user's lines
    setup_logging(getattr(args, "quiet", False)
                  or args.command in ("translate", "encode", "evaluate"))
    return run_reporting_errors(f"nmt {args.command}", lambda: args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
