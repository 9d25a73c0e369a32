"""Importable helpers for the unit tests: what a worker process must find by module name (tasks, an
initializer) and an executor that is not a standard library pool, so ``traced()`` takes its chained-future
path.

Kept apart from conftest.py so that spawned workers import this small module, not pytest's plugins.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from opentelemetry import trace

GATE_TIMEOUT = 30.0  # no test blocks a worker longer than this, even a failing one


class CustomError(Exception):
    """An exception class outside builtins, so its error.type is module-qualified."""


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise CustomError(message)


def current_ids() -> tuple[int, int]:
    """The (trace_id, span_id) of the span current where the task runs."""
    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id


def child_span_ids() -> tuple[int, int, int, int]:
    """Start a span with an SDK tracer where the task runs (a worker process has no provider of ours) and
    return its parent's (trace_id, span_id) and its own (trace_id, pid)."""
    from opentelemetry.sdk.trace import TracerProvider

    span = TracerProvider().get_tracer("worker").start_span("inner")
    span.end()
    parent = span.parent
    assert parent is not None
    return parent.trace_id, parent.span_id, span.get_span_context().trace_id, os.getpid()


# -- a gate that worker processes inherit through the pool's initializer ------------------------------
_process_gate: Any = None


def set_process_gate(event: Any) -> None:
    global _process_gate
    _process_gate = event


def wait_process_gate(value: Any) -> Any:
    _process_gate.wait(GATE_TIMEOUT)
    return value


class UserExecutor(Executor):
    """A user's own executor, not a stdlib pool: worker threads over a FIFO queue, stock futures."""

    def __init__(self, max_workers: int = 1) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max_workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[Any] = Future()
            self._queue.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run(*item)
            del item

    @staticmethod
    def _run(future: Future[Any], fn: Any, args: Any, kwargs: Any) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        item[0].cancel()
                for _ in self._threads:
                    self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


@contextlib.contextmanager
def pools_named_per_job(setup: str, registry: Any) -> Iterator[Callable[[int], Executor]]:
    """``make(n)``, a pool of one worker named ``job-<n>`` counted in ``registry``: the drop-in class
    (``setup="traced"``) or the stock class under the instrumentor (``"instrumentor"``, uninstrumented after)."""
    from concurrent.futures import ThreadPoolExecutor

    import tracedfutures
    from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor

    if setup == "traced":
        yield lambda n: tracedfutures.TracedThreadPoolExecutor(1, name=f"job-{n}", registry=registry)
        return
    tracedfutures.reset_defaults()
    instrumentor = ConcurrentFuturesInstrumentor()
    instrumentor.instrument(registry=registry)
    try:
        yield lambda n: ThreadPoolExecutor(1, thread_name_prefix=f"job-{n}")
    finally:
        instrumentor.uninstrument()
