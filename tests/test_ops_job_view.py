"""One job as people read it (``taskfan status JOB``, ``taskfan inspect JOB``):
times, progress and batch sizes in words, batches counted with their retries;
``--json`` keeps the machine's values."""

from __future__ import annotations

import json
import re

import pytest

from producer import Client
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def test_retry_rounds_count_on_both_sides_of_recorded(
    redis_url: str, start_worker: StartWorker
) -> None:
    start_worker(processes=1)
    json_client = Client.from_url(redis_url, codec="json")
    # 6 batches of 5; 7, 14, 21 and 28 fail, in batches 1, 2, 4 and 5
    job = json_client.map(tasks.fail_if_multiple_of_7, range(1, 30), batch_size=5)
    assert job.wait(timeout=60)
    assert job.retry_failed() == 4
    assert job.wait(timeout=60)

    data = json.loads(invoke("inspect", job.id, "--json", "--redis-url", redis_url).stdout)
    assert (data["batches_done"], data["batches"], data["retry_batches"]) == (10, 6, 4)
    text = invoke("inspect", job.id, "--redis-url", redis_url).stdout
    assert "batches      10/10 recorded (4 of them retries), 1 retry round\n" in text
    assert "batch size   5 items\n" in text
    text = invoke("status", job.id, "--redis-url", redis_url).stdout
    assert "batches   10/10 recorded (4 of them retries)\n" in text


def test_status_of_one_job_is_for_people_and_json_for_machines(redis_url: str) -> None:
    # an iterator: its length is unknown, so batches grow 1, 2, 4, ... (no node: up to 256)
    job = Client.from_url(redis_url, codec="json").map(tasks.square, iter(range(40)))
    data = json.loads(invoke("status", job.id, "--json", "--redis-url", redis_url).stdout)
    assert isinstance(data["created_at"], float) and data["progress"] == 0.0

    text = invoke("status", job.id, "--redis-url", redis_url).stdout
    assert str(int(data["created_at"])) not in text  # no raw epoch
    assert "progress  [..........]   0%\n" in text
    assert "items     0/40 done, 0 failed\n" in text
    assert re.search(r"\n  created   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\)\n", text), text
    assert "finished  -" in text

    text = invoke("inspect", job.id, "--redis-url", redis_url).stdout
    # 1 + 2 + 4 + 8 + 16 + 9 = 40 items in 6 batches
    assert "batch size   automatic: 1, 2, 4, ... up to 256 items; 6.667 items a batch" in text
