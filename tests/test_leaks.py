"""Nothing is kept alive by tracing: futures, callables, arguments and results go when the caller drops them,
a finished future does not hold its task span, and an executor dropped without shutdown is collected."""

from __future__ import annotations

import concurrent.futures
import gc
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Telemetry
from opentelemetry.sdk.trace import SpanProcessor

import tracedfutures

TIMEOUT = 30


class Arg:
    pass


class Result:
    pass


class Task:
    def __call__(self, arg: Arg, fail: bool) -> Result:
        if fail:
            raise ValueError("failed")
        return Result()


class LiveSpans(SpanProcessor):
    """Weak references to every span started, to tell whether anything still holds one."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.refs.append(weakref.ref(span))

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.refs)


def test_no_leak_over_5000_tasks(telemetry: Telemetry, kind: str) -> None:
    live = LiveSpans()
    telemetry.provider.add_span_processor(live)
    executor = telemetry.executor(kind, max_workers=4)
    refs: list[weakref.ref[Any]] = []
    futures = []
    for i in range(5000):
        task, arg = Task(), Arg()
        futures.append(executor.submit(task, arg, fail=i % 10 == 0))
        refs += [weakref.ref(task), weakref.ref(arg), weakref.ref(futures[-1])]
    del task, arg
    concurrent.futures.wait(futures, timeout=TIMEOUT)
    results = [f.result() for f in futures if f.exception() is None]
    assert len(results) == 4500
    refs += [weakref.ref(r) for r in results]
    del results
    executor.shutdown()  # waiters wake before the last task span ends; shutdown waits for it

    gc.collect()
    assert len(telemetry.spans()) == 5000
    assert live.alive() == 0  # the futures are alive, their task spans are not (failed ones included)

    del futures
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


@pytest.mark.parametrize("make", ["thread", "wrapped"])
def test_dropped_executor_is_collected_and_its_threads_exit(telemetry: Telemetry, make: str) -> None:
    options: Any = {"name": "dropped", "tracer_provider": telemetry.provider, "registry": telemetry.registry}
    stock = ThreadPoolExecutor(2)
    executor: Any = (
        tracedfutures.TracedThreadPoolExecutor(2, **options)
        if make == "thread"
        else tracedfutures.traced(stock, **options)
    )
    futures = [executor.submit(pow, i, 2) for i in range(10)]
    assert [f.result(TIMEOUT) for f in futures] == [i * i for i in range(10)]
    pool = executor if make == "thread" else stock
    threads = list(pool._threads)
    assert threads and telemetry.value("executor_max_workers", executor="dropped") == 2
    refs = [weakref.ref(executor), weakref.ref(pool)]
    del executor, pool, stock
    # An idle worker holds its executor for an instant after each task (concurrent.futures.thread._worker).
    deadline = time.monotonic() + TIMEOUT
    while gc.collect() is not None and any(ref() is not None for ref in refs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [ref() for ref in refs] == [None, None]
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert telemetry.value("executor_max_workers", executor="dropped") == 0
    assert [f.result() for f in futures] == [i * i for i in range(10)]


@pytest.mark.parametrize("kind", ["thread", "wrapped"])
def test_a_refused_submit_leaves_no_cycle(telemetry: Telemetry, kind: str) -> None:
    """A task that submits to its own pool after it was shut down gets the stdlib's RuntimeError; that exception's
    traceback holds tracedfutures' frames, which must not hold the refused task's future (a cycle would keep the
    pool, and its stopped threads, alive until the cyclic garbage collector runs: CPython's
    test_hang_global_shutdown_lock counts them)."""

    def resubmit(pool: Any) -> None:
        pool.submit(resubmit, pool)

    gc.collect()
    gc.disable()
    try:
        pool = telemetry.executor(kind, max_workers=1)
        telemetry.executors.remove(pool)
        pool.submit(resubmit, pool)
        time.sleep(0.05)
        pool.shutdown()
        refs = [weakref.ref(pool), weakref.ref(getattr(pool, "executor", pool))]
        del pool
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
