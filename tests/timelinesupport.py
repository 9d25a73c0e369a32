"""Tasks for the tests of where a task ran, ``/tasks`` and the timeline, importable by worker processes and
interpreters (kept apart from conftest.py so that spawned workers import only this small module)."""

from __future__ import annotations


def ran_on() -> tuple[int, int, str]:
    """Where this task runs: (process id, thread id, thread name), as the task span should say."""
    import os
    import threading

    thread = threading.current_thread()
    return os.getpid(), threading.get_ident(), thread.name
