"""Every transition of a traced task, as spans and metrics see it: PENDING -> RUNNING -> FINISHED (success or
error), CANCELLED (cancel() or shutdown(cancel_futures=True)), and transitions refused exactly as the stdlib
refuses them."""

from __future__ import annotations

from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import EXECUTOR_KIND, Telemetry, labels, span_shape
from support import CustomError, square

from tracedfutures._lifecycle import Lifecycle, TracedFuture, not_listening
from tracedfutures._running import RunningTasks

TIMEOUT = 30


class Outer:
    class InnerError(Exception):
        pass


def raise_(exc: BaseException) -> None:
    raise exc


def task_attributes(kind: str, function: str, **extra: Any) -> dict[str, Any]:
    return {"executor.name": "pool", "executor.kind": EXECUTOR_KIND[kind], "code.function.name": function, **extra}


def completed(**counts: int) -> dict[frozenset[tuple[str, str]], float]:
    """Expected executor_tasks_completed_total of executor "pool", added up over functions: success=,
    cancelled=, and error types as keyword arguments with '.' written '__' (a series exists once counted)."""
    series = {}
    for outcome in ("success", "cancelled"):
        if counts.get(outcome):
            series[labels(executor="pool", outcome=outcome, error_type="")] = counts.pop(outcome)
        counts.pop(outcome, None)
    for error_type, count in counts.items():
        series[labels(executor="pool", outcome="error", error_type=error_type.replace("__", "."))] = count
    return series


def test_success_goes_pending_running_finished(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        blocker = executor.submit(gate.task, "first")
        future = executor.submit(square, 7)
    gate.wait_entered()
    assert (blocker.running(), blocker.done()) == (True, False)
    assert (future.running(), future.done(), future.cancelled()) == (False, False, False)
    gate.open()
    assert future.result(TIMEOUT) == 49
    assert blocker.result(TIMEOUT) == "first"
    assert (future.running(), future.done(), future.cancelled()) == (False, True, False)
    executor.shutdown()

    assert span_shape(telemetry.span("pool square")) == {
        "name": "pool square",
        "kind": "INTERNAL",
        "parent": caller.get_span_context().span_id,
        "attributes": task_attributes(kind, "square"),
        "status": "UNSET",
        "description": None,
        "events": ["running"],
    }
    assert telemetry.series("executor_tasks_completed_total", "function") == completed(success=2)
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 2
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == 2
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="success")[0] == 2
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="error")[0] == 0


@pytest.mark.parametrize(
    ("exception", "error_type"),
    [
        (ValueError("boom"), "ValueError"),
        (CustomError("boom"), "support.CustomError"),
        (Outer.InnerError("boom"), f"{__name__}.Outer.InnerError"),
    ],
)
def test_error_finishes_with_status_error(
    telemetry: Telemetry, kind: str, exception: Exception, error_type: str
) -> None:
    executor = telemetry.executor(kind)
    future = executor.submit(raise_, exception)
    assert future.exception(TIMEOUT) is exception
    with pytest.raises(type(exception)) as raised:
        future.result()
    assert raised.value is exception
    executor.shutdown()

    span = telemetry.span("pool raise_")
    assert span_shape(span) == {
        "name": "pool raise_",
        "kind": "INTERNAL",
        "parent": None,
        "attributes": task_attributes(kind, "raise_", **{"error.type": error_type}),
        "status": "ERROR",
        "description": None,
        "events": ["running", "exception"],
    }
    event = span.events[1]
    assert event.timestamp == span.end_time
    assert {k: v for k, v in (event.attributes or {}).items() if k != "exception.stacktrace"} == {
        "exception.type": error_type,
        "exception.message": "boom",
        "exception.escaped": "False",
    }
    assert not any("boom" in str(value) for value in (span.attributes or {}).values())
    key = error_type.replace(".", "__")
    assert telemetry.series("executor_tasks_completed_total", "function") == completed(**{key: 1})
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="error")[0] == 1
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="success")[0] == 0


def test_cancel_while_pending(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    blocker = executor.submit(gate.task)
    pending = executor.submit(square, 2)
    gate.wait_entered()
    assert blocker.cancel() is False  # running: not cancellable, as in the stdlib
    assert pending.cancel() is True
    assert pending.cancel() is True
    assert (pending.cancelled(), pending.done(), pending.running()) == (True, True, False)
    with pytest.raises(CancelledError):
        pending.result(0)
    gate.open()
    executor.shutdown()

    assert span_shape(telemetry.span("pool square")) == {
        "name": "pool square",
        "kind": "INTERNAL",
        "parent": None,
        "attributes": task_attributes(kind, "square", **{"executor.task.cancelled": True}),
        "status": "UNSET",
        "description": None,
        "events": [],
    }
    assert telemetry.series("executor_tasks_completed_total", "function") == completed(success=1, cancelled=1)
    # A cancelled task never started: it has no queue or run time.
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == 1
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_tasks_running", executor="pool") == 0


def test_shutdown_cancel_futures(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    blocker = executor.submit(gate.task, "ran")
    pending = [executor.submit(square, i) for i in range(3)]
    gate.wait_entered()
    executor.shutdown(wait=False, cancel_futures=True)
    assert [f.cancelled() for f in pending] == [True, True, True]
    gate.open()
    executor.shutdown(wait=True)
    assert blocker.result() == "ran"

    cancelled = [s for s in telemetry.spans() if s.name == "pool square"]
    assert len(cancelled) == 3
    for span in cancelled:
        assert span_shape(span)["attributes"] == task_attributes(
            kind, "square", **{"executor.task.cancelled": True}
        )
        assert span_shape(span)["status"] == "UNSET"
        assert span_shape(span)["events"] == []
    assert telemetry.series("executor_tasks_completed_total", "function") == completed(success=1, cancelled=3)
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0


def _refusal(call: Any) -> tuple[type[BaseException], str]:
    """The exception type and message head (before the future's repr) of a refused transition."""
    with pytest.raises(Exception) as raised:
        call()
    return type(raised.value), str(raised.value).split(":")[0]


def _stock_future(state: str) -> Future[Any]:
    future: Future[Any] = Future()
    if state == "cancelled":
        future.cancel()
        return future
    future.set_running_or_notify_cancel()
    if state == "finished":
        future.set_result(49)
    return future


def test_refused_transitions_match_a_stock_future(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    running = executor.submit(gate.task, "done")
    cancelled = executor.submit(square, 1)
    gate.wait_entered()
    stock = _stock_future("running")
    expected = _refusal(stock.set_running_or_notify_cancel)
    assert (
        _refusal(running.set_running_or_notify_cancel)
        == expected
        == (RuntimeError, "Future in unexpected state")
    )
    assert cancelled.cancel()
    assert (
        _refusal(lambda: cancelled.set_result(1))[0]
        is _refusal(lambda: _stock_future("cancelled").set_result(1))[0]
    )
    gate.open()
    assert running.result(TIMEOUT) == "done"  # the refused call changed nothing

    finished = executor.submit(square, 7)
    assert finished.result(TIMEOUT) == 49
    stock = _stock_future("finished")
    expected = _refusal(lambda: stock.set_result(1))
    assert _refusal(lambda: finished.set_result(1)) == expected == (InvalidStateError, "FINISHED")
    expected = _refusal(lambda: stock.set_exception(ValueError()))
    assert (
        _refusal(lambda: finished.set_exception(ValueError())) == expected == (InvalidStateError, "FINISHED")
    )
    expected = _refusal(stock.set_running_or_notify_cancel)
    assert (
        _refusal(finished.set_running_or_notify_cancel)
        == expected
        == (RuntimeError, "Future in unexpected state")
    )
    assert finished.result() == 49
    executor.shutdown()

    assert telemetry.series("executor_invalid_transitions_total") == {
        labels(executor="pool", method="set_result"): 2,
        labels(executor="pool", method="set_exception"): 1,
        labels(executor="pool", method="set_running_or_notify_cancel"): 2,
    }
    assert telemetry.series("executor_tasks_completed_total", "function") == completed(success=2, cancelled=1)
    assert len(telemetry.spans()) == 3


def test_telemetry_is_recorded_before_done_callbacks_run(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    future = executor.submit(gate.task, 3)
    seen: list[tuple[int, float | None]] = []

    def callback(_: object) -> None:
        success = telemetry.value("executor_tasks_ended_total", executor="pool", outcome="success")
        seen.append((len(telemetry.spans()), success))

    future.add_done_callback(callback)  # before the task can finish: it runs in the worker
    gate.open()
    assert future.result(TIMEOUT) == 3
    executor.shutdown()
    assert seen == [(1, 1.0)]


class _Recorder:
    """A lifecycle hook that notes each transition it hears about."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def on_submit(self, future: Any, fn: Any) -> None:
        self.heard.append("submit")

    def on_start(self, future: Any) -> None:
        self.heard.append("start")

    def on_finish(self, future: Any) -> None:
        self.heard.append("finish")

    def on_refused(self, future: Any, method: str) -> None:
        self.heard.append(f"refused {method}")

    def on_retrieved(self, future: Any) -> None:
        self.heard.append("retrieved")


class _DeafToStartAndReads(_Recorder):
    @not_listening
    def on_start(self, future: Any) -> None:
        self.heard.append("start")

    @not_listening
    def on_retrieved(self, future: Any) -> None:
        self.heard.append("retrieved")


def test_a_hook_method_marked_not_listening_is_never_called() -> None:
    listening, deaf = _Recorder(), _DeafToStartAndReads()
    for hooks in ((listening, deaf), (deaf,)):
        table = RunningTasks(ThreadPoolExecutor(1), "pool", "other")
        life = Lifecycle("pool", "other", hooks, remote=False, table=table)
        future = TracedFuture(life, square)  # what submit_task does before handing the task to the pool
        life.on_submit(future, square)
        assert future.set_running_or_notify_cancel() is True
        future.set_result(4)
        assert future.result() == 4
        with pytest.raises(InvalidStateError):
            future.set_result(5)
    assert listening.heard == ["submit", "start", "finish", "retrieved", "refused set_result"]
    assert deaf.heard == ["submit", "finish", "refused set_result"] * 2
