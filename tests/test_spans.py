"""Span trees: the task span is a child of the span current at submit, and the parent of spans the task
starts; span names and code.function.name unwrap functools.partial."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from conftest import EXECUTOR_KIND, Telemetry, span_shape
from opentelemetry import trace
from support import current_ids, square

import tracedfutures

TIMEOUT = 30


def tree(spans: Any) -> set[tuple[str, str | None]]:
    """(span name, parent span name) of every span; all in one trace."""
    by_id = {s.context.span_id: s for s in spans}
    assert len({s.context.trace_id for s in spans}) == 1
    return {(s.name, by_id[s.parent.span_id].name if s.parent else None) for s in spans}


def test_span_tree(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind)
    nested = telemetry.executor(kind, name="nested")

    def outer() -> tuple[int, int]:
        with telemetry.tracer.start_as_current_span("inner"):
            assert nested.submit(square, 3).result(TIMEOUT) == 9
        return current_ids()

    with telemetry.tracer.start_as_current_span("caller"):
        ids = executor.submit(outer).result(TIMEOUT)
    executor.shutdown()
    nested.shutdown()

    task = f"pool {outer.__qualname__}"
    assert tree(telemetry.spans()) == {
        ("caller", None),
        (task, "caller"),
        ("inner", task),
        ("nested square", "inner"),
    }
    task_span = telemetry.span(task)
    assert ids == (task_span.context.trace_id, task_span.context.span_id)  # current span inside the task
    assert task_span.instrumentation_scope.name == "tracedfutures"
    assert task_span.instrumentation_scope.version == tracedfutures.__version__


def test_caller_context_is_restored_after_submit(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        future = executor.submit(square, 2)
        assert trace.get_current_span() is caller
    assert future.result(TIMEOUT) == 4
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_sibling_tasks_are_siblings(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        futures = [executor.submit(current_ids) for _ in range(4)]
    ids = [f.result(TIMEOUT) for f in futures]
    executor.shutdown()
    tasks = [s for s in telemetry.spans() if s.name == "pool current_ids"]
    assert {s.parent.span_id for s in tasks} == {caller.get_span_context().span_id}  # type: ignore[union-attr]
    assert sorted(ids) == sorted((s.context.trace_id, s.context.span_id) for s in tasks)
    assert len(set(ids)) == 4


class Job:
    def method(self, x: int) -> int:
        return x + 1

    def __call__(self, x: int) -> int:
        return x + 2


@pytest.mark.parametrize(
    ("fn", "function"),
    [
        (square, "square"),
        (functools.partial(square), "square"),
        (functools.partial(functools.partial(pow, 2)), "pow"),
        (Job().method, "Job.method"),
        (Job(), "Job"),
        (abs, "abs"),
    ],
    ids=["function", "partial", "nested-partial", "method", "callable-object", "builtin"],
)
def test_span_name_and_code_function(telemetry: Telemetry, kind: str, fn: Any, function: str) -> None:
    executor = telemetry.executor(kind)
    assert executor.submit(fn, 3).result(TIMEOUT) == fn(3)
    executor.shutdown()
    (span,) = telemetry.spans()
    assert span_shape(span)["name"] == f"pool {function}"
    assert span_shape(span)["attributes"] == {
        "executor.name": "pool",
        "executor.kind": EXECUTOR_KIND[kind],
        "code.function.name": function,
    }


def test_task_span_times_match_the_future(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind)
    future: Any = executor.submit(square, 2)
    future.result(TIMEOUT)
    executor.shutdown()
    (span,) = telemetry.spans()
    assert (span.start_time, span.events[0].timestamp, span.end_time) == (
        future.submitted_ns,
        future.started_ns,
        future.finished_ns,
    )
    assert future._tf_span is None  # the finished future does not keep its span alive
    assert future._tf_context == span.context  # only the context, for links from wait spans


def test_unsampled_parent_makes_no_task_span_and_its_context_reaches_the_task(
    telemetry: Telemetry, kind: str
) -> None:
    """A parent that is not sampled: no task span is made (the default ParentBased sampler would drop it), and
    the task runs in the caller's context, so spans it starts stay unsampled in the caller's trace (and in a
    thread pool the caller's baggage is there)."""
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    parent = trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(0))
    executor = telemetry.executor(kind)

    def task() -> tuple[int, int, bool, object]:
        with telemetry.tracer.start_as_current_span("inside") as span:
            context = span.get_span_context()
            return context.trace_id, trace.get_current_span().get_span_context().span_id, span.is_recording(), (
                baggage.get_baggage("tenant")
            )

    ctx = baggage.set_baggage("tenant", "t1", trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    token = otel_context.attach(ctx)
    try:
        future: Any = executor.submit(task)
    finally:
        otel_context.detach(token)
    trace_id, _, recording, tenant = future.result(TIMEOUT)
    executor.shutdown()
    # Thread pools run the task in the caller's whole context; other executors get the W3C trace context only.
    assert (trace_id, recording, tenant) == (0x1234, False, None if kind == "user" else "t1")
    assert telemetry.spans() == []  # neither the task span nor the unsampled span inside it
    assert future._tf_span is None and future._tf_context == parent
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 1
