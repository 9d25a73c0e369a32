"""ConcurrentFuturesInstrumentor on the executors people use most outside the stdlib, with no code change: loky's
reusable executor, ``joblib.Parallel`` on its default backend (joblib's own copy of loky) and Dask's
``Client.get_executor()``. Their tasks get the stdlib pools' contract (exact counts, kind ``process`` for loky's,
the spans a task starts in the worker carried home as children of its span, the real start from the worker), joblib's
batches are named after the function they call, and ``uninstrument()`` puts back the very same objects. A library
is wrapped when it is imported, only in a supported version, and never imported on the instrumentor's account."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conftest
import joblib
import loky
import pytest
from conftest import Telemetry, labels
from support import CustomError, fail, square
from workersupport import traced_work

import tracedfutures
from tracedfutures import ConcurrentFuturesInstrumentor, instrumentor

TIMEOUT = 60
HERE = Path(__file__).resolve().parent
#: The class each library's executors are made of, and the methods the instrumentor wraps on it.
WRAPPED = {
    ("loky.process_executor", "ProcessPoolExecutor"): ("submit", "shutdown"),
    ("joblib.externals.loky.process_executor", "ProcessPoolExecutor"): ("submit", "shutdown"),
    ("distributed.cfexecutor", "ClientExecutor"): ("submit", "shutdown", "map"),
}


def wrapped_class(module: str, name: str) -> type:
    __import__(module)
    return getattr(sys.modules[module], name)  # type: ignore[no-any-return]


def originals() -> dict[tuple[type, str], Any]:
    return {
        (wrapped_class(*cls), method): wrapped_class(*cls).__dict__[method]
        for cls, methods in WRAPPED.items()
        for method in methods
    }


ORIGINAL = originals()


def assert_original() -> None:
    for (cls, method), original in ORIGINAL.items():
        assert cls.__dict__[method] is original, (cls, method)


@pytest.fixture
def instrumented(telemetry: Telemetry) -> Iterator[ConcurrentFuturesInstrumentor]:
    tracedfutures.reset_defaults()  # what instrument() is given is all there is
    assert_original()
    instrumentor = ConcurrentFuturesInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
        assert_original()


@pytest.fixture(scope="module", autouse=True)
def reusable_executors_shut_down() -> Iterator[None]:
    """loky's and joblib's reusable executors live on between their users: shut down after this module's tests."""
    yield
    from joblib.externals.loky import get_reusable_executor

    for get in (loky.get_reusable_executor, get_reusable_executor):
        get(max_workers=1).shutdown(wait=True)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    yield from conftest.dask_client(n_workers=1, threads_per_worker=2)


def task_spans(telemetry: Telemetry, count: int, executor: str) -> list[Any]:
    """The task spans of ``executor``, once ``count`` of them ended: a chained task's span ends just after its
    future is settled. (The client's own thread pools are traced too: Dask's ``Dask-Offload`` pool, say.)"""
    deadline = time.monotonic() + TIMEOUT
    while True:
        spans = [s for s in telemetry.spans() if s.attributes and s.attributes.get("executor.name") == executor]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.005)


def parents(spans: list[Any]) -> Counter[tuple[str, int | None]]:
    return Counter((s.name, s.parent.span_id if s.parent else None) for s in spans)


def assert_worker_spans_came_home(telemetry: Telemetry, task: Any) -> None:
    """``traced_work``'s ``outer`` and ``inner`` spans, made in the worker, are children of its task span."""
    by_name = {s.name: s for s in telemetry.spans() if s.name in ("outer", "inner")}
    assert by_name["outer"].parent.span_id == task.context.span_id
    assert by_name["inner"].parent.span_id == by_name["outer"].context.span_id
    assert by_name["outer"].context.trace_id == task.context.trace_id


def test_loky_tasks_are_traced_as_a_process_pool(telemetry: Telemetry, instrumented: Any) -> None:
    executor = loky.get_reusable_executor(max_workers=2)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        squares = [executor.submit(square, n) for n in range(5)]
        failed = executor.submit(fail, "x")
        mapped = list(executor.map(square, range(4), chunksize=2))  # 2 chunks: 2 tasks, named after square
        worker = executor.submit(traced_work, 1)
    assert [f.result(TIMEOUT) for f in squares] == [0, 1, 4, 9, 16]
    assert type(failed.exception(TIMEOUT)) is CustomError
    assert mapped == [0, 1, 4, 9]
    pid, started = worker.result(TIMEOUT)
    assert pid != os.getpid()

    spans = task_spans(telemetry, 9, "loky")
    caller_id = caller.get_span_context().span_id
    assert parents(spans) == {
        ("loky square", caller_id): 7,
        ("loky fail", caller_id): 1,
        ("loky traced_work", caller_id): 1,
    }
    assert {(s.attributes["executor.name"], s.attributes["executor.kind"]) for s in spans} == {("loky", "process")}
    assert {s.attributes["process.pid"] for s in spans} <= {p.pid for p in executor._processes.values()}
    (task,) = [s for s in spans if s.name == "loky traced_work"]
    running = task.events[0]
    assert running.name == "running"
    assert task.start_time < running.timestamp <= started  # the real start, read in the worker just before the call
    assert_worker_spans_came_home(telemetry, task)
    assert telemetry.value("executor_tasks_submitted_total", executor="loky") == 9
    assert telemetry.series("executor_tasks_completed_total") == {
        labels(executor="loky", function="square", outcome="success", error_type=""): 7,
        labels(executor="loky", function="fail", outcome="error", error_type="support.CustomError"): 1,
        labels(executor="loky", function="traced_work", outcome="success", error_type=""): 1,
    }
    assert telemetry.value("executor_max_workers", executor="loky") == 2


def test_joblib_batches_are_tasks_named_after_their_function(telemetry: Telemetry, instrumented: Any) -> None:
    """Two ``Parallel`` calls reuse one executor; every batch is one task on a loky worker process, named after the
    function its calls run, with their count; batches that joblib dispatches from its callback thread stay in the
    caller's trace."""
    with telemetry.tracer.start_as_current_span("caller") as caller:
        first = joblib.Parallel(n_jobs=2)(joblib.delayed(square)(n) for n in range(200))
        second = joblib.Parallel(n_jobs=2)(joblib.delayed(square)(n) for n in range(200))
    assert first == second == [n * n for n in range(200)]

    submitted = telemetry.value("executor_tasks_submitted_total", executor="joblib")
    assert submitted is not None and submitted >= 2
    spans = task_spans(telemetry, int(submitted), "joblib")
    assert parents(spans) == {("joblib square", caller.get_span_context().span_id): submitted}
    assert sum(s.attributes["executor.task.batch_size"] for s in spans) == 400
    assert {(s.attributes["executor.kind"], s.attributes["code.function.name"]) for s in spans} == {
        ("process", "square")
    }
    assert os.getpid() not in {s.attributes["process.pid"] for s in spans}
    assert telemetry.series("executor_tasks_completed_total") == {
        labels(executor="joblib", function="square", outcome="success", error_type=""): submitted
    }
    assert telemetry.value("executor_max_workers", executor="joblib") == 2  # one executor, counted once


def test_a_failing_joblib_batch_fails_with_its_error_type(telemetry: Telemetry, instrumented: Any) -> None:
    with pytest.raises(CustomError):
        joblib.Parallel(n_jobs=2)(joblib.delayed(fail)("x") for _ in range(1))
    (span,) = task_spans(telemetry, 1, "joblib")
    assert span.name == "joblib fail"
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "support.CustomError"
    assert span.attributes["executor.task.batch_size"] == 1
    assert telemetry.series("executor_tasks_completed_total") == {
        labels(executor="joblib", function="fail", outcome="error", error_type="support.CustomError"): 1
    }


def test_dask_executor_tasks_are_traced(telemetry: Telemetry, instrumented: Any, dask_client: Any) -> None:
    executor = dask_client.get_executor()
    with telemetry.tracer.start_as_current_span("caller") as caller:
        squares = [executor.submit(square, n) for n in range(3)]
        failed = executor.submit(fail, "x")
        mapped = list(executor.map(square, [5, 6], timeout=TIMEOUT))  # each call through submit
        worker = executor.submit(traced_work, 2)
    assert [f.result(TIMEOUT) for f in squares] == [0, 1, 4]
    assert type(failed.exception(TIMEOUT)) is CustomError
    assert mapped == [25, 36]
    assert worker.result(TIMEOUT)[0] != os.getpid()

    spans = task_spans(telemetry, 7, "dask")
    caller_id = caller.get_span_context().span_id
    assert parents(spans) == {
        ("dask square", caller_id): 5,
        ("dask fail", caller_id): 1,
        ("dask traced_work", caller_id): 1,
    }
    assert {s.attributes["executor.kind"] for s in spans} == {"other"}
    (task,) = [s for s in spans if s.name == "dask traced_work"]
    assert_worker_spans_came_home(telemetry, task)
    assert telemetry.value("executor_tasks_submitted_total", executor="dask") == 7
    completed = telemetry.series("executor_tasks_completed_total")
    assert {series: n for series, n in completed.items() if ("executor", "dask") in series} == {
        labels(executor="dask", function="square", outcome="success", error_type=""): 5,
        labels(executor="dask", function="fail", outcome="error", error_type="support.CustomError"): 1,
        labels(executor="dask", function="traced_work", outcome="success", error_type=""): 1,
    }


def test_dask_map_with_arguments_dask_alone_takes_is_dasks(
    telemetry: Telemetry, instrumented: Any, dask_client: Any
) -> None:
    """A string timeout (Dask parses it) goes to Dask's own map, untraced; an unknown keyword gets Dask's error."""
    executor = dask_client.get_executor()
    assert list(executor.map(square, [7], timeout="60s")) == [49]
    with pytest.raises(TypeError, match=r"unexpected arguments to map\(\): \['buffersize'\]"):
        executor.map(square, [1], buffersize=2)
    assert telemetry.value("executor_tasks_submitted_total", executor="dask") is None


def test_traced_over_an_instrumented_executor_is_one_task(telemetry: Telemetry, instrumented: Any) -> None:
    """``traced()`` of an executor the instrumentor also wraps: one span and one count a task, the wrapper's."""
    options = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    executor = tracedfutures.traced(loky.get_reusable_executor(max_workers=2), "mine", **options)
    assert executor.submit(square, 3).result(TIMEOUT) == 9
    assert [s.name for s in task_spans(telemetry, 1, "mine")] == ["mine square"]
    assert task_spans(telemetry, 0, "loky") == []
    assert telemetry.value("executor_tasks_submitted_total", executor="mine") == 1
    assert telemetry.value("executor_tasks_submitted_total", executor="loky") is None


def test_uninstrument_leaves_the_libraries_untraced(telemetry: Telemetry) -> None:
    tracedfutures.reset_defaults()
    instrumentor = ConcurrentFuturesInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    assert all(cls.__dict__[method] is not original for (cls, method), original in ORIGINAL.items())
    instrumentor.uninstrument()
    assert_original()
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(n) for n in range(10)) == [n * n for n in range(10)]
    future = loky.get_reusable_executor(max_workers=2).submit(square, 2)
    assert type(future) is loky._base.Future and future.result(TIMEOUT) == 4
    assert telemetry.spans() == []


def test_unsupported_and_missing_libraries_are_left_alone(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        instrumentor,
        "_instruments_optional",
        (
            ("loky.process_executor", "ProcessPoolExecutor", "process", "loky", "loky >= 99"),
            ("no_such_library.executors", "Executor", "other", "none", "no-such-library >= 1"),
        ),
    )
    tracedfutures.reset_defaults()
    instrumentor_ = ConcurrentFuturesInstrumentor()
    instrumentor_.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    try:
        assert_original()
        assert loky.get_reusable_executor(max_workers=2).submit(square, 2).result(TIMEOUT) == 4
        assert telemetry.spans() == []
    finally:
        instrumentor_.uninstrument()
    assert "no_such_library" not in sys.modules
    assert [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def test_a_library_is_wrapped_when_imported_and_never_imported_for_it(tmp_path: Path) -> None:
    """Instrumenting imports none of the libraries; importing one afterwards wraps it (and traces its tasks)."""
    program = textwrap.dedent(
        """
        import sys
        from prometheus_client import CollectorRegistry
        from tracedfutures import ConcurrentFuturesInstrumentor

        registry = CollectorRegistry()
        ConcurrentFuturesInstrumentor().instrument(registry=registry)
        print(sorted(m for m in ("loky", "joblib", "distributed", "dask") if m in sys.modules))
        import loky
        from support import square

        print(hasattr(loky.process_executor.ProcessPoolExecutor.submit, "__wrapped__"))
        print(loky.get_reusable_executor(max_workers=1).submit(square, 4).result(60))
        print(float(registry.get_sample_value("executor_tasks_submitted_total", {"executor": "loky"})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=HERE, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "True", "16", "1.0"]
