"""Context propagation composes: with opentelemetry-instrumentation-threading also instrumented (before or after
ours, or with our executor classes and traced()), a thread pool task gets its context attached once and the
spans are identical to those without it; asyncio's run_in_executor, to_thread through a traced default
executor, and wrap_future keep the caller's span as the parent."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Telemetry, span_shape
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from workersupport import traced_work, tree

import tracedfutures
from tracedfutures import ConcurrentFuturesInstrumentor

TIMEOUT = 30
STOCK_SUBMIT = ThreadPoolExecutor.__dict__["submit"]


class AttachCounter:
    """Counts ``opentelemetry.context.attach`` calls per thread (ours and the threading instrumentation's)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[int, int] = {}
        self.monkeypatch = monkeypatch
        attach = otel_context.attach

        def counting(context: Any) -> Any:
            ident = threading.get_ident()
            self.counts[ident] = self.counts.get(ident, 0) + 1
            return attach(context)

        monkeypatch.setattr(otel_context, "attach", counting)

    def here(self) -> int:
        return self.counts.get(threading.get_ident(), 0)


def child_task(counter: AttachCounter, tracer: trace.Tracer) -> tuple[int, int, int]:
    """Runs in a worker thread: how many attaches preceded it there since the last task, and the current
    span's ids."""
    attaches = counter.here()
    context = trace.get_current_span().get_span_context()
    with tracer.start_as_current_span("child"):
        pass
    counter.counts[threading.get_ident()] = 0
    return attaches, context.trace_id, context.span_id


def run_workload(telemetry: Telemetry, make: Callable[[], Any]) -> list[Any]:
    """Submit child_task from inside a caller span on a pool whose thread already exists; returns the shapes of
    the task and child spans. Each task saw exactly one attach before it ran, and the task span as current."""
    executor = make()
    executor.submit(int).result(TIMEOUT)  # the worker thread exists before attaches are counted
    telemetry.exporter.clear()
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter = AttachCounter(monkeypatch)
        with telemetry.tracer.start_as_current_span("caller"):
            results = [executor.submit(child_task, counter, telemetry.tracer).result(TIMEOUT) for _ in range(2)]
    executor.shutdown()
    tasks = [s for s in telemetry.spans() if s.name.endswith("child_task")]
    assert [attaches for attaches, _, _ in results] == [1, 1]
    assert sorted((trace_id, span_id) for _, trace_id, span_id in results) == sorted(
        (s.context.trace_id, s.context.span_id) for s in tasks
    )
    assert tree(telemetry.spans()) == [
        ("caller", None),
        ("child", "pool child_task"),
        ("child", "pool child_task"),
        ("pool child_task", "caller"),
        ("pool child_task", "caller"),
    ]
    shapes = []
    for span in sorted(telemetry.spans(), key=lambda s: s.name):
        shape = span_shape(span)
        shape["parent"] = None if span.parent is None else spans_name(telemetry, span.parent.span_id)
        shapes.append(shape)
    telemetry.exporter.clear()
    return shapes


def spans_name(telemetry: Telemetry, span_id: int) -> str:
    return next(s.name for s in telemetry.spans() if s.context.span_id == span_id)


@pytest.fixture
def stock_submit() -> Iterator[None]:
    yield
    assert ThreadPoolExecutor.__dict__["submit"] is STOCK_SUBMIT


ORDERS = ["threading first", "threading after", "traced() and threading", "subclass and threading"]


@pytest.mark.parametrize("order", ORDERS)
def test_threading_instrumentation_composes(telemetry: Telemetry, stock_submit: None, order: str) -> None:
    options = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    if order in ("threading first", "threading after"):

        def make() -> Any:
            return ThreadPoolExecutor(1, thread_name_prefix="pool")

        ours = ConcurrentFuturesInstrumentor()
    elif order == "traced() and threading":

        def make() -> Any:
            return tracedfutures.traced(ThreadPoolExecutor(1), "pool", **options)

    else:

        def make() -> Any:
            return tracedfutures.TracedThreadPoolExecutor(1, name="pool", **options)

    # The spans without the threading instrumentation are the reference.
    if order in ("threading first", "threading after"):
        ours.instrument(**options)
        try:
            expected = run_workload(telemetry, make)
        finally:
            ours.uninstrument()
    else:
        expected = run_workload(telemetry, make)

    threading_instrumentor = ThreadingInstrumentor()
    stack: list[Any] = []
    try:
        if order == "threading after":
            ours.instrument(**options)
            stack.append(ours)
        threading_instrumentor.instrument()
        stack.append(threading_instrumentor)
        if order == "threading first":
            ours.instrument(**options)
            stack.append(ours)
        seen = run_workload(telemetry, make)
    finally:
        for instrumentor in reversed(stack):  # the outermost wrapper comes off first
            instrumentor.uninstrument()
    assert seen == expected


def in_thread(value: str, tracer: trace.Tracer) -> tuple[str, int, int]:
    """Runs in a worker thread: a context variable of the caller, and the current span's ids."""
    context = trace.get_current_span().get_span_context()
    with tracer.start_as_current_span("child"):
        pass
    return CALLER_VAR.get("unset") + value, context.trace_id, context.span_id


CALLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("caller_var")


@pytest.mark.parametrize("how", ["run_in_executor", "to_thread", "wrap_future"])
def test_asyncio_keeps_the_caller_span_as_parent(telemetry: Telemetry, how: str) -> None:
    executor = telemetry.executor("thread", max_workers=2)

    async def main() -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        if how == "to_thread":
            loop.set_default_executor(executor)
        CALLER_VAR.set("set by the caller, ")
        with telemetry.tracer.start_as_current_span("caller") as caller:
            await asyncio.sleep(0)  # the span stays current across the coroutine's suspensions
            if how == "run_in_executor":
                result = await loop.run_in_executor(executor, in_thread, "ok", telemetry.tracer)
            elif how == "to_thread":
                result = await asyncio.to_thread(in_thread, "ok", telemetry.tracer)
            else:
                result = await asyncio.wrap_future(executor.submit(in_thread, "ok", telemetry.tracer))
        return result, caller.get_span_context().span_id

    (value, trace_id, span_id), caller_id = asyncio.run(main())
    executor.shutdown()
    task = telemetry.span("pool in_thread")
    assert tree(telemetry.spans()) == [("caller", None), ("child", "pool in_thread"), ("pool in_thread", "caller")]
    assert task.parent is not None and task.parent.span_id == caller_id
    assert (trace_id, span_id) == (task.context.trace_id, task.context.span_id)
    # to_thread runs the function in a copy of the caller's contextvars; run_in_executor and submit do not.
    assert value == ("set by the caller, ok" if how == "to_thread" else "unsetok")
    assert task.attributes is not None and task.attributes["code.function.name"] == "in_thread"


def test_asyncio_run_in_executor_with_a_process_pool(telemetry: Telemetry) -> None:
    executor = telemetry.executor("fork")

    async def main() -> Any:
        with telemetry.tracer.start_as_current_span("caller"):
            return await asyncio.get_running_loop().run_in_executor(executor, traced_work, 5)

    asyncio.run(main())
    executor.shutdown()
    assert tree(telemetry.spans()) == [
        ("caller", None),
        ("inner", "outer"),
        ("outer", "pool traced_work"),
        ("pool traced_work", "caller"),
    ]
