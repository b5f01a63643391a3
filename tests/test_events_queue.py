"""The node's event queue takes a put() from a signal handler at any moment.

``Node.stop()`` runs in the SIGTERM handler and puts a ``Stop`` event, while the
main thread may be inside the queue's get(). A ``queue.Queue`` deadlocks there
(its lock is not reentrant); this floods a process with signals whose handler
puts while the main thread gets, and checks that it finishes.
"""

from __future__ import annotations

import subprocess
import sys

from tests.cli_support import REPO

SCRIPT = """
import queue, signal, time
from worker.node.messages import Stop, new_events

events = new_events()
signal.signal(signal.SIGALRM, lambda signum, frame: events.put(Stop()))
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
got, deadline = 0, time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        events.get(timeout=0.00001)
        got += 1
    except queue.Empty:
        pass
signal.setitimer(signal.ITIMER_REAL, 0)
print("got", got)
"""


def test_a_signal_handler_can_put_while_the_main_thread_gets() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[1]) > 0  # the handler's events arrived
