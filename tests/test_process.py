"""TracedProcessPoolExecutor with fork and spawn workers: outcomes, the span a task starts in the worker is a
child of its task span, cancellation, map with chunksize, and a callable that cannot be pickled."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import CancelledError, Future, InvalidStateError, ProcessPoolExecutor
from typing import Any

import pytest
from conftest import FALLBACK_FORCED, PROCESS_KINDS, Telemetry, labels, span_shape
from support import CustomError, child_span_ids, fail, set_process_gate, square, wait_process_gate

from tracedfutures import traced

TIMEOUT = 60


def attributes(function: str, **extra: Any) -> dict[str, Any]:
    return {"executor.name": "pool", "executor.kind": "process", "code.function.name": function, **extra}


@pytest.mark.parametrize("context", PROCESS_KINDS)
def test_outcomes_and_worker_spans(telemetry: Telemetry, context: str) -> None:
    executor = telemetry.executor(context)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        ok = executor.submit(square, 4)
        child = executor.submit(child_span_ids)
        bad = executor.submit(fail, "boom")
    assert isinstance(ok, Future)
    assert ok.result(TIMEOUT) == 16
    with pytest.raises(CustomError, match=r"^boom$"):
        bad.result(TIMEOUT)
    assert "_tracedfutures_remote" not in vars(bad.exception())
    parent_trace_id, parent_span_id, own_trace_id, pid = child.result(TIMEOUT)
    with pytest.raises(InvalidStateError):
        ok.set_result(0)
    executor.shutdown()

    assert pid != os.getpid()
    task = telemetry.span("pool child_span_ids")
    assert (parent_trace_id, parent_span_id) == (task.context.trace_id, task.context.span_id)
    assert own_trace_id == caller.get_span_context().trace_id
    caller_id = caller.get_span_context().span_id
    assert span_shape(telemetry.span("pool square")) == {
        "name": "pool square",
        "kind": "INTERNAL",
        "parent": caller_id,
        "attributes": attributes("square"),
        "status": "UNSET",
        "description": None,
        "events": ["running"],
    }
    assert span_shape(telemetry.span("pool fail")) == {
        "name": "pool fail",
        "kind": "INTERNAL",
        "parent": caller_id,
        "attributes": attributes("fail", **{"error.type": "support.CustomError"}),
        "status": "ERROR",
        "description": None,
        "events": ["running", "exception"],
    }
    assert telemetry.series("executor_tasks_ended_total") == {
        labels(executor="pool", outcome="success"): 2,
        labels(executor="pool", outcome="cancelled"): 0,
        labels(executor="pool", outcome="error"): 1,
    }
    assert telemetry.series("executor_tasks_completed_total", "function")[
        labels(executor="pool", outcome="error", error_type="support.CustomError")
    ] == 1
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == 3
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="success")[0] == 2
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="error")[0] == 1
    assert telemetry.value("executor_invalid_transitions_total", executor="pool", method="set_result") == 1
    for gauge in ("executor_tasks_queued", "executor_tasks_running", "executor_max_workers"):
        assert telemetry.value(gauge, executor="pool") == 0


def test_cancel_and_shutdown_cancel_futures(telemetry: Telemetry) -> None:
    context = multiprocessing.get_context("fork")
    gate = context.Event()
    executor = telemetry.executor("fork", initializer=set_process_gate, initargs=(gate,))
    # One worker and a call queue of two: at most the first three leave the queue before the gate opens, and
    # the first always does (the pool's manager thread moves calls before it looks at the shutdown flag).
    futures = [executor.submit(wait_process_gate, i) for i in range(6)]
    assert futures[5].cancel() is True
    stopper = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    for future in futures[3:5]:
        with pytest.raises(CancelledError):
            future.result(TIMEOUT)
    gate.set()
    stopper.join(TIMEOUT)
    ran = [f for f in futures if not f.cancelled()]
    assert [f.result() for f in ran] == list(range(len(ran)))
    assert 1 <= len(ran) <= 3

    cancelled = [s for s in telemetry.spans() if "executor.task.cancelled" in (s.attributes or {})]
    assert len(cancelled) == 6 - len(ran)
    assert {(span_shape(s)["status"], tuple(span_shape(s)["events"])) for s in cancelled} == {("UNSET", ())}
    assert telemetry.series("executor_tasks_ended_total") == {
        labels(executor="pool", outcome="success"): len(ran),
        labels(executor="pool", outcome="cancelled"): 6 - len(ran),
        labels(executor="pool", outcome="error"): 0,
    }
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_tasks_running", executor="pool") == 0


@pytest.mark.parametrize("make", ["subclass", "traced"])
def test_map_with_chunksize_matches_builtin_map(telemetry: Telemetry, make: str) -> None:
    if make == "subclass":
        executor: Any = telemetry.executor("fork", max_workers=2)
    else:
        stock = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
        executor = traced(stock, "pool", tracer_provider=telemetry.provider, registry=telemetry.registry)
        telemetry.executors.append(executor)
    assert list(executor.map(square, range(7), chunksize=3, timeout=TIMEOUT)) == list(map(square, range(7)))
    assert list(executor.map(pow, range(5), [3] * 9, chunksize=2)) == list(map(pow, range(5), [3] * 9))
    with pytest.raises(ValueError, match=r"^chunksize must be >= 1\.$"):
        executor.map(square, range(3), chunksize=0)
    executor.shutdown()
    # One task (and span) per chunk, named after the mapped function.
    assert sorted(s.name for s in telemetry.spans()) == ["pool pow"] * 3 + ["pool square"] * 3
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 6


unpicklable = lambda: 1  # noqa: E731 - a lambda cannot be pickled by reference


def test_unpicklable_callable_fails_through_the_future(telemetry: Telemetry) -> None:
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=context) as stock:
        expected = stock.submit(unpicklable).exception(TIMEOUT)
    executor = telemetry.executor("fork")
    raised = executor.submit(unpicklable).exception(TIMEOUT)
    assert type(raised) is type(expected)
    assert raised is not None and str(raised) == str(expected)
    assert executor.submit(square, 3).result(TIMEOUT) == 9  # the pool still works
    executor.shutdown()
    (span,) = [s for s in telemetry.spans() if s.status.status_code.name == "ERROR"]
    error_type = type(raised).__qualname__
    if type(raised).__module__ != "builtins":
        error_type = f"{type(raised).__module__}.{error_type}"
    assert span.attributes["error.type"] == error_type  # type: ignore[index]
    completed = telemetry.series("executor_tasks_completed_total", "function")
    assert completed[labels(executor="pool", outcome="error", error_type=error_type)] == 1



def test_shutdown_right_after_unpicklable_tasks_never_hangs(telemetry: Telemetry) -> None:
    """Tasks that fail to pickle, then an immediate shutdown, as CPython's ``test_processes_terminate`` does: on
    3.12.0-3.12.7 and 3.13.0 the pool's feeder and manager threads could deadlock there (gh-125451), and the
    task hooks the feeder thread runs made it far likelier (3 hangs in 40 runs of that test, 0 with the
    workaround in ``_shutdown_deadlock``). Each shutdown must end within the timeout."""
    from tracedfutures import _shutdown_deadlock

    for _ in range(10):
        executor = telemetry.executor("spawn", max_workers=2)
        futures = [executor.submit(unpicklable) for _ in range(3)]
        if _shutdown_deadlock.AFFECTED:  # the feeder wakes the manager under a lock of its own
            pool: Any = executor
            assert pool._call_queue.shutdown_lock is not pool._shutdown_lock
        shutdown = threading.Thread(target=executor.shutdown, daemon=True)
        shutdown.start()
        shutdown.join(TIMEOUT)
        assert not shutdown.is_alive(), "shutdown hung"
        assert all(f.exception(TIMEOUT) is not None for f in futures)  # each failed to pickle, as in the stdlib


def test_worker_imports_only_what_a_traced_call_needs() -> None:
    """Unpickling a traced call in a spawned worker imports ``tracedfutures._calls`` and the OpenTelemetry API: not
    the SDK, prometheus_client or the instrumentation package (each costs a fresh worker tens of milliseconds)."""
    import subprocess
    import sys

    heavy = ["opentelemetry.sdk", "prometheus_client", "opentelemetry.instrumentation", "packaging"]
    code = (
        "import pickle, sys, tracedfutures\n"
        "from tracedfutures._calls import RemoteCall\n"
        "call = pickle.loads(pickle.dumps(RemoteCall(len, (1, 2, 1), 0)))\n"
        "assert call('abc').value == 3\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert out.stdout.strip() == "[]"
    # Every public name is still there, imported on first use.
    import tracedfutures

    assert sorted(tracedfutures.__all__) == sorted([*tracedfutures._PUBLIC, "__version__"])
    assert all(getattr(tracedfutures, name) is not None for name in tracedfutures.__all__)
    assert callable(tracedfutures.tracing.export_settings)  # submodules too, as when the package imported them
    with pytest.raises(AttributeError):
        tracedfutures.not_a_name  # noqa: B018


@pytest.mark.skipif(FALLBACK_FORCED, reason="the public-API fallback goes through a process pool's submit: no board")
@pytest.mark.parametrize("pool", ["drop-in", "traced()"])
def test_running_means_running_in_a_worker(telemetry: Telemetry, pool: str) -> None:
    """A pool of 2 processes given 5 tasks runs 2 and queues 3 (two of those in the pool's call queue), by what
    the workers say on the pool's start board; busy worker-seconds never exceed those available, and the oldest
    running task's age is its age in the worker."""
    import time

    context = multiprocessing.get_context("fork")
    if pool == "drop-in":
        executor = telemetry.executor("fork", max_workers=2)
    else:
        executor = traced(ProcessPoolExecutor(2, mp_context=context), "pool", registry=telemetry.registry)
        telemetry.executors.append(executor)
    futures = [executor.submit(time.sleep, 0.6) for _ in range(5)]
    names = (
        "executor_tasks_running",
        "executor_tasks_queued",
        "executor_workers_busy_seconds_total",
        "executor_workers_available_seconds_total",
        "executor_oldest_running_task_age_seconds",
    )
    seen = []
    while not all(f.done() for f in futures):
        scrape = {  # one scrape a sample: its numbers belong together
            sample.name: sample.value
            for family in telemetry.registry.collect()
            for sample in family.samples
            if sample.name in names and sample.labels.get("executor") == "pool"
        }
        seen.append(tuple(scrape.get(name, 0.0) for name in names))
        time.sleep(0.05)
    assert max(running for running, *_ in seen) == 2
    assert all(running + queued <= 5 for running, queued, *_ in seen)
    assert any((running, queued) == (2, 3) for running, queued, *_ in seen), seen
    assert all(busy <= available for _, _, busy, available, _ in seen), seen
    assert all(age < 0.6 + 0.2 for *_, age in seen), seen  # never the hand-off's age: each task runs 0.6 s
    executor.shutdown()
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    busy = telemetry.value("executor_workers_busy_seconds_total", executor="pool")
    run_sum = telemetry.value("executor_task_run_seconds_sum", executor="pool", function="sleep", outcome="success")
    # Each task's time in its worker, as the run-time histogram has it (a loaded machine may stretch a sleep).
    assert busy == pytest.approx(run_sum, abs=1e-6) and busy >= 5 * 0.6, (busy, run_sum, seen)
