"""The seed article's submit sample (the Python docs' ``ProcessPoolExecutor`` one).

``examples/stdlib/submit.py`` is the standard library's program; ``examples/
submit.py`` is the same program on a taskfan cluster: the two differ in one
line, the import of the executor (tests/test_examples.py checks it). Run the
taskfan one from the repository root, with worker nodes on the same Redis::

    TASKFAN_REDIS_URL=redis://localhost:6379/0 python examples/submit.py
"""

from concurrent.futures import ProcessPoolExecutor


def main() -> None:
    with ProcessPoolExecutor(max_workers=1) as executor:
        future = executor.submit(pow, 323, 1235)
        print(future.result())


if __name__ == "__main__":
    main()
