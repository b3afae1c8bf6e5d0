"""The docs stay reference-sized and their links resolve (docs/architecture.md, "The layers")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_pages_are_reference_sized():
    assert len(PAGES) > 5
    assert len((ROOT / "README.md").read_text(encoding="utf-8").split()) <= 1200
    long = {p.name: n for p in PAGES[1:] if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
