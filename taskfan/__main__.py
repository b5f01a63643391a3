"""``python -m taskfan``: the same as the ``taskfan`` command, with the same
``sys.path``: ``-m`` puts the current folder first, where a user's ``worker.py``
or ``producer.py`` would stand in for our packages (``taskfan.syspath``)."""

if __name__ == "__main__":
    from taskfan.syspath import drop_current_folder

    drop_current_folder()

    from taskfan.cli import main

    main(prog_name="taskfan")
