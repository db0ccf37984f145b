"""The plain-host install docs/operations.md and the systemd unit describe: the wheel built
from the checkout installs into a fresh virtual environment and runs, and both units read one shared
settings file (plus an optional per-instance one for workers), with examples that parse."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.core.settings import SPECS, load_settings
from tests.support.docs import page, section

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
RECEIVER = SYSTEMD / "mintsoft-bridge.service"
WORKER = SYSTEMD / "mintsoft-bridge-worker@.service"


def _environment_files(unit: Path) -> list[str]:
    # EnvironmentFile= appears several times (configparser would keep one): read lines.
    files = []
    for line in unit.read_text().splitlines():
        if line.startswith("EnvironmentFile="):
            files.append(line.split("=", 1)[1])
    return files


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_both_units_read_one_shared_settings_file_and_workers_an_optional_own_one() -> None:
    shared = "/etc/mintsoft-bridge/bridge.env"
    assert _environment_files(RECEIVER) == [shared]
    assert _environment_files(WORKER) == [shared, "-/etc/mintsoft-bridge/worker-%i.env"]


def test_every_settings_file_a_unit_reads_has_an_example_that_parses() -> None:
    examples = {
        "/etc/mintsoft-bridge/bridge.env": SYSTEMD / "bridge.env.example",
        "-/etc/mintsoft-bridge/worker-%i.env": SYSTEMD / "worker-erp.env.example",
    }
    for unit in (RECEIVER, WORKER):
        for name in _environment_files(unit):
            assert examples[name].exists(), name
    shared = _env_file(examples["/etc/mintsoft-bridge/bridge.env"])
    instance = _env_file(examples["-/etc/mintsoft-bridge/worker-%i.env"])
    assert "BRIDGE_EXCHANGE" in shared
    assert set(instance) <= {"METRICS_PORT"} | set(SPECS), instance
    for values in (shared, {**shared, **instance}):
        unknown = [k for k in values if k.startswith("BRIDGE_") and k not in SPECS]
        assert not unknown
        load_settings({k: v for k, v in values.items() if k.startswith("BRIDGE_")})
    # The unit's ExecStart uses what the per-instance file sets.
    assert "${METRICS_PORT}" in WORKER.read_text()


def _install_steps() -> list[str]:
    """The unit comment's commands that build and install the wheel."""
    steps = []
    for line in RECEIVER.read_text().splitlines():
        command = line.removeprefix("#").strip()
        if re.match(
            r"(python3 -m pip wheel|python3 -m venv|/opt/mintsoft-bridge/bin/pip)", command
        ):
            steps.append(command)
    return steps


def test_the_install_steps_need_no_package_index_entry() -> None:
    steps = _install_steps()
    assert len(steps) == 3, steps
    assert not any(re.search(r"pip install mintsoft-bridge\b", step) for step in steps)
    text = " ".join(section(page("operations.md"), "## A plain Linux host: systemd").split())
    for step in steps:
        assert step in text, f"docs/operations.md lacks the unit's install step {step!r}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_unit_install_steps_build_a_wheel_that_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    """About 30 s: the wheel build fetches setuptools into an isolated build environment and
    the install resolves the dependencies, both from pip's cache."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    prefix = tmp_path / "opt" / "mintsoft-bridge"
    for step in _install_steps():
        command = step.replace("/opt/mintsoft-bridge", str(prefix))
        argv = shlex.split(command)
        if argv[0] == "python3":
            argv[0] = sys.executable
        # The shell would expand the wheel's glob.
        argv = [str(next(checkout.glob(a))) if "*" in a else a for a in argv]
        result = subprocess.run(
            argv, cwd=checkout, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    run = subprocess.run(
        [str(prefix / "bin" / "mintsoft-bridge"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "usage: mintsoft-bridge" in run.stdout and "serve" in run.stdout
    # The code that ran is the wheel's, not this checkout's.
    where = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import bridge; print(bridge.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(prefix))
