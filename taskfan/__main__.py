"""``python -m taskfan``: the same as the ``taskfan`` command."""

from taskfan.cli import main

if __name__ == "__main__":
    main(prog_name="taskfan")
