"""The load workload shared by tests/test_load.py (a scaled-down run) and tests/stress/load.py (200,000 tasks):
16 threads submit to one executor and to several, with mixed outcomes and cancellations, while a scraper reads
the metrics; afterwards every counter must equal the true count, gauges be 0 and histogram counts match."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

import tracedfutures

TIMEOUT = 120


class CountingProcessor(SpanProcessor):
    """Counts ended spans by name prefix, without a lock (``next()`` on an ``itertools.count`` is atomic)."""

    def __init__(self) -> None:
        self.tasks = itertools.count()
        self.waits = itertools.count()

    def on_end(self, span: Any) -> None:
        next(self.waits if span.name.startswith("futures.") else self.tasks)

    def counts(self) -> tuple[int, int]:
        return next(self.tasks), next(self.waits)  # the count so far (the call itself is not counted)


class Boom(Exception):
    pass


def task(i: int) -> int:
    kind = i % 10
    if kind == 7:
        raise Boom(i)
    if kind == 8:
        raise KeyError(i)
    return i


def run_load(
    total: int, threads: int = 16, batch: int = 250, user_executor: Any = None
) -> dict[str, Any]:
    """Submit ``total`` tasks from ``threads`` threads; returns the truth, the scraped samples and timings."""
    provider = TracerProvider()
    processor = CountingProcessor()
    provider.add_span_processor(processor)
    registry = CollectorRegistry()
    options: dict[str, Any] = {"tracer_provider": provider, "registry": registry}
    tracedfutures.configure(**options)
    executors: dict[str, list[Any]] = {
        "one": [tracedfutures.TracedThreadPoolExecutor(4, name="one", **options)],
        "several": [
            tracedfutures.TracedThreadPoolExecutor(2, name="several", **options),
            tracedfutures.traced(ThreadPoolExecutor(2), "several", **options),  # same series, other pool
        ],
        "other": [tracedfutures.traced(ThreadPoolExecutor(3), "other", **options)],
    }
    if user_executor is not None:
        executors["user"] = [tracedfutures.traced(user_executor, "user", **options)]
    names = list(executors)
    truth: dict[str, Counter[str]] = {name: Counter() for name in names}
    truth_lock = threading.Lock()
    waits = itertools.count()
    negative: list[Any] = []
    stop = threading.Event()

    def scraper() -> None:  # gauges are never negative and never exceed what was submitted, mid-flight
        while not stop.is_set():
            samples = {(s.name, s.labels.get("executor")): s.value for f in registry.collect() for s in f.samples}
            for name in names:
                queued = samples.get(("executor_tasks_queued", name), 0)
                running = samples.get(("executor_tasks_running", name), 0)
                submitted = samples.get(("executor_tasks_submitted_total", name), 0)
                if queued < 0 or running < 0 or queued + running > submitted:
                    negative.append((name, queued, running, submitted))
            time.sleep(0.005)

    def submitter(index: int) -> None:
        per_thread = total // threads + (1 if index < total % threads else 0)
        mine: Counter[tuple[str, str]] = Counter()
        done = 0
        while done < per_thread:
            size = min(batch, per_thread - done)
            futures = []
            for j in range(size):
                name = names[(index + j) % len(names)]
                pool = executors[name][j % len(executors[name])]
                future = pool.submit(task, done + j)
                futures.append((name, future))
                mine[name, "submitted"] += 1
                if j % 13 == 5:
                    future.cancel()  # cancelled if still queued, else it runs to its outcome
            batch_futures = [f for _, f in futures]
            if index % 2:
                tracedfutures.wait(batch_futures, timeout=TIMEOUT)
            else:
                for _ in tracedfutures.as_completed(batch_futures, timeout=TIMEOUT):
                    pass
            next(waits)
            for name, future in futures:
                if future.cancelled():
                    mine[name, "cancelled"] += 1
                elif future.exception() is None:
                    mine[name, "success"] += 1
                else:
                    mine[name, type(future.exception()).__name__] += 1
            done += size
        with truth_lock:
            for (name, what), count in mine.items():
                truth[name][what] += count

    scrape = threading.Thread(target=scraper, daemon=True)
    scrape.start()
    start = time.perf_counter()
    workers = [threading.Thread(target=submitter, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    submitted_in = time.perf_counter() - start
    for pools in executors.values():
        for pool in pools:
            pool.shutdown(wait=True)
    elapsed = time.perf_counter() - start
    stop.set()
    scrape.join()
    tracedfutures.reset_defaults()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # added up over the function label
    for family in registry.collect():
        for s in family.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "function")))
            samples[key] = samples.get(key, 0.0) + s.value
    task_spans, wait_spans = processor.counts()
    provider.shutdown()
    return {
        "truth": truth,
        "samples": samples,
        "waits": next(waits),
        "task_spans": task_spans,
        "wait_spans": wait_spans,
        "negative": negative,
        "seconds": elapsed,
        "submit_seconds": submitted_in,
    }


def check_load(result: dict[str, Any], total: int) -> None:
    """Every counter equals the true count exactly; gauges 0; histogram counts match; one span per task."""
    truth, samples = result["truth"], result["samples"]

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert result["negative"] == []
    assert sum(t["submitted"] for t in truth.values()) == total
    for name, counts in truth.items():
        outcomes = counts["success"] + counts["cancelled"] + counts["Boom"] + counts["KeyError"]
        assert outcomes == counts["submitted"], (name, counts)
        assert value("executor_tasks_submitted_total", executor=name) == counts["submitted"], name
        for outcome, error_type, key in (
            ("success", "", "success"),
            ("cancelled", "", "cancelled"),
            ("error", "loadsupport.Boom", "Boom"),
            ("error", "KeyError", "KeyError"),
        ):
            got = value("executor_tasks_completed_total", executor=name, outcome=outcome, error_type=error_type)
            assert got == counts[key], (name, outcome, error_type, got, counts[key])
        assert value("executor_tasks_queued", executor=name) == 0
        assert value("executor_tasks_running", executor=name) == 0
        assert value("executor_max_workers", executor=name) == 0
        ran = counts["success"] + counts["Boom"] + counts["KeyError"]
        assert value("executor_task_queue_seconds_count", executor=name) == ran, name
        assert value("executor_task_run_seconds_count", executor=name, outcome="success") == counts["success"]
        assert value("executor_task_run_seconds_count", executor=name, outcome="error") == (
            counts["Boom"] + counts["KeyError"]
        )
        assert value("futures_result_lag_seconds_count", executor=name) == ran  # each outcome read once
    waits = sum(
        value(f"futures_{what}_seconds_count", **labels)
        for what, labels in [("as_completed", {"timed_out": "false"}), ("as_completed", {"timed_out": "true"})]
    ) + sum(
        value("futures_wait_seconds_count", return_when=rw, timed_out=to)
        for rw in ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED")
        for to in ("false", "true")
    )
    assert waits == result["waits"]
    assert result["task_spans"] == total
    assert result["wait_spans"] == result["waits"]
