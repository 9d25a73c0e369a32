"""ConcurrentFuturesInstrumentor: stock pools made before or after instrument() are traced, as are
concurrent.futures.wait / as_completed; uninstrument() puts back the very same objects."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import CHAINED_IN_FALLBACK, FALLBACK_FORCED, Telemetry, outcome_of
from support import fail, square

import tracedfutures
from tracedfutures import ConcurrentFuturesInstrumentor, TracedFuture, _config

TIMEOUT = 30
ORIGINAL = {
    "thread_submit": ThreadPoolExecutor.__dict__["submit"],
    "process_submit": ProcessPoolExecutor.__dict__["submit"],
    "wait": concurrent.futures._base.wait,
    "as_completed": concurrent.futures._base.as_completed,
}


def assert_original() -> None:
    assert ThreadPoolExecutor.__dict__["submit"] is ORIGINAL["thread_submit"]
    assert ThreadPoolExecutor.submit is ORIGINAL["thread_submit"]
    assert ProcessPoolExecutor.submit is ORIGINAL["process_submit"]
    assert concurrent.futures.wait is ORIGINAL["wait"]
    assert concurrent.futures.as_completed is ORIGINAL["as_completed"]


@pytest.fixture
def instrumentor(telemetry: Telemetry) -> Iterator[ConcurrentFuturesInstrumentor]:
    tracedfutures.reset_defaults()  # what instrument() is given is all there is
    assert_original()
    instrumentor = ConcurrentFuturesInstrumentor()
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
        assert_original()


@pytest.mark.skipif(FALLBACK_FORCED, reason=CHAINED_IN_FALLBACK)
def test_traces_stock_pools_and_waits(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    thread_before = ThreadPoolExecutor(1)
    process_before = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    thread_after = ThreadPoolExecutor(1)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        futures = [
            thread_before.submit(square, 2),
            thread_after.submit(square, 3),
            process_before.submit(square, 4),
        ]
        assert all(type(f) is TracedFuture for f in futures)
        assert concurrent.futures.wait(futures, timeout=TIMEOUT) == (set(futures), set())
        assert set(concurrent.futures.as_completed(futures, timeout=TIMEOUT)) == set(futures)
        assert list(process_before.map(square, range(4), chunksize=2)) == [0, 1, 4, 9]
    for executor in (thread_before, thread_after, process_before):
        executor.shutdown()

    caller_id = caller.get_span_context().span_id
    assert sorted((s.name, s.parent.span_id if s.parent else None) for s in telemetry.spans()) == sorted(
        [
            ("caller", None),
            ("ThreadPoolExecutor square", caller_id),
            ("ThreadPoolExecutor square", caller_id),
            ("ProcessPoolExecutor square", caller_id),
            ("ProcessPoolExecutor square", caller_id),
            ("ProcessPoolExecutor square", caller_id),
            ("futures.wait", caller_id),
            ("futures.as_completed", caller_id),
        ]
    )
    assert len(telemetry.span("futures.wait").links) == 3
    assert telemetry.value("executor_tasks_submitted_total", executor="ThreadPoolExecutor") == 2
    assert telemetry.value("executor_tasks_submitted_total", executor="ProcessPoolExecutor") == 3
    assert telemetry.value("futures_wait_seconds_count", return_when="ALL_COMPLETED", timed_out="false") == 1


def test_uninstrument_restores_the_originals(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    assert ThreadPoolExecutor.__dict__["submit"] is not ORIGINAL["thread_submit"]
    assert ProcessPoolExecutor.__dict__["submit"] is not ORIGINAL["process_submit"]
    # wrapped in place (wrapt), so that uninstrument() unwraps them: tracedfutures' own wait and as_completed run
    assert concurrent.futures.wait.__wrapped__ is ORIGINAL["wait"]  # type: ignore[attr-defined]
    assert concurrent.futures.as_completed.__wrapped__ is ORIGINAL["as_completed"]  # type: ignore[attr-defined]
    executor = ThreadPoolExecutor(1)
    assert type(executor.submit(square, 2)) is TracedFuture
    instrumentor.uninstrument()
    assert_original()
    future = executor.submit(square, 3)
    assert type(future) is Future and future.result(TIMEOUT) == 9
    concurrent.futures.wait([future])
    executor.shutdown()
    assert [s.name for s in telemetry.spans()] == ["ThreadPoolExecutor square"]


def test_uninstrument_puts_back_another_patch(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    """A patch of concurrent.futures.wait made before instrumenting is there again after uninstrument()."""
    calls: list[int] = []

    def patched_wait(fs: Any, timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> Any:
        calls.append(len(fs))
        return ORIGINAL["wait"](fs, timeout, return_when)

    concurrent.futures.wait = patched_wait
    try:
        instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
        future: Future[int] = Future()
        future.set_result(1)
        assert concurrent.futures.wait([future], timeout=TIMEOUT) == ({future}, set())
        assert [s.name for s in telemetry.spans()] == ["futures.wait"]
        instrumentor.uninstrument()
        assert concurrent.futures.wait is patched_wait
        assert concurrent.futures.wait([future]) == ({future}, set()) and calls == [1]
    finally:
        concurrent.futures.wait = ORIGINAL["wait"]


def test_the_instrumentors_options_stay_with_it(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    """instrument()'s options are the instrumentor's: configure()'s defaults (which traced executors and
    tracedfutures.wait use) are neither changed by instrument() nor reset by uninstrument()."""
    tracedfutures.configure(tracer_provider=telemetry.provider, registry=telemetry.registry)
    defaults = _config.defaults()
    other = Telemetry()
    instrumentor.instrument(tracer_provider=other.provider, registry=other.registry, record_exception_messages=False)
    assert _config.defaults() is defaults
    with ThreadPoolExecutor(1) as stock:
        failed = stock.submit(fail, "secret")
        assert concurrent.futures.wait([failed], timeout=TIMEOUT).not_done == set()
    traced = telemetry.executor("thread", name="traced")
    tracedfutures.wait([traced.submit(fail, "shown")], timeout=TIMEOUT)
    traced.shutdown()  # its task span has ended (a waiter may wake before it ends)
    instrumentor.uninstrument()
    assert _config.defaults() is defaults
    assert sorted(s.name for s in other.spans()) == ["ThreadPoolExecutor fail", "futures.wait"]
    assert sorted(s.name for s in telemetry.spans()) == ["futures.wait", "traced fail"]
    messages = {
        span.name: [event.attributes.get("exception.message") for event in span.events if event.name == "exception"]
        for span in [*other.spans(), *telemetry.spans()]
    }
    assert messages["ThreadPoolExecutor fail"] == [None] and messages["traced fail"] == ["shown"]
    assert other.value("executor_tasks_submitted_total", executor="ThreadPoolExecutor") == 1
    assert telemetry.value("executor_tasks_submitted_total", executor="ThreadPoolExecutor") is None
    assert telemetry.value("executor_tasks_submitted_total", executor="traced") == 1


def test_instrumenting_twice_wraps_once(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    ConcurrentFuturesInstrumentor().instrument(
        tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    with ThreadPoolExecutor(1) as executor:
        assert executor.submit(square, 2).result(TIMEOUT) == 4
    assert [s.name for s in telemetry.spans()] == ["ThreadPoolExecutor square"]


def test_traced_executors_are_not_traced_twice(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    wrapped = telemetry.executor("wrapped")
    subclass = telemetry.executor("thread", name="sub")
    assert wrapped.submit(square, 2).result(TIMEOUT) == 4
    assert subclass.submit(square, 3).result(TIMEOUT) == 9
    wrapped.shutdown()
    subclass.shutdown()
    assert sorted(s.name for s in telemetry.spans()) == ["pool square", "sub square"]


def test_the_sdks_own_work_is_not_traced(telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor) -> None:
    """The SDK detects its resource on a thread pool (on every provider it makes, and in every forked child): its
    set-up, not the program's; the program's own tasks on the same kind of pool are traced."""
    from opentelemetry.sdk.resources import (
        SERVICE_INSTANCE_ID,
        Resource,
        ServiceInstanceIdResourceDetector,
        get_aggregated_resources,
    )

    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    resource = get_aggregated_resources([ServiceInstanceIdResourceDetector()], Resource.get_empty())
    assert SERVICE_INSTANCE_ID in resource.attributes
    with ThreadPoolExecutor(1) as executor:
        assert executor.submit(square, 2).result(TIMEOUT) == 4
    assert [s.name for s in telemetry.spans()] == ["ThreadPoolExecutor square"]
    assert telemetry.value("executor_tasks_submitted_total", executor="ThreadPoolExecutor") == 1


@pytest.mark.parametrize("kind", ["thread", "wrapped", "user"])
def test_traced_pools_leave_the_sdks_own_work_untraced(telemetry: Telemetry, kind: str) -> None:
    """Drop-in classes put in the stdlib's place (as CPython's suite runs here) and traced() pools alike: the
    SDK's resource detection, which its at-fork hook runs in every forked child, gets the stdlib's behaviour
    and no telemetry (a span processor's lock a parent thread held at the fork would hang the child)."""
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, ServiceInstanceIdResourceDetector

    executor = telemetry.executor(kind)
    detected = executor.submit(ServiceInstanceIdResourceDetector().detect)
    assert SERVICE_INSTANCE_ID in detected.result(TIMEOUT).attributes
    assert executor.submit(square, 2).result(TIMEOUT) == 4
    executor.shutdown()
    assert [s.name for s in telemetry.spans()] == ["pool square"]
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 1


def test_submit_signature_errors_unchanged(
    telemetry: Telemetry, instrumentor: ConcurrentFuturesInstrumentor
) -> None:
    with ThreadPoolExecutor(1) as executor:
        calls = [
            lambda: executor.submit(),  # type: ignore[call-arg]
            lambda: executor.submit(fn=square),  # type: ignore[call-arg]
            lambda: ThreadPoolExecutor.submit(executor, square, 4).result(TIMEOUT),
        ]
        expected = [outcome_of(call) for call in calls]
        instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
        assert [outcome_of(call) for call in calls] == expected
    assert expected[0][1][0] is TypeError and expected[2] == ("ok", 16)
    assert [s.name for s in telemetry.spans()] == ["ThreadPoolExecutor square"]


def test_instrumentation_dependencies() -> None:
    assert tuple(ConcurrentFuturesInstrumentor().instrumentation_dependencies()) == ()


def test_entry_point() -> None:
    (entry_point,) = [
        ep
        for ep in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
        if ep.name == "concurrent_futures"
    ]
    assert entry_point.value == "tracedfutures.instrumentor:ConcurrentFuturesInstrumentor"
    assert entry_point.load() is ConcurrentFuturesInstrumentor
