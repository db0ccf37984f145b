"""The build files name only paths that exist and list each dependency once (a renamed
module left ``bridge/pipeline.py`` in a pyproject comment, and ``aiolimiter`` appeared twice)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_FILES = ("pyproject.toml", "Makefile", ".ci/run", ".ci/make-run", "Dockerfile")
PATH = re.compile(r"(?<![/\w.-])((?:bridge|tests|bench|deploy|docs)/[\w./-]*\w)")


def test_every_path_named_in_a_build_file_exists() -> None:
    missing = []
    for name in BUILD_FILES:
        file = ROOT / name
        if not file.exists():
            continue
        for path in PATH.findall(file.read_text(encoding="utf-8")):
            if "*" not in path and not (ROOT / path).exists():
                missing.append(f"{name}: {path}")
    assert not missing, missing


def test_no_dependency_is_listed_twice() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lists = [project["dependencies"], *project["optional-dependencies"].values()]
    for requirements in lists:
        names = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
