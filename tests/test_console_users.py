"""Named console operators (``BRIDGE_CONSOLE_USERS_FILE``): the file's lines and both hash
forms, a wrong password, an unknown name and every bad line; the file's permissions; one
session per operator that remembers the name and shows it; ``console --hash-password``
reading the password from stdin, never the command line; and a bad file stopping the
console with one line naming file:line (exit 2)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bridge.console.users as users_module
from bridge.console.app import build_app
from bridge.console.auth import Sessions, check_password, hash_password
from bridge.console.users import Users, load_users, parse_users, user_line
from bridge.core.settings import SettingsError, load_settings
from tests.console_helpers import console_state, csrf_of, post_sign_in

ALICE_PASSWORD = "alice-sees-the-queues-1"
BOB_PASSWORD = "bob-replays-carefully-2"


def pbkdf2_hash(password: str, salt: bytes = b"pepper-and-salt!", iterations: int = 1000) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, 32)
    return f"pbkdf2:sha256:{iterations}:{salt.hex()}:{digest.hex()}"


def users_text() -> str:
    return (
        "# console operators\n"
        "\n"
        f"alice:{hash_password(ALICE_PASSWORD)}\n"
        f"  bob:{pbkdf2_hash(BOB_PASSWORD)}  \n"
    )


def test_both_hash_forms_sign_in_and_nothing_else_does() -> None:
    users = parse_users(users_text(), "users")
    assert users.names == ["alice", "bob"]
    assert users.check("alice", ALICE_PASSWORD)
    assert users.check("bob", BOB_PASSWORD)
    assert not users.check("alice", BOB_PASSWORD)  # another operator's password
    assert not users.check("bob", BOB_PASSWORD + " ")
    assert not users.check("carol", ALICE_PASSWORD)  # unknown name
    assert not users.check("", "")
    assert "scrypt" not in repr(users)


def test_an_unknown_name_costs_what_a_known_one_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost is the key derivation: an unknown name must run it over a real hash of the
    # file, as a known one does, so the answer's time does not tell who exists. Counted,
    # not timed (a loaded machine makes any timing ratio a coin toss).
    users = parse_users(f"alice:{hash_password(ALICE_PASSWORD)}\n", "users")
    derived: list[str] = []
    real = check_password

    def counting(hashed: str, password: str) -> bool:
        derived.append(hashed)
        return real(hashed, password)

    monkeypatch.setattr(users_module, "check_password", counting)
    assert not users.check("alice", "not-the-password")
    assert not users.check("mallory", "not-the-password")
    assert derived == [users.hashes["alice"]] * 2


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("alice", "is not NAME:HASH"),
        ("alice:", "is not NAME:HASH"),
        ("al ice:scrypt:16384:8:1:00:00", "the name is not usable"),
        (":" + hash_password("whatever-it-is"), "the name is not usable"),
        ("alice:correct-horse-battery", "a plain password is not accepted"),
        ("alice:scrypt:16384:8:1:zz:00", "the hash of alice is malformed"),
        ("alice:scrypt:1000:8:1:" + "00" * 16 + ":" + "00" * 32, "malformed"),  # N not 2^k
        ("alice:scrypt:1048576:8:1:" + "00" * 16 + ":" + "00" * 32, "malformed"),  # 1 GiB
        ("alice:pbkdf2:nosuch:1000:" + "00" * 16 + ":" + "00" * 32, "malformed"),
        ("alice:pbkdf2:sha256:1000:00:00", "malformed"),  # salt and digest too short
    ],
    ids=[
        "no-colon",
        "no-hash",
        "space-in-name",
        "no-name",
        "plain",
        "bad-hex",
        "n-not-power-of-two",
        "too-much-memory",
        "unknown-digest",
        "short-salt",
    ],
)
def test_a_bad_line_names_the_file_and_line_and_the_fix(line: str, says: str) -> None:
    text = f"# operators\nbob:{pbkdf2_hash(BOB_PASSWORD)}\n{line}\n"
    with pytest.raises(SettingsError) as bad:
        parse_users(text, "/etc/bridge/users")
    message = str(bad.value)
    assert message.startswith("BRIDGE_CONSOLE_USERS_FILE=/etc/bridge/users line 3")
    assert says in message and "--hash-password NAME" in message
    assert "\n" not in message
    secret = line.partition(":")[2]
    if secret:  # the line's hash or password is never repeated
        assert secret[:12] not in message


def test_a_name_twice_and_an_empty_file_are_refused() -> None:
    twice = f"bob:{pbkdf2_hash('one-password-here')}\nbob:{pbkdf2_hash(BOB_PASSWORD)}\n"
    with pytest.raises(SettingsError, match="line 2: bob is named twice"):
        parse_users(twice, "users")
    with pytest.raises(SettingsError, match="names no operator"):
        parse_users("# nobody yet\n", "users")


def test_the_file_must_not_be_readable_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(users_text())
    path.chmod(0o644)
    with pytest.raises(SettingsError) as open_to_all:
        load_users(str(path))
    assert "chmod 600" in str(open_to_all.value) and "644" in str(open_to_all.value)
    path.chmod(0o660)
    with pytest.raises(SettingsError, match="read or changed by other users"):
        load_users(str(path))
    path.chmod(0o640)
    assert load_users(str(path)).names == ["alice", "bob"]
    with pytest.raises(SettingsError, match="cannot be read"):
        load_users(str(tmp_path / "missing"))


def test_the_setting_is_read_like_the_others(tmp_path: Path) -> None:
    settings = load_settings({"BRIDGE_CONSOLE_USERS_FILE": str(tmp_path / "users")})
    assert settings.console_users_file == str(tmp_path / "users")
    assert load_settings({}).console_users_file is None


def test_a_made_line_signs_in_and_weak_passwords_are_refused() -> None:
    line = user_line("carol", "a-long-passphrase-of-hers")
    assert line.startswith("carol:scrypt:")
    assert parse_users(line, "users").check("carol", "a-long-passphrase-of-hers")
    for weak in ("short", "password1", "changeme"):
        with pytest.raises(SettingsError):
            user_line("carol", weak)
    with pytest.raises(SettingsError, match="not usable"):
        user_line("carol:admin", "a-long-passphrase-of-hers")


def test_each_operator_keeps_one_session_of_their_own() -> None:
    sessions = Sessions()
    alice_token, alice = sessions.new("alice")
    bob_token, _ = sessions.new("bob")
    assert sessions.get(alice_token) is alice and alice.user == "alice"
    again_token, _ = sessions.new("alice")  # alice signs in again elsewhere
    assert sessions.get(alice_token) is None
    assert sessions.get(again_token) is not None and sessions.get(bob_token) is not None
    shared_token, _ = sessions.new()  # the shared password: one session for everyone
    assert sessions.get(bob_token) is None and sessions.get(shared_token) is not None


async def _sign_in(client: TestClient[Any, Any], name: str, password: str) -> Any:
    form = await (await client.get("/login")).text()
    assert 'id="name"' in form
    return await post_sign_in(client, form, password, name=name)


async def test_signing_in_by_name_remembers_and_shows_who(exchange: str) -> None:
    state = console_state(exchange, [])
    state.users = parse_users(users_text(), "users")
    async with TestClient(TestServer(build_app(state))) as client:
        wrong = await _sign_in(client, "alice", BOB_PASSWORD)
        assert wrong.status == 401 and "Wrong name or password." in await wrong.text()
        unknown = await _sign_in(client, "mallory", ALICE_PASSWORD)
        assert unknown.status == 401
        shared = await _sign_in(client, "alice", state.password)  # the shared one: no
        assert shared.status == 401
        right = await _sign_in(client, "bob", BOB_PASSWORD)
        assert right.status == 303
        page = await (await client.get("/replay")).text()
        assert 'id="signed-in-as"' in page and "<b>bob</b>" in page
        assert csrf_of(page)
        assert [s.user for s in state.sessions._by_token.values()] == ["bob"]


async def test_with_the_shared_password_no_name_is_asked(exchange: str) -> None:
    async with TestClient(TestServer(build_app(console_state(exchange, [])))) as client:
        form = await (await client.get("/login")).text()
        assert 'id="name"' not in form and 'id="password"' in form


def _cli(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
    )


def test_hash_password_reads_stdin_and_prints_a_line_the_console_accepts(tmp_path: Path) -> None:
    made = _cli("console", "--hash-password", "dana", stdin="dana-has-a-long-one\n")
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("dana:scrypt:") and "dana-has-a-long-one" not in line
    assert parse_users(line, "users").check("dana", "dana-has-a-long-one")
    weak = _cli("console", "--hash-password", "dana", stdin="short\n")
    assert weak.returncode == 2 and weak.stdout == ""
    assert weak.stderr.count("\n") == 1 and "longer passphrase" in weak.stderr


def test_a_bad_users_file_stops_the_console_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{hash_password(ALICE_PASSWORD)}\nbob:hunter22\n")
    path.chmod(0o600)
    bad = _cli("console", BRIDGE_CONSOLE_USERS_FILE=str(path), BRIDGE_CONSOLE_PORT="1")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert f"BRIDGE_CONSOLE_USERS_FILE={path} line 2" in bad.stderr
    assert "--hash-password NAME" in bad.stderr and "hunter22" not in bad.stderr
    path.chmod(0o604)
    readable = _cli("console", BRIDGE_CONSOLE_USERS_FILE=str(path), BRIDGE_CONSOLE_PORT="1")
    assert readable.returncode == 2 and "chmod 600" in readable.stderr


def test_users_file_hashes_are_never_shown(tmp_path: Path) -> None:
    users = Users("users", {"alice": hash_password(ALICE_PASSWORD)})
    assert "scrypt" not in repr(users) and "scrypt" not in str(users)
