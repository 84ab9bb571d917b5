"""Write the generated reference pages: ``docs/config.md`` (every config key, from the
dataclasses' field metadata in :mod:`nmt.config`) and ``docs/cli.md`` (every command's
``--help``, from the parser in :mod:`nmt.cli` and the recipes' parser).

A test fails when either page differs from what this script writes, so a new key or flag
cannot land without its reference:

    python scripts/docs_reference.py --write     # rewrite both pages
    python scripts/docs_reference.py --check     # exit 1 when a page is stale
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Help is wrapped at this width, whatever the terminal, so the pages do not depend on it.
WIDTH = 100
COMMAND = "python scripts/docs_reference.py --write"


def config_page() -> str:
    """docs/config.md: a table of every config key, its default and its meaning."""
    from nmt.config import describe

    lines = ["# Config reference", "",
             f"Generated from the field metadata of `nmt/config.py` by `{COMMAND}`; a test fails",
             "when this page is stale. A run's YAML file has the sections below; a key it leaves",
             "out keeps its default, and `KEY=VALUE` on the command line (`model.hidden_size=512`)",
             "overrides the file. An unknown key, a value of the wrong type or out of range is",
             "refused with the key named (the command-line decoding flags are checked by the same",
             "rules).", "",
             "| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in describe():
        lines.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_page() -> str:
    """docs/cli.md: ``nmt --help``, each subcommand's ``--help`` and a recipe's ``--help``."""
    from nmt.cli import build_parser
    from nmt.pipeline.recipe import Recipe
    from nmt.pipeline.recipe import build_parser as recipe_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["# Command-line reference", "",
             f"Generated from the parsers in `nmt/cli.py` and `nmt/pipeline/recipe.py` by "
             f"`{COMMAND}`;", "a test fails when this page is stale.", "",
             "## nmt", "", "```text", _help(parser), "```"]
    for name, command in sub.choices.items():
        parts += ["", f"## nmt {name}", "", "```text", _help(command), "```"]
    example = Recipe(name="NAME", description="A recipe.", config_file=Path("NAME.yaml"))
    parts += ["", "## recipe scripts", "",
              "Every `recipes/NAME.py` takes these (a recipe may add flags of its own):", "",
              "```text", _help(recipe_parser(example)), "```"]
    return "\n".join(parts) + "\n"


PAGES = {"config.md": config_page, "cli.md": cli_page}


def stale() -> list[str]:
    """The pages whose text differs from what would be written."""
    return [name for name, make in PAGES.items()
            if not (DOCS / name).is_file()
            or (DOCS / name).read_text(encoding="utf-8") != make()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the pages")
    group.add_argument("--check", action="store_true", help="exit 1 when a page is stale")
    args = parser.parse_args()
    if args.check:
        names = stale()
        for name in names:
            print(f"docs/{name} is stale: run {COMMAND}")
        return 1 if names else 0
    if args.write:
        for name, make in PAGES.items():
            (DOCS / name).write_text(make(), encoding="utf-8")
            print(f"wrote docs/{name}")
        return 0
    for make in PAGES.values():
        print(make())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
