"""The build files: they name only paths that exist and list each dependency once (a renamed
module left ``bridge/pipeline.py`` in a pyproject comment, and ``aiolimiter`` appeared twice);
``make test`` leaves the slow, browser and cluster tests out and installs no browser, while
CI runs everything (docs/testing.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

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


def _dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "-n", target],  # -n: print the commands, run none
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_runs_the_fast_tests_and_installs_no_browser() -> None:
    fast = _dry_run("test")
    assert "-m 'not slow and not browser and not cluster'" in fast
    assert "ensure-browser" not in fast and "--dist loadgroup" in fast
    everything = _dry_run("test-all")
    assert "-m 'not slow and not cluster'" in everything and "ensure-browser" in everything
    assert "-m 'slow and not cluster'" in everything  # the slow ones too, one at a time
    assert "-m cluster" in _dry_run("test-cluster")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line.startswith("make ")] == [
        "make test-all",
        "make test-cluster",
    ]
