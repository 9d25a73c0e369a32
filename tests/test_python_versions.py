"""What Python 3.11 to 3.15 changed, traced: the copies of private stdlib bodies match this interpreter's source
(or the fallback is used, and works), interpreter pools (3.14), ``map(buffersize=)`` (3.14), a process pool's
``terminate_workers`` / ``kill_workers`` (3.14), and ``Future._get_snapshot`` (3.15, asyncio's read)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
import support
import workersupport
from conftest import Telemetry, labels, outcome_of, span_shape
from support import square

import tracedfutures
from tracedfutures import _stdlib

FORCED = os.environ.get(_stdlib.FORCE_FALLBACK_ENV, "") not in ("", "0")
HAS_INTERPRETERS = "InterpreterPoolExecutor" in concurrent.futures.__all__
needs_314 = pytest.mark.skipif(sys.version_info < (3, 14), reason="new in Python 3.14")
needs_interpreters = pytest.mark.skipif(not HAS_INTERPRETERS, reason="no InterpreterPoolExecutor here")


def _versions(copy: _stdlib.Copy) -> tuple[tuple[int, int], tuple[int, int]]:
    first, _, last = copy.versions.partition("-")
    low = tuple(map(int, first.split(".")))
    high = tuple(map(int, (last or first).split(".")))
    return (low[0], low[1]), (high[0], high[1])


# -- the copies and their fingerprints --------------------------------------------------------------------------------
@pytest.mark.parametrize("part", sorted(_stdlib.COPIES))
def test_each_part_has_a_copy_of_this_pythons_source(part: str) -> None:
    """A copy keyed for this Python matches every function it mirrors, by fingerprint; a Python newer than every
    copy fails here, by name, until its source is read and a copy (or the fingerprint) is added."""
    running = sys.version_info[:2]
    copies = _stdlib.COPIES[part]
    mine = [copy for copy in copies if _versions(copy)[0] <= running <= _versions(copy)[1]]
    assert mine, f"{part}: no copy is keyed for Python {running[0]}.{running[1]}; read its source and add one"
    for copy in mine:
        assert _stdlib.mismatches(copy) == [], f"{part} ({copy.versions}) no longer mirrors these"
    others = [copy for copy in copies if copy not in mine]
    assert all(_stdlib.mismatches(copy) for copy in others), f"{part}: two copies match this Python"


def test_fingerprints_are_of_the_code_not_its_docstrings_or_comments(tmp_path: Any) -> None:
    import importlib.util

    sources = {
        "original": 'def f(x):\n    """Doubles."""\n    return x * 2  # the answer\n',
        "reworded": 'def f(x):\n    """Doubles ``x``,\n    reflowed."""\n    # a new comment\n\n    return x * 2\n',
        "changed": 'def f(x):\n    """Doubles."""\n    return x * 3\n',
    }
    prints = {}
    for name, source in sources.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        prints[name] = _stdlib.fingerprint(module.f)
    assert prints["original"] == prints["reworded"] != prints["changed"]
    assert all(len(value) == 16 for value in prints.values())


def test_every_part_has_a_fallback() -> None:
    assert set(_stdlib.FALLBACKS) == set(_stdlib.COPIES)


@pytest.mark.skipif(FORCED, reason="the fallback is forced in this run")
def test_no_fallback_on_a_python_whose_source_is_known() -> None:
    bodies = _stdlib.chosen()
    assert {part for part, body in bodies.items() if body is _stdlib.FALLBACKS[part]} == set()


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=os.path.dirname(support.__file__),
    )


FALLBACK_WORKLOAD = """
    import concurrent.futures, logging, pickle
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry
    import tracedfutures
    from tracedfutures import _stdlib
    from support import CustomError, fail, square

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    tracedfutures.configure(tracer_provider=provider, registry=registry)
    results = []
    if __name__ == "__main__":
        with tracedfutures.TracedThreadPoolExecutor(2, name="t") as pool:
            futures = [pool.submit(square, i) for i in range(5)] + [pool.submit(fail, "x")]
            done = tracedfutures.wait(futures).done
            results.append(sorted(f.result() for f in done if f.exception() is None))
            failed = [f for f in tracedfutures.as_completed(futures) if f.exception()]
            results.append(sorted(type(f.exception()).__name__ for f in failed))
        with tracedfutures.traced(ProcessPoolExecutor(2), "p") as pool:
            results.append(list(pool.map(square, range(4), chunksize=3)))
        print(results)
        spans = exporter.get_finished_spans()
        print(sorted({s.attributes["executor.name"] for s in spans if "executor.name" in s.attributes}))
        value = registry.get_sample_value
        error = {"executor": "t", "function": "fail", "outcome": "error", "error_type": "support.CustomError"}
        print(value("executor_tasks_submitted_total", {"executor": "t"}),
              value("executor_tasks_completed_total", error),
              value("executor_tasks_submitted_total", {"executor": "p"}))
        print(sorted(p for p, b in _stdlib.chosen().items() if b is _stdlib.FALLBACKS[p]))
"""


def test_the_forced_fallback_gives_the_same_results_and_telemetry() -> None:
    """With every part on its public-API fallback, results, errors, spans and counts are those of the copies,
    and the forced switch itself warns of nothing. (The whole unit suite and CPython's also run this way in the
    test command.)"""
    seen = {}
    for forced in ("0", "1"):
        done = _run("if True:" + FALLBACK_WORKLOAD, **{_stdlib.FORCE_FALLBACK_ENV: forced})
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
        seen[forced] = lines[:3], warnings, lines[3]
    assert seen["0"][0][:2] == seen["1"][0][:2] == ["[[0, 1, 4, 9, 16], ['CustomError'], [0, 1, 4, 9]]", "['p', 't']"]
    assert seen["0"][0][2] == seen["1"][0][2] == "6 1 2"  # ProcessPoolExecutor.map: two chunks, of three and one
    assert seen["0"][1:] == ([], "[]")
    assert seen["1"][1:] == ([], str(sorted(_stdlib.COPIES)))


def test_a_source_no_copy_knows_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A patched stdlib (here: a fingerprint that does not match) puts that part, alone, on its fallback, and one
    warning names the part and the function whose source no copy mirrors."""
    copies = _stdlib.COPIES["wait"]
    prints = {**copies[0].fingerprints, "concurrent.futures._base:wait": ("0" * 16,)}
    wrong = _stdlib.Copy("wait", "3.11-3.15", prints, copies[0].body)
    monkeypatch.setitem(_stdlib.COPIES, "wait", [wrong])
    monkeypatch.delenv(_stdlib.FORCE_FALLBACK_ENV, raising=False)
    _stdlib.chosen.cache_clear()
    try:
        with caplog.at_level("INFO", logger="tracedfutures"):
            bodies = _stdlib.chosen()
            assert _stdlib.chosen() is bodies  # decided once
    finally:
        _stdlib.chosen.cache_clear()
    assert {part for part, body in bodies.items() if body is _stdlib.FALLBACKS[part]} == {"wait"}
    assert bodies["wait"] is _stdlib.wait_public
    assert [
        (record.levelname, "(wait: concurrent.futures._base:wait)" in record.getMessage()) for record in caplog.records
    ] == [("WARNING", True)]


# -- interpreter pools (3.14) -----------------------------------------------------------------------------------------
def _importable(path: str) -> None:
    """A pool initializer that uses no globals (so it is shared without pickling): the tests' own modules become
    importable in each new interpreter, which starts from the interpreter's configured path."""
    import sys

    sys.path.insert(0, path)


TESTS = os.path.dirname(support.__file__)


@needs_interpreters
def test_interpreter_pool_tasks_are_traced_where_they_run(telemetry: Telemetry) -> None:
    """Task span (executor.kind interpreter), real start and outcome measured in the interpreter; spans the task
    starts there are children of its task span; results and exceptions as the stock pool gives them."""
    stock_pool = concurrent.futures.InterpreterPoolExecutor(1, initializer=_importable, initargs=(TESTS,))
    pool = tracedfutures.TracedInterpreterPoolExecutor(
        1, None, _importable, (TESTS,), name="interp", tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    seen = []
    for executor in (stock_pool, pool):
        with executor:
            calls = [executor.submit(square, 3), executor.submit(support.fail, "boom")]
            seen.append([outcome_of(lambda f=f: f.result(30)) for f in calls])
            seen.append([type(calls[1].exception().__cause__).__name__])
            if executor is pool:
                ids = executor.submit(support.child_span_ids).result(30)
                executor.submit(workersupport.traced_work, 7).result(30)
    assert seen[0] == seen[2] == [("ok", 9), ("raised", (support.CustomError, ("boom",)))]
    assert seen[1] == seen[3] == ["ExecutionFailed"]
    spans = {span.name: span for span in telemetry.spans()}
    assert sorted(spans) == [
        "inner", "interp child_span_ids", "interp fail", "interp square", "interp traced_work", "outer"
    ]  # fmt: skip
    task = spans["interp child_span_ids"]
    assert ids[:3] == (task.context.trace_id, task.context.span_id, task.context.trace_id)
    # Spans the task finished in its interpreter came home, children of its task span.
    assert workersupport.tree(telemetry.spans()) == [
        ("inner", "outer"),
        ("interp child_span_ids", None),
        ("interp fail", None),
        ("interp square", None),
        ("interp traced_work", None),
        ("outer", "interp traced_work"),
    ]
    shape = span_shape(spans["interp fail"])
    assert shape["attributes"] == {
        "executor.name": "interp",
        "executor.kind": "interpreter",
        "code.function.name": "fail",
        "error.type": "support.CustomError",
    }
    assert shape["events"] == ["running", "exception"]
    assert telemetry.series("executor_tasks_completed_total", "function") == {
        labels(executor="interp", outcome="success", error_type=""): 3,
        labels(executor="interp", outcome="error", error_type="support.CustomError"): 1,
    }
    assert telemetry.histogram("executor_task_run_seconds", executor="interp", outcome="success")[0] == 3
    assert telemetry.value("executor_max_workers", executor="interp") == 0


@needs_interpreters
def test_the_instrumentor_and_traced_trace_stock_interpreter_pools(telemetry: Telemetry) -> None:
    instrumentor = tracedfutures.ConcurrentFuturesInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.provider, registry=telemetry.registry)
    try:
        with concurrent.futures.InterpreterPoolExecutor(1, initializer=_importable, initargs=(TESTS,)) as pool:
            assert pool.submit(square, 4).result(30) == 16
    finally:
        instrumentor.uninstrument()
    stock = concurrent.futures.InterpreterPoolExecutor(1, initializer=_importable, initargs=(TESTS,))
    with tracedfutures.traced(stock, tracer_provider=telemetry.provider, registry=telemetry.registry) as pool:
        assert pool.name == "InterpreterPoolExecutor"  # the stdlib's numbered thread prefix is not a name
        assert pool.submit(square, 5).result(30) == 25
    kinds = [(span.name, dict(span.attributes or {})["executor.kind"]) for span in telemetry.spans()]
    assert kinds == [("InterpreterPoolExecutor square", "interpreter")] * 2
    assert telemetry.value("executor_tasks_submitted_total", executor="InterpreterPoolExecutor") == 2


# -- map(buffersize=) (3.14) -------------------------------------------------------------------------------------------
@needs_314
@pytest.mark.parametrize("kind", ["thread", "wrapped", "user", "fork", "wrapped process"])
def test_map_with_a_buffer_is_as_lazy_as_the_stdlib_and_traced_per_task(telemetry: Telemetry, kind: str) -> None:
    if kind == "wrapped process":
        executor: Any = tracedfutures.traced(ProcessPoolExecutor(2), "pool", registry=telemetry.registry)
        telemetry.executors.append(executor)
    else:
        executor = telemetry.executor(kind, 2)

    def submitted() -> float | None:
        return telemetry.value("executor_tasks_submitted_total", executor="pool")

    results = executor.map(square, range(10), buffersize=3)
    assert submitted() == 3
    assert next(results) == 0
    assert submitted() == 4
    assert list(results) == [x * x for x in range(1, 10)]
    assert submitted() == 10
    stock = ThreadPoolExecutor(1) if kind in ("thread", "wrapped", "user") else ProcessPoolExecutor(1)
    with stock:
        for bad in (0, -1, "3", 2.0):
            expected = outcome_of(lambda bad=bad: stock.map(square, [1], buffersize=bad))
            assert outcome_of(lambda bad=bad: executor.map(square, [1], buffersize=bad)) == expected
            assert expected[0] == "raised"
    assert submitted() == 10


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14 and later take buffersize")
def test_map_refuses_a_buffer_where_the_stdlib_does(telemetry: Telemetry) -> None:
    executor = telemetry.executor("wrapped")
    with pytest.raises(TypeError, match="buffersize"):
        executor.map(square, [1], buffersize=2)


# -- a process pool's forced shutdown (3.14) ---------------------------------------------------------------------------
@needs_314
@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["drop-in", "traced()"])
def test_forced_shutdown_ends_futures_as_the_stdlib_does(telemetry: Telemetry, method: str, wrapped: bool) -> None:
    """Tasks in a worker or handed to the call queue (RUNNING) fail with BrokenProcessPool, those still queued are
    cancelled, in the stock pool and the traced one alike; each is counted with its outcome, and the gauges come
    back to 0."""
    import multiprocessing

    seen = []
    running = 0
    for traced in (False, True):
        context = multiprocessing.get_context("fork")
        if not traced:
            executor: Any = ProcessPoolExecutor(1, mp_context=context)
        elif wrapped:
            executor = tracedfutures.traced(
                ProcessPoolExecutor(1, mp_context=context), "pool", registry=telemetry.registry
            )
        else:
            executor = telemetry.executor("fork")
        futures = [executor.submit(time.sleep, 60) for _ in range(5)]
        deadline = time.monotonic() + 30
        while not futures[1].running() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the worker holds the first, the call queue the next ones: the rest stay queued
        handed = [f.running() for f in futures]
        getattr(executor, method)()
        outcomes = [type(f.exception(30)).__name__ if not f.cancelled() else "cancelled" for f in futures]
        # The pool's manager thread tells the hooks after it wakes the readers: joined here, it has told them all.
        executor.shutdown(wait=True)
        assert outcomes == ["BrokenProcessPool" if r else "cancelled" for r in handed], (traced, handed)
        assert 2 <= sum(handed) < 5
        seen.append(outcomes)
        running = sum(handed)
    assert telemetry.series("executor_tasks_completed_total", "function") == {
        labels(executor="pool", outcome="cancelled", error_type=""): 5 - running,
        labels(executor="pool", outcome="error", error_type="concurrent.futures.process.BrokenProcessPool"): running,
    }
    for gauge in ("executor_tasks_queued", "executor_tasks_running", "executor_max_workers"):
        assert telemetry.value(gauge, executor="pool") == 0, gauge


# -- asyncio's reads (3.15 copies a finished future's state with Future._get_snapshot) ------------------------------
def test_asyncio_reading_a_finished_future_is_the_read(telemetry: Telemetry) -> None:
    """``asyncio.wrap_future`` reads the outcome of a finished future (through ``_get_snapshot`` from 3.15): that
    first read is timed as the result lag, and an exception read there is not counted as unretrieved."""
    executor = telemetry.executor("thread")
    futures = [executor.submit(square, 3), executor.submit(support.fail, "x")]
    tracedfutures.wait(futures)

    async def read(futures: list[Any]) -> list[Any]:
        return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)

    ok, error = asyncio.run(read(futures))
    assert ok == 9 and type(error) is support.CustomError
    assert telemetry.histogram("futures_result_lag_seconds", executor="pool")[0] == 2
    del futures, error
    gc.collect()
    assert telemetry.series("executor_exceptions_unretrieved_total") == {}
