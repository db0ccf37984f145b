"""The command line as users meet it: each command's --help offers its own options first and
only the settings it reads, secrets are never flags, and every command line the README and the
docs/ pages show parses (so the documentation cannot drift from the CLI)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex

import pytest

from bridge.cli import build_parser, main
from bridge.cli.common import shown_default
from bridge.core.settings import SPECS, Settings, flag_name
from tests.support.docs import README, page, pages

SECRETS = [name for name, spec in SPECS.items() if spec.secret]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaf(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (sub)command that ``words`` start with, and the rest of the words."""
    parser: argparse.ArgumentParser = build_parser()
    rest = list(words)
    while rest and rest[0] in _subparsers(parser):
        parser = _subparsers(parser)[rest.pop(0)]
    return parser, rest


def _help(*words: str) -> str:
    parser, _ = _leaf(list(words))
    return parser.format_help()


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["serve", "--api-keys", "k-9f2"], "BRIDGE_API_KEYS"),
        (["serve", "--amqp-url", "amqp://u:pw-9f2@h/"], "BRIDGE_AMQP_URL"),
        (["dlq", "list", "erp", "--amqp-url=amqp://u:pw-9f2@h/"], "BRIDGE_AMQP_URL"),
        (["worker", "--config", "x.toml", "--auth-headers", "Basic pw-9f2"], "BRIDGE_AUTH_HEADERS"),
        (["connect-actions", "1", "--mintsoft-password", "pw-9f2"], "BRIDGE_MINTSOFT_PASSWORD"),
        (["doctor", "--bridge-mintsoft-api-key", "pw-9f2"], "BRIDGE_MINTSOFT_API_KEY"),
        (["spool", "status", "--api-keys"], "BRIDGE_API_KEYS"),
    ],
)
def test_a_secret_flag_is_refused_in_one_line_naming_the_variable(
    argv: list[str], variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{variable} or {variable}_FILE" in err
    assert "pw-9f2" not in err and "unrecognized" not in err


def test_no_help_offers_a_secret_flag() -> None:
    commands = [["serve"], ["worker"], ["topology"], ["dlq", "list"], ["dlq", "replay"]]
    commands += [["spool", "status"], ["connect-actions"], ["simulate"], ["doctor"]]
    for words in commands:
        text = _help(*words)
        for variable in SECRETS:
            assert flag_name(variable) + " " not in text, (words, variable)


@pytest.mark.parametrize(
    ("words", "own", "offered", "not_offered"),
    [
        (["dlq", "list"], "--limit", [], ["--port", "--exchange", "--mintsoft-url"]),
        (["spool", "status"], "--json", ["--spool-path"], ["--port", "--exchange"]),
        (["serve"], None, ["--port", "--spool-path"], ["--public-url", "--mintsoft-username"]),
        (["worker"], "--metrics-port", ["--exchange"], ["--spool-path", "--mintsoft-url"]),
        (["simulate"], "--count", ["--public-url"], ["--spool-path", "--mintsoft-url"]),
        (["connect-actions"], "--dry-run", ["--mintsoft-url"], ["--spool-path", "--port"]),
    ],
)
def test_help_shows_own_options_first_and_only_the_settings_read(
    words: list[str], own: str | None, offered: list[str], not_offered: list[str]
) -> None:
    text = _help(*words)
    for flag in offered:
        assert flag + " " in text, flag
    for flag in not_offered:
        assert flag + " " not in text, flag
    if own is not None:
        settings_at = text.find("settings this command reads")
        assert 0 < text.index(own + " ") < (settings_at if settings_at > 0 else len(text))


# --- the documentation's command lines (README.md and docs/*.md) ------------------------

_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "&"}


def _program_at(line: str) -> str | None:
    """The command line from the ``mintsoft-bridge`` program on (``/opt/.../mintsoft-bridge``
    too), or None: ``kubectl -n mintsoft-bridge ...`` names a namespace, not the program."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, word in enumerate(words):
        program = word.rsplit("/", 1)[-1] == "mintsoft-bridge" and i + 1 < len(words)
        if program and (i == 0 or words[i - 1] not in {"-n", "--namespace"}):
            return shlex.join(["mintsoft-bridge", *words[i + 1 :]])
    return None


def _command_lines(text: str) -> list[str]:
    """Every ``mintsoft-bridge ...`` command in a fenced block or an inline code span."""
    candidates: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        candidates += [line for line in block.splitlines() if not line.strip().startswith("#")]
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    candidates += re.findall(r"`([^`\n]+)`", without_blocks)
    lines = [_program_at(c) for c in candidates if "mintsoft-bridge" in c]
    return [line for line in lines if line is not None]


def _argv(line: str) -> list[str]:
    words = shlex.split(line)[1:]
    for i, word in enumerate(words):
        if word in _SHELL_STOP:
            return words[:i]
    return words


def _lines_by_page() -> dict[str, list[str]]:
    return {path.name: _command_lines(path.read_text()) for path in pages()}


def test_the_documentation_shows_command_lines() -> None:
    by_page = _lines_by_page()
    lines = [line for page_lines in by_page.values() for line in page_lines]
    assert len(lines) >= 40, lines
    assert len(by_page["README.md"]) >= 6, by_page["README.md"]
    assert any(line.startswith("mintsoft-bridge dlq replay erp --limit") for line in lines)
    assert sum(1 for page_lines in by_page.values() if page_lines) >= 10


def test_every_command_line_in_the_documentation_parses() -> None:
    failures = []
    for name, lines in _lines_by_page().items():
        for line in lines:
            try:
                build_parser().parse_args(_argv(line))
            except SystemExit as exited:  # --help exits 0
                if exited.code != 0:
                    failures.append(f"{name}: {line}")
    assert not failures, f"documented command lines the CLI refuses: {failures}"


def _flag_spans(text: str) -> list[list[str]]:
    """Inline spans naming a command and flags (``simulate EVENT --count 500``), with the
    Commands table's rows as one list each (a row's later spans are its command's flags)."""
    commands = set(_subparsers(build_parser()))
    spans: list[list[str]] = []
    paragraphs = re.sub(r"```.*?```", "", text, flags=re.S).split("\n\n")
    rows = [line for p in paragraphs for line in p.splitlines() if line.startswith("| `")]
    for line in rows + [p.replace("\n", " ") for p in paragraphs]:
        found = re.findall(r"`([^`]+)`", line)
        if line.startswith("| `") and found and found[0].split()[0] in commands:
            spans.append(found)
            continue
        for span in found:
            words = span.split()
            if words[0] == "mintsoft-bridge":
                words = words[1:]
            if words and words[0] in commands and "--" in span:
                spans.append([" ".join(words)])
    return spans


def test_every_flag_named_next_to_a_command_in_the_documentation_exists() -> None:
    groups = [(path.name, spans) for path in pages() for spans in _flag_spans(path.read_text())]
    assert len(groups) >= 20
    missing = []
    for name, spans in groups:
        words = [w for w in spans[0].split() if not w.startswith("-")]
        parser, _ = _leaf(words)
        options = set(parser._option_string_actions)
        for child in _subparsers(parser).values():  # `dlq list NAME / dlq replay NAME`
            options |= set(child._option_string_actions)
        for span in spans:
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", span):
                if flag not in options:
                    missing.append(f"{name}: {spans[0]}: {flag}")
    assert not missing, missing


def test_the_documentation_check_can_fail() -> None:
    assert _argv("mintsoft-bridge dlq list erp --no-such-flag | head") == [
        "dlq",
        "list",
        "erp",
        "--no-such-flag",
    ]
    with pytest.raises(SystemExit):
        build_parser().parse_args(_argv("mintsoft-bridge dlq list erp --no-such-flag"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(_argv("mintsoft-bridge no-such-command"))


# The settings of the contract (docs: contract.md, section 2), including those other parts
# add: a command may list one before its part lands (settings_flags skips it until then).
CONTRACT_SETTINGS = {
    "BRIDGE_AMQP_URL", "BRIDGE_HOST", "BRIDGE_PORT", "BRIDGE_API_KEYS", "BRIDGE_AUTH_HEADERS",
    "BRIDGE_ALLOW_UNAUTHENTICATED", "BRIDGE_EXCHANGE", "BRIDGE_MAX_BODY_BYTES",
    "BRIDGE_PUBLISH_TIMEOUT", "BRIDGE_SPOOL_PATH", "BRIDGE_SPOOL_MAX_BYTES", "BRIDGE_LOG_FORMAT",
    "BRIDGE_MINTSOFT_URL", "BRIDGE_MINTSOFT_API_KEY", "BRIDGE_MINTSOFT_USERNAME",
    "BRIDGE_MINTSOFT_PASSWORD", "BRIDGE_PUBLIC_URL", "BRIDGE_METRICS_HOST", "BRIDGE_METRICS_PORT",
    "BRIDGE_ARCHIVE", "BRIDGE_ARCHIVE_MAX_AGE", "BRIDGE_ARCHIVE_MAX_BYTES",
    "BRIDGE_SYNC_STATE_PATH", "BRIDGE_SYNC_INTERVAL", "BRIDGE_SYNC_GRACE", "BRIDGE_SYNC_RECONCILE",
    "BRIDGE_SYNC_CLIENT_IDS", "BRIDGE_SYNC_WAREHOUSE_IDS", "BRIDGE_MINTSOFT_RATE",
    "BRIDGE_MINTSOFT_TIMEZONE", "BRIDGE_CONSOLE_HOST", "BRIDGE_CONSOLE_PORT",
    "BRIDGE_CONSOLE_PASSWORD", "BRIDGE_CONSOLE_USERS_FILE", "BRIDGE_LEDGER_URL",
}  # fmt: skip
NOT_IN_CONTRACT = {
    # Issue 22 (console hardening; docs/security.md): to be added to contract section 2.
    "BRIDGE_CONSOLE_SECURE_COOKIES", "BRIDGE_CONSOLE_TRUSTED_PROXIES",
    "BRIDGE_CONSOLE_ALLOWED_HOSTS", "BRIDGE_CONSOLE_ALLOW_PLACEHOLDER_PASSWORD",
}  # fmt: skip
CONTRACT_SETTINGS |= NOT_IN_CONTRACT


def _settings_reference() -> dict[str, tuple[str, str]]:
    """docs/configuration.md's table: per variable, its default as written and its meaning
    (a row may hold two, ``A`` / ``B`` with ``a`` / ``b``)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in page("configuration.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`BRIDGE_"):
            continue
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        defaults = [value.strip().strip("`") for value in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1].strip("`")] * len(names)
        for name, default in zip(names, defaults, strict=True):
            rows[name] = (default, cells[2])
    return rows


def _documented_default_is_the_default(variable: str, written: str) -> bool:
    """Whether the default the reference writes is what the setting is when unset: parsed
    as the setting is, compared with :class:`Settings`' own default."""
    default = {f.name: f.default for f in dataclasses.fields(Settings)}[SPECS[variable].attr]
    if written in {"none", "unset"}:
        return default in (None, ())
    return bool(SPECS[variable].parse(variable, written) == default)


def test_every_setting_is_a_setting_of_the_contract_and_in_the_settings_reference() -> None:
    import bridge.cli as cli

    assert set(SPECS) <= CONTRACT_SETTINGS
    for command in cli.command_modules():
        reads = getattr(command, "READS", None)
        if reads is None:
            continue
        unknown = [name for name in reads if name not in CONTRACT_SETTINGS]
        assert not unknown, (command.__name__, unknown)
    # Every setting the code reads is in docs/configuration.md with its true default and a
    # meaning (the contract's section 2 lacks the console hardening ones: the page is where
    # operators find them), and every flag's --help says its default.
    reference = _settings_reference()
    assert not sorted(set(SPECS) - set(reference)), "settings missing from the reference"
    for variable, (written, meaning) in reference.items():
        assert variable in SPECS, f"the reference lists {variable}, which nothing reads"
        assert meaning and _documented_default_is_the_default(variable, written), variable
    # What the contract does not list yet, the README names (with its default) too.
    readme = " ".join(README.read_text().split())
    for variable in NOT_IN_CONTRACT:
        written = shown_default(variable)
        assert f"`{variable}` (default {written if written == 'none' else f'`{written}`'}" in readme
    help_text = " ".join(_help("console").split())
    for variable in SPECS:
        if variable.startswith("BRIDGE_CONSOLE_") and not SPECS[variable].secret:
            assert f"[{variable}; default: {shown_default(variable)}]" in help_text, variable


def test_the_settings_reference_check_can_fail() -> None:
    assert not _documented_default_is_the_default("BRIDGE_CONSOLE_PORT", "8080")
    assert not _documented_default_is_the_default("BRIDGE_CONSOLE_SECURE_COOKIES", "true")
    assert _documented_default_is_the_default("BRIDGE_SYNC_GRACE", "15m")


@pytest.mark.parametrize("command", ["console", "sync"])
def test_a_command_that_reads_the_ledger_says_so_in_its_help(command: str) -> None:
    assert "BRIDGE_LEDGER_URL" in _help(command)


@pytest.mark.parametrize(
    "events",
    [
        ["--event", "despatched", "cancelled"],  # contract section 7: --event E ...
        ["--event", "despatched", "--event", "cancelled"],
        ["--event", "despatched,cancelled"],
        ["--event", "despatched", "--event", "cancelled,despatched"],
    ],
)
def test_archive_event_takes_several_values_repeats_and_commas(events: list[str]) -> None:
    from bridge.cli.archive import _query

    argv = ["archive", "replay", "--since", "2h", *events, "--to", "erp"]
    query = _query(build_parser().parse_args(argv))
    assert query.events == ("despatched", "cancelled")


def test_archive_event_refuses_an_unknown_event_among_several() -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["archive", "find", "--event", "despatched", "shipped"])
    assert exited.value.code == 2


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every (sub)command's words: ("serve",), ("spool", "status"), ..."""
    found = []
    for name, sub in _subparsers(parser).items():
        inner = _commands(sub, (*words, name))
        found += inner or [(*words, name)]
    return found


@pytest.mark.parametrize("words", _commands(build_parser()), ids=" ".join)
def test_an_unknown_flag_names_the_help_of_its_own_command(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--no-such-flag-9f2"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(("mintsoft-bridge", *words))
    assert err.count("\n") == 1 and f"see {command} --help" in err, err


def test_console_port_points_at_its_own_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["console", "--port", "8091"])
    err = capsys.readouterr().err
    assert "did you mean --console-port?" in err and "see mintsoft-bridge console --help" in err
    assert "--console-port" in _help("console")
