"""What ``tracedfutures top`` shows of one interval: per executor, from two scrapes of ``/metrics`` and the later
scrape's ``/tasks``.

Rates and quantiles are over the interval between the scrapes, from the counters' and the histograms' bucket
deltas (the quantiles interpolated in their bucket as Prometheus' ``histogram_quantile`` does): tasks ended per
second and the share that raised (``executor_tasks_ended_total``), how busy the workers were (worker-seconds
busy over worker-seconds offered) and how many CPUs they used (``executor_workers_cpu_seconds_total`` over the
interval's seconds); the gauges (queued, running, max workers) are the later scrape's. Every series
is summed over its labels other than ``executor`` (outcome, function, error type), so one row is one executor
name. A counter that went down (the program restarted) counts from zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tracedfutures._cli.scrape import Scrape
from tracedfutures._metric_definitions import (
    AVAILABLE,
    BUSY,
    CPU,
    ENDED,
    MAX_WORKERS,
    QUEUE,
    QUEUED,
    RUN,
    RUNNING_GAUGE,
    SUBMITTED,
)


@dataclass(frozen=True)
class ExecutorRow:
    """One executor over the interval (None: not known, e.g. no task ended in it)."""

    name: str
    #: The gauges; None where the program serves no such gauge at all (prometheus_client's own
    #: ``MultiProcessCollector`` instead of ``tracedfutures.multiprocess_registry``: the counters only).
    queued: float | None
    running: float | None
    max_workers: float | None
    #: Tasks that ran to their end (a result or an exception) per second, and the share of them that raised.
    throughput: float | None
    error_rate: float | None
    submitted: float | None
    #: Worker-seconds spent running tasks over worker-seconds offered.
    utilization: float | None
    #: CPUs the workers used: CPU seconds over the interval's seconds (None where the program has no such series).
    cpus: float | None
    queue_p50: float | None
    queue_p95: float | None
    run_p50: float | None
    run_p95: float | None


@dataclass(frozen=True)
class RunningRow:
    """A task running now."""

    executor: str
    function: str
    age: float
    worker: str


@dataclass(frozen=True)
class Interval:
    """Everything one screen of ``top`` shows."""

    seconds: float | None
    executors: list[ExecutorRow]
    running: list[RunningRow] | None
    pid: int | None = None
    notes: list[str] = field(default_factory=list)


def _by_executor(scrape: Scrape, name: str, **match: str) -> dict[str, float]:
    """The samples named ``name`` (that have the labels of ``match``) summed per executor."""
    sums: dict[str, float] = defaultdict(float)
    for labels, value in scrape.values(name):
        if all(labels.get(key) == wanted for key, wanted in match.items()):
            sums[labels.get("executor", "")] += value
    return sums


def _buckets(scrape: Scrape, name: str) -> dict[str, dict[float, float]]:
    """A histogram's cumulative bucket counts per executor: {executor: {le: count}}."""
    counts: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in scrape.values(f"{name}_bucket"):
        counts[labels.get("executor", "")][float(labels["le"])] += value
    return counts


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now  # a counter reset: the program restarted


def bucket_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """The ``q`` quantile of a histogram given as {upper bound: cumulative count}, interpolated linearly in its
    bucket (the lowest bucket from 0); the highest finite bound when it falls in the ``+Inf`` bucket; None when
    the histogram is empty."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _quantiles(before: Scrape | None, now: Scrape, name: str) -> dict[str, tuple[float | None, float | None]]:
    """Per executor, the p50 and p95 of a histogram's observations between the scrapes."""
    later = _buckets(now, name)
    earlier = _buckets(before, name) if before is not None else {}
    result = {}
    for executor, buckets in later.items():
        old = earlier.get(executor, {})
        delta = {bound: _delta(count, old.get(bound, 0.0)) for bound, count in buckets.items()}
        result[executor] = (bucket_quantile(0.5, delta), bucket_quantile(0.95, delta))
    return result


def _worker(task: dict[str, Any]) -> str:
    worker = task.get("worker")
    if not worker:
        return "-"  # a process pool's task: its worker is known when it ends
    return f"{worker.get('thread_name', '')} (pid {worker.get('pid')})"


def _running(now: Scrape) -> list[RunningRow] | None:
    if now.tasks is None:
        return None
    rows = [
        RunningRow(executor["name"], task["function"], float(task["age_seconds"]), _worker(task))
        for executor in now.tasks.get("executors", [])
        for task in executor.get("running", [])
    ]
    rows.sort(key=lambda row: -row.age)
    return rows


def _rates(before: Scrape | None, now: Scrape, name: str, **match: str) -> dict[str, float]:
    """Per executor, how much a counter grew between the scrapes (summed over its other labels)."""
    later = _by_executor(now, f"{name}_total", **match)
    earlier = _by_executor(before, f"{name}_total", **match) if before is not None else {}
    return {executor: _delta(value, earlier.get(executor, 0.0)) for executor, value in later.items()}


def _gauge(values: dict[str, float], executor: str) -> float | None:
    """An executor's gauge: 0 where the gauge has no series of it, None where the program serves none at all."""
    return values.get(executor, 0.0) if values else None


def interval(before: Scrape | None, now: Scrape) -> Interval:
    """The screen of the interval from ``before`` (None: the first scrape, no rates yet) to ``now``."""
    seconds = now.at - before.at if before is not None else None
    gauges = {d.name: _by_executor(now, d.name) for d in (QUEUED, RUNNING_GAUGE, MAX_WORKERS)}
    succeeded = _rates(before, now, ENDED.name, outcome="success")
    failed = _rates(before, now, ENDED.name, outcome="error")
    submitted = _rates(before, now, SUBMITTED.name)
    busy, available = _rates(before, now, BUSY.name), _rates(before, now, AVAILABLE.name)
    cpu = _rates(before, now, CPU.name)
    queue, run = _quantiles(before, now, QUEUE.name), _quantiles(before, now, RUN.name)
    names = sorted(set().union(*gauges.values(), succeeded, submitted))
    rows = []
    for name in names:
        throughput = error_rate = submit_rate = utilization = cpus = None
        if seconds:
            done = succeeded.get(name, 0.0) + failed.get(name, 0.0)
            throughput = done / seconds
            submit_rate = submitted.get(name, 0.0) / seconds
            error_rate = failed.get(name, 0.0) / done if done else None
            offered = available.get(name, 0.0)
            utilization = min(busy.get(name, 0.0) / offered, 1.0) if offered > 0 else None
            cpus = cpu[name] / seconds if name in cpu else None
        queue_p50, queue_p95 = queue.get(name, (None, None)) if seconds else (None, None)
        run_p50, run_p95 = run.get(name, (None, None)) if seconds else (None, None)
        rows.append(
            ExecutorRow(
                name=name,
                queued=_gauge(gauges[QUEUED.name], name),
                running=_gauge(gauges[RUNNING_GAUGE.name], name),
                max_workers=_gauge(gauges[MAX_WORKERS.name], name),
                throughput=throughput,
                error_rate=error_rate,
                submitted=submit_rate,
                utilization=utilization,
                cpus=cpus,
                queue_p50=queue_p50,
                queue_p95=queue_p95,
                run_p50=run_p50,
                run_p95=run_p95,
            )
        )
    notes = [now.tasks_note] if now.tasks_note is not None else []
    pid = now.tasks.get("pid") if now.tasks is not None else None
    return Interval(seconds, rows, _running(now), pid, notes)
