"""The deployment files: each one valid for the tool that reads it, and in step with the code
(metric names, topology, subscribers). No Docker engine or cluster is needed."""

from __future__ import annotations

import asyncio
import configparser
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from bridge.cli import main
from tests.conftest import AMQP_URL
from tests.support.metric_names import PREFIX, exported_families, exported_series

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30"
SUBSCRIBERS_EXAMPLE = DEPLOY / "subscribers.example.toml"

# Series a query may name besides the bridge's own: RabbitMQ's Prometheus plugin, and the
# `up` series Prometheus itself records for every scrape target.
FOREIGN_PREFIXES = ("rabbitmq_",)
PROMETHEUS_SERIES = {"up"}


# --- docker ----------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_secrets_health_and_the_demo_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.10-management")
    bridge, worker = services["bridge"], services["worker"]
    assert bridge["command"] == ["serve"]
    assert any(name.endswith("_FILE") for name in bridge["environment"])
    for name, path in {**bridge["environment"], **worker["environment"]}.items():
        if name.endswith("_FILE"):
            secret = Path(path).name
            assert secret in compose["secrets"], f"{name} names an undeclared secret"
            assert (ROOT / compose["secrets"][secret]["file"]).is_file()
    assert any(v.endswith(":/var/lib/mintsoft-bridge") for v in bridge["volumes"])
    for service in ("bridge", "worker"):
        dependencies = services[service]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in dependencies.values())
        assert all("healthcheck" in services[d] for d in dependencies)
    assert worker["command"][:3] == ["worker", "--config", "/etc/mintsoft-bridge/subscribers.toml"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    example = (ROOT / mounted["/etc/mintsoft-bridge/subscribers.toml"]).resolve()
    assert example == SUBSCRIBERS_EXAMPLE
    handlers = [s.get("handler") for s in tomllib.loads(example.read_text())["subscriber"]]
    assert "bridge.examples.log_events:log_event" in handlers


def _dockerfile_stages() -> list[list[str]]:
    """Instructions of each stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append(line)
    return stages


def test_dockerfile_runs_slim_as_a_non_root_user_with_a_healthcheck() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "build in one stage, run in another"
    final = stages[-1]
    assert final[0].split()[1].startswith("python:3.11-slim")
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in {"root", "0"}
    healthchecks = [line for line in final if line.upper().startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert any(
        line.upper().startswith("VOLUME") and "/var/lib/mintsoft-bridge" in line for line in final
    )
    final_text = "\n".join(final)
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final_text, f"{tool} in the final image"
    assert "COPY --from=" in final_text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"
    assert "!bridge/" in lines and "!pyproject.toml" in lines
    # Every file let into the context exists (a missing LICENSE would leave the wheel without it).
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    assert all((ROOT / name).exists() for name in allowed), allowed
    copied = re.search(r"^COPY pyproject\.toml (.*) \./$", (ROOT / "Dockerfile").read_text(), re.M)
    assert copied is not None and "LICENSE" in copied.group(1).split()


# --- kubernetes ------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def _validate_kubernetes(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


MANIFESTS = _manifests()


@pytest.mark.parametrize(
    "document",
    [d for _, d in MANIFESTS if d["kind"] != "RabbitmqCluster"],
    ids=[f"{n}:{d['kind']}" for n, d in MANIFESTS if d["kind"] != "RabbitmqCluster"],
)
def test_kubernetes_manifest_is_valid(document: dict[str, Any]) -> None:
    _validate_kubernetes(document)


def test_kubernetes_validation_rejects_a_misspelt_field() -> None:
    statefulset = next(d for _, d in MANIFESTS if d["kind"] == "StatefulSet")
    broken = copy.deepcopy(statefulset)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_kubernetes(broken)


def test_rabbitmq_cluster_has_three_nodes_and_a_valid_spec() -> None:
    cluster = next(d for _, d in MANIFESTS if d["kind"] == "RabbitmqCluster")
    schema = json.loads((SCHEMAS / "rabbitmqcluster-v1beta1.json").read_text())
    jsonschema.validate(cluster, schema)
    assert cluster["spec"]["replicas"] == 3
    # The pod-level parts are core types: check them as a StatefulSet's pod would carry them.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {
            "containers": [
                {"name": "rabbitmq", "image": "x", "resources": cluster["spec"]["resources"]}
            ],
            "affinity": cluster["spec"]["affinity"],
        },
    }
    _validate_kubernetes(pod)
    broken = copy.deepcopy(cluster)
    broken["spec"]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def _by_kind(kind: str) -> dict[str, Any]:
    return next(d for _, d in MANIFESTS if d["kind"] == kind)


def test_the_bridge_statefulset_is_probed_hardened_and_keeps_its_spool() -> None:
    statefulset = _by_kind("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
    assert pod["securityContext"]["runAsUser"] != 0
    env = {e["name"]: e["value"] for e in container["env"]}
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    spool_mount = next(m for m in container["volumeMounts"] if m["name"] == claim)
    assert env["BRIDGE_SPOOL_PATH"].startswith(spool_mount["mountPath"] + "/")
    secret_mounts = {
        m["mountPath"]
        for m in container["volumeMounts"]
        if any(v["name"] == m["name"] and "secret" in v for v in pod["volumes"])
    }
    secrets = [v for k, v in env.items() if k.endswith("_FILE")]
    assert secrets and all(str(Path(s).parent) in secret_mounts for s in secrets)
    assert not any(k in env for k in ("BRIDGE_API_KEYS", "BRIDGE_AUTH_HEADERS", "BRIDGE_AMQP_URL"))
    assert _by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    selector = _by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()


def test_worker_configmap_carries_the_example_subscribers() -> None:
    configmap = next(
        d for _, d in MANIFESTS if d["kind"] == "ConfigMap" and "subscribers.toml" in d["data"]
    )
    assert configmap["data"]["subscribers.toml"] == SUBSCRIBERS_EXAMPLE.read_text()
    worker = next(d for _, d in MANIFESTS if d["metadata"]["name"] == "mintsoft-bridge-worker")[
        "spec"
    ]["template"]["spec"]
    assert any(
        v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
        for v in worker["volumes"]
    )


SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"


def _pods() -> list[tuple[str, dict[str, Any]]]:
    """(file, pod spec) of every workload."""
    return [
        (name, d["spec"]["template"]["spec"])
        for name, d in MANIFESTS
        if d["kind"] in {"Deployment", "StatefulSet"}
    ]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _secret_keys_read(secret: str) -> dict[str, set[str]]:
    """Per manifest file, the keys of Secret ``secret`` its pods read: a ``_FILE`` setting
    pointing into the Secret's mount, or a ``secretKeyRef``."""
    read: dict[str, set[str]] = {}
    for name, pod in _pods():
        volumes = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("secret", {}).get("secretName") == secret
        }
        for container in pod["containers"]:
            mounts = [
                m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in volumes
            ]
            for value in _env(container).values():
                if isinstance(value, str):
                    keys = [value[len(m) + 1 :] for m in mounts if value.startswith(m + "/")]
                elif (
                    isinstance(value, dict) and value.get("secretKeyRef", {}).get("name") == secret
                ):
                    keys = [value["secretKeyRef"]["key"]]
                else:
                    keys = []
                read.setdefault(name, set()).update(keys)
    return read


def _secret_example_keys() -> tuple[set[str], set[str]]:
    """The keys of the example Secret, and those its `kubectl create secret` commands make."""
    text = SECRET_EXAMPLE.read_text()
    document = yaml.safe_load(text)
    created = set(re.findall(r"--from-literal=([\w.-]+)=", text))
    return set(document["stringData"]), created


def _missing(read: dict[str, set[str]], present: set[str]) -> list[str]:
    return sorted(f"{name}: {key}" for name, keys in read.items() for key in keys - present)


def test_every_secret_key_a_manifest_reads_is_in_the_secret_and_its_commands() -> None:
    read = _secret_keys_read("mintsoft-bridge")
    assert "mintsoft-api-key" in read["sync.yaml"]
    in_example, created = _secret_example_keys()
    assert not _missing(read, in_example), "secret.example.yaml lacks keys"
    # The commands the docs say to run: a key they do not create stops that pod (exit 2).
    assert not _missing(read, created), "secret.example.yaml's commands do not create keys"
    assert _missing(read, created - {"mintsoft-api-key"}) == ["sync.yaml: mintsoft-api-key"]


def test_settings_come_from_configmaps_that_exist() -> None:
    configmaps = {
        d["metadata"]["name"]: d["data"] for _, d in MANIFESTS if d["kind"] == "ConfigMap"
    }
    referenced = 0
    for name, pod in _pods():
        for container in pod["containers"]:
            env = _env(container)
            # The URL Mintsoft calls differs per installation: never hard-coded in a manifest.
            assert not isinstance(env.get("BRIDGE_PUBLIC_URL", {}), str), name
            for value in env.values():
                ref = value.get("configMapKeyRef") if isinstance(value, dict) else None
                if ref:
                    referenced += 1
                    assert ref["key"] in configmaps.get(ref["name"], {}), (name, ref)
    assert referenced >= 1
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert "settings.yaml" in kustomization["resources"]


def test_sync_registers_the_credentials_the_receiver_accepts() -> None:
    def credential_files(file: str) -> set[str]:
        [(_, pod)] = [(n, p) for n, p in _pods() if n == file]
        env = _env(pod["containers"][0])
        return {k for k in env if k in {"BRIDGE_API_KEYS_FILE", "BRIDGE_AUTH_HEADERS_FILE"}}

    receiver = credential_files("bridge-statefulset.yaml")
    assert receiver == {"BRIDGE_API_KEYS_FILE", "BRIDGE_AUTH_HEADERS_FILE"}
    assert credential_files("sync.yaml") == receiver


# --- rabbitmq definitions ---------------------------------------------------------------


def _generated_definitions(capsys: pytest.CaptureFixture[str]) -> str:
    args = ["topology", "--definitions", "--exchange", "mintsoft.orders"]
    code = main([*args, "--config", str(SUBSCRIBERS_EXAMPLE)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_definitions_file_is_what_topology_generates(capsys: pytest.CaptureFixture[str]) -> None:
    generated = _generated_definitions(capsys)
    assert (DEPLOY / "rabbitmq" / "definitions.json").read_text() == generated, (
        "deploy/rabbitmq/definitions.json is stale: run `make definitions`"
    )
    names = {q["name"] for q in json.loads(generated)["queues"]}
    assert {"mintsoft.orders.unrouted", "mintsoft.orders.invalid", "log-events.dlq"} <= names
    [archive] = [q for q in json.loads(generated)["queues"] if q["name"].endswith(".archive")]
    assert archive["arguments"] == {
        "x-queue-type": "stream",
        "x-max-age": "30D",
        "x-max-length-bytes": 50_000_000_000,
    }


def _rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


def _import_definitions(document: dict[str, Any]) -> None:
    # rabbitmqctl reads the file as the rabbitmq user: not from pytest's private tmp.
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp") as file:
        json.dump(document, file)
        file.flush()
        Path(file.name).chmod(0o644)
        _rabbitmqctl("import_definitions", file.name)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not installed")
async def test_definitions_import_into_rabbitmq_as_topology_declares_them() -> None:
    """Imported into a fresh vhost, the definitions give exactly the exchanges and queues
    (same arguments) that ``topology`` declares: a redeclare with them is accepted."""
    from urllib.parse import quote

    import aiormq

    from bridge.amqp.definitions import definitions
    from bridge.amqp.topology import ArchiveRetention, declare, receiver_topology
    from bridge.worker.subscribers import load_subscribers

    vhost = f"bridge-definitions-{uuid.uuid4().hex[:8]}"
    topology = receiver_topology("mintsoft.orders", ArchiveRetention())
    for sub in load_subscribers(str(SUBSCRIBERS_EXAMPLE)):
        topology = topology + sub.topology("mintsoft.orders")
    assert len(topology.queues) > 2
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        _import_definitions(definitions(topology, vhost=vhost))
        base = AMQP_URL.rsplit("/", 1)[0]
        connection = await aiormq.connect(f"{base}/{quote(vhost, safe='')}")
        try:
            channel = await connection.channel()
            for _ in range(50):  # the import finishes asynchronously
                try:
                    for queue in topology.queues:
                        await channel.queue_declare(queue.name, passive=True)
                    break
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()
                    await asyncio.sleep(0.1)
            # A declaration whose arguments differ from the imported ones would fail here.
            await declare(channel, topology)
        finally:
            await connection.close()
        listed = _rabbitmqctl("list_queues", "-p", vhost, "name", "type")
        for queue in topology.queues:
            kind = queue.arguments.get("x-queue-type", "classic")
            assert f"{queue.name}\t{kind}" in listed, listed
    finally:
        _rabbitmqctl("delete_vhost", vhost)


# --- grafana and prometheus --------------------------------------------------------------


def _series_named(expr: str) -> set[str]:
    # Grafana's own variables are not PromQL: give them values the parser accepts.
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next(
                (m.value for m in node.matchers.matchers if m.name == "__name__"), None
            )
            assert name is not None, f"a selector without a metric name in {expr!r}"
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "")


def _assert_only_exported(names: set[str], where: str) -> None:
    exported = exported_series()
    unknown = {
        n
        for n in names
        if n not in exported and n not in PROMETHEUS_SERIES and not n.startswith(FOREIGN_PREFIXES)
    }
    assert not unknown, f"{where} names metrics the code does not export: {sorted(unknown)}"


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "mintsoft-bridge.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and "label_values(" in query["query"]:
            queries.append(re.sub(r"label_values\((\w+),.*\)", r"\1", query["query"]))
    return queries


def test_dashboard_queries_name_only_exported_metrics() -> None:
    queries = _dashboard_queries()
    assert len(queries) > 10
    names = set().union(*(_series_named(q) for q in queries))
    _assert_only_exported(names, "deploy/grafana/mintsoft-bridge.json")
    assert any(n.startswith(PREFIX) for n in names)


def test_dashboard_shows_every_exported_metric() -> None:
    names = set().union(*(_series_named(q) for q in _dashboard_queries()))
    shown = {n.removesuffix(suffix) for n in names for suffix in _SUFFIXES if n.endswith(suffix)}
    missing = sorted(set(exported_families()) - shown)
    assert not missing, f"no panel of deploy/grafana/mintsoft-bridge.json shows {missing}"


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_name_only_exported_metrics() -> None:
    rules = _alert_rules()
    names: set[str] = set()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        names |= _series_named(rule["expr"])
    _assert_only_exported(names, "deploy/prometheus/alerts.yml")
    # The alerts the README promises.
    assert {"bridge_spool_depth", "bridge_forwarder_circuit_open", "bridge_broker_connected"} <= (
        names
    )
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["MintsoftBridgeSpoolNotDraining"]["for"] == "5m"
    assert ".dlq" in by_name["MintsoftBridgeDeadLetters"]["expr"]


def test_prometheus_example_scrapes_the_jobs_the_alerts_expect() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    pattern = re.search(r'job=~"([^"]+)"', _rule("MintsoftBridgeReceiverDown")["expr"])
    assert pattern is not None
    assert {j for j in jobs if re.fullmatch(pattern.group(1), j)} == {
        "mintsoft-bridge",
        "mintsoft-bridge-worker",
        "mintsoft-bridge-sync",
        "mintsoft-bridge-ledger",
    }
    assert "rabbitmq" in jobs


def _rule(name: str) -> dict[str, Any]:
    return next(rule for rule in _alert_rules() if rule["alert"] == name)


def test_metric_name_check_can_fail() -> None:
    with pytest.raises(AssertionError, match="bridge_no_such_metric"):
        _assert_only_exported(_series_named("rate(bridge_no_such_metric[5m])"), "a query")


# --- systemd -----------------------------------------------------------------------------

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_parses(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    assert service["ExecStart"].startswith("/opt/mintsoft-bridge/bin/mintsoft-bridge ")
    assert service["DynamicUser"] == "yes" and service["NoNewPrivileges"] == "yes"
    assert "LoadCredential" in service and "%d/" in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # verify checks that ExecStart exists: point it at a real program, keep the rest.
    copy_path = tmp_path / unit.name.replace("@.", "@test.")
    copy_path.write_text(text.replace("/opt/mintsoft-bridge/bin/mintsoft-bridge", sys.executable))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- ports and shutdown (issue 12, points 11 and 14) --------------------------------------


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_receiver_metrics_have_their_own_port_in_every_deployment() -> None:
    statefulset = _by_kind("StatefulSet")
    pod = statefulset["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["BRIDGE_PORT"]) == ports["http"]
    assert int(env["BRIDGE_METRICS_PORT"]) == ports["metrics"] != ports["http"]
    assert env["BRIDGE_METRICS_HOST"] == "0.0.0.0"  # Prometheus scrapes the pod's address
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    # The metrics listener outlives the webhook port during the shutdown drain.
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    services = [d for _, d in MANIFESTS if d["kind"] == "Service"]
    public = next(s for s in services if s["metadata"]["name"] == "mintsoft-bridge")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["bridge"]
    compose_port = compose["environment"]["BRIDGE_METRICS_PORT"]
    assert f"127.0.0.1:{compose_port}:{compose_port}" in compose["ports"]
    systemd = _env_file(DEPLOY / "systemd" / "bridge.env.example")
    assert systemd["BRIDGE_METRICS_HOST"] == "127.0.0.1"
    assert systemd["BRIDGE_METRICS_PORT"] == compose_port != systemd["BRIDGE_PORT"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "mintsoft-bridge")
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{compose_port}"]


def _unit_environment(text: str) -> dict[str, str]:
    """The unit's own ``Environment=NAME=value`` lines (configparser keeps only the last)."""
    return dict(re.findall(r"^Environment=(\w+)=(\S*)$", text, re.MULTILINE))


def _expand(word: str, env: dict[str, str]) -> str:
    """systemd's ``${NAME}`` in an ExecStart word."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)


def _metrics_ports_on_one_host() -> dict[str, int]:
    """The metrics port of every process the systemd examples run on one host: the
    receiver, sync, the ledger, and a worker per instance (the first without an instance
    file, one more per worker-*.env.example). The console serves no metrics."""
    systemd = DEPLOY / "systemd"
    shared = _env_file(systemd / "bridge.env.example")
    instances: dict[str, dict[str, str]] = {"first": {}} | {
        path.name.removesuffix(".env.example"): _env_file(path)
        for path in sorted(systemd.glob("worker-*.env.example"))
    }
    ports: dict[str, int] = {}
    for unit in UNITS:
        text = unit.read_text()
        [exec_start] = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
        if " console " in f"{exec_start} ":
            continue  # the console serves no /metrics (it reads BRIDGE_CONSOLE_PORT only)
        for instance, own in instances.items() if "@" in unit.name else [("", {})]:
            env = _unit_environment(text) | shared | own  # later EnvironmentFile= lines win
            flag = re.search(r"--metrics-port (\S+)", exec_start)
            port = env["BRIDGE_METRICS_PORT"] if flag is None else _expand(flag.group(1), env)
            ports[f"{unit.name} {instance}".strip()] = int(port)
    return ports


def test_no_two_processes_on_one_host_share_a_metrics_port() -> None:
    ports = _metrics_ports_on_one_host()
    assert len(ports) >= 4, ports  # receiver, sync, two workers
    by_port: dict[int, list[str]] = {}
    for process, port in ports.items():
        by_port.setdefault(port, []).append(process)
    assert all(len(processes) == 1 for processes in by_port.values()), by_port
    # The scrape configuration reaches the receiver, the first worker and sync where they are.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets["mintsoft-bridge"] == [f"127.0.0.1:{ports['mintsoft-bridge.service']}"]
    assert (
        f"127.0.0.1:{ports['mintsoft-bridge-worker@.service first']}"
        in (targets["mintsoft-bridge-worker"])
    )
    assert targets["mintsoft-bridge-sync"] == [f"127.0.0.1:{ports['mintsoft-bridge-sync.service']}"]


def test_stop_timeouts_cover_the_shutdown_drain() -> None:
    from bridge.receiving.serve import LAST_SCRAPE_WAIT, SHUTDOWN_DRAIN, SHUTDOWN_GRACE

    needed = SHUTDOWN_GRACE + SHUTDOWN_DRAIN + LAST_SCRAPE_WAIT
    pod = _by_kind("StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > needed
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["bridge"]
    assert int(compose["stop_grace_period"].removesuffix("s")) > needed
    unit = (DEPLOY / "systemd" / "mintsoft-bridge.service").read_text()
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert stop is not None and int(stop.group(1)) > needed


def test_an_alert_fires_when_a_receiver_is_gone_with_a_spool() -> None:
    expr = _rule("MintsoftBridgeSpoolStranded")["expr"]
    tree = promql_parser.parse(expr)
    assert isinstance(tree, promql_parser.BinaryExpr) and str(tree.op) == "unless"
    assert _series_named(str(tree.lhs)) == {"bridge_spool_depth"}
    assert "_over_time(" in str(tree.lhs)  # remembers the depth after the receiver is gone
    assert _series_named(str(tree.rhs)) == {"up"}
