"""fork() while another thread holds tracedfutures' locks: the child never deadlocks, starts with clean metrics,
and can use everything (executors, wait, configure, the instrumentor, process pools of every start method);
the parent, right after, too.

Every lock tracedfutures owns is listed in ``LOCKS``; a thread holds them all while the main thread forks.
A randomized run forks while threads hammer the library. A child that does not report back within
``CHILD_TIMEOUT`` is killed and the test fails: that is a deadlock.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Telemetry
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry
from support import fail, square

import tracedfutures
from tracedfutures import _config, metrics
from tracedfutures._state import state

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_TIMEOUT = float(os.environ.get("TF_CHILD_TIMEOUT", 60))
TIMEOUT = 30
START_METHODS = ("fork", "spawn", "forkserver")


def locks(registry: CollectorRegistry) -> dict[str, Any]:
    """Every lock of tracedfutures, by where it lives (for ``registry``'s collector and its executor "pool")."""
    collector = state.collectors[registry]
    assert isinstance(collector, metrics.MetricsCollector)
    stats = collector.executors["pool"]
    found = {
        "config._lock": state.config_lock,
        "metrics._collectors_lock": state.collectors_lock,
        "MetricsCollector.lock": collector.lock,
        "ExecutorStats.lock": stats.lock,
        "ErrorLabels._lock": stats.error_label._lock,
        "WaitStats.lock": collector.waits.lock,
        "executor._capacities_lock": state.capacities_lock,
        "instrumentor._lock": state.instrumentor_lock,
        "_telemetry._failures_lock": state.failures_lock,
        "_worker_spans._lock": state.worker_spans_lock,  # in workers: one a forked pool inherits
        "_stdlib._read_lock": state.read_lock,
    }
    return {where: lock for where, lock in found.items() if lock is not None}


class Holder:
    """A thread that takes the given locks and keeps them until released."""

    def __init__(self, held: dict[str, Any]) -> None:
        self.held = held
        self.taken = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.taken.wait(TIMEOUT)

    def _run(self) -> None:
        for lock in self.held.values():
            assert lock.acquire(timeout=TIMEOUT)
        self.taken.set()
        self.release.wait(TIMEOUT)
        for lock in reversed(list(self.held.values())):
            lock.release()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(TIMEOUT)


class CountingProcessor(SpanProcessor):
    """Counts ended spans with no lock of its own (an SDK exporter's lock held at fork is not ours to fix)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: Any) -> None:
        self.ended += 1


def samples(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith(("_bucket", "_sum", "_created"))
    }


def value(found: dict[str, float], name: str, **labels: str) -> float | None:
    return found.get(name + json.dumps(labels, sort_keys=True))


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; run ``work`` in the child and return what it reported. Fails if the child hangs or crashes."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read)
            report = json.dumps({"ok": work()})
            code = 0
        except BaseException as exc:
            report = json.dumps({"error": repr(exc)})
        finally:
            try:
                os.write(write, report.encode())
            finally:
                os._exit(code)
    os.close(write)
    chunks = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        ready, _, _ = select.select([read], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            raise AssertionError(f"the forked child deadlocked (no report within {CHILD_TIMEOUT} s)")
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks) or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report["ok"]  # type: ignore[no-any-return]


def child_work(registry: CollectorRegistry, provider: TracerProvider, inherited: Any) -> Callable[[], dict[str, Any]]:
    """What the child does with everything the parent held locked."""

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {"at_fork": samples(registry)}
        tracedfutures.configure(tracer_provider=provider, registry=registry)  # config._lock
        with tracedfutures.TracedThreadPoolExecutor(  # collector lock, capacities lock, the stats of "pool"
            2, name="pool", tracer_provider=provider, registry=registry
        ) as pool:
            futures = [pool.submit(square, i) for i in range(10)]
            futures += [pool.submit(fail, "x"), pool.submit(int, "y")]  # ErrorLabels: a new error type
            done, not_done = tracedfutures.wait(futures, timeout=TIMEOUT)  # WaitStats.lock
            out["wait"] = [len(done), len(not_done)]
            out["as_completed"] = len(list(tracedfutures.as_completed(futures, timeout=TIMEOUT)))
        broken = TracerProvider()
        broken.add_span_processor(_Raising())
        with tracedfutures.traced(  # a new registry (collectors lock); a failure logged (failures lock)
            __import__("concurrent.futures").futures.ThreadPoolExecutor(1),
            "other",
            tracer_provider=broken,
            registry=CollectorRegistry(),
        ) as other:
            out["broken telemetry"] = other.submit(square, 3).result(TIMEOUT)
        instrumentation = tracedfutures.ConcurrentFuturesInstrumentor()
        instrumentation.instrument(tracer_provider=provider, registry=registry)
        try:  # the instrumentor's lock: a stock executor's first submit
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1, thread_name_prefix="stock") as stock:
                out["instrumented"] = stock.submit(square, 4).result(TIMEOUT)
            del stock  # a stock executor's workers leave the gauge when it is collected, not at shutdown
            gc.collect()
        finally:
            instrumentation.uninstrument()
        tracedfutures.configure(tracer_provider=provider, registry=registry)
        for method in START_METHODS:  # process pools of every start method, right after the fork, as stock
            out[method] = [process_pool(method, None, None), process_pool(method, provider, registry)]
        if inherited is not None:
            inherited.shutdown()  # an executor inherited from the parent: its workers leave the gauge
        out["after"] = samples(registry)
        tracedfutures.reset_defaults()
        return out

    return work


def process_pool(method: str, provider: TracerProvider | None, registry: CollectorRegistry | None) -> Any:
    """Three tasks in a one-worker pool of ``method``, stock (no registry) or traced; what the caller sees."""
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(method)
    try:
        if registry is None:
            pool: Any = ProcessPoolExecutor(1, mp_context=context)
        else:
            pool = tracedfutures.TracedProcessPoolExecutor(
                1, mp_context=context, name="procs", tracer_provider=provider, registry=registry
            )
        with pool:
            return [f.result(TIMEOUT) for f in [pool.submit(square, i) for i in range(3)]]
    except Exception as exc:
        return [type(exc).__qualname__, str(exc)]


class _Raising(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("broken")


@pytest.fixture
def parent(telemetry: Telemetry) -> Iterator[tuple[Telemetry, Any]]:
    """The parent's state: a live executor named "pool" with history (successes, an error, a wait)."""
    pool = telemetry.executor("thread", max_workers=3)
    futures = [pool.submit(square, i) for i in range(5)] + [pool.submit(fail, "parent")]
    tracedfutures.wait(futures, timeout=TIMEOUT)
    yield telemetry, pool


def check_child(out: dict[str, Any]) -> None:
    at_fork = out["at_fork"]
    # Clean: no task, wait or error of the parent is counted in the child; the inherited executor's workers are.
    assert value(at_fork, "executor_tasks_submitted_total", executor="pool") == 0
    assert value(at_fork, "executor_tasks_ended_total", executor="pool", outcome="success") == 0
    assert not any(k.startswith("executor_tasks_completed_total") for k in at_fork)  # no function, no error type
    assert value(at_fork, "futures_wait_seconds_count", return_when="ALL_COMPLETED", timed_out="false") == 0
    assert value(at_fork, "executor_max_workers", executor="pool") == 3
    assert out["wait"] == [12, 0] and out["as_completed"] == 12
    assert out["broken telemetry"] == 9 and out["instrumented"] == 16
    for method in START_METHODS:
        stock, traced = out[method]
        assert traced == stock, method
        # A forkserver the parent started is not usable from a forked child (ChildProcessError in the stdlib's
        # multiprocessing.forkserver): the stdlib's own failure, the same with and without tracedfutures.
        if method != "forkserver":
            assert traced == [0, 1, 4], method
    procs = 3 * sum(out[method][1] == [0, 1, 4] for method in START_METHODS)
    after = out["after"]
    assert value(after, "executor_tasks_submitted_total", executor="pool") == 12
    assert value(after, "executor_tasks_completed_total", executor="pool", function="square", outcome="success",
                 error_type="") == 10  # fmt: skip
    assert value(after, "executor_tasks_completed_total", executor="pool", function="fail", outcome="error",
                 error_type="support.CustomError") == 1  # fmt: skip
    assert value(after, "executor_tasks_completed_total", executor="pool", function="int", outcome="error",
                 error_type="ValueError") == 1  # fmt: skip
    assert value(after, "executor_tasks_ended_total", executor="procs", outcome="success") == procs
    completed = sum(v for k, v in after.items() if k.startswith("executor_tasks_completed_total") and '"procs"' in k)
    assert value(after, "executor_tasks_submitted_total", executor="procs") == completed  # a refused submit too
    assert value(after, "executor_tasks_submitted_total", executor="ThreadPoolExecutor") is None  # prefix "stock"
    assert value(after, "executor_tasks_submitted_total", executor="stock") == 1
    for name in ("pool", "procs", "stock"):
        assert value(after, "executor_tasks_queued", executor=name) == 0
        assert value(after, "executor_tasks_running", executor=name) == 0
        assert value(after, "executor_max_workers", executor=name) == 0  # not below 0 either


def check_parent_right_after(telemetry: Telemetry, pool: Any) -> None:
    """The parent keeps its counts and, right after the fork, runs process pools of every start method."""
    for method in START_METHODS:
        with tracedfutures.TracedProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context(method), name="procs", tracer_provider=telemetry.provider,
            registry=telemetry.registry,
        ) as procs:
            assert [f.result(TIMEOUT) for f in [procs.submit(square, i) for i in range(3)]] == [0, 1, 4]
    assert pool.submit(square, 5).result(TIMEOUT) == 25
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 7
    assert telemetry.value("executor_tasks_ended_total", executor="pool", outcome="success") == 6
    assert telemetry.value("executor_tasks_submitted_total", executor="procs") == 9
    assert telemetry.value("executor_max_workers", executor="pool") == 3


def test_fork_while_every_lock_is_held(parent: tuple[Telemetry, Any]) -> None:
    telemetry, pool = parent
    held = locks(telemetry.registry)
    assert len(held) >= 9
    holder = Holder(held)
    try:
        out = in_child(child_work(telemetry.registry, telemetry.provider, pool))
    finally:
        holder.stop()
    check_child(out)
    check_parent_right_after(telemetry, pool)


@pytest.mark.parametrize("lock", ["config._lock", "ErrorLabels._lock", "executor._capacities_lock"])
def test_fork_while_one_lock_is_held(parent: tuple[Telemetry, Any], lock: str) -> None:
    """One at a time too: the locks that had no at-fork handling before this test existed."""
    telemetry, pool = parent
    holder = Holder({lock: locks(telemetry.registry)[lock]})
    try:
        out = in_child(child_work(telemetry.registry, telemetry.provider, pool))
    finally:
        holder.stop()
    check_child(out)


def test_fork_while_threads_hammer_the_library(telemetry: Telemetry) -> None:
    """Forks at random moments while threads submit, wait, scrape, configure and make executors."""
    counting = CountingProcessor()
    provider = TracerProvider()
    provider.add_span_processor(counting)
    registry = telemetry.registry
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer(index: int) -> None:
        try:
            with tracedfutures.TracedThreadPoolExecutor(
                2, name="pool", tracer_provider=provider, registry=registry
            ) as pool:
                while not stop.is_set():
                    futures = [pool.submit(square, i) for i in range(20)]
                    futures.append(pool.submit(type(f"Error{index}{len(futures)}", (Exception,), {})))
                    tracedfutures.wait(futures, timeout=TIMEOUT)
                    list(tracedfutures.as_completed(futures, timeout=TIMEOUT))
                    state.collectors[registry].collect()  # type: ignore[union-attr]
                    with tracedfutures.TracedThreadPoolExecutor(1, name=f"short{index}", registry=registry):
                        pass
                    _config.tracer_and_backend()
        except BaseException as exc:
            errors.append(exc)

    tracedfutures.configure(tracer_provider=provider, registry=registry)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            time.sleep(0.02)

            def work() -> dict[str, Any]:
                with tracedfutures.TracedThreadPoolExecutor(2, name="child", registry=registry) as pool:
                    futures = [pool.submit(square, i) for i in range(50)] + [pool.submit(fail, "x")]
                    tracedfutures.wait(futures, timeout=TIMEOUT)
                found = samples(registry)
                return {
                    "submitted": value(found, "executor_tasks_submitted_total", executor="child"),
                    "pool": value(found, "executor_tasks_submitted_total", executor="pool"),
                    "queued": value(found, "executor_tasks_queued", executor="child"),
                }

            out = in_child(work)
            assert out == {"submitted": 51, "pool": 0, "queued": 0}
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert errors == []
