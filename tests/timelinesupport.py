"""Tasks for the tests of where a task ran, ``/tasks`` and the timeline, importable by worker processes and
interpreters (kept apart from conftest.py so that spawned workers import only this small module).

``task_0`` ... ``task_7`` each sleep their own time (``SLEEP_MS``) and return where and when they ran; their names
tell their slices apart in a timeline. ``failing`` sleeps, then raises ``KnownError``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: How long each numbered task sleeps, in milliseconds.
SLEEP_MS = (30, 45, 60, 75, 90, 105, 120, 135)


class KnownError(Exception):
    """The error the failing tasks raise."""


def ran_on() -> tuple[int, int, str]:
    """Where this task runs: (process id, thread id, thread name), as the task span should say."""
    thread = threading.current_thread()
    return os.getpid(), threading.get_ident(), thread.name


def _sleeper(index: int) -> Any:
    def task() -> tuple[int, int, int, int]:
        start = time.time_ns()
        time.sleep(SLEEP_MS[index] / 1000)
        return os.getpid(), threading.get_ident(), start, time.time_ns()

    task.__name__ = task.__qualname__ = f"task_{index}"
    task.__module__ = __name__
    return task


task_0, task_1, task_2, task_3, task_4, task_5, task_6, task_7 = (_sleeper(i) for i in range(len(SLEEP_MS)))
TASKS = (task_0, task_1, task_2, task_3, task_4, task_5, task_6, task_7)


def failing() -> None:
    time.sleep(0.01)
    raise KnownError("a message the timeline must not hold")


def blocker() -> None:
    """Keeps a worker busy long enough for a task queued behind it to be cancelled there."""
    time.sleep(0.3)


def quick(value: int) -> int:
    return value


def importable(path: str) -> None:
    """An interpreter pool's initializer that uses no globals: this module becomes importable there."""
    import sys

    sys.path.insert(0, path)


#: The task at which ``dies_at`` kills the worker process that runs it.
DIES_AT = 30


def dies_at(value: int) -> int:
    """A process pool's task: the one numbered ``DIES_AT`` kills its worker (SIGKILL, as the OOM killer would)."""
    if value == DIES_AT:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.005)
    return value


def resize(size: int) -> int:
    """A task whose code makes two nested spans with the program's own tracer: ``resize``, holding ``encode``."""
    from opentelemetry import trace

    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("resize"):
        time.sleep(0.002)
        with tracer.start_as_current_span("encode"):
            time.sleep(0.002)
    return size


def compress(size: int) -> int:
    """A task whose code makes one span, ``compress`` (in a worker process: it comes home with the outcome)."""
    from opentelemetry import trace

    with trace.get_tracer("app").start_as_current_span("compress"):
        time.sleep(0.002)
    return size


def kills_its_worker(said: str) -> None:
    """A process pool's task that writes its worker's pid and its own start (unix ns) to the file ``said``, then
    kills that worker (SIGKILL, as the OOM killer would) in the middle of the task."""
    import signal

    start = time.time_ns()
    with open(f"{said}.part", "w") as out:
        out.write(f"{os.getpid()} {start}")
    os.replace(f"{said}.part", said)  # whole when it appears
    os.kill(os.getpid(), signal.SIGKILL)


#: The writer's own metadata events: its header, each executor, its end (tracedfutures/timeline.py).
OWN_EVENTS = ("tracedfutures", "tracedfutures_executor", "tracedfutures_end")


def trace_document(path: Any) -> dict[str, Any]:
    """A finished timeline file (a JSON array that opens with the writer's header and closes with its end) as
    ``{"traceEvents": [the events but the writer's own], "otherData": {what its own events say}}``."""
    import json
    from pathlib import Path

    events = json.loads(Path(path).read_text(encoding="utf-8"))
    assert isinstance(events, list) and events, path
    assert events[0]["name"] == "tracedfutures" and events[-1]["name"] == "tracedfutures_end", (events[0], events[-1])
    other: dict[str, Any] = {"executors": {}}
    for event in events:
        if event["ph"] == "M" and event["name"] in OWN_EVENTS:
            args = dict(event["args"])
            if event["name"] == "tracedfutures_executor":
                other["executors"][args.pop("name")] = args
            else:
                other.update(args)
    return {"traceEvents": [e for e in events if e.get("name") not in OWN_EVENTS], "otherData": other}
