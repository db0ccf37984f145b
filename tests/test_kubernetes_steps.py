"""The documented Kubernetes steps (docs/operations.md) and the files' comments give one order
(the RabbitMQ cluster, then the Secret from its default user, then ``kubectl apply -k``) and
one tool (kubectl, with its built-in kustomize)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.support.docs import page, section

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"


def _readme_steps() -> list[str]:
    kubernetes = section(page("operations.md"), "## Kubernetes")
    [block] = re.findall(r"```sh\n(.*?)```", kubernetes, re.S)
    return [line.strip() for line in block.splitlines() if line.strip()]


def _first(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no step matches {pattern!r}: {lines}")


def test_one_order_cluster_then_secret_then_apply_k() -> None:
    steps = _readme_steps()
    cluster = _first(steps, r"apply -f deploy/kubernetes/rabbitmq-cluster\.yaml")
    secret = _first(steps, r"Secret|secret\.example\.yaml")
    apply_k = _first(steps, r"kubectl apply -k deploy/kubernetes")
    assert cluster < secret < apply_k
    assert apply_k == max(i for i, s in enumerate(steps) if not s.startswith("#"))
    kustomization = (KUBERNETES / "kustomization.yaml").read_text()
    assert "Secret" in kustomization and "rabbitmq-cluster.yaml" in kustomization
    secret_example = (KUBERNETES / "secret.example.yaml").read_text()
    assert "before `kubectl apply -k`" in secret_example


def test_one_tool_kubectl() -> None:
    comments = [
        line for line in (KUBERNETES / "kustomization.yaml").read_text().splitlines() if "#" in line
    ]
    for text in ["\n".join(_readme_steps()), "\n".join(comments)]:
        for line in text.splitlines():
            # `kustomize` only as kubectl's own subcommand (kubectl kustomize / apply -k).
            for match in re.finditer(r"\bkustomize\b", line):
                before = line[: match.start()].rstrip()
                assert before.endswith("kubectl") or "kubectl's" in before, line
    images = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["images"]
    assert images == [{"name": "mintsoft-bridge", "newName": "mintsoft-bridge", "newTag": "0.1.0"}]
