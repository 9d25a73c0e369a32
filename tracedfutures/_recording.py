"""What ``tracedfutures record`` (``_cli.record``) sets up inside the program it runs, at the program's start-up:
the ``sitecustomize`` it writes calls ``start_recording``. Kept apart from the command line so that the program
imports only this and what the recording needs.
"""

from __future__ import annotations

import os
import sys

#: The environment variables that ask a starting program for a recording, and the timeline's cap.
OUTPUT_VARIABLE = "TRACEDFUTURES_RECORD_OUTPUT"
MAX_TASKS_VARIABLE = "TRACEDFUTURES_RECORD_MAX_TASKS"


def start_recording(sitecustomize: str) -> None:
    """Set up the recording that ``record`` asked for (once: the request is taken out of the environment), then
    run the ``sitecustomize`` that ours shadows, if there is one."""
    output = os.environ.pop(OUTPUT_VARIABLE, None)
    max_tasks = os.environ.pop(MAX_TASKS_VARIABLE, None)
    if output is not None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        from tracedfutures._state import state
        from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor
        from tracedfutures.timeline import DEFAULT_MAX_TASKS, TimelineWriter

        state.task_cpu = True  # each thread or interpreter pool task's own CPU time on its slice
        provider = TracerProvider()  # shut down at exit (the SDK's atexit hook): the file is finished then
        provider.add_span_processor(TimelineWriter(output, int(max_tasks or DEFAULT_MAX_TASKS)))
        trace.set_tracer_provider(provider)
        ConcurrentFuturesInstrumentor().instrument(tracer_provider=provider)
    _run_shadowed_sitecustomize(os.path.dirname(os.path.abspath(sitecustomize)))


def _run_shadowed_sitecustomize(ours: str) -> None:
    """Import the ``sitecustomize`` that the directory ``ours``, first on the path, hides (as ``site`` would)."""
    import importlib

    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != ours]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ModuleNotFoundError as exc:
        if exc.name != "sitecustomize":
            raise
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    finally:
        sys.path[:] = saved + [p for p in sys.path if p not in saved]
