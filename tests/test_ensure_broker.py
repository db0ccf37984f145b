""".ci/ensure-broker's decisions on a machine without RabbitMQ, with stand-ins: ``apt-get``,
``sudo``, ``id`` and ``rabbitmq-server`` are recording stubs first on PATH (and /usr/sbin,
where the real server lives, is not on it), and the port checked is a closed one. Nothing
is installed, and the shared broker is never touched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.rabbit_node import free_port

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "ensure-broker"

APT_GET = """#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >> "$STUB_LOG"
case "$*" in *install*)
  printf '#!/bin/sh\\necho "rabbitmq-server $*" >> "$STUB_LOG"\\n' > "$STUB_DIR/rabbitmq-server"
  chmod +x "$STUB_DIR/rabbitmq-server";;
esac
"""
SUDO = """#!/bin/sh
[ "$1" = -n ] && shift
[ "$SUDO_OK" = 1 ] || exit 1
echo "sudo $*" >> "$STUB_LOG"
exec "$@"
"""
ID_USER = """#!/bin/sh
echo 1000
"""


def _run(tmp_path: Path, *, root: bool, sudo_ok: bool) -> tuple[int, str, list[str]]:
    if any(Path(d, "rabbitmq-server").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("a real rabbitmq-server is on the stubs' PATH: it could be started")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in (("apt-get", APT_GET), ("sudo", SUDO)):
        (stubs / name).write_text(text)
    if not root:
        (stubs / "id").write_text(ID_USER)
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_DIR": str(stubs),
        "SUDO_OK": "1" if sudo_ok else "0",
        "BROKER_PORT": str(free_port()),  # closed: the shared broker is not looked at
        "BROKER_START_WAIT": "1",
    }
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stderr, log.read_text().splitlines()


@pytest.mark.parametrize(("root", "sudo_ok"), [(True, False), (False, True)])
def test_without_rabbitmq_it_installs_with_apt_get_and_starts_it(
    tmp_path: Path, root: bool, sudo_ok: bool
) -> None:
    code, err, calls = _run(tmp_path, root=root, sudo_ok=sudo_ok)
    apt = [c for c in calls if c.startswith("apt-get")]
    assert apt == [
        "apt-get update -q DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y -q --no-install-recommends rabbitmq-server "
        "DEBIAN_FRONTEND=noninteractive",
    ], calls
    assert "rabbitmq-server -detached" in calls
    if not root:
        assert any(c.startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get") for c in calls)
        assert "sudo rabbitmq-server -detached" in calls
    assert "installing rabbitmq-server" in err
    # The stub starts nothing, so the script gives up after its (shortened) wait, saying so.
    assert code == 1 and "did not start" in err


def test_without_root_or_passwordless_sudo_it_only_says_how(tmp_path: Path) -> None:
    code, err, calls = _run(tmp_path, root=False, sudo_ok=False)
    assert code == 1
    assert calls == []
    assert err.count("\n") == 1 and "apt-get install rabbitmq-server" in err
