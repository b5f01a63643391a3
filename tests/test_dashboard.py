"""``taskfan dashboard``: the page as headless Chromium renders it (skipped, with the
reason, where no Chromium is installed), and the helpers its tests share. Its
guards (read-only, token, DNS rebinding) and what hostile data does to it:
``test_security_dashboard.py``."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.ops.dashboard import Dashboard, DashboardServer
from taskfan import keys, scripts
from taskfan.keys import JobKeys
from taskfan.outcomes import encode_result
from tests import png, tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: the progress bar's colors (dashboard.html: .bar .ok and .bar .failed)
GREEN, RED = (0x2E, 0x9E, 0x4F), (0xD6, 0x45, 0x45)
BAR_WIDTH = 220


def find_browser() -> str | None:
    given = os.environ.get("TASKFAN_TEST_CHROMIUM")
    if given:
        return given
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def half_done_job(r: redis.Redis) -> Any:
    """A job of 4 batches of 5 items, 2 of them recorded as a node would (one item
    failed): 50% done, 45% ok, 5% failed. No node serves its queue."""
    job = Client(r, queue="dash").map(tasks.square, range(20), batch_size=5)
    for index in (0, 1):
        values: list[Any] = [x * x for x in range(index * 5, index * 5 + 5)]
        errors: list[Any] = []
        if index == 1:
            values[2] = None
            tb = "Traceback (most recent call last):\n  ..."
            errors = [[2, "ValueError", "bad 7", tb, None, 7]]
        blob = pickle.dumps([values, errors, []], protocol=5)
        entry = encode_result(index * 5, 5, len(errors), [blob])
        scripts.record_batch(r, JobKeys(job.id), index, entry, 5 - len(errors), len(errors), 0.0)
    return job


@pytest.fixture
def serve(r: redis.Redis) -> Iterator[Any]:
    """serve(actions=False) -> base URL of a dashboard on a free loopback port."""
    servers: list[DashboardServer] = []

    def start(actions: bool = False) -> tuple[str, Dashboard]:
        board = Dashboard(r, actions=actions, min_interval=0.0)
        server = DashboardServer(("127.0.0.1", 0), board)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", board

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def chromium(browser: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="taskfan-chromium-") as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--force-device-scale-factor=1",
             "--virtual-time-budget=8000", *args, url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


def test_the_page_in_headless_chromium(
    r: redis.Redis, serve: Any, start_worker: StartWorker, tmp_path: Path
) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip(
            "no Chromium found (chromium, chromium-browser, google-chrome on PATH, or "
            "TASKFAN_TEST_CHROMIUM): install Debian's chromium package (.ci/run does, as root)"
        )
    job = half_done_job(r)
    node = start_worker("--name", "dash-node", queue="elsewhere",
                        env={"TASKFAN_HEARTBEAT_INTERVAL": "0.2"})  # fmt: skip
    wait_until(lambda: r.exists(keys.node("dash-node")), timeout=30,
               message=lambda: f"the node's record:\n{node.log()}")  # fmt: skip
    base, _ = serve()

    # The DOM after the page's script fetched /api/overview and drew it.
    dom = chromium(browser, f"{base}/", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f'data-job="{job.id}" data-progress="0.5"' in html, html[-3000:]
    assert '<span class="pct">50%</span>' in html
    assert 'data-node="dash-node"' in html
    assert '<span class="open-node"' in html and "OPEN (unsigned, pickle)" in html
    assert f'data-failure="{job.id}:7"' in html and "bad 7" in html
    assert 'id="mode">read-only<' in html
    # The node serves another queue: the page says nobody serves the job's.
    assert "no live node serves queue dash: 1 active jobs wait on it" in html
    assert 'data-updated=""' not in html  # rendered at least once

    # The screenshot: a green bar over 45% of the bar's width, then red over 5%.
    shot = tmp_path / "dashboard.png"
    result = chromium(browser, f"{base}/", f"--screenshot={shot}", "--window-size=1100,500")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = png.read(shot)
    assert image.colors() > 20  # not blank
    green, red = image.find(GREEN), image.find(RED)
    assert green and red, "no progress bar drawn"
    green_x = [x for x, _ in green]
    red_x = [x for x, _ in red]
    assert abs((max(green_x) - min(green_x) + 1) - 0.45 * BAR_WIDTH) <= 2
    assert abs((max(red_x) - min(red_x) + 1) - 0.05 * BAR_WIDTH) <= 2
    assert abs(min(red_x) - (max(green_x) + 1)) <= 1  # red follows green, on the same bar
    assert {y for _, y in red} <= {y for _, y in green}
