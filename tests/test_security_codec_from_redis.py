"""Threat: a reader told by Redis to unpickle (docs/security.md).

A job's codec sits in its meta hash, which anyone who can write to Redis can
change. Readers never take it from there alone: a job handle remembers the codec
it was enqueued with, a reattached job is read as pickle only by a client that
allows pickle, and the CLI (json, "never runs code") reads pickle results only
with ``--allow-pickle``. The attack below turns a json job into a pickle one:
its meta says pickle and its result entry is a pickle whose loading creates a
marker file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from producer import Client
from producer.job import Job
from taskfan.errors import PickleRefused, ProtocolError
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def poisoned(r: redis.Redis, redis_url: str, marker: Path) -> Job:
    """A finished json job whose meta now says pickle and whose one result is a
    pickle that creates ``marker`` when loaded (copied from a real pickle job)."""
    json_job = Client.from_url(redis_url, codec="json").map(tasks.identity, [1])
    pickle_job = Client.from_url(redis_url).map(tasks.mark_when_unpickled, [str(marker)])
    assert json_job.wait(timeout=60) and pickle_job.wait(timeout=60)
    assert not marker.exists()
    r.hset(json_job.keys.results, "0", r.hget(pickle_job.keys.results, "0"))
    r.hset(json_job.keys.meta, "codec", "pickle")
    return json_job


def test_the_cli_never_unpickles_without_allow_pickle(
    r: redis.Redis, redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    marker = tmp_path / "unpickled"
    job = poisoned(r, redis_url, marker)
    for command in ("results", "retry"):
        refused = invoke(command, job.id, "--redis-url", redis_url)
        assert refused.exit_code == 2, refused.output
        assert "says codec 'pickle'" in refused.stderr and "--allow-pickle" in refused.stderr
        assert not marker.exists()
    allowed = invoke("results", job.id, "--allow-pickle", "--redis-url", redis_url)
    assert allowed.exit_code == 1, allowed.output  # the file object JSON cannot carry
    assert marker.exists()  # told to trust Redis, it does


def test_a_job_handle_reads_with_the_codec_it_was_enqueued_with(
    r: redis.Redis, redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    marker = tmp_path / "unpickled"
    job = poisoned(r, redis_url, marker)
    assert job.codec == "json"
    reads: list[Callable[[], object]] = [
        lambda: list(job.results()),
        lambda: list(job.outcomes()),
        lambda: list(job.as_completed()),
        job.retry_failed,
    ]
    for read in reads:
        with pytest.raises(ProtocolError, match="meta in Redis says codec 'pickle', but the"):
            read()
    careful = Client.from_url(redis_url, codec="json")
    with pytest.raises(PickleRefused, match="says codec 'pickle'"):
        list(careful.job(job.id).results())
    with pytest.raises(ProtocolError, match="enqueued with 'json'"):
        list(careful.job(job.id, codec="json").outcomes())
    with pytest.raises(PickleRefused):
        list(Client.from_url(redis_url, no_pickle=True).job(job.id).outcomes())
    assert not marker.exists()
    # A pickle client trusts its Redis with pickle: it is told so in the docs.
    assert Client.from_url(redis_url).allow_pickle
    assert not Client.from_url(redis_url, codec="json").allow_pickle
    assert Client.from_url(redis_url, codec="json", allow_pickle=True).allow_pickle


def test_reattaching_reads_json_and_the_own_codec_as_before(
    redis_url: str, start_worker: StartWorker
) -> None:
    start_worker(processes=1)
    pickled = Client.from_url(redis_url).map(tasks.square, [3])
    plain = Client.from_url(redis_url, codec="json").map(tasks.square, [4])
    json_client = Client.from_url(redis_url, codec="json")
    assert list(json_client.job(plain.id).results(timeout=60)) == [16]
    assert list(json_client.job(pickled.id, codec="pickle").results(timeout=60)) == [9]
    assert list(Client.from_url(redis_url).job(pickled.id).results(timeout=60)) == [9]
    assert list(Client.from_url(redis_url).job(plain.id).results(timeout=60)) == [16]
