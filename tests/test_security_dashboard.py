"""Threat: the dashboard turned against its operator: a page on another site
that changes jobs through it (mutation: cancel, requeue), a name resolving to
127.0.0.1 (DNS rebinding), and data in Redis that carries markup (injection:
job, function and error text drawn as HTML).

The dashboard is read-only unless started with ``--actions``; actions need the
page's random token in a header (a form on another site cannot set one); the
Host header must be the dashboard's own; the page builds its DOM with
``textContent``, never HTML from data.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import scripts
from taskfan.keys import JobKeys
from taskfan.outcomes import encode_result
from tests import tasks
from tests.test_dashboard import chromium, find_browser, get, half_done_job, serve

__all__ = ["serve"]

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


def test_the_overview_endpoint_and_the_read_only_guards(r: redis.Redis, serve: Any) -> None:
    job = half_done_job(r)
    base, _ = serve()
    status, data = get(f"{base}/api/overview")
    assert status == 200
    (row,) = data["jobs"]
    assert (row["id"], row["progress"], row["done"], row["failed"]) == (job.id, 0.5, 10, 1)
    assert data["queues"][0]["name"] == "dash" and data["queues"][0]["waiting"] == 4
    (failure,) = data["failures"]
    assert (failure["job"], failure["index"], failure["type"]) == (job.id, 7, "ValueError")
    assert data["actions"] is False and data["nodes"] == [] and data["dead_letters"] == []
    status, page = get(f"{base}/")
    assert status == 200 and "<title>taskfan</title>" in page and 'TOKEN = ""' in page
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/nothing")[0] == 404
    # A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
    assert get(f"{base}/api/overview", {"Host": "evil.example:80"})[0] == 403
    status, refused = get(f"{base}/api/jobs/{job.id}/cancel", method="POST")
    assert status == 403 and "read-only" in refused["error"]
    assert job.status == "running"


def test_actions_need_the_page_s_token(r: redis.Redis, serve: Any) -> None:
    job = half_done_job(r)
    base, board = serve(actions=True)
    page = get(f"{base}/")[1]
    assert f'TOKEN = "{board.token}"' in page
    cancel = f"{base}/api/jobs/{job.id}/cancel"
    assert get(cancel, method="POST")[0] == 403
    assert get(cancel, {"X-Taskfan-Token": "guess"}, method="POST")[0] == 403
    status, said = get(cancel, {"X-Taskfan-Token": board.token}, method="POST")
    assert (status, said["result"]) == (200, "cancelled") and job.status == "cancelled"
    status, said = get(f"{base}/api/dead/dash/1-0/requeue", {"X-Taskfan-Token": board.token},
                       method="POST")  # fmt: skip
    assert status == 409 and "no dead letter 1-0" in said["error"]
    status, said = get(f"{base}/api/jobs/a:b/cancel", {"X-Taskfan-Token": board.token},
                       method="POST")  # fmt: skip
    assert status == 400 and "invalid job id" in said["error"]


def test_markup_in_redis_is_shown_as_text_never_run(r: redis.Redis, serve: Any) -> None:
    """An error message (anyone can write a result) holding markup and script."""
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium found (see test_dashboard.py)")
    job = Client(r, queue="dash").map(tasks.square, range(2), batch_size=2)
    errors = [[0, "ValueError", HOSTILE, HOSTILE, None, 0]]
    blob = pickle.dumps([[None, 1], errors, []], protocol=5)
    entry = encode_result(0, 2, 1, [blob])
    scripts.record_batch(r, JobKeys(job.id), 0, entry, 1, 1, 0.0)
    base, _ = serve()
    dom = chromium(browser, f"{base}/", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f'data-failure="{job.id}:0"' in html, html[-3000:]
    assert "&lt;img src=x onerror=" in html  # the text, escaped
    assert "<img" not in html and '<script>document.title="pwned"' not in html
    assert not re.search(r"<title>\s*pwned", html)  # no script of the data ran
