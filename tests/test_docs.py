"""The README stays a front door: short, and every docs page reachable from it by a link that
resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    """Relative link targets of a Markdown page, without anchors."""
    return [target.split("#")[0] for target in LINK.findall(page.read_text(encoding="utf-8"))
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_the_readme_is_a_front_door_of_at_most_15000_characters():
    assert len((ROOT / "README.md").read_text(encoding="utf-8")) <= 15_000


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target).resolve() for target in links(ROOT / "README.md")}
    pages = {page.resolve() for page in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, sorted(p.name for p in pages - linked)


def test_every_relative_link_resolves():
    broken = [f"{page.relative_to(ROOT)} -> {target}"
              for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
              for target in links(page) if target and not (page.parent / target).exists()]
    assert broken == []
