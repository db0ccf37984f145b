"""The console in the deployment files: compose publishes it on this machine only with a
password secret; Kubernetes has a ClusterIP Service and no Ingress, and a password file. Each
deployment (compose, Kubernetes, systemd) can pass the named operators' users file
(``BRIDGE_CONSOLE_USERS_FILE``) with a mode the console accepts, and says how to make it."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.console.users import load_users, user_line
from bridge.core.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
CONSOLE_UNIT = ROOT / "deploy" / "systemd" / "mintsoft-bridge-console.service"
IMAGE_UID = 10001
"""The Dockerfile's USER (checked below)."""


def _documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def test_compose_runs_the_console_on_loopback_with_a_password_secret() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    console = compose["services"]["console"]
    assert console["command"][:1] == ["console"]
    assert console["ports"] == ["127.0.0.1:8090:8090"]
    secret = Path(console["environment"]["BRIDGE_CONSOLE_PASSWORD_FILE"]).name
    assert (ROOT / compose["secrets"][secret]["file"]).read_text().strip()
    assert "BRIDGE_CONSOLE_PASSWORD" not in console["environment"]
    # Never on the receiver's listener.
    assert (
        console["environment"]["BRIDGE_CONSOLE_PORT"]
        != compose["services"]["bridge"]["environment"]["BRIDGE_PORT"]
    )


def test_kubernetes_console_has_a_cluster_ip_service_and_no_ingress() -> None:
    documents = _documents()
    assert not [d for d in documents if d["kind"] == "Ingress"]
    service = next(
        d
        for d in documents
        if d["metadata"]["name"] == "mintsoft-bridge-console" and d["kind"] == "Service"
    )
    assert service["spec"]["type"] == "ClusterIP"
    deployment = next(
        d
        for d in documents
        if d["metadata"]["name"] == "mintsoft-bridge-console" and d["kind"] == "Deployment"
    )
    assert deployment["spec"]["replicas"] == 1  # sessions live in one process's memory
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BRIDGE_CONSOLE_PASSWORD_FILE"].endswith("/console-password")
    assert (
        "port-forward service/mintsoft-bridge-console" in (KUBERNETES / "console.yaml").read_text()
    )
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    assert "console-password" in secret["stringData"]


def _accepted(tmp_path: Path, mode: int, text: str | None = None) -> bool:
    """Whether the console accepts a users file of ``mode`` (its own check, on a real file)."""
    path = tmp_path / f"users-{mode:o}"
    line = user_line("alice", "alice-has-a-long-passphrase")
    path.write_text((text or "") + line + "\n")
    path.chmod(mode)
    try:
        load_users(str(path))
    except SettingsError:
        return False
    return True


def test_the_console_refuses_a_users_file_other_users_can_read(tmp_path: Path) -> None:
    # What every deployment below must avoid; the check each one is held to.
    assert _accepted(tmp_path, 0o600) and _accepted(tmp_path, 0o400)
    assert _accepted(tmp_path, 0o440)  # a group of the console's own (Kubernetes' fsGroup)
    assert not _accepted(tmp_path, 0o644) and not _accepted(tmp_path, 0o604)
    assert not _accepted(tmp_path, 0o660)


def _compose_mode(value: Any) -> int:
    """A compose ``mode``: YAML 1.2 reads ``0o400`` as a number, PyYAML as text."""
    return value if isinstance(value, int) else int(str(value), 8)


def test_compose_mounts_the_users_file_as_a_secret_readable_by_the_image_user_alone(
    tmp_path: Path,
) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    console = compose["services"]["console"]
    # Off by default (the shared password signs in); the variable turns it on.
    assert console["environment"]["BRIDGE_CONSOLE_USERS_FILE"] == "${BRIDGE_CONSOLE_USERS_FILE:-}"
    [mount] = [s for s in console["secrets"] if isinstance(s, dict)]
    assert mount["source"] == "bridge_console_users"
    assert (mount["uid"], mount["gid"]) == (str(IMAGE_UID), str(IMAGE_UID))
    assert _compose_mode(mount["mode"]) == 0o400
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in (ROOT / "Dockerfile").read_text()
    # Compose bind-mounts the host file with its own owner and mode: the comment makes them
    # the image user's alone, and starts the console with the path the secret is mounted at.
    source = compose["secrets"][mount["source"]]["file"]
    comment = " ".join(text.split())
    assert f"sudo chown {IMAGE_UID}:{IMAGE_UID} {source.removeprefix('./')}" in comment
    assert f"sudo chmod 600 {source.removeprefix('./')}" in comment
    assert f"BRIDGE_CONSOLE_USERS_FILE=/run/secrets/{mount['source']} docker compose" in comment
    assert "--hash-password NAME" in comment
    # The file in the checkout names no operator yet (comments only: the console would say
    # so), and takes the lines `--hash-password` prints once its mode is 0600.
    example = (ROOT / source).read_text()
    assert all(not line or line.startswith("#") for line in example.splitlines())
    assert _accepted(tmp_path, 0o600, example)


def _console_pod() -> dict[str, Any]:
    deployment = next(
        d
        for d in _documents()
        if d["metadata"]["name"] == "mintsoft-bridge-console" and d["kind"] == "Deployment"
    )
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_kubernetes_mounts_the_users_secret_readable_by_the_console_alone(tmp_path: Path) -> None:
    pod = _console_pod()
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["BRIDGE_CONSOLE_USERS_FILE"]["valueFrom"]["configMapKeyRef"]
    settings = next(
        d for d in _documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"]
    )
    assert settings["data"][ref["key"]] == ""  # off until the Secret exists
    [volume] = [v for v in pod["volumes"] if v["name"] == "console-users"]
    secret = volume["secret"]
    assert secret["secretName"] == "mintsoft-bridge-console-users" and secret["optional"] is True
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "console-users"]
    assert mount["readOnly"] is True
    # The kubelet makes secret files 0440 of group fsGroup (mode | 0440, read-only volume):
    # readable by user 10001 through that group, by no one else.
    mode = secret["defaultMode"]
    assert mode & 0o077 == 0, oct(mode)
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert _accepted(tmp_path, mode | 0o440)
    # What the manifest's comment says to create and set is what is mounted and read.
    text = " ".join((KUBERNETES / "console.yaml").read_text().replace("\\\n", " ").split())
    key = re.search(
        r"create secret generic mintsoft-bridge-console-users # --from-file=(\w+)=", text
    )
    assert key is not None, "console.yaml does not say how to create the Secret"
    assert f"{mount['mountPath']}/{key.group(1)}" in text
    assert "--hash-password NAME" in text


def test_every_pod_reading_a_secret_as_non_root_owns_it_through_its_group() -> None:
    # A 0440 / 0400 secret file is root's unless fsGroup is set: user 10001 could not read it.
    for document in _documents():
        if document["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = document["spec"]["template"]["spec"]
        modes = [v["secret"].get("defaultMode", 0o644) for v in pod["volumes"] if "secret" in v]
        if pod["securityContext"].get("runAsUser") and any(not m & stat.S_IROTH for m in modes):
            assert pod["securityContext"].get("fsGroup"), document["metadata"]["name"]


def _unit_lines(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", CONSOLE_UNIT.read_text(), re.MULTILINE)


def test_systemd_passes_the_users_file_as_a_credential_from_a_private_directory() -> None:
    credentials = dict(line.split(":", 1) for line in _unit_lines("LoadCredential"))
    source = credentials["console-users"]
    assert source.startswith("/etc/mintsoft-bridge/credentials/")
    assert "BRIDGE_CONSOLE_USERS_FILE=%d/console-users" in _unit_lines("Environment")
    # The comment makes the directory private and the file 0600 before filling it.
    comment = CONSOLE_UNIT.read_text()
    assert f"install -d -m 0700 {Path(source).parent}" in comment
    assert f"install -m 0600 /dev/null {source}" in comment
    assert f"console --hash-password alice >> {source}" in comment


@pytest.mark.parametrize("page", ["console.md", "operations.md"])
def test_the_docs_show_how_to_make_and_deploy_the_users_file(page: str) -> None:
    text = (ROOT / "docs" / page).read_text()
    assert "console --hash-password" in text
    for where in ("docker-compose.yml", "console.yaml", "mintsoft-bridge-console.service"):
        assert where in text, f"docs/{page} does not point at {where}"
