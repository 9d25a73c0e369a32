"""What ``tracedfutures record`` (``_cli.record``) sets up inside the program it runs, at the program's start-up:
the ``sitecustomize`` it writes calls ``start_recording``. Kept apart from the command line so that the program
imports only this and what the recording needs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from types import FrameType
from typing import Any

#: The environment variables that ask a starting program for a recording, and the timeline's cap.
OUTPUT_VARIABLE = "TRACEDFUTURES_RECORD_OUTPUT"
MAX_TASKS_VARIABLE = "TRACEDFUTURES_RECORD_MAX_TASKS"


def start_recording(sitecustomize: str) -> None:
    """Set up the recording that ``record`` asked for (once: the request is taken out of the environment), then
    run the ``sitecustomize`` that ours shadows, if there is one."""
    output = os.environ.pop(OUTPUT_VARIABLE, None)
    max_tasks = os.environ.pop(MAX_TASKS_VARIABLE, None)
    if output is not None:
        from tracedfutures._state import state
        from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor
        from tracedfutures.timeline import DEFAULT_MAX_TASKS, TimelineWriter

        # The writer is fed by each executor's lifecycle, as the metrics are: no span is made for it. The task
        # spans are made only where the program sets up tracing of its own (the instrumentor records through the
        # global tracer provider, which the program may set), and exported where it says.
        writer = TimelineWriter(output, int(max_tasks or DEFAULT_MAX_TASKS))
        state.timeline_hook = writer.lifecycle_hook
        state.timeline_call = writer.call_ended
        ConcurrentFuturesInstrumentor().instrument()
        _draw_spans_in_tasks(writer)
        # At exit, the file is finished (registered first, so run last: every task has ended by then, the pools'
        # own exit hooks run before any atexit hook).
        atexit.register(writer.shutdown)
        atexit.register(_say_what_was_not_recorded, writer, _watch_untraced_pools())
        _finish_on_sigterm(writer)
    _run_shadowed_sitecustomize(os.path.dirname(os.path.abspath(sitecustomize)))


def _draw_spans_in_tasks(writer: Any) -> None:
    """The spans the program's tasks make, drawn inside their tasks' slices: when the program sets an SDK tracer
    provider as the global one (``trace.set_tracer_provider``, as ``opentelemetry-instrument`` and ``setup_tracing``
    do too), the writer's processor of spans in tasks is added to it, once. That provider makes the task spans (the
    instrumentor records through the global one) under which the tasks' spans start, and gets the spans of process
    pools' tasks home; a program that sets none makes no task span, and pays nothing for this."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from wrapt import wrap_function_wrapper

    added: list[TracerProvider] = []

    def set_tracer_provider(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        provider = trace.get_tracer_provider()
        # Not in a forked child, whose writer is closed (a worker that sets its own provider, or our collector).
        if isinstance(provider, TracerProvider) and not added and not writer._closed:
            added.append(provider)
            provider.add_span_processor(writer.spans_in_tasks)
        return result

    wrap_function_wrapper(trace, "set_tracer_provider", set_tracer_provider)


def _finish_on_sigterm(writer: Any) -> None:
    """A SIGTERM that the program leaves to the default finishes the timeline first, then ends the program as the
    default would (killed by SIGTERM). A program that handles SIGTERM itself keeps its handler."""
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def finish(signum: int, frame: FrameType | None) -> None:
        writer.shutdown_on_signal()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    with contextlib.suppress(ValueError):  # not the main thread: the default stays
        signal.signal(signal.SIGTERM, finish)


#: Where the documentation says why these pools are out of reach.
UNTRACED_DOCS = "see 'What record cannot see' in the docs' usage page"


def _watch_untraced_pools() -> list[str]:
    """The names of the ``multiprocessing.pool`` pools the program makes (``multiprocessing.Pool``, ``ThreadPool``,
    joblib's threading and multiprocessing backends), which are not ``concurrent.futures`` executors and are not
    traced: noted when one is made, once the module is imported (a program that never imports it pays nothing)."""
    from wrapt import register_post_import_hook, wrap_function_wrapper

    made: list[str] = []

    def note(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            name = _pool_name(instance)
        except Exception:  # naming the pool never stops it being made
            name = "multiprocessing.pool.Pool"
        if name not in made:
            made.append(name)
        return wrapped(*args, **kwargs)

    def watch(module: Any) -> None:
        wrap_function_wrapper(module, "Pool.__init__", note)

    register_post_import_hook(watch, "multiprocessing.pool")
    return made


def _pool_name(pool: object) -> str:
    """``module.Class`` of a pool, with the joblib backend that made it, if one did."""
    cls = type(pool)
    name = f"{cls.__module__}.{cls.__qualname__}"
    frame: FrameType | None = sys._getframe(2)
    for _ in range(8):  # from Pool.__init__ (and a subclass's) up to whoever made the pool
        if frame is None:
            break
        if str(frame.f_globals.get("__name__", "")).startswith("joblib."):
            backend = frame.f_locals.get("self")
            return f"{name} (joblib's {type(backend).__name__})" if backend is not None else f"{name} (joblib)"
        frame = frame.f_back
    return name


def _say_what_was_not_recorded(writer: Any, untraced: list[str]) -> None:
    """One line on standard error when the timeline has no task, or the program used pools that are not traced."""
    pools = " and ".join(untraced)
    if not writer.executors:
        reason = (
            f"the program ran its work in {pools}, not in a concurrent.futures executor ({UNTRACED_DOCS})"
            if pools
            else "the program submitted nothing to a concurrent.futures executor"
        )
        print(f"tracedfutures record: no task was recorded: {reason}", file=sys.stderr)
    elif pools:
        print(
            f"tracedfutures record: the program also ran work in {pools}, not in a concurrent.futures executor: "
            f"that work is not on the timeline ({UNTRACED_DOCS})",
            file=sys.stderr,
        )


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
