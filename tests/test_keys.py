"""Keys: every multi-key operation stays inside one hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from taskfan import keys
from taskfan.keys import JobKeys, QueueKeys


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("name", ["default", "gpu-high", "a.b_c", "x" * 200])
def test_queue_keys_share_one_slot(name: str) -> None:
    q = QueueKeys(name)
    assert len({q.stream, q.dead, q.jobs}) == 3
    assert {slot(k) for k in (q.stream, q.dead, q.jobs)} == {slot(f"{{q:{name}}}")}


@pytest.mark.parametrize("job_id", ["01HZX3", "job-1", "6f1c0b0e9a2d4e7f"])
def test_job_keys_share_one_slot(job_id: str) -> None:
    j = JobKeys(job_id)
    assert j.all() == (j.meta, j.results, j.events)
    assert len(set(j.all())) == 3
    assert {slot(k) for k in j.all()} == {slot(f"{{j:{job_id}}}")}


def test_keys_are_prefixed_and_readable() -> None:
    assert QueueKeys("default").stream == "taskfan:{q:default}:stream"
    assert JobKeys("abc").meta == "taskfan:{j:abc}:meta"
    assert keys.node("host-1-42") == "taskfan:node:host-1-42"
    assert all(k.startswith(keys.PREFIX + ":") for k in (keys.NODES, keys.QUEUES))


def test_a_queue_and_a_job_of_the_same_name_do_not_collide() -> None:
    assert not set(JobKeys("x").all()) & {QueueKeys("x").stream, QueueKeys("x").dead}


@pytest.mark.parametrize("bad", ["", "a:b", "{a}", "a}", "with space", "tab\t", "new\nline"])
def test_bad_names_are_rejected_with_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="queue name"):
        QueueKeys(bad)
    with pytest.raises(ValueError, match="job id"):
        JobKeys(bad)
    with pytest.raises(ValueError, match="node id"):
        keys.node(bad)
