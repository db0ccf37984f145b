"""The user documentation as tests read it: the README (the front page) and the pages of the
MkDocs site under docs/, so that a test about what the documentation says finds it wherever
it now lives, and a check of every page grows with the pages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README and every Markdown page of the site."""
    return [README, *sorted(DOCS.glob("**/*.md"))]


def page(name: str) -> str:
    """The text of ``docs/<name>``."""
    return (DOCS / name).read_text()


def section(text: str, heading: str) -> str:
    """The body of the section ``heading`` (a whole heading line, ``## Kubernetes``): up to the
    next heading of the same or a higher level (a ``#`` comment in a code block is none)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.split("\n")
    start = lines.index(heading) + 1
    fenced = False
    for end in range(start, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])
