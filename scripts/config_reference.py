"""Print (or, with --write, update in README.md) the config reference table from nmt.config.

Every key's default and help text live in the dataclasses' field metadata; this keeps the
README's table in step with them (a test fails when they drift).

    python scripts/config_reference.py --write
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.config import describe

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def table() -> str:
    """The reference as a Markdown table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in describe():
        lines.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    if not args.write:
        print(table())
        return 0
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
