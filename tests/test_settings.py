"""Settings from the environment, ``_FILE`` forms and flags; bad ones are one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.core.settings import SettingsError, load_settings, unknown_variables


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.amqp_urls == ("amqp://guest:guest@localhost:5672/",)
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.exchange == "mintsoft.orders"
    assert s.max_body_bytes == 10485760
    assert s.publish_timeout == 5
    assert s.spool_path == "./var/spool.sqlite3"
    assert s.spool_max_bytes == 1073741824
    assert s.log_format == "text"
    assert s.mintsoft_url == "https://api.mintsoft.co.uk"
    assert not s.allow_unauthenticated


def test_environment_file_forms_and_flags(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-old, k-new\n")
    env = {
        "BRIDGE_API_KEYS_FILE": str(keys),
        "BRIDGE_PORT": "9000",
        "BRIDGE_AMQP_URL": "amqp://a:b@h1:5672/,amqps://a:b@h2:5671/v",
    }
    s = load_settings(env, {"BRIDGE_PORT": "9100", "BRIDGE_HOST": None})
    assert s.api_keys == ("k-old", "k-new")
    assert s.port == 9100
    assert s.amqp_urls == ("amqp://a:b@h1:5672/", "amqps://a:b@h2:5671/v")


def test_secrets_do_not_show_in_repr() -> None:
    s = load_settings({"BRIDGE_API_KEYS": "supersecret", "BRIDGE_AUTH_HEADERS": "Basic zzz"})
    assert "supersecret" not in repr(s) and "zzz" not in repr(s)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BRIDGE_AMQP_URL": "http://broker"}, "BRIDGE_AMQP_URL"),
        ({"BRIDGE_AMQP_URL": "amqp://h:notaport/"}, "BRIDGE_AMQP_URL"),
        ({"BRIDGE_PORT": "70000"}, "BRIDGE_PORT"),
        ({"BRIDGE_PORT": "eighty"}, "BRIDGE_PORT"),
        ({"BRIDGE_PUBLISH_TIMEOUT": "0"}, "BRIDGE_PUBLISH_TIMEOUT"),
        ({"BRIDGE_LOG_FORMAT": "xml"}, "BRIDGE_LOG_FORMAT"),
        ({"BRIDGE_ALLOW_UNAUTHENTICATED": "maybe"}, "BRIDGE_ALLOW_UNAUTHENTICATED"),
        ({"BRIDGE_API_KEYS_FILE": "/nonexistent/keys"}, "BRIDGE_API_KEYS_FILE"),
        ({"BRIDGE_API_KEYS": "a", "BRIDGE_API_KEYS_FILE": "/x"}, "BRIDGE_API_KEYS"),
        ({"BRIDGE_PUBLIC_URL": "ftp://x"}, "BRIDGE_PUBLIC_URL"),
        ({"BRIDGE_PUBLIC_URL": "https://x:99999"}, "BRIDGE_PUBLIC_URL"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_broker_password_is_redacted_in_errors() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"BRIDGE_AMQP_URL": "amqp://user:hunter2@host:bad/"})
    assert "hunter2" not in str(error.value)


def test_unknown_variables_are_reported() -> None:
    assert unknown_variables({"BRIDGE_APIKEYS": "x", "BRIDGE_PORT": "1"}) == ["BRIDGE_APIKEYS"]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _main(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The command run in this process, as ``_run`` runs it in another, with only ``env``
    of the BRIDGE_* variables: its exit code (argparse's own exits included)."""
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(args)
    except SystemExit as exit:
        code = int(exit.code or 0)
    return code


def test_the_real_command_prints_one_line_and_exits_2() -> None:
    # The one check through a real process: the entry point, no traceback on stderr.
    result = _run("serve", env={"BRIDGE_AMQP_URL": "amqp//nope"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "BRIDGE_AMQP_URL" in lines[0]
    assert "Traceback" not in result.stderr
    assert _run("--help", env={}).stdout.startswith("usage: mintsoft-bridge")


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["serve"], {"BRIDGE_AMQP_URL": "amqp//nope"}, "BRIDGE_AMQP_URL"),
        (["serve"], {"BRIDGE_API_KEYS": "k", "BRIDGE_PORT": "0"}, "BRIDGE_PORT"),
        (["serve", "--port", "65536"], {"BRIDGE_API_KEYS": "k"}, "BRIDGE_PORT"),
        (["serve"], {}, "BRIDGE_API_KEYS"),
        (["serve", "--no-such-flag"], {}, "--no-such-flag"),
        (["dlq", "replay", "erp", "--limit", "0"], {}, "--limit"),
    ],
)
def test_a_bad_setting_or_flag_is_one_line_and_exit_2(
    args: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = _main(args, env, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert named in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["worker", "--help"],
        ["topology", "--help"],
        ["dlq", "list", "--help"],
        ["dlq", "replay", "--help"],
        ["spool", "status", "--help"],
        ["connect-actions", "--help"],
        ["simulate", "--help"],
        ["doctor", "--help"],
    ],
)
def test_every_command_has_help(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _main(args, {}, monkeypatch)
    assert code == 0, args
    assert "usage: mintsoft-bridge" in capsys.readouterr().out


def test_running_one_command_imports_no_other_command() -> None:
    # A fresh interpreter: this one has imported every command already.
    script = (
        "import sys\n"
        "from bridge.cli import main\n"
        "try:\n"
        "    main(['topology', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('bridge.cli.')), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr.strip() == "['bridge.cli.common', 'bridge.cli.topology']"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BRIDGE_PORT": "abc"}, "BRIDGE_PORT='abc' is not a whole number: use e.g. 8080"),
        ({"BRIDGE_PUBLIC_URL": "https://h.example:99999"}, "port '99999' is out of range"),
        ({"BRIDGE_MINTSOFT_URL": "https://h.example:x1"}, "port 'x1' is not a number"),
        ({"BRIDGE_PUBLIC_URL": "ftp://h.example"}, "is not an http(s) URL"),
    ],
)
def test_wording_of_bad_numbers_and_ports(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert expected in str(raised.value)
