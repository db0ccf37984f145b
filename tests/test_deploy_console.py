"""The console in the deployment files: compose publishes it on this machine only with a
password secret; Kubernetes has a ClusterIP Service and no Ingress, and a password file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"


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
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BRIDGE_CONSOLE_PASSWORD_FILE"].endswith("/console-password")
    assert (
        "port-forward service/mintsoft-bridge-console" in (KUBERNETES / "console.yaml").read_text()
    )
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    assert "console-password" in secret["stringData"]
