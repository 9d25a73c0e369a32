"""Shared fixtures: an SDK tracer provider with an in-memory exporter and a fresh Prometheus registry per
test, executors of every kind wired to them, gates that hold workers, and readers of spans and samples."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from support import GATE_TIMEOUT, UserExecutor

import tracedfutures
from tracedfutures._state import state
from tracedfutures.spans import PROCESS_PID, QUEUE_DURATION, RUN_DURATION, RUNNING_EVENT, THREAD_ID, THREAD_NAME

#: Whether this run forces tracedfutures' public-API fallback (the test command runs the suite so once).
FALLBACK_FORCED = os.environ.get("TRACEDFUTURES_FORCE_FALLBACK", "") not in ("", "0")
#: Why a test of a process pool's exact behaviour is skipped then: through the fallback, a process pool's future
#: is chained to the stdlib's, and a cancelled one counts as done when it is cancelled, not when the pool dequeues it.
CHAINED_IN_FALLBACK = "the forced fallback chains process-pool futures (a cancelled one is done at once)"
STARTS_AT_END_IN_FALLBACK = "the forced fallback learns a process-pool task's start only when it ends"

#: Executors that run tasks in threads of this process: our subclass, a wrapped stock pool, and a user's own
#: executor (chained-future path).
THREAD_KINDS = ("thread", "wrapped", "user")
PROCESS_KINDS = ("fork", "spawn")
#: The executor.kind attribute each of them reports.
EXECUTOR_KIND = {
    "thread": "thread",
    "wrapped": "thread",
    "user": "other",
    "fork": "process",
    "spawn": "process",
}


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    """A key of ``Telemetry.series``."""
    return frozenset(kw.items())


class Gate:
    """A threading.Event that blocks tasks until opened, and counts how many tasks are waiting on it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._entered = 0
        self._entered_cond = threading.Condition(self._lock)

    def task(self, value: Any = None) -> Any:
        """A task function: waits until the gate opens, then returns ``value``."""
        with self._lock:
            self._entered += 1
            self._entered_cond.notify_all()
        if not self._open.wait(GATE_TIMEOUT):
            raise AssertionError("gate never opened")
        return value

    def wait_entered(self, count: int = 1) -> None:
        """Block until ``count`` tasks are running inside ``task``."""
        with self._lock:
            assert self._entered_cond.wait_for(lambda: self._entered >= count, GATE_TIMEOUT)

    def open(self) -> None:
        self._open.set()


class Telemetry:
    """The span exporter and registry of one test, and the executors it made (shut down at teardown)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")
        self.registry = CollectorRegistry()
        self.executors: list[Executor] = []
        self.gates: list[Gate] = []

    # -- executors --------------------------------------------------------------------------------
    def executor(self, kind: str, max_workers: int = 1, name: str | None = "pool", **kwargs: Any) -> Executor:
        """A traced executor of ``kind`` (THREAD_KINDS, PROCESS_KINDS) recording to this test's telemetry."""
        options: dict[str, Any] = {"tracer_provider": self.provider, "registry": self.registry}
        executor: Executor
        if kind == "thread":
            executor = tracedfutures.TracedThreadPoolExecutor(max_workers, name=name, **options, **kwargs)
        elif kind == "wrapped":
            executor = tracedfutures.traced(ThreadPoolExecutor(max_workers, **kwargs), name, **options)
        elif kind == "user":
            executor = tracedfutures.traced(UserExecutor(max_workers, **kwargs), name, **options)
        elif kind in PROCESS_KINDS:
            executor = tracedfutures.TracedProcessPoolExecutor(
                max_workers, mp_context=multiprocessing.get_context(kind), name=name, **options, **kwargs
            )
        else:
            raise AssertionError(kind)
        self.executors.append(executor)
        return executor

    def gate(self) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self.gates:
            gate.open()
        for executor in self.executors:
            executor.shutdown(wait=True, cancel_futures=True)

    # -- spans ------------------------------------------------------------------------------------
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``."""
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    # -- metrics ----------------------------------------------------------------------------------
    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def series(self, name: str, summed: str = "") -> dict[frozenset[tuple[str, str]], float]:
        """Every sample called ``name`` (``executor_tasks_completed_total``...), keyed by ``labels(...)``; with
        ``summed`` (a label, "function"), added up over that label's values."""
        found: dict[frozenset[tuple[str, str]], float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    key = frozenset((k, v) for k, v in sample.labels.items() if k != summed)
                    found[key] = found.get(key, 0.0) + sample.value
        return found

    def histogram(self, name: str, **labels: str) -> tuple[float, float]:
        """``(count, sum)`` of one histogram series, after checking its buckets are cumulative up to +Inf; without
        a ``function`` label, of every function's series added up ((0, 0) when no task made one)."""
        by_bound: dict[str, float] = {}
        count = total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                rest = {k: v for k, v in sample.labels.items() if k not in ("le", "function") or k in labels}
                if rest != labels:
                    continue
                if sample.name == f"{name}_bucket":
                    by_bound[sample.labels["le"]] = by_bound.get(sample.labels["le"], 0.0) + sample.value
                elif sample.name == f"{name}_count":
                    count += sample.value
                elif sample.name == f"{name}_sum":
                    total += sample.value
        if not by_bound and "function" not in labels:
            return 0.0, 0.0
        buckets = list(by_bound.items())
        assert buckets and buckets[-1][0] == "+Inf", buckets
        counts = [value for _, value in buckets]
        assert counts == sorted(counts), buckets
        assert count == counts[-1]
        assert total >= 0
        return count, total


def stock_executor(kind: str, max_workers: int = 1) -> Executor:
    """The untraced executor a traced executor of ``kind`` stands for, to compare behaviour with."""
    if kind in ("thread", "wrapped"):
        return ThreadPoolExecutor(max_workers)
    if kind == "user":
        return UserExecutor(max_workers)
    return ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context(kind))


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """Fresh telemetry, also the process-wide default for wait / as_completed; warnings logged anew."""
    monkeypatch.setattr(state, "failures_logged", set())
    t = Telemetry()
    tracedfutures.configure(tracer_provider=t.provider, registry=t.registry)
    try:
        yield t
    finally:
        t.close()
        tracedfutures.reset_defaults()


@pytest.fixture(params=THREAD_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each kind of executor that runs tasks in threads of this process."""
    return request.param  # type: ignore[no-any-return]


def span_shape(span: ReadableSpan) -> dict[str, Any]:
    """What a test compares of a task span, after checking its timestamps: the running event lies between
    start and end and gives executor.task.queue_duration exactly; events are in time order."""
    attributes = dict(span.attributes or {})
    events = [event.name for event in span.events]
    stamps = [event.timestamp for event in span.events]
    assert span.start_time is not None and span.end_time is not None
    assert [span.start_time, *stamps, span.end_time] == sorted([span.start_time, *stamps, span.end_time])
    if RUNNING_EVENT in events:
        running = stamps[events.index(RUNNING_EVENT)]
        assert attributes.pop(QUEUE_DURATION) == (running - span.start_time) / 1e9
    else:
        assert QUEUE_DURATION not in attributes
    # Where the task ran differs from run to run (tests/test_running.py checks it): its types only (no process.pid
    # for this process's threads).
    ran_on = [attributes.pop(key, None) for key in (PROCESS_PID, THREAD_ID, THREAD_NAME)]
    types = [type(value) for value in ran_on]
    assert ran_on == [None] * 3 or types in ([int, int, str], [type(None), int, str]), ran_on
    run_for = attributes.pop(RUN_DURATION, None)  # a task run elsewhere: no longer than from its start to the end
    assert run_for is None or 0 <= run_for <= (span.end_time - running) / 1e9, run_for
    return {
        "name": span.name,
        "kind": span.kind.name,
        "parent": span.parent.span_id if span.parent is not None else None,
        "attributes": attributes,
        "status": span.status.status_code.name,
        "description": span.status.description,
        "events": events,
    }


def dask_client(n_workers: int, threads_per_worker: int) -> Iterator[Any]:
    """A Dask client of a LocalCluster of worker processes (no dashboard), for a module-scoped fixture to yield
    from; the cluster closes after the fixture's last test."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def outcome_of(call: Callable[[], Any]) -> tuple[str, Any]:
    """('ok', value) or ('raised', (type, args)) — what the caller sees, to compare traced with stock."""
    try:
        return "ok", call()
    except BaseException as exc:
        return "raised", (type(exc), exc.args)
