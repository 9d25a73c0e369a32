"""Traced executors behave as the executors they stand for: real Futures that stdlib wait / as_completed
and asyncio accept, the same results, exceptions and messages, unchanged thread names, and nothing on
stdout/stderr."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future
from typing import Any

import pytest
from conftest import Telemetry, outcome_of, stock_executor
from opentelemetry import trace
from support import current_ids, square

import tracedfutures

TIMEOUT = 30


def raise_(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize("kind", ["thread", "wrapped", "user", "fork"])
def test_futures_are_stdlib_futures(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind)
    future = executor.submit(square, 5)
    assert isinstance(future, Future)
    assert future.result(TIMEOUT) == 25
    executor.shutdown()


def test_result_is_the_very_object(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind)
    value, error = object(), LookupError("x")
    assert executor.submit(lambda: value).result(TIMEOUT) is value
    assert executor.submit(raise_, error).exception(TIMEOUT) is error
    assert executor.submit(lambda: None).result(TIMEOUT) is None
    executor.shutdown()


def test_done_callbacks_get_the_future_once(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    executor.submit(gate.task)
    future = executor.submit(square, 2)
    called: list[Any] = []
    future.add_done_callback(called.append)
    cancelled = executor.submit(square, 3)
    cancelled.add_done_callback(called.append)
    assert cancelled.cancel()
    gate.open()
    assert future.result(TIMEOUT) == 4
    executor.shutdown()
    assert called == [cancelled, future]


def test_stdlib_wait_and_as_completed(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    blocked = executor.submit(gate.task, "late")
    cancelled = executor.submit(square, 4)
    assert cancelled.cancel()
    assert concurrent.futures.wait([blocked], timeout=0.01) == (set(), {blocked})
    gate.open()
    assert set(concurrent.futures.as_completed([blocked, cancelled], timeout=TIMEOUT)) == {blocked, cancelled}
    assert blocked.result() == "late"

    gate = telemetry.gate()
    blocked = executor.submit(gate.task)
    never: Future[Any] = Future()
    threading.Timer(0.02, gate.open).start()  # completes while the stdlib's waiter is installed
    done, not_done = concurrent.futures.wait([blocked, never], timeout=TIMEOUT, return_when=FIRST_COMPLETED)
    assert (done, not_done) == ({blocked}, {never})
    executor.shutdown()


def test_asyncio_wrap_future_and_run_in_executor(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)

    async def main() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        wrapped = await asyncio.wrap_future(executor.submit(square, 6))
        with telemetry.tracer.start_as_current_span("coroutine") as caller:
            ids = await loop.run_in_executor(executor, current_ids)
        with pytest.raises(KeyError):
            await loop.run_in_executor(executor, raise_, KeyError("k"))
        return wrapped, ids, caller

    wrapped, ids, caller = asyncio.run(main())
    executor.shutdown()
    assert wrapped == 36
    task = telemetry.span("pool current_ids")
    assert ids == (task.context.trace_id, task.context.span_id)
    assert task.parent is not None and task.parent.span_id == caller.get_span_context().span_id


def test_map_matches_builtin_map(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    args = (range(6), [2, 3] * 5)
    assert list(executor.map(pow, *args, timeout=TIMEOUT)) == list(map(pow, *args))
    assert list(executor.map(pow, *args, chunksize=4)) == list(map(pow, *args))
    executor.shutdown()
    assert len(telemetry.spans()) == 12


def test_map_timeout_raises_timeout_error(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    results = executor.map(gate.task, [1, 2], timeout=0.05)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    gate.open()
    executor.shutdown()


@pytest.mark.parametrize("kind", ["thread", "wrapped", "user", "fork"])
def test_non_callable_fails_through_the_future_as_stock(telemetry: Telemetry, kind: str) -> None:
    stock = stock_executor(kind)
    expected = outcome_of(lambda: stock.submit(5).result(TIMEOUT))  # type: ignore[arg-type]
    stock.shutdown()
    executor = telemetry.executor(kind)
    assert outcome_of(lambda: executor.submit(5).result(TIMEOUT)) == expected  # type: ignore[arg-type]
    assert expected == ("raised", (TypeError, ("'int' object is not callable",)))
    executor.shutdown()
    assert [s.name for s in telemetry.spans()] == ["pool int"]


@pytest.mark.parametrize("kind", ["thread", "wrapped", "user", "fork"])
def test_submit_after_shutdown_raises_as_stock(telemetry: Telemetry, kind: str) -> None:
    stock = stock_executor(kind)
    stock.shutdown()
    expected = outcome_of(lambda: stock.submit(square, 1))
    assert expected == ("raised", (RuntimeError, ("cannot schedule new futures after shutdown",)))
    executor = telemetry.executor(kind)
    executor.shutdown()
    assert outcome_of(lambda: executor.submit(square, 1)) == expected


def test_thread_names_unchanged(telemetry: Telemetry) -> None:
    def name() -> str:
        return threading.current_thread().name

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="w") as stock:
        expected = stock.submit(name).result(TIMEOUT)
    assert expected == "w_0"
    for kind in ("thread", "wrapped"):
        named = telemetry.executor(kind, thread_name_prefix="w")
        assert named.submit(name).result(TIMEOUT) == expected
        unnamed = telemetry.executor(kind)
        assert re.fullmatch(r"ThreadPoolExecutor-\d+_0", unnamed.submit(name).result(TIMEOUT))


def test_nothing_written_to_stdout_or_stderr(telemetry: Telemetry, capfd: pytest.CaptureFixture[str]) -> None:
    for kind in ("thread", "wrapped", "user"):
        gate = telemetry.gate()
        executor = telemetry.executor(kind, max_workers=2)
        futures = [
            executor.submit(square, 2),
            executor.submit(raise_, ValueError("quiet")),
            executor.submit(gate.task),
        ]
        pending = executor.submit(square, 3)
        tracedfutures.wait(futures[:2])
        list(tracedfutures.as_completed(futures[:2]))
        executor.shutdown(wait=False, cancel_futures=True)
        gate.open()
        executor.shutdown()
        assert futures[1].exception() is not None and pending.done()
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert capfd.readouterr() == ("", "")


def test_context_manager_shuts_down(telemetry: Telemetry, kind: str) -> None:
    with telemetry.executor(kind) as executor:
        future = executor.submit(square, 2)
    assert future.done() and future.result() == 4  # __exit__ waited for the task
    assert outcome_of(lambda: executor.submit(square, 1)) == (
        "raised",
        (RuntimeError, ("cannot schedule new futures after shutdown",)),
    )
