"""Never the cause of an outage: telemetry that raises, hangs or cannot reach its backend, a registry that
already holds our metric names, metric observations that raise, a KeyboardInterrupt in the middle of a wait —
every task result and exception is the bare executor's, nothing reaches stderr, at most one warning is logged,
and shutdown() does not wait for telemetry."""

from __future__ import annotations

import logging
import multiprocessing
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import faultsupport
import pytest
from conftest import CHAINED_IN_FALLBACK, FALLBACK_FORCED, Telemetry, outcome_of
from faultsupport import BrokenProcessor, HangingExporter, RaisingExporter, set_gates, unreachable_exporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from prometheus_client import CollectorRegistry, Counter
from support import fail, square

import tracedfutures
from tracedfutures import metrics

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
TIMEOUT = 30
#: What executor.shutdown() may take beyond the stock executor's, whatever the telemetry does.
SHUTDOWN_SLACK = 1.0
#: The unreachable exporter's own timeout; the tracer provider's shutdown must end within it (plus slack).
EXPORT_TIMEOUT = 1.0


class Scenario:
    """One broken telemetry set-up: the provider and registry the traced executor records to."""

    def __init__(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name = name
        self.provider = TracerProvider()
        self.registry = CollectorRegistry()
        self.exporter: Any = None
        self.exporter_kind = ""
        if name == "exporter raises":
            self.exporter = RaisingExporter()
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=1))
            self.provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
        elif name == "exporter hangs 60 s":
            self.exporter = HangingExporter()
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    self.exporter, max_queue_size=8, schedule_delay_millis=1, max_export_batch_size=2,
                    export_timeout_millis=100,
                )
            )
        elif name == "exporter unreachable":
            self.exporter, self.exporter_kind = unreachable_exporter(EXPORT_TIMEOUT)
            self.provider.add_span_processor(
                BatchSpanProcessor(self.exporter, schedule_delay_millis=1, export_timeout_millis=100)
            )
        elif name in ("processor on_start raises", "processor on_end raises"):
            self.provider.add_span_processor(BrokenProcessor(name.split()[1]))
        elif name == "registry collision":
            Counter("executor_tasks_submitted", "Someone else's metric.", ["executor"], registry=self.registry)
        elif name == "metric observation raises":

            def observe(self: Any, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError("observe is broken")

            monkeypatch.setattr(metrics._Histogram, "observe", observe)
            monkeypatch.setattr(metrics.ExecutorStats, "unretrieved", observe)
        else:
            raise AssertionError(name)

    def close(self) -> float:
        """Shut the provider down; returns how long that took."""
        if isinstance(self.exporter, HangingExporter):
            self.exporter.release.set()
        start = time.monotonic()
        self.provider.shutdown()
        return time.monotonic() - start


SCENARIOS = [
    "exporter raises",
    "exporter hangs 60 s",
    "exporter unreachable",
    "processor on_start raises",
    "processor on_end raises",
    "registry collision",
    "metric observation raises",
]
#: The tracedfutures warnings each scenario logs (its own code failing, or the registry it cannot use).
WARNINGS = {
    "processor on_start raises": 1,
    "processor on_end raises": 1,
    "registry collision": 1,
    "metric observation raises": 1,
}


def make_executor(kind: str, traced: bool, scenario: Scenario | None, gates: tuple[Any, ...]) -> Executor:
    options: dict[str, Any] = {}
    if traced:
        assert scenario is not None
        options = {"name": "pool", "tracer_provider": scenario.provider, "registry": scenario.registry}
    if kind == "thread":
        if traced:
            return tracedfutures.TracedThreadPoolExecutor(1, initializer=set_gates, initargs=gates, **options)
        return ThreadPoolExecutor(1, initializer=set_gates, initargs=gates)
    context = multiprocessing.get_context(kind)
    cls = tracedfutures.TracedProcessPoolExecutor if traced else ProcessPoolExecutor
    return cls(1, mp_context=context, initializer=set_gates, initargs=gates, **options)  # type: ignore[no-any-return]


def workload(executor: Executor, open_gate: Callable[[], None], waiting: Any) -> list[Any]:
    """What a caller sees of successes, errors, a non-callable, cancellations, callbacks, wait, as_completed and
    map, in a fixed order. One worker, held by the first task until every other task is queued."""
    seen: list[Any] = []
    blocker = executor.submit(faultsupport.gated, "first")
    tasks = [executor.submit(square, i) for i in range(6)]
    errors = [executor.submit(fail, "boom"), executor.submit(5)]  # type: ignore[arg-type]
    late = [executor.submit(square, i) for i in range(10, 16)]  # far enough back to be cancellable in a pool
    seen.append(("cancel", [f.cancel() for f in late[::2]]))
    order: list[Any] = []
    tasks[0].add_done_callback(lambda f: order.append(("first", f.result())))
    tasks[0].add_done_callback(lambda f: order.append(("second", f.result())))
    everything = [blocker, *tasks, *errors, *late]
    seen.append(("first exception, timed out", [len(s) for s in waiting.wait(everything, 0.05, FIRST_EXCEPTION)]))
    open_gate()
    seen.append(("wait", [len(s) for s in waiting.wait(everything, timeout=TIMEOUT)]))
    seen.append(("as_completed", set(waiting.as_completed(everything, timeout=TIMEOUT)) == set(everything)))
    seen.append(("outcomes", [outcome_of(lambda f=f: f.result(TIMEOUT)) for f in everything]))
    seen.append(("exceptions", [repr(f.exception()) for f in everything if not f.cancelled()]))
    seen.append(("callbacks", order))
    seen.append(("map", outcome_of(lambda: list(executor.map(square, range(5), timeout=TIMEOUT)))))
    seen.append(("map error", outcome_of(lambda: list(executor.map(fail, ["a"], timeout=TIMEOUT)))))
    return seen


def run(kind: str, traced: bool, scenario: Scenario | None) -> tuple[list[Any], float]:
    """The workload's transcript and the time executor.shutdown() took."""
    gate = threading.Event() if kind == "thread" else multiprocessing.get_context(kind).Event()
    executor = make_executor(kind, traced, scenario, (gate,))
    try:
        seen = workload(executor, gate.set, tracedfutures if traced else _Stdlib)
    finally:
        gate.set()
        start = time.monotonic()
        executor.shutdown(wait=True)
        took = time.monotonic() - start
    return seen, took


class _Stdlib:
    from concurrent.futures import as_completed, wait


@pytest.fixture
def warnings_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[], list[str]]]:
    """The tracedfutures warnings logged during the test, each failure logged anew."""
    from tracedfutures._state import state

    monkeypatch.setattr(state, "failures_logged", set())
    caplog.set_level(logging.DEBUG)
    yield lambda: [
        r.getMessage() for r in caplog.records if r.name == "tracedfutures" and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("kind", ["thread", "fork"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_broken_telemetry_changes_nothing(
    name: str, kind: str, capfd: pytest.CaptureFixture[str], warnings_logged: Callable[[], list[str]]
) -> None:
    if FALLBACK_FORCED and kind != "thread":
        pytest.skip(CHAINED_IN_FALLBACK)
    expected, stock_shutdown = run(kind, False, None)
    assert expected[0] == ("cancel", [True, True, True])
    assert capfd.readouterr() == ("", "")

    patcher = pytest.MonkeyPatch()
    scenario = Scenario(name, patcher)
    try:
        tracedfutures.configure(tracer_provider=scenario.provider, registry=scenario.registry)
        seen, shutdown = run(kind, True, scenario)
    finally:
        tracedfutures.reset_defaults()
        patcher.undo()  # the real observe() again before anything else records
        provider_shutdown = scenario.close()

    assert seen == expected
    assert shutdown < stock_shutdown + SHUTDOWN_SLACK, (shutdown, stock_shutdown)
    # The tracer provider's own shutdown is the SDK's: bounded by the exporter's timeout when it fails fast.
    # (an export in flight plus the final flush: two exporter timeouts at most).
    assert provider_shutdown < 2 * EXPORT_TIMEOUT + 2.0, provider_shutdown
    assert capfd.readouterr() == ("", "")  # nothing printed, by tracedfutures or by a worker process
    assert len(warnings_logged()) == WARNINGS.get(name, 0), warnings_logged()
    if name == "exporter hangs 60 s":
        assert scenario.exporter.calls >= 1  # the exporter really was stuck while the tasks ran
    if name in ("exporter raises", "exporter hangs 60 s", "exporter unreachable", "processor on_end raises"):
        # Metrics do not depend on spans: every task counted exactly.
        samples: dict[tuple[str, str, str], float] = {}  # added up over functions
        for family in scenario.registry.collect():
            for s in family.samples:
                if s.labels.get("executor") == "pool":
                    key = (s.name, s.labels.get("outcome", ""), s.labels.get("error_type", ""))
                    samples[key] = samples.get(key, 0.0) + s.value
        assert samples[("executor_tasks_submitted_total", "", "")] == 21
        assert samples[("executor_tasks_completed_total", "cancelled", "")] == 3
        assert samples[("executor_tasks_completed_total", "error", "support.CustomError")] == 2
        assert samples[("executor_tasks_completed_total", "error", "TypeError")] == 1
        assert samples[("executor_tasks_completed_total", "success", "")] == 15
        assert samples[("executor_tasks_queued", "", "")] == 0
        assert samples[("executor_tasks_running", "", "")] == 0


def test_one_warning_line_on_stderr_without_logging_configured(tmp_path: Any) -> None:
    """In a program that configured no logging, every broken part at once prints one line, nothing more."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        """
        import concurrent.futures as cf, gc
        from opentelemetry.sdk.trace import TracerProvider
        from prometheus_client import CollectorRegistry
        import tracedfutures
        from tracedfutures import metrics
        from faultsupport import BrokenProcessor

        def broken(*args, **kwargs):
            raise RuntimeError("broken")

        metrics._Histogram.observe = broken
        metrics.ExecutorStats.unretrieved = broken
        provider = TracerProvider()
        provider.add_span_processor(BrokenProcessor("on_end"))
        provider.add_span_processor(BrokenProcessor("on_start"))
        registry = CollectorRegistry()
        tracedfutures.configure(tracer_provider=provider, registry=registry)
        with tracedfutures.TracedThreadPoolExecutor(2) as pool:
            futures = [pool.submit(pow, 2, n) for n in range(20)] + [pool.submit(int, "x")]
            tracedfutures.wait(futures)
            print(sorted(f.result() for f in tracedfutures.as_completed(futures[:-1])))
        del futures
        gc.collect()
        """
    )
    here = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=here, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{sorted(2**n for n in range(20))}\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracedfutures: "), out.stderr


# -- KeyboardInterrupt while blocked ---------------------------------------------------------------------------------
def interrupt_main_after(delay: float) -> threading.Timer:
    """SIGINT to the main thread after ``delay``: a real signal, so a blocked lock acquire is interrupted."""
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    timer = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    return timer


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in an interactive program, even where it was ignored (a job started in
    the background) or handled; the previous handler comes back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("where", ["wait", "as_completed", "result"])
def test_keyboard_interrupt_while_blocked(telemetry: Telemetry, where: str, sigint_raises: None) -> None:
    executor = telemetry.executor("thread", max_workers=2)
    gate = telemetry.gate()
    blocked = [executor.submit(gate.task, i) for i in range(3)]
    gate.wait_entered(2)
    timer = interrupt_main_after(0.2)
    with pytest.raises(KeyboardInterrupt) as raised:
        if where == "wait":
            tracedfutures.wait(blocked, timeout=TIMEOUT)
        elif where == "as_completed":
            for _ in tracedfutures.as_completed(blocked, timeout=TIMEOUT):
                raise AssertionError("nothing completes before the interrupt")
        else:
            blocked[0].result(TIMEOUT)
    timer.join()
    assert raised.type is KeyboardInterrupt and raised.value.args == ()
    # Mid-flight the gauges still tell the truth: two running, one queued.
    assert telemetry.value("executor_tasks_running", executor="pool") == 2
    assert telemetry.value("executor_tasks_queued", executor="pool") == 1
    if where != "result":
        span = telemetry.span(f"futures.{where}")
        assert span.status.status_code.name == "ERROR"
        assert span.attributes["error.type"] == "KeyboardInterrupt"  # type: ignore[index]
    gate.open()
    assert [f.result(TIMEOUT) for f in blocked] == [0, 1, 2]
    executor.shutdown()
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_tasks_ended_total", executor="pool", outcome="success") == 3
    if where == "wait":  # an interrupted wait is not a wait that returned: no latency sample
        assert telemetry.histogram("futures_wait_seconds", return_when="ALL_COMPLETED", timed_out="false")[0] == 0
    if where == "as_completed":  # an interrupted iteration ends like one the caller stopped: one sample
        assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 1


# -- process pools: broken workers, initializers, worker recycling, results that do not pickle ----------------------
def outcomes(futures: list[Any]) -> list[Any]:
    """(type, message, type of the cause) of each future's exception, or its result. Object addresses in a
    message (3.14's pickle errors name the object: "... <function f at 0x7f...>") are left out, and so is the
    cause 3.15 gives a broken pool when it finds a dead worker's exit code: whether the pool has reaped the
    worker by then is a race of the stdlib's own (two stock pools differ on it)."""
    seen = []
    for future in futures:
        exc = future.exception(TIMEOUT)
        if exc is None:
            seen.append(("ok", future.result()))
            continue
        cause = exc.__cause__
        if isinstance(exc, BrokenProcessPool) and re.search(r"terminated abruptly with exit code", str(cause)):
            cause = None
        seen.append((type(exc), re.sub(r" at 0x[0-9a-f]+", " at 0x...", str(exc)), type(cause)))
    return seen


def assert_consistent(registry: CollectorRegistry, name: str = "pool") -> dict[tuple[str, str], float]:
    """Every submitted task counted once as finished or cancelled, gauges at 0; returns completed by outcome."""
    samples = [s for family in registry.collect() for s in family.samples if s.labels.get("executor") == name]
    value = {s.name: s.value for s in samples if set(s.labels) == {"executor"}}
    completed: dict[tuple[str, str], float] = {}  # added up over functions
    for s in samples:
        if s.name == "executor_tasks_completed_total":
            key = (s.labels["outcome"], s.labels["error_type"])
            completed[key] = completed.get(key, 0.0) + s.value
    assert value["executor_tasks_submitted_total"] == sum(completed.values()), (value, completed)
    assert value["executor_tasks_queued"] == 0
    assert value["executor_tasks_running"] == 0
    assert value["executor_max_workers"] == 0  # every executor of the name is shut down
    return {key: count for key, count in completed.items() if count}


def broken_pool(executor: Executor, how: str, gates: tuple[Any, Any, Any]) -> list[Any]:
    """Two workers busy, four tasks behind them; then one worker is SIGKILLed mid-task."""
    if how == "killed by the test":
        pids = gates[2]
        futures = [executor.submit(faultsupport.report_and_hold) for _ in range(2)]
        futures += [executor.submit(faultsupport.hold) for _ in range(4)]
        victim = pids.get(timeout=TIMEOUT)
        pids.get(timeout=TIMEOUT)  # both workers are inside a task
        import os

        os.kill(victim, signal.SIGKILL)
    else:
        futures = [executor.submit(faultsupport.kill_own_worker)]
        futures += [executor.submit(faultsupport.hold) for _ in range(5)]
        gates[0].set()  # every task is submitted: now the first one kills its worker
    seen = outcomes(futures)
    seen.append(outcome_of(lambda: executor.submit(square, 1)))
    executor.shutdown()
    return seen


@pytest.mark.parametrize(
    ("how", "context"),
    [("killed by the test", "fork"), ("killed by the test", "spawn"), ("killed by itself", "fork")],
)
def test_killed_worker_breaks_the_pool_as_stock(telemetry: Telemetry, how: str, context: str) -> None:
    ctx = multiprocessing.get_context(context)
    results = []
    for traced in (False, True):
        gates = (ctx.Event(), ctx.Event(), ctx.Queue())
        options: dict[str, Any] = {"mp_context": ctx, "initializer": set_gates, "initargs": gates}
        executor: Executor = (
            telemetry.executor(context, max_workers=2, **{k: v for k, v in options.items() if k != "mp_context"})
            if traced
            else ProcessPoolExecutor(2, **options)
        )
        results.append(broken_pool(executor, how, gates))
    stock, traced_seen = results
    assert traced_seen == stock
    assert {entry[0] for entry in stock[:-1]} == {_broken()}
    assert assert_consistent(telemetry.registry) == {
        ("error", "concurrent.futures.process.BrokenProcessPool"): 7,  # six tasks and the refused submit
    }
    assert len(telemetry.spans()) == 7
    assert {s.attributes["error.type"] for s in telemetry.spans()} == {  # type: ignore[index]
        "concurrent.futures.process.BrokenProcessPool"
    }


def _broken() -> type:
    from concurrent.futures.process import BrokenProcessPool

    return BrokenProcessPool


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_failing_initializer_as_stock(
    telemetry: Telemetry, capfd: pytest.CaptureFixture[str], context: str
) -> None:
    ctx = multiprocessing.get_context(context)
    seen = []
    for traced in (False, True):
        if traced:
            executor = telemetry.executor(context, initializer=faultsupport.failing_initializer)
        else:
            executor = ProcessPoolExecutor(1, mp_context=ctx, initializer=faultsupport.failing_initializer)
        futures = [executor.submit(square, i) for i in range(3)]
        result = outcomes(futures)
        executor.shutdown()
        seen.append((result, capfd.readouterr()))
    assert seen[1] == seen[0]
    assert {entry[0] for entry in seen[0][0]} == {_broken()}
    completed = assert_consistent(telemetry.registry)
    assert completed == {("error", "concurrent.futures.process.BrokenProcessPool"): 3}


def test_max_tasks_per_child(telemetry: Telemetry) -> None:
    # One task at a time: many tasks queued at once can hang the stdlib pool itself when workers retire
    # (CPython gh-115634, a stock ProcessPoolExecutor hangs the same way here).
    ctx = multiprocessing.get_context("spawn")
    stock = ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=2)
    expected = [stock.submit(square, i).result(TIMEOUT) for i in range(6)]
    stock.shutdown()
    executor = telemetry.executor("spawn", max_workers=2, max_tasks_per_child=2)
    assert [executor.submit(square, i).result(TIMEOUT) for i in range(6)] == expected
    workers = {executor.submit(faultsupport.pid).result(TIMEOUT) for _ in range(6)}
    assert len(workers) >= 3  # no worker ran more than two tasks: retired ones were replaced
    executor.shutdown()
    assert assert_consistent(telemetry.registry) == {("success", ""): 12}
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == 12
    assert all(s.events and s.events[0].name == "running" for s in telemetry.spans())


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_unpicklable_results_as_stock(telemetry: Telemetry, context: str) -> None:
    ctx = multiprocessing.get_context(context)
    seen = []
    for traced in (False, True):
        executor = telemetry.executor(context) if traced else ProcessPoolExecutor(1, mp_context=ctx)
        futures = [executor.submit(faultsupport.lock_result), executor.submit(faultsupport.local_function_result)]
        futures.append(executor.submit(square, 3))  # the pool keeps working
        seen.append(outcomes(futures))
        executor.shutdown()
    assert seen[1] == seen[0]
    assert seen[0][2] == ("ok", 9)
    completed = assert_consistent(telemetry.registry)
    assert sum(completed.values()) == 3 and completed[("success", "")] == 1


# -- telemetry that itself uses concurrent.futures ------------------------------------------------------------------
def test_span_processor_using_an_executor_under_the_instrumentor(warnings_logged: Callable[[], list[str]]) -> None:
    """The SDK's ConcurrentMultiSpanProcessor runs every processor on a stock ThreadPoolExecutor: instrumented,
    each span would submit a task that makes a span (recursion in on_start, an endless loop from on_end).
    Submits made from inside tracedfutures' telemetry, or while instrumentation is suppressed (as exporters
    do), get the stdlib's submit, untraced."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
    from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    multi = ConcurrentMultiSpanProcessor(2)
    multi.add_span_processor(SimpleSpanProcessor(exporter))
    provider = TracerProvider(active_span_processor=multi)
    registry = CollectorRegistry()
    instrumentor = tracedfutures.ConcurrentFuturesInstrumentor()
    instrumentor.instrument(tracer_provider=provider, registry=registry)
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(2, thread_name_prefix="app") as pool:
            futures = [pool.submit(square, i) for i in range(50)]
            assert [f.result(TIMEOUT) for f in tracedfutures.wait(futures, timeout=TIMEOUT).done] != []
            assert [f.result() for f in futures] == [i * i for i in range(50)]
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                quiet = pool.submit(square, 3)
            finally:
                detach(token)
            assert quiet.result(TIMEOUT) == 9 and type(quiet) is not tracedfutures.TracedFuture
        took = time.monotonic() - start
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert took < 10, took
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("app square") == 50
    assert set(names) <= {"app square", "futures.wait"}  # nothing for the SDK's own tasks
    assert registry.get_sample_value("executor_tasks_submitted_total", {"executor": "app"}) == 50
    assert warnings_logged() == []
