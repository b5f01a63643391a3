"""deploy/kubernetes/: valid against the Kubernetes schemas (offline, with the
``kubernetes-validate`` package, which ships them; .ci/run installs it), the
ScaledObject against KEDA's CRD schema (vendored: tests/schemas/), and consistent
with what a node offers: its probes, its grace period, its queue's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskfan.keys import GROUP, QueueKeys
from taskfan.settings import Settings
from tests.cli_support import REPO

DEPLOY = REPO / "deploy" / "kubernetes"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json"
#: the oldest Kubernetes minor still common in managed clusters, and the newest known
VERSIONS = ("1.29.0", "1.33.0")


def documents() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} in {DEPLOY}"
    return found[0]


def worker_container() -> dict[str, Any]:
    pod = by_kind("Deployment", "taskfan-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["_pod"] = pod
    return container


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (.ci/run installs it)"
    )
    core = [d for d in documents() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in core} == {"Deployment", "Service"}
    for doc in core:
        validator.validate(doc, version, strict=True)  # raises on any error


def test_a_wrong_manifest_fails_validation() -> None:
    """The validator would catch a mistake (it is not a check that passes anything)."""
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (.ci/run installs it)"
    )
    wrong = by_kind("Deployment", "taskfan-worker")
    wrong["spec"]["template"]["spec"]["terminationGracePeriod"] = 75  # misspelt
    with pytest.raises(Exception, match="terminationGracePeriod"):
        validator.validate(wrong, VERSIONS[-1], strict=True)


def test_the_scaledobject_validates_against_kedas_schema() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (kubernetes-validate brings it)"
    )
    schema = json.loads(KEDA_SCHEMA.read_text())
    scaled = by_kind("ScaledObject", "taskfan-worker")
    jsonschema.validate(scaled, schema)
    unquoted = json.loads(json.dumps(scaled))
    unquoted["spec"]["triggers"][0]["metadata"]["threshold"] = 2000  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unquoted, schema)


def test_the_worker_stops_gracefully_and_is_probed_on_its_own_health(tmp_path: Path) -> None:
    container = worker_container()
    pod, variables = container["_pod"], env(container)
    secret = tmp_path / "secret"
    secret.write_text("s" * 32 + "\n")
    settings = Settings.from_env({**variables, "TASKFAN_SECRET_FILE": str(secret)})  # valid
    grace = float(variables["TASKFAN_GRACE_PERIOD"])
    assert settings.grace_period == grace and settings.metrics_port is not None
    # SIGTERM, then the node's grace period, then time to hand back and record.
    assert pod["terminationGracePeriodSeconds"] >= grace + 15
    port = int(variables["TASKFAN_METRICS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/readyz")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert container["resources"]["requests"]["cpu"] == variables["TASKFAN_PROCESSES"]
    assert "memory" in container["resources"]["limits"]
    # The signing secret comes from a Kubernetes Secret, mounted as TASKFAN_SECRET_FILE.
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "taskfan-secret"
    (item,) = volume["secret"]["items"]
    assert variables["TASKFAN_SECRET_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert "TASKFAN_SECRET" not in variables  # never a literal in the manifest
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_scaledobject_scales_the_worker_from_zero_on_its_queues_backlog() -> None:
    container = worker_container()
    variables = env(container)
    queue = QueueKeys(variables["TASKFAN_QUEUE"])
    scaled = by_kind("ScaledObject", "taskfan-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "taskfan-worker"
    assert scaled["minReplicaCount"] == 0
    triggers = {t["type"]: t["metadata"] for t in scaled["triggers"]}
    items = triggers["prometheus"]
    assert f'taskfan_queue_items_waiting{{queue="{queue.name}"}}' in items["query"]
    assert int(items["threshold"]) > 0 and items["ignoreNullValues"] == "true"
    wake = triggers["redis-streams"]
    assert wake["stream"] == queue.stream and wake["consumerGroup"] == GROUP
    assert wake["activationLagCount"] == "0" and "lagCount" in wake
    # Both point at the Redis the nodes use, and that Redis is a Service here.
    host_port = variables["TASKFAN_REDIS_URL"].split("//")[1].split("/")[0]
    assert wake["address"] == host_port
    service = by_kind("Service", host_port.split(":")[0])
    assert service["spec"]["ports"][0]["port"] == int(host_port.split(":")[1])
    redis_pod = by_kind("Deployment", "taskfan-redis")["spec"]["template"]
    assert service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
