"""A real node fed garbage written straight to its queue stream keeps running,
dead-letters every bad entry with a reason that names it, and still runs the
next good job."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from producer import Client
from producer.ops import overview
from taskfan import keys
from taskfan.codec import JSON
from taskfan.keys import QueueKeys
from taskfan.options import CallMode, TaskOptions
from taskfan.protocol import BatchEntry
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until

__all__ = ["clean_env"]

STREAM = QueueKeys("default").stream
DEAD = QueueKeys("default").dead
SECRET = "fuzz-node-secret-0123456789abcdef"
Fields = dict[bytes, bytes]


def wire(entry: BatchEntry) -> Fields:
    return {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }


def good(job_id: str, index: int) -> Fields:
    options = TaskOptions(retries=1)
    payload = JSON.dumps([1, 2])
    entry = BatchEntry(
        job_id, index, 0, 2, "tests.tasks:square", "json", CallMode.ONE, 0, payload, options
    )
    return wire(entry)


def xadd(r: redis.Redis, fields: Fields) -> bytes:
    """Add an entry to the queue stream as it is, bypassing every producer check."""
    return cast(bytes, r.xadd(STREAM, cast(Any, fields)))


def noise(rng: random.Random, size: int = 12) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(size)))


def breakers(rng: random.Random) -> list[tuple[str, Callable[[Fields], None]]]:
    """Ways to break an entry, each with the words its dead-letter reason holds."""

    def put(name: bytes, *choices: bytes) -> Callable[[Fields], None]:
        return lambda f: f.__setitem__(name, rng.choice([*choices, noise(rng) + b"\xff"]))

    return [
        ("missing field", lambda f: f.pop(rng.choice([b"j", b"b", b"s", b"n", b"f", b"c", b"m"]))),
        ("field 'b'", put(b"b", b"-1", b"x", b"1e3", b"9" * 30, b"")),
        ("field 's'", put(b"s", b"-5", b"+1", b"99999999999999999999")),
        ("field 'n'", put(b"n", b"3", b"4294967296", b"")),  # more items than payload bytes
        ("field 'j'", put(b"j", b"{j:x}", b"a b", b"")),
        ("field 'f'", put(b"f", b"os.system", b":", b"a..b:c", b"x:y:z.")),
        ("field 'c'", put(b"c", b"yaml", b"", b"PICKLE")),
        ("field 'm'", put(b"m", b"z", b"", b"11")),
        ("bad task options", put(b"o", b"[", b'{"timeout": -1}', b'{"x": 1}', b"[" * 5000)),
        (
            "field 'x'",
            lambda f: f.update({b"r": b"1", b"x": rng.choice([b"[-1,0]", b"[0]", b"{"])}),
        ),
        ("cannot decode the batch", put(b"p", b"[1,", b"\xff\xfe\xfd", b'{"a": 1}', b"[1,2,3]")),
    ]


def test_a_node_dead_letters_garbage_and_keeps_running(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    rng = random.Random(8)
    client = Client.from_url(redis_url, codec="json")
    victim = client.map(tasks.square, [1])  # garbage that decodes badly names a real job
    ways = breakers(rng)
    expected: dict[bytes, str] = {}
    for n in range(60):
        words, breaker = ways[n % len(ways)]
        job_id = victim.id if words == "cannot decode the batch" else f"{n:016x}"
        fields = good(job_id, 100 + n)
        breaker(fields)
        expected[xadd(r, fields)] = words
    for _ in range(10):  # entries of nothing but noise
        fields = {noise(rng, 4) or b"?": noise(rng, 40) for _ in range(rng.randrange(1, 6))}
        expected[xadd(r, fields)] = ""
    worker = start_worker("--no-pickle")
    wait_until(lambda: r.xlen(DEAD) == len(expected), timeout=60, message=worker.log)
    letters: Any = r.xrange(DEAD)
    for _, fields in letters:
        entry_id = fields[b"entry"]
        reason = fields[b"reason"].decode()
        named = f"queue default entry {entry_id.decode()}" in reason or reason.startswith("job ")
        assert named, reason
        assert expected[entry_id] in reason, (expected[entry_id], reason)
    assert worker.proc.poll() is None
    assert list(client.map(tasks.square, range(5)).results(timeout=60)) == [0, 1, 4, 9, 16]
    # (a reader wakes on record.lua's event, which may come before the node's
    # XACK + XDEL of the entry in the same pipeline)
    wait_until(lambda: r.xlen(STREAM) == 0, timeout=30, message="every entry acknowledged")
    assert "Traceback" not in worker.log()


def test_a_node_with_a_secret_dead_letters_whatever_is_not_signed(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    rng = random.Random(9)
    ids = [xadd(r, good(f"{n:016x}", n)) for n in range(5)]
    for _ in range(25):
        fields = {noise(rng, 3) or b"?": noise(rng, 30) for _ in range(rng.randrange(1, 8))}
        fields[b"g"] = rng.choice([b"1:abcdef12:" + noise(rng).hex().encode(), noise(rng)])
        ids.append(xadd(r, fields))
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    worker = start_worker("--secret-file", str(secret))
    wait_until(lambda: r.xlen(DEAD) == len(ids), timeout=60, message=worker.log)
    letters: Any = r.xrange(DEAD)
    assert all(b"bad signature" in fields[b"reason"] for _, fields in letters)
    client = Client.from_url(redis_url, secret=SECRET)
    assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
    assert worker.proc.poll() is None and "Traceback" not in worker.log()


@pytest.mark.usefixtures("clean_env")
def test_operators_commands_survive_forged_node_records(redis_url: str, r: redis.Redis) -> None:
    now = time.time()
    r.zadd(keys.NODES, {"not a node id": now, "{x}": now, "forged": now})
    r.hset(keys.node("forged"), mapping={"pid": "lots", "processes": "9" * 5000, "queues": "q"})
    for command in ("status", "nodes"):
        result = invoke(command, "--json", "--redis-url", redis_url)
        assert result.exit_code == 0, result.output
    [node] = overview.nodes(r, now)
    assert (node["id"], node["pid"], node["processes"]) == ("forged", 0, 0)
    assert r.zcard(keys.NODES) == 1  # what cannot be a node id left the index
