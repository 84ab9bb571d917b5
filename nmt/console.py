"""What the ``nmt`` command and the recipe scripts share on a terminal: argument parsing with
one-line errors and ``KEY=VALUE`` overrides anywhere, logging to stderr, and the exit codes of a
user mistake (2), an interruption (130, or the code a stopped training run carries) and success.

Only the standard library is imported here: ``nmt --help`` starts without torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) pointing at --help; the recipes use it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def setup_logging(quiet: bool) -> None:
    """Log to stderr (warnings only when ``quiet``); the ``nmt`` loggers keep INFO for files."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_nmt_cli", False)]:
        root.removeHandler(old)  # main() called again in one process (the API, tests)
    handler = logging.StreamHandler(sys.stderr)
    handler._nmt_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    root.addHandler(handler)
    logging.getLogger("nmt").setLevel(logging.INFO)  # files such as train.log get INFO even if -q
    import os

    # per-step bars of datasets add nothing for corpora of this size; our own logs say what ran
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse with KEY=VALUE overrides allowed anywhere, also after flags.

    argparse gives a ``nargs="*"`` positional only its first run of values, so in
    ``--config run.yaml a=1 -q b=2`` it would reject ``b=2``; such leftovers join the overrides.
    """
    args, extras = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        moved = [x for x in extras if "=" in x and not x.startswith("-")]
        args.overrides = [*args.overrides, *moved]
        extras = [x for x in extras if x not in moved]
    if extras:
        _unrecognized(parser, args, extras)
    return args


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  extras: list[str]) -> None:
    """Refuse unknown arguments through the subcommand's parser, naming the closest flag."""
    import difflib

    sub = parser
    if getattr(args, "command", None):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub = action.choices[args.command]
    message = f"unrecognized arguments: {' '.join(extras)}"
    flags = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    unknown = next((x.split("=")[0] for x in extras if x.startswith("--")), None)
    close = difflib.get_close_matches(unknown, flags, n=1) if unknown else []
    if close:
        message += f"; did you mean {close[0]}?"
    sub.error(message)


def run_reporting_errors(prog: str, action: Callable[[], int]) -> int:
    """Run ``action`` and turn what a user can fix into one line on stderr and an exit code.

    :class:`nmt.errors.NMTError` prints ``PROG: error: MESSAGE`` and returns its ``exit_code``
    (2, or 130 / 143 for a training run stopped by a signal after its checkpoint was saved);
    Ctrl-C prints ``PROG: interrupted`` and returns 130.
    """
    from nmt.errors import NMTError

    try:
        return action()
    except NMTError as exc:
        code = getattr(exc, "exit_code", 2)
        if not getattr(exc, "quiet", False):  # quiet: another torchrun rank printed it
            sys.stderr.write(f"{prog}: {'error: ' if code == 2 else ''}{exc}\n")
        return code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
