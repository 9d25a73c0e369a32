"""tracedfutures.wait and as_completed: the stdlib's results and exceptions, a span per call linked to the
task spans it hands back (at most 32 links), and latency histograms labelled by return_when and timed_out."""

from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future
from typing import Any

import pytest
from conftest import Telemetry
from support import square

import tracedfutures

TIMEOUT = 30
TIMEOUT_ERROR_TYPE = "TimeoutError"


def raise_(exc: BaseException) -> None:
    raise exc


def link_ids(span: Any) -> list[int]:
    return sorted(link.context.span_id for link in span.links)


def task_ids(telemetry: Telemetry, futures: Any) -> list[int]:
    wanted = {id(f._tf_context) for f in futures}
    return sorted(
        s.context.span_id for s in telemetry.spans() if s.name.startswith("pool ") and id(s.context) in wanted
    )


def wait_counts(telemetry: Telemetry) -> dict[tuple[str, str], float]:
    return {
        (rw, to): telemetry.histogram("futures_wait_seconds", return_when=rw, timed_out=to)[0]
        for rw in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED)
        for to in ("false", "true")
    }


def only(key: tuple[str, str]) -> dict[tuple[str, str], float]:
    counts = {
        (rw, to): 0.0 for rw in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED) for to in ("false", "true")
    }
    counts[key] = 1.0
    return counts


def test_wait_all_completed(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    futures = [executor.submit(square, i) for i in range(3)]
    with telemetry.tracer.start_as_current_span("caller") as caller:
        result = tracedfutures.wait(futures, timeout=TIMEOUT)
    assert type(result) is concurrent.futures._base.DoneAndNotDoneFutures
    assert result == concurrent.futures.wait(futures) == (set(futures), set())
    executor.shutdown()

    span = telemetry.span("futures.wait")
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.kind.name == "INTERNAL"
    assert span.status.status_code.name == "UNSET"
    assert dict(span.attributes or {}) == {
        "futures.return_when": "ALL_COMPLETED",
        "futures.timeout": float(TIMEOUT),
        "futures.count": 3,
        "futures.done_count": 3,
        "futures.timed_out": False,
        "futures.links_dropped": 0,
    }
    assert link_ids(span) == task_ids(telemetry, futures) and len(span.links) == 3
    assert wait_counts(telemetry) == only((ALL_COMPLETED, "false"))


def test_wait_first_completed_times_out(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind, max_workers=2)
    futures = [executor.submit(gate.task, i) for i in range(2)]
    done, not_done = tracedfutures.wait(futures, timeout=0.05, return_when=FIRST_COMPLETED)
    assert (done, not_done) == (set(), set(futures))
    gate.open()
    executor.shutdown()

    span = telemetry.span("futures.wait")
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "futures.return_when": "FIRST_COMPLETED",
        "futures.timeout": 0.05,
        "futures.count": 2,
        "futures.done_count": 0,
        "futures.timed_out": True,
        "futures.links_dropped": 0,
    }
    assert span.links == ()
    assert wait_counts(telemetry) == only((FIRST_COMPLETED, "true"))
    _, seconds = telemetry.histogram("futures_wait_seconds", return_when=FIRST_COMPLETED, timed_out="true")
    assert seconds >= 0.05
    assert span.end_time - span.start_time >= 50_000_000  # type: ignore[operator]


def test_wait_first_exception_met_before_timeout(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind, max_workers=2)
    blocked = executor.submit(gate.task)
    failed = executor.submit(raise_, KeyError("k"))
    done, not_done = tracedfutures.wait([blocked, failed], timeout=TIMEOUT, return_when=FIRST_EXCEPTION)
    assert (done, not_done) == ({failed}, {blocked})
    gate.open()
    executor.shutdown()
    attributes = dict(telemetry.span("futures.wait").attributes or {})
    assert (attributes["futures.timed_out"], attributes["futures.done_count"]) == (False, 1)
    assert wait_counts(telemetry) == only((FIRST_EXCEPTION, "false"))


def test_wait_links_are_capped_at_32(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread", max_workers=4)
    futures: list[Future[Any]] = [executor.submit(square, i) for i in range(40)]
    stock: Future[Any] = Future()
    stock.set_result(0)  # not traced: counted, neither linked nor dropped
    result = tracedfutures.wait([*futures, stock], timeout=TIMEOUT)
    assert result.done == {*futures, stock}
    executor.shutdown()
    span = telemetry.span("futures.wait")
    assert len(span.links) == 32
    assert set(link_ids(span)) <= set(task_ids(telemetry, futures))
    attributes = dict(span.attributes or {})
    assert (
        attributes["futures.count"],
        attributes["futures.done_count"],
        attributes["futures.links_dropped"],
    ) == (
        41,
        41,
        8,
    )


def test_wait_invalid_return_when_raises_like_stdlib(telemetry: Telemetry) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor("thread")
    futures = [executor.submit(gate.task)]
    with pytest.raises(ValueError) as ours:
        tracedfutures.wait(futures, timeout=1, return_when="BOGUS")
    with pytest.raises(ValueError) as stdlib:
        concurrent.futures.wait(futures, timeout=1, return_when="BOGUS")
    assert ours.value.args == stdlib.value.args
    gate.open()
    executor.shutdown()
    span = telemetry.span("futures.wait")
    assert span.status.status_code.name == "ERROR"
    assert dict(span.attributes or {}) == {
        "futures.return_when": "invalid",
        "futures.timeout": 1.0,
        "futures.links_dropped": 0,
        "error.type": "ValueError",
    }
    assert set(wait_counts(telemetry).values()) == {0}


def test_as_completed(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    futures = [executor.submit(square, i) for i in range(3)]
    with telemetry.tracer.start_as_current_span("caller") as caller:
        yielded = list(tracedfutures.as_completed(futures, timeout=TIMEOUT))
    assert sorted(yielded, key=futures.index) == futures
    executor.shutdown()

    span = telemetry.span("futures.as_completed")
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.status.status_code.name == "UNSET"
    assert dict(span.attributes or {}) == {
        "futures.count": 3,
        "futures.timeout": float(TIMEOUT),
        "futures.done_count": 3,
        "futures.timed_out": False,
        "futures.links_dropped": 0,
    }
    assert link_ids(span) == task_ids(telemetry, futures) and len(span.links) == 3
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 1
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="true")[0] == 0
    assert telemetry.histogram("futures_as_completed_next_seconds")[0] == 3


def test_as_completed_timeout(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind, max_workers=2)
    finished = executor.submit(square, 1)
    finished.result(TIMEOUT)
    futures = [finished, executor.submit(gate.task), executor.submit(gate.task)]
    yielded = []
    with pytest.raises(concurrent.futures.TimeoutError) as ours:
        for future in tracedfutures.as_completed(futures, timeout=0.05):
            yielded.append(future)
    with pytest.raises(concurrent.futures.TimeoutError) as stdlib:
        list(concurrent.futures.as_completed(futures, timeout=0.01))
    assert type(ours.value) is type(stdlib.value) is concurrent.futures.TimeoutError
    assert ours.value.args == stdlib.value.args == ("2 (of 3) futures unfinished",)
    assert yielded == [finished]
    gate.open()
    executor.shutdown()

    span = telemetry.span("futures.as_completed")
    assert span.status.status_code.name == "ERROR"
    assert span.status.description is None
    assert dict(span.attributes or {}) == {
        "futures.count": 3,
        "futures.timeout": 0.05,
        "futures.done_count": 1,
        "futures.timed_out": True,
        "futures.links_dropped": 0,
        "error.type": TIMEOUT_ERROR_TYPE,
    }
    assert link_ids(span) == task_ids(telemetry, [finished])
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="true")[0] == 1
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 0
    assert telemetry.histogram("futures_as_completed_next_seconds")[0] == 1


def test_as_completed_is_lazy_and_ends_its_span_when_closed(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread")
    futures = [executor.submit(square, i) for i in range(3)]
    iterator = tracedfutures.as_completed(futures)
    executor.shutdown()
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 0
    assert next(iterator) in futures
    iterator.close()
    attributes = dict(telemetry.span("futures.as_completed").attributes or {})
    assert attributes == {
        "futures.count": 3,
        "futures.done_count": 1,
        "futures.timed_out": False,
        "futures.links_dropped": 0,
    }
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 1


def test_as_completed_links_capped_and_counts_only_futures_handed_back(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread", max_workers=4)
    futures: list[Future[Any]] = [executor.submit(square, i) for i in range(40)]
    concurrent.futures.wait(futures, timeout=TIMEOUT)  # the stdlib's: no span of its own
    stock: Future[Any] = Future()
    stock.set_result(0)  # not traced: handed back, neither linked nor dropped
    handed = list(tracedfutures.as_completed([*futures, stock], timeout=TIMEOUT))
    assert set(handed) == {*futures, stock}
    iterator = tracedfutures.as_completed(futures, timeout=TIMEOUT)
    first = [next(iterator) for _ in range(36)]
    iterator.close()  # 4 traced futures never handed back: not counted
    executor.shutdown()
    whole, closed = [s for s in telemetry.spans() if s.name == "futures.as_completed"]
    assert (len(whole.links), dict(whole.attributes or {})["futures.links_dropped"]) == (32, 8)
    assert (len(closed.links), dict(closed.attributes or {})["futures.links_dropped"]) == (32, 4)
    assert set(link_ids(closed)) <= set(task_ids(telemetry, first))
    assert dict(closed.attributes or {})["futures.done_count"] == 36


def test_as_completed_steps_batched_yet_a_blocked_step_shows_at_once(telemetry: Telemetry) -> None:
    """Steps that did not block count as 0 s and reach the histogram in batches (and all of them by the end); a
    step that blocked is there as soon as its future is yielded."""
    done: list[Future[Any]] = []
    for i in range(600):
        future: Future[Any] = Future()
        future.set_result(i)
        done.append(future)
    pending: Future[Any] = Future()
    timer = threading.Timer(0.05, pending.set_result, args=(None,))
    iterator = tracedfutures.as_completed([*done, pending], timeout=TIMEOUT)
    for _ in range(600):
        next(iterator)
    steps = telemetry.histogram("futures_as_completed_next_seconds")[0]
    # Batches of 256 were handed over (two, unless a step blocked over 1 ms); fewer than 256 steps are held.
    assert 600 - 256 < steps <= 600
    timer.start()
    assert next(iterator) is pending  # blocked about 50 ms: handed over at once, with the steps before it
    count, total = telemetry.histogram("futures_as_completed_next_seconds")[:2]
    assert count == 601 and total >= 0.04
    assert list(iterator) == []
    assert telemetry.histogram("futures_as_completed_next_seconds")[0] == 601
    # The futures already done count as 0 s (the first step also set the iteration up, the last one waited).
    assert telemetry.value("futures_as_completed_next_seconds_bucket", le="0.0001") >= 599
    # The blocked step is above 25 ms (the first step may be too, on a loaded machine).
    assert 599 <= telemetry.value("futures_as_completed_next_seconds_bucket", le="0.025") <= 600
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 1


def test_wait_and_as_completed_accept_stock_futures(telemetry: Telemetry) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as stock:
        futures = [stock.submit(square, i) for i in range(4)]
        assert tracedfutures.wait(futures).done == set(futures)
        assert set(tracedfutures.as_completed(futures)) == set(futures)
    for name in ("futures.wait", "futures.as_completed"):
        span = telemetry.span(name)
        assert span.links == ()
        assert dict(span.attributes or {})["futures.links_dropped"] == 0
