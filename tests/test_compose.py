"""docker-compose.yml, proven without Docker: each service's command runs as a
local process with the file's environment, the hostname ``redis`` pointed at a
local redis-server started with the redis service's own command line."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from examples.tasks import collatz_steps
from taskfan.server import RedisServer
from tests.cli_support import REPO, clean_environ, outcomes
from tests.helpers import free_port, wait_until

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
WORKDIR = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE, re.M)[-1]


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}``, from this environment."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def local(command: list[str]) -> list[str]:
    """The container's command line, run here: ``taskfan`` is this venv's."""
    assert command[0] == "taskfan"
    return [sys.executable, "-m", "taskfan", *command[1:]]


def local_env(service: str, port: int) -> dict[str, str]:
    """The service's environment, with ``redis:6379`` and the image's WORKDIR made local."""
    env = clean_environ()
    for name, value in (SERVICES[service].get("environment") or {}).items():
        value = str(value).replace("//redis:6379", f"//127.0.0.1:{port}")
        env[name] = value.replace(WORKDIR, str(REPO))
    return env


def test_the_file_has_what_a_cluster_needs() -> None:
    redis_service = SERVICES["redis"]
    assert redis_service["image"].startswith("redis:7")
    assert "--appendonly" in redis_service["command"]
    assert redis_service["command"][redis_service["command"].index("--appendonly") + 1] == "yes"
    assert redis_service["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert "/data" in redis_service["volumes"][0]
    worker = SERVICES["worker"]
    assert worker["build"] == "."
    assert worker["command"] == ["taskfan", "worker"]
    assert "replicas" not in worker and "container_name" not in worker  # --scale works
    assert seconds(worker["stop_grace_period"]) >= 30  # batches take seconds
    # graceful stop: SIGTERM, and Docker's patience outlasts the node's grace period
    assert worker["stop_signal"] == "SIGTERM"
    grace = float(worker["environment"]["TASKFAN_GRACE_PERIOD"])
    assert seconds(worker["stop_grace_period"]) >= grace + 10
    health = worker["healthcheck"]
    assert health["test"][:3] == ["CMD", "python", "-c"] and "/readyz" in health["test"][3]
    assert seconds(health["timeout"]) < seconds(health["interval"])
    for name in ("worker", "producer"):
        assert SERVICES[name]["environment"]["TASKFAN_REDIS_URL"] == "redis://redis:6379/0"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--wait" in SERVICES["producer"]["command"]
    assert DOCKERFILE.startswith("#") and "FROM python:3.11-slim" in DOCKERFILE
    assert "RUN pip install ." in DOCKERFILE and "COPY examples" in DOCKERFILE
    # nothing published: whoever reaches this Redis runs code in the workers
    assert all("ports" not in service for service in SERVICES.values())


def test_publishing_redis_on_the_host_requires_a_shared_secret() -> None:
    """docker-compose.host.yml: Redis on the host's loopback, every node signed-only."""
    host: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.host.yml").read_text())
    services = host["services"]
    host_port = interpolate(services["redis"]["ports"][0])
    assert host_port.startswith("127.0.0.1:") and host_port.endswith(":6379")
    assert set(services) == {"redis", "worker", "producer"}  # no other service, no other door
    for name in ("worker", "producer"):
        secret = services[name]["environment"]["TASKFAN_SECRET"]
        # ${VAR:?message}: compose refuses to start without it
        assert re.fullmatch(r"\$\{TASKFAN_SECRET:\?[^}]+\}", secret), secret


@pytest.fixture
def redis_service() -> Iterator[RedisServer]:
    """redis-server with the redis service's arguments (on a free local port)."""
    command = SERVICES["redis"]["command"]
    assert command[0] == "redis-server"
    with RedisServer(extra_args=command[1:]) as server:
        yield server


def healthy(env: dict[str, str]) -> bool:
    """The worker service's healthcheck command, run here with the worker's environment."""
    test = SERVICES["worker"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    done = subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True,
                          timeout=30)  # fmt: skip
    return done.returncode == 0


class Service:
    """One container of a service, as a local process logging to ``log``."""

    def __init__(self, name: str, port: int, log: Path, **env: str) -> None:
        self.log = log
        self.env = {**local_env(name, port), **env}
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                local(SERVICES[name]["command"]), cwd=REPO, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()


def test_the_services_commands_work_end_to_end(redis_service: RedisServer, tmp_path: Path) -> None:
    port = redis_service.port
    nobody = {**local_env("worker", port), "TASKFAN_METRICS_PORT": str(free_port())}
    assert not healthy(nobody)  # the healthcheck fails where no node answers
    with redis.Redis(port=port) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    check = SERVICES["redis"]["healthcheck"]["test"][1:]
    health = subprocess.run(
        [*check[:1], "-p", str(port), *check[1:]], capture_output=True, text=True, timeout=10
    )
    assert health.stdout.strip() == "PONG"

    workers = [  # docker compose up --scale worker=2 (a metrics port each: no containers here)
        Service("worker", port, tmp_path / f"worker-{i}.log", TASKFAN_METRICS_PORT=str(free_port()))
        for i in range(2)
    ]
    try:
        for worker in workers:  # the worker's healthcheck, run as Docker runs it
            wait_until(functools.partial(healthy, worker.env), timeout=30, message=worker.output)
        producer = subprocess.run(
            local(SERVICES["producer"]["command"]), cwd=REPO, env=local_env("producer", port),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert producer.returncode == 0, producer.stderr
        numbers = [int(line) for line in (REPO / "examples/inputs.jsonl").read_text().split()]
        assert outcomes(producer.stdout) == [
            {"index": i, "ok": True, "result": collatz_steps(n)} for i, n in enumerate(numbers)
        ]
        with redis.Redis(port=port) as client:
            wait_until(lambda: client.zcard("taskfan:nodes") == 2, message="both nodes' heartbeats")
        grace = seconds(SERVICES["worker"]["stop_grace_period"])
        for worker in workers:  # docker compose stop: SIGTERM, then SIGKILL after the grace
            worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.proc.wait(grace) == 0, worker.output()
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
