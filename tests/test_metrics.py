"""The Prometheus side: exact counters, histogram consistency, gauges observed mid-flight, the error_type cap,
exact counts under concurrent submitters, and what a registry shows when scraped."""

from __future__ import annotations

import itertools
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Telemetry, labels
from prometheus_client import CollectorRegistry, Counter, generate_latest
from support import square

import tracedfutures
from tracedfutures.metrics import DEFAULT_BUCKETS, validate_buckets

TIMEOUT = 30


def raise_(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize("kind", ["thread", "wrapped"])
def test_queued_and_running_gauges_mid_flight(telemetry: Telemetry, kind: str) -> None:
    gate = telemetry.gate()
    executor = telemetry.executor(kind)
    futures = [executor.submit(gate.task, i) for i in range(3)]
    gate.wait_entered(1)
    assert telemetry.value("executor_tasks_running", executor="pool") == 1
    assert telemetry.value("executor_tasks_queued", executor="pool") == 2
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 3
    assert telemetry.value("executor_max_workers", executor="pool") == 1
    assert telemetry.spans() == []  # task spans end with their task
    gate.open()
    assert [f.result(TIMEOUT) for f in futures] == [0, 1, 2]
    executor.shutdown()
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_max_workers", executor="pool") == 0


def test_gauges_return_to_zero(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    futures = [executor.submit(square, i) for i in range(20)]
    assert [f.result(TIMEOUT) for f in futures] == [i * i for i in range(20)]
    executor.shutdown()
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0


def test_max_workers_sums_live_executors_of_a_name(telemetry: Telemetry) -> None:
    first = telemetry.executor("thread", max_workers=3)
    second = telemetry.executor("wrapped", max_workers=2)
    assert telemetry.value("executor_max_workers", executor="pool") == 5
    first.shutdown()
    assert telemetry.value("executor_max_workers", executor="pool") == 2
    first.shutdown()  # a second shutdown releases nothing more
    assert telemetry.value("executor_max_workers", executor="pool") == 2
    second.shutdown()
    assert telemetry.value("executor_max_workers", executor="pool") == 0


def test_queue_and_run_histograms_are_consistent(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=2)
    futures = [executor.submit(square, i) for i in range(7)]
    futures += [executor.submit(raise_, ValueError(i)) for i in range(4)]
    for f in futures:
        f.exception(TIMEOUT)
    executor.shutdown()
    queue_count, _ = telemetry.histogram("executor_task_queue_seconds", executor="pool")
    success_count, success_sum = telemetry.histogram(
        "executor_task_run_seconds", executor="pool", outcome="success"
    )
    error_count, _ = telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="error")
    assert (queue_count, success_count, error_count) == (11, 7, 4)
    assert success_sum < 7 * 5  # seconds: fast tasks, timed in seconds rather than nanoseconds
    assert telemetry.series("executor_tasks_completed_total") == {
        labels(executor="pool", function="square", outcome="success", error_type=""): 7,
        labels(executor="pool", function="raise_", outcome="error", error_type="ValueError"): 4,
    }
    assert telemetry.series("executor_tasks_ended_total") == {
        labels(executor="pool", outcome="success"): 7,
        labels(executor="pool", outcome="error"): 4,
        labels(executor="pool", outcome="cancelled"): 0,
    }


def test_error_type_is_capped_at_20_names_then_other(telemetry: Telemetry) -> None:
    errors = [type(f"E{i}", (Exception,), {"__module__": "errs"}) for i in range(25)]
    executor = telemetry.executor("thread")
    for cls in [*errors, errors[0]]:  # sequential: the first 20 classes seen are named
        assert type(executor.submit(raise_, cls()).exception(TIMEOUT)) is cls
    executor.shutdown()
    expected = {labels(executor="pool", outcome="error", error_type=f"errs.E{i}"): 1 for i in range(20)}
    expected[labels(executor="pool", outcome="error", error_type="errs.E0")] = 2  # a named class stays named
    expected[labels(executor="pool", outcome="error", error_type="other")] = 5
    assert telemetry.series("executor_tasks_completed_total", "function") == expected
    # Only metrics are capped: every span names its own class.
    assert sorted({s.attributes["error.type"] for s in telemetry.spans()}) == sorted(
        f"errs.E{i}" for i in range(25)
    )


@pytest.mark.parametrize("kind", ["thread", "user"])
def test_counts_are_exact_under_concurrent_submitters(telemetry: Telemetry, kind: str) -> None:
    executor = telemetry.executor(kind, max_workers=4)
    tallies: list[dict[str, int]] = []

    def submitter(seed: int) -> None:
        tally = dict.fromkeys(("success", "ValueError", "KeyError", "cancelled"), 0)
        futures = []
        for i in range(2000):
            n = seed + i
            if n % 4 == 0:
                future = executor.submit(raise_, ValueError(n))
            elif n % 4 == 1:
                future = executor.submit(raise_, KeyError(n))
            else:
                future = executor.submit(square, n)
            expected = ("ValueError", "KeyError", "success", "success")[n % 4]
            if n % 7 == 0 and future.cancel():
                expected = "cancelled"
            tally[expected] += 1
            futures.append(future)
        for future in futures:
            if not future.cancelled():
                future.exception(TIMEOUT)
        tallies.append(tally)

    threads = [threading.Thread(target=submitter, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    executor.shutdown()
    total = {k: sum(t[k] for t in tallies) for k in tallies[0]}
    assert sum(total.values()) == 16000
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == 16000
    assert telemetry.series("executor_tasks_completed_total", "function") == {
        labels(executor="pool", outcome="success", error_type=""): total["success"],
        labels(executor="pool", outcome="cancelled", error_type=""): total["cancelled"],
        labels(executor="pool", outcome="error", error_type="ValueError"): total["ValueError"],
        labels(executor="pool", outcome="error", error_type="KeyError"): total["KeyError"],
    }
    ran = 16000 - total["cancelled"]
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == ran
    assert (
        telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="success")[0]
        == total["success"]
    )
    assert telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="error")[0] == (
        total["ValueError"] + total["KeyError"]
    )
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    assert len(telemetry.spans()) == 16000


def test_counts_of_ended_threads_are_folded_in_exactly(telemetry: Telemetry) -> None:
    """Each thread counts its own tasks without a lock; a thread that ends leaves its counts in the totals, and
    the per-thread table stays as small as the set of live threads however many come and go."""
    from tracedfutures import metrics
    from tracedfutures._state import state

    submitted_seen: list[float] = []
    for _ in range(30):  # 30 pools of 3 workers, each shut down: 90 worker threads that end
        executor = telemetry.executor("thread", max_workers=3)
        futures = [executor.submit(raise_ if i % 5 == 0 else square, ValueError(i) if i % 5 == 0 else i)
                   for i in range(20)]  # fmt: skip
        for future in futures:
            future.exception(TIMEOUT)
        executor.shutdown()
        submitted_seen.append(telemetry.value("executor_tasks_submitted_total", executor="pool") or 0.0)
    assert submitted_seen == [20.0 * (r + 1) for r in range(30)]
    assert telemetry.series("executor_tasks_completed_total") == {
        labels(executor="pool", function="square", outcome="success", error_type=""): 480,
        labels(executor="pool", function="raise_", outcome="error", error_type="ValueError"): 120,
    }
    assert telemetry.histogram("executor_task_queue_seconds", executor="pool")[0] == 600
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0
    assert telemetry.value("executor_tasks_running", executor="pool") == 0
    collector = state.collectors[telemetry.registry]
    assert isinstance(collector, metrics.MetricsCollector)
    stats = collector.executors["pool"]
    # Only this (submitting) thread is left: every worker's counts were folded into the retired totals.
    assert [counts.thread() for counts in stats._threads if counts.thread] == [threading.current_thread()]
    assert stats.retired.started == 600


def test_scrape_text(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread", max_workers=2, name="scraped")
    assert executor.submit(square, 2).result(TIMEOUT) == 4
    executor.shutdown()
    text = generate_latest(telemetry.registry).decode()
    lines = set(text.splitlines())
    assert {
        "# TYPE executor_tasks_submitted_total counter",
        'executor_tasks_submitted_total{executor="scraped"} 1.0',
        'executor_tasks_completed_total{error_type="",executor="scraped",function="square",outcome="success"} 1.0',
        'executor_tasks_ended_total{executor="scraped",outcome="cancelled"} 0.0',
        "# TYPE executor_task_queue_seconds histogram",
        'executor_task_queue_seconds_count{executor="scraped"} 1.0',
        'executor_task_queue_seconds_bucket{executor="scraped",le="3600.0"} 1.0',
        'executor_task_queue_seconds_bucket{executor="scraped",le="+Inf"} 1.0',
        'executor_task_run_seconds_count{executor="scraped",function="square",outcome="success"} 1.0',
        "# TYPE executor_tasks_queued gauge",
        'executor_tasks_queued{executor="scraped"} 0.0',
        'executor_tasks_running{executor="scraped"} 0.0',
        'executor_max_workers{executor="scraped"} 0.0',
        'executor_invalid_transitions_total{executor="scraped",method="set_result"} 0.0',
        'futures_wait_seconds_count{return_when="FIRST_COMPLETED",timed_out="true"} 0.0',
        'futures_as_completed_seconds_count{timed_out="false"} 0.0',
        "futures_as_completed_next_seconds_count 0.0",
    } <= lines
    buckets = [
        line for line in lines if line.startswith('executor_task_queue_seconds_bucket{executor="scraped"')
    ]
    assert len(buckets) == len(DEFAULT_BUCKETS) + 1


def test_configured_buckets(telemetry: Telemetry) -> None:
    tracedfutures.configure(buckets=[0.5, 2])
    registry = CollectorRegistry()  # buckets apply to collectors made after configure()
    executor = tracedfutures.TracedThreadPoolExecutor(1, name="b", registry=registry)
    assert executor.submit(square, 3).result(TIMEOUT) == 9
    executor.shutdown()
    buckets = {
        s.labels["le"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "executor_task_run_seconds_bucket" and s.labels["outcome"] == "success"
    }
    assert buckets == {"0.5": 1.0, "2.0": 1.0, "+Inf": 1.0}


@pytest.mark.parametrize("buckets", [[], [0.1, float("inf")], [0, 1], [-1.0], [1.0, 0.5], [1.0, 1.0]])
def test_bad_buckets_raise_at_configure(buckets: list[float]) -> None:
    with pytest.raises(ValueError):
        tracedfutures.configure(buckets=buckets)
    with pytest.raises(ValueError):
        validate_buckets(buckets)


def test_registry_with_clashing_metric_keeps_tasks_working(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    Counter("executor_tasks_submitted", "someone else's", registry=registry)
    with caplog.at_level(logging.WARNING, logger="tracedfutures"):
        executor: Any = tracedfutures.traced(
            ThreadPoolExecutor(1), "clash", tracer_provider=telemetry.provider, registry=registry
        )
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "tracedfutures metrics disabled for this registry"
    ]
    assert executor.submit(square, 5).result(TIMEOUT) == 25
    executor.shutdown()
    assert registry.get_sample_value("executor_tasks_submitted_total") == 0
    assert registry.get_sample_value("executor_tasks_completed_total", {"executor": "clash"}) is None
    assert [s.name for s in telemetry.spans()] == ["clash square"]


@pytest.mark.parametrize(
    "serve",
    [
        lambda registry: tracedfutures.start_http_server(0, registry=registry),
        lambda registry: tracedfutures.make_wsgi_app(registry),
        lambda registry: tracedfutures.make_asgi_app(registry),
    ],
    ids=["start_http_server", "make_wsgi_app", "make_asgi_app"],
)
def test_serving_a_registry_that_is_not_one_fails_at_the_call(serve: Any) -> None:
    """As ``configure`` does: a wrong registry raises at the call (no server started), not at every scrape."""
    threads = threading.active_count()
    with pytest.raises(TypeError, match="registry must be a prometheus_client CollectorRegistry, got str"):
        serve("x")
    assert threading.active_count() == threads


def test_busy_never_grows_faster_than_available(telemetry: Telemetry) -> None:
    """Between any two scrapes busy worker-seconds grow by at most the available ones (a pool of 3 kept busy by
    tasks of several lengths, scraped all the while), and once the pool is idle busy is each task's run time."""
    import time

    def scrape() -> tuple[float, float]:
        values = {
            s.name: s.value
            for family in telemetry.registry.collect()
            for s in family.samples
            if s.labels.get("executor") == "pool"
        }
        return values["executor_workers_busy_seconds_total"], values["executor_workers_available_seconds_total"]

    executor = telemetry.executor("thread", max_workers=3)
    futures = [executor.submit(time.sleep, (i % 4) * 0.03) for i in range(40)]
    seen = []
    while not all(f.done() for f in futures):
        seen.append(scrape())
    time.sleep(0.1)  # idle workers: capacity to which busy catches up, if a scrape missed a task as it ended
    seen.append(scrape())
    assert len(seen) > 10
    for (busy_a, available_a), (busy_b, available_b) in itertools.pairwise(seen):
        assert 0 <= busy_b - busy_a <= available_b - available_a + 1e-9
    ran = telemetry.histogram("executor_task_run_seconds", executor="pool", outcome="success")[1]
    assert seen[-1][0] == pytest.approx(ran, abs=1e-6)


def test_tasks_logged_as_they_end_are_counted_exactly_before_between_and_after_folds() -> None:
    """A metrics-only task that started and succeeded is only logged as it ends; its thread folds its log into its
    counts every ``FOLD_EVERY`` tasks, and a scrape counts what is logged and not yet folded. Scraped before the
    first fold, between folds and at the end, the counters, every bucket and sum of the queue and run histograms,
    and each function's ``_created`` equal what each future's own times give: nothing counted twice or lost."""
    from bisect import bisect_left

    from opentelemetry.trace import NoOpTracerProvider

    from tracedfutures.metrics import FOLD_EVERY

    registry = CollectorRegistry()
    executor = tracedfutures.TracedThreadPoolExecutor(
        1, name="logged", registry=registry, tracer_provider=NoOpTracerProvider()
    )
    bounds = [math.floor(round(b * 1e9, 3)) for b in DEFAULT_BUCKETS]
    futures: list[Any] = []

    def expected_histogram(values: list[int]) -> dict[str, float]:
        counts = [0] * (len(bounds) + 1)
        for value in values:
            counts[bisect_left(bounds, max(value, 0))] += 1
        cumulative = list(itertools.accumulate(counts))
        buckets = {f"bucket {le}": float(n) for le, n in zip([*map(repr, DEFAULT_BUCKETS), "+Inf"], cumulative)}
        return {**buckets, "count": float(len(values)), "sum": sum(max(v, 0) for v in values) / 1e9}

    def scraped(name: str, **wanted: str) -> dict[str, float]:
        found = {}
        for family in registry.collect():
            for sample in family.samples:
                if sample.labels.get("executor") != "logged":
                    continue
                if any(sample.labels.get(k) != v for k, v in wanted.items()):
                    continue
                if sample.name == f"{name}_bucket":
                    found[f"bucket {sample.labels['le']}"] = sample.value
                elif sample.name in (f"{name}_count", f"{name}_sum"):
                    found[sample.name.rsplit("_", 1)[1]] = sample.value
        return found

    def run_tasks(count: int) -> None:
        done = threading.Event()
        batch = [executor.submit(square if (len(futures) + i) % 3 else abs, i) for i in range(count)]
        batch[-1].add_done_callback(lambda _: done.set())  # one worker: every earlier task's end was counted
        assert done.wait(TIMEOUT)
        futures.extend(batch)

    def check() -> None:
        by_function: dict[str, list[Any]] = {"square": [], "abs": []}
        for future in futures:
            by_function[future._tf_function].append(future)
        queues = [f.started_ns - f.submitted_ns for f in futures]
        assert scraped("executor_task_queue_seconds") == expected_histogram(queues)
        for function, ended in by_function.items():
            runs = [f.finished_ns - f.started_ns for f in ended]
            assert scraped("executor_task_run_seconds", function=function) == expected_histogram(runs)
            assert registry.get_sample_value(
                "executor_tasks_completed_total",
                {"executor": "logged", "function": function, "outcome": "success", "error_type": ""},
            ) == len(ended)
            assert registry.get_sample_value(
                "executor_tasks_completed_created",
                {"executor": "logged", "function": function, "outcome": "success", "error_type": ""},
            ) == min(f.finished_ns for f in ended) / 1e9
        assert registry.get_sample_value("executor_tasks_ended_total", {"executor": "logged", "outcome": "success"}) \
            == len(futures)  # fmt: skip
        assert registry.get_sample_value("executor_tasks_running", {"executor": "logged"}) == 0
        assert registry.get_sample_value("executor_tasks_queued", {"executor": "logged"}) == 0

    run_tasks(FOLD_EVERY // 2)  # logged, none folded
    check()
    run_tasks(FOLD_EVERY + 7)  # the worker folded once, and logged more since
    check()
    run_tasks(FOLD_EVERY * 2)  # folded again
    check()
    assert [f.result() for f in futures] == [square(i) if (n % 3) else abs(i) for n, i in enumerate(
        [*range(FOLD_EVERY // 2), *range(FOLD_EVERY + 7), *range(FOLD_EVERY * 2)])]  # fmt: skip
    lag_count = registry.get_sample_value("futures_result_lag_seconds_count", {"executor": "logged"})
    assert lag_count == len(futures)  # each first read's lag: logged by this thread, folded past FOLD_EVERY
    executor.shutdown()
    check()
