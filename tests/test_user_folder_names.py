"""A user's folder may hold its own ``worker.py``, ``producer.py`` or ``worker/``.

``taskfan worker`` and ``taskfan run`` import the user's task modules from the
folder they are started in, yet the node and the CLI are our own ``worker`` and
``producer`` packages: a module of the user's under either name must not take
their place. ``python -m taskfan`` is the hard case (Python puts the current
folder first on ``sys.path``, and ``taskfan run`` starts its worker that way);
the ``taskfan`` script is the common one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskfan.syspath import without_current_folder
from tests.cli_support import clean_environ

#: what each of the user's look-alikes does when imported: fail loudly
_IMPOSTOR = "raise SystemExit(\"the user's {name} was imported in place of taskfan's\")\n"
#: the console script of this environment (pip install -e . made it)
SCRIPT = Path(sys.executable).with_name("taskfan")

LAYOUTS = {
    "modules": {"worker.py": "worker.py", "producer.py": "producer.py"},
    "folders": {"worker/__init__.py": "worker/", "producer/__init__.py": "producer/"},
    "namespace folders": {"worker/tasks.py": "worker/", "producer/tasks.py": "producer/"},
}


@pytest.fixture(params=sorted(LAYOUTS))
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A user's folder: its tasks in ``user_tasks.py``, and look-alikes of ours."""
    for path, name in LAYOUTS[request.param].items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(_IMPOSTOR.format(name=name))
    (tmp_path / "user_tasks.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "in.jsonl").write_text("1\n2\n3\n")
    return tmp_path


def run(command: list[str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=clean_environ(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    assert "imported in place of taskfan" not in done.stderr, done.stderr
    return done.stdout


def entry_points() -> list[list[str]]:
    found = [[sys.executable, "-m", "taskfan"]]
    if SCRIPT.is_file():
        found.append([str(SCRIPT)])
    return found


def _id(entry: list[str]) -> str:
    return "script" if len(entry) == 1 else "-m"


#: (entry point, pool start method): each start method imports our packages
#: its own way (the forkserver with ``python -c``, spawn re-running the main
#: module), and the script, whose path never held the folder, with the default
WORKERS = [
    *[pytest.param(entry_points()[0], m, id=f"-m-{m}") for m in ("forkserver", "spawn", "fork")],
    *[pytest.param(e, "forkserver", id=f"{_id(e)}-forkserver") for e in entry_points()[1:]],
]


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "method"), WORKERS)
def test_a_worker_started_in_the_folder_runs_its_tasks(
    folder: Path, entry: list[str], method: str, redis_url: str
) -> None:
    url = ["--redis-url", redis_url]
    job_id = run([*entry, "enqueue", "user_tasks:double", "-i", "in.jsonl", *url], folder).strip()
    run([*entry, "worker", "--burst", "--processes", "1", "--start-method", method, *url], folder)
    lines = run([*entry, "results", job_id, *url], folder).splitlines()
    assert [json.loads(line)["result"] for line in lines] == [2, 4, 6]


@pytest.mark.slow
@pytest.mark.parametrize("entry", entry_points(), ids=_id)
def test_taskfan_run_in_the_folder_runs_its_tasks(
    folder: Path, entry: list[str], redis_url: str
) -> None:
    out = run([*entry, "run", "user_tasks:double", "-i", "in.jsonl", "--redis-url", redis_url,
               "--processes", "1"], folder)  # fmt: skip
    assert [json.loads(line)["result"] for line in out.splitlines()] == [2, 4, 6]


def test_the_current_folder_leaves_the_path_unless_our_packages_are_there(
    tmp_path: Path,
) -> None:
    here, ours = tmp_path / "user", tmp_path / "site"
    here.mkdir()
    path = ["", ".", str(here), str(here) + "/", str(ours), "/usr/lib/python3"]
    assert without_current_folder(path, str(here), str(ours)) == [str(ours), "/usr/lib/python3"]
    # a checkout run in place: the current folder is where our packages come from
    assert without_current_folder(path, str(ours), str(ours)) == path
