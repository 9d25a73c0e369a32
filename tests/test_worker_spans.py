"""One trace across processes: the spans a task starts in a worker process (fork, forkserver and spawn pools,
loky, a Dask LocalCluster with worker processes) come home with its outcome, as children of its task span in
the same trace, exported once by the submitting process with its resource; the task span's running event is
the worker's; what travels is picklable; a worker with a tracer provider of its own exports its own spans."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import pickle
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import cloudpickle
import conftest
import pytest
from conftest import Telemetry, outcome_of
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.test.globals_test import reset_trace_globals
from support import CustomError, square
from workersupport import (
    SCOPE,
    WorkError,
    failing_work,
    many_spans,
    own_provider,
    provider_kind,
    traced_work,
    tree,
)

import tracedfutures
from tracedfutures import _worker_spans
from tracedfutures._calls import RemoteCall
from tracedfutures._state import state
from tracedfutures._wire import Envelope, take_remote_data
from tracedfutures._worker_spans import MAX_WORKER_SPANS

TIMEOUT = 60
KINDS = ("fork", "forkserver", "spawn", "loky", "dask")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """One LocalCluster with two worker processes for the whole module."""
    yield from conftest.dask_client(n_workers=2, threads_per_worker=1)


def make_executor(kind: str, telemetry: Telemetry, request: pytest.FixtureRequest, **options: Any) -> Executor:
    """A traced executor of ``kind`` recording to ``telemetry``, named "pool"."""
    record = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    if kind in ("fork", "forkserver", "spawn"):
        context = multiprocessing.get_context(kind)
        executor: Executor = tracedfutures.TracedProcessPoolExecutor(
            1, mp_context=context, name="pool", **record, **options
        )
        telemetry.executors.append(executor)
        return executor
    if kind == "loky":
        import loky

        return tracedfutures.traced(loky.get_reusable_executor(max_workers=1), "pool", **record)
    if kind == "dask":
        client = request.getfixturevalue("dask_client")
        return tracedfutures.traced(client.get_executor(), "pool", **record)
    raise AssertionError(kind)


def finished(telemetry: Telemetry, count: int) -> list[Any]:
    """The finished spans once there are ``count`` (a chained task span ends just after its result is set)."""
    deadline = time.monotonic() + TIMEOUT
    while len(telemetry.spans()) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # nothing more arrives
    return telemetry.spans()


@pytest.mark.parametrize("kind", KINDS)
def test_worker_spans_are_children_of_the_task_span(
    telemetry: Telemetry, request: pytest.FixtureRequest, kind: str
) -> None:
    executor = make_executor(kind, telemetry, request)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        work = executor.submit(traced_work, 7)
        failing = executor.submit(failing_work)
        many = executor.submit(many_spans, MAX_WORKER_SPANS + 5)
    pid, started_in_worker = work.result(TIMEOUT)
    with pytest.raises(WorkError, match=r"^failed on purpose$"):
        failing.result(TIMEOUT)
    assert "_tracedfutures_remote" not in vars(failing.exception())
    assert many.result(TIMEOUT) == MAX_WORKER_SPANS + 5
    assert pid != os.getpid()

    spans = finished(telemetry, 7 + MAX_WORKER_SPANS)
    assert tree(spans) == sorted(
        [
            ("caller", None),
            ("pool traced_work", "caller"),
            ("outer", "pool traced_work"),
            ("inner", "outer"),
            ("pool failing_work", "caller"),
            ("failing", "pool failing_work"),
            ("pool many_spans", "caller"),
            *((f"s{i}", "pool many_spans") for i in range(MAX_WORKER_SPANS)),
        ]
    )
    trace_id = caller.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert len({s.context.span_id for s in spans}) == len(spans)
    by_name = {s.name: s for s in spans}
    task, outer, inner = by_name["pool traced_work"], by_name["outer"], by_name["inner"]

    # The running event is the worker's start; the worker's spans lie between it and the task span's end.
    (running,) = [e.timestamp for e in task.events if e.name == "running"]
    assert task.start_time is not None and task.end_time is not None
    assert task.start_time <= running <= started_in_worker
    assert running <= outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time <= task.end_time
    assert task.attributes is not None
    assert task.attributes["executor.task.queue_duration"] == (running - task.start_time) / 1e9
    assert "executor.task.worker_spans_dropped" not in task.attributes
    assert by_name["pool many_spans"].attributes["executor.task.worker_spans_dropped"] == 5  # type: ignore[index]

    # Re-created as they ended in the worker, with the submitting process's resource.
    assert dict(outer.attributes or {}) == {"n": 7}
    assert [(e.name, dict(e.attributes or {})) for e in outer.events] == [("step", {"i": 1})]
    assert (outer.kind, inner.kind) == (trace.SpanKind.INTERNAL, trace.SpanKind.CLIENT)
    assert outer.instrumentation_scope is not None
    assert (outer.instrumentation_scope.name, outer.instrumentation_scope.version) == SCOPE
    assert outer.parent is not None and outer.parent.is_remote and not inner.parent.is_remote  # type: ignore[union-attr]
    assert {s.resource for s in spans} == {telemetry.provider.resource}
    failing_span = by_name["failing"]
    assert failing_span.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in failing_span.events] == ["exception"]
    assert failing_span.events[0].attributes["exception.type"] == "workersupport.WorkError"  # type: ignore[index]
    assert by_name["pool failing_work"].attributes["error.type"] == "workersupport.WorkError"  # type: ignore[index]


class FileExporter(SpanExporter):
    """Appends (name, span id, pid) of every span it exports to a file, from whichever process exports."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Any) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps([span.name, span.context.span_id, os.getpid()]) + "\n")
        return SpanExportResult.SUCCESS


@pytest.fixture
def global_provider() -> Iterator[None]:
    reset_trace_globals()
    try:
        yield
    finally:
        reset_trace_globals()


def test_fork_inherited_global_provider_exports_once_from_the_submitter(
    telemetry: Telemetry, global_provider: None, tmp_path: Any
) -> None:
    """The worker inherits the submitter's global provider through fork: there it only collects, so every
    span is exported once, by the submitting process, through its own span processors."""
    path = str(tmp_path / "exported.jsonl")
    telemetry.provider.add_span_processor(SimpleSpanProcessor(FileExporter(path)))
    trace.set_tracer_provider(telemetry.provider)
    executor = telemetry.executor("fork")
    with telemetry.tracer.start_as_current_span("caller"):
        future = executor.submit(traced_work, 1)
        kind = executor.submit(provider_kind)
    future.result(TIMEOUT)
    assert kind.result(TIMEOUT) == "TracerProvider"  # the inherited one, not one of ours
    executor.shutdown()
    assert tree(telemetry.spans()) == sorted(
        [
            ("caller", None),
            ("pool traced_work", "caller"),
            ("outer", "pool traced_work"),
            ("inner", "outer"),
            ("pool provider_kind", "caller"),
        ]
    )
    with open(path) as lines:
        exported = [json.loads(line) for line in lines]
    assert sorted(name for name, _, _ in exported) == sorted(s.name for s in telemetry.spans())
    assert {pid for _, _, pid in exported} == {os.getpid()}


def test_worker_with_its_own_provider_exports_its_own_spans(telemetry: Telemetry, tmp_path: Any) -> None:
    """A worker that set up a tracer provider itself (here in the pool's initializer) exports the spans made
    there, with its own resource; nothing travels, so nothing is exported twice."""
    path = str(tmp_path / "worker.jsonl")
    executor = telemetry.executor("spawn", initializer=own_provider, initargs=(path,))
    with telemetry.tracer.start_as_current_span("caller") as caller:
        pid, _ = executor.submit(traced_work, 2).result(TIMEOUT)
    executor.shutdown()
    assert tree(telemetry.spans()) == [("caller", None), ("pool traced_work", "caller")]
    task = telemetry.span("pool traced_work")
    with open(path) as lines:
        exported = [json.loads(line) for line in lines]
    trace_id = caller.get_span_context().trace_id
    assert sorted((name, tid, worker) for name, tid, _, worker in exported) == [
        ("inner", trace_id, pid),
        ("outer", trace_id, pid),
    ]
    assert {name: parent for name, _, parent, _ in exported}["outer"] == task.context.span_id


@pytest.mark.parametrize("provider", ["no-op", "not sampled"])
def test_nothing_travels_when_the_task_span_does_not_record(telemetry: Telemetry, provider: str) -> None:
    """No recording task span: the call carries no origin, the worker sets up nothing (its global provider
    stays the API's proxy) and the result comes back with its timestamps only."""
    chosen = trace.NoOpTracerProvider() if provider == "no-op" else TracerProvider(sampler=ALWAYS_OFF)
    executor = tracedfutures.TracedProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), tracer_provider=chosen, registry=telemetry.registry
    )
    telemetry.executors.append(executor)
    assert executor.submit(traced_work, 3).result(TIMEOUT)[0] != os.getpid()
    assert executor.submit(provider_kind).result(TIMEOUT) == "ProxyTracerProvider"


def test_remote_call_in_the_submitting_process_collects_nothing(telemetry: Telemetry) -> None:
    """A RemoteCall run where it was submitted (a user's executor of threads, Dask with processes=False)
    leaves the process's tracer provider alone and brings no spans."""
    before = trace.get_tracer_provider()
    with telemetry.tracer.start_as_current_span("task") as span:
        context = span.get_span_context()
    wire = (context.trace_id, context.span_id, int(context.trace_flags))
    envelope = RemoteCall(traced_work, wire, state.process_token)(4)
    # Where and when it ran, and its CPU time on that thread: no spans.
    assert type(envelope) is Envelope and len(envelope.data) == 4 and envelope.data[3] >= 0
    assert RemoteCall(square, wire, 0)(5).data.__len__() == 4
    assert trace.get_tracer_provider() is before


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_what_travels_pickles(dumps: Any) -> None:
    call = RemoteCall(functools.partial(square, 3), (1 << 100, 7, 1), 12345)
    copy = pickle.loads(dumps(call))
    assert (copy.parent, copy.origin, copy.fn.func, copy.fn.args) == ((1 << 100, 7, 1), 12345, square, (3,))
    assert copy.__name__ == "square" and RemoteCall(len, None).__name__ == "len"
    record = (
        "outer", 9, 7, True, 1, (("k", "v"),), 0, 10, 20, {"n": 1, "t": (1, 2)}, (("e", {}, 15),), (), 0, None,
        ("s", "1", None),
    )  # fmt: skip
    envelope = pickle.loads(dumps(Envelope([1], (10, 20, (record,), 3))))
    assert (envelope.value, envelope.data) == ([1], (10, 20, (record,), 3))
    error = CustomError("boom")
    error.__dict__["_tracedfutures_remote"] = (10, 20, (record,), 0)
    again = pickle.loads(dumps(error))
    assert take_remote_data(again) == (10, 20, (record,), 0) and vars(again) == {}


def locked(lock: Any) -> int:
    return 1


@pytest.mark.parametrize("kind", ["spawn", "loky", "dask"])
def test_unpicklable_function_fails_as_stock(telemetry: Telemetry, request: pytest.FixtureRequest, kind: str) -> None:
    unpicklable = functools.partial(locked, threading.Lock())
    stock: Any
    if kind == "spawn":
        stock = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    elif kind == "loky":
        import loky

        stock = loky.get_reusable_executor(max_workers=1)
    else:
        stock = request.getfixturevalue("dask_client").get_executor()
    expected = outcome_of(lambda: stock.submit(unpicklable).result(TIMEOUT))
    if kind == "spawn":
        stock.shutdown()
    executor = make_executor(kind, telemetry, request)
    with telemetry.tracer.start_as_current_span("caller"):
        seen = outcome_of(lambda: executor.submit(unpicklable).result(TIMEOUT))
    assert expected[0] == "raised"
    if kind == "dask":  # Dask names each submission with a new random key
        expected, seen = (re.sub(r"-[0-9a-f]{32}", "-<key>", repr(outcome)) for outcome in (expected, seen))
    assert seen == expected
    assert executor.submit(square, 3).result(TIMEOUT) == 9  # the executor still works


def test_collector_drops_spans_of_other_tasks_and_late_ones() -> None:
    """The worker's collector keeps a task's descendants only, and only while the task runs."""
    collector = _worker_spans._Collector()
    provider = TracerProvider()
    provider.add_span_processor(collector)
    tracer = provider.get_tracer("t")
    task_context = trace.SpanContext(1 << 64, 99, is_remote=True, trace_flags=trace.TraceFlags(1))
    other_context = trace.SpanContext(1 << 64, 98, is_remote=True, trace_flags=trace.TraceFlags(1))
    task = collector.begin(1 << 64, 99)
    in_task = trace.set_span_in_context(trace.NonRecordingSpan(task_context))
    late = tracer.start_span("late", context=in_task)
    with tracer.start_as_current_span("mine", context=in_task):
        tracer.start_span("child").end()
    tracer.start_span("other", context=trace.set_span_in_context(trace.NonRecordingSpan(other_context))).end()
    tracer.start_span("root").end()
    records, dropped = collector.finish(task)
    late.end()
    assert sorted(r[0] for r in records) == ["child", "mine"] and dropped == 0
    assert collector._owner == {} and collector._tasks == {}
