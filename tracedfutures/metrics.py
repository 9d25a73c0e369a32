"""The Prometheus metrics: their names, help, buckets and caps, the per-executor counts, and their collector.

Counts are kept in plain per-executor state under one lock each and turned into metric families at scrape time
by one collector per registry, so a task costs a few integer updates rather than a prometheus_client child
lookup per sample. Gauges are derived from the counters at scrape time, so they are exact by construction and
return to 0 when the pool is idle.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from tracedfutures._naming import error_type

if TYPE_CHECKING:
    from tracedfutures._lifecycle import TracedFuture

_log = logging.getLogger("tracedfutures")

#: Buckets for every latency histogram, in seconds: 100 µs to one hour, so sub-millisecond tasks and backlogs of
#: half an hour and more both land in a finite bucket. Change them with ``configure(buckets=...)``.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

#: Distinct ``error_type`` values per executor before further types are counted as ``other``.
MAX_ERROR_TYPES = 20
OTHER_ERROR_TYPE = "other"
OUTCOMES = ("success", "error", "cancelled")
REFUSABLE_METHODS = ("set_result", "set_exception", "set_running_or_notify_cancel")
RETURN_WHEN = ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED")


def validate_buckets(buckets: Iterable[float]) -> tuple[float, ...]:
    """Return ``buckets`` as a tuple of finite, positive, strictly increasing bounds, else raise ``ValueError``."""
    bounds = tuple(float(b) for b in buckets)
    if not bounds:
        raise ValueError("buckets must not be empty")
    if any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError(f"buckets must be finite and positive (+Inf is implied): {bounds!r}")
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"buckets not in strictly increasing order: {bounds!r}")
    return bounds


# An exemplar as recorded: trace id, span id, observed value, unix time. Formatted only when scraped.
_RawExemplar = tuple[int, int, float, float]


class _Histogram:
    """Bucket counts (not cumulative; the last one is +Inf), a sum, and the latest exemplar of each bucket.

    Callers hold the owner's lock.
    """

    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.exemplars: list[_RawExemplar | None] | None = None

    def observe(self, seconds: float, trace: tuple[int, int] | None = None) -> None:
        index = bisect_left(self.bounds, seconds)
        self.counts[index] += 1
        self.sum += seconds
        if trace is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[index] = (trace[0], trace[1], seconds, time.time())

    def snapshot(self) -> tuple[list[tuple[Any, ...]], float]:
        buckets: list[tuple[Any, ...]] = []
        total = 0
        exemplars = self.exemplars or [None] * len(self.counts)
        for bound, count, raw in zip((*map(repr, self.bounds), "+Inf"), self.counts, exemplars):
            total += count
            if raw is None:
                buckets.append((bound, float(total)))
            else:
                labels = {"trace_id": format(raw[0], "032x"), "span_id": format(raw[1], "016x")}
                buckets.append((bound, float(total), Exemplar(labels, raw[2], raw[3])))
        return buckets, self.sum


class ExecutorStats:
    """Everything counted for one executor name in one registry. Shared by every executor of that name."""

    def __init__(self, name: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        # Re-entrant: the unretrieved-exception finalizer may run from garbage collection in a thread that
        # already holds it.
        self.lock = threading.RLock()
        self.submitted = 0
        self.left_queue = 0
        self.started = 0
        self.ended_after_start = 0
        self.max_workers = 0
        # Errors always carry their type, so their series appear with the first error of each type.
        self.completed: dict[tuple[str, str], int] = {("success", ""): 0, ("cancelled", ""): 0}
        self.error_labels: dict[type[BaseException], str] = {}
        self.queue = _Histogram(buckets)
        self.run = {"success": _Histogram(buckets), "error": _Histogram(buckets)}
        self.invalid = dict.fromkeys(REFUSABLE_METHODS, 0)
        self.result_lag = _Histogram(buckets)
        self.unretrieved: dict[str, int] = {}

    def error_label(self, exc: BaseException) -> str:
        """The capped ``error_type`` label of ``exc``. Caller holds ``lock``."""
        cls = type(exc)
        label = self.error_labels.get(cls)
        if label is None:
            label = error_type(cls)
            if len(self.error_labels) < MAX_ERROR_TYPES and label not in self.error_labels.values():
                self.error_labels[cls] = label
            elif label not in self.error_labels.values():
                label = OTHER_ERROR_TYPE
        return label

    def add_workers(self, count: int) -> None:
        with self.lock:
            self.max_workers += count

    def count_unretrieved(self, label: str) -> None:
        with self.lock:
            self.unretrieved[label] = self.unretrieved.get(label, 0) + 1


class WaitStats:
    """``wait`` and ``as_completed`` latencies for one registry."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.lock = threading.Lock()
        self.wait = {(rw, to): _Histogram(buckets) for rw in RETURN_WHEN for to in ("false", "true")}
        self.as_completed = {to: _Histogram(buckets) for to in ("false", "true")}
        self.as_completed_next = _Histogram(buckets)

    def observe_wait(self, return_when: str, timed_out: bool, seconds: float) -> None:
        hist = self.wait.get((return_when, "true" if timed_out else "false"))
        if hist is not None:
            with self.lock:
                hist.observe(seconds)

    def observe_as_completed(self, timed_out: bool, seconds: float) -> None:
        with self.lock:
            self.as_completed["true" if timed_out else "false"].observe(seconds)

    def observe_as_completed_next(self, seconds: float) -> None:
        with self.lock:
            self.as_completed_next.observe(seconds)


class MetricsCollector:
    """The one collector per registry that exposes every executor's and every wait's metrics."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.lock = threading.Lock()
        self.executors: dict[str, ExecutorStats] = {}
        self.waits = WaitStats(buckets)

    def executor(self, name: str) -> ExecutorStats:
        with self.lock:
            stats = self.executors.get(name)
            if stats is None:
                stats = self.executors[name] = ExecutorStats(name, self.buckets)
            return stats

    def describe(self) -> list[Metric]:
        return list(self._families((), None))

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            executors = list(self.executors.values())
        return self._families(executors, self.waits)

    def _families(self, executors: Sequence[ExecutorStats], waits: WaitStats | None) -> Iterator[Metric]:
        submitted = CounterMetricFamily(
            "executor_tasks_submitted", "Tasks handed to the executor (submit and map).", labels=["executor"]
        )
        completed = CounterMetricFamily(
            "executor_tasks_completed",
            "Tasks that ended, by outcome (success, error, cancelled) and capped exception class.",
            labels=["executor", "outcome", "error_type"],
        )
        queue = HistogramMetricFamily(
            "executor_task_queue_seconds",
            "Seconds from submit to the moment the task's callable really started.",
            labels=["executor"],
        )
        run = HistogramMetricFamily(
            "executor_task_run_seconds",
            "Seconds from the real start of a task's callable to its result or exception.",
            labels=["executor", "outcome"],
        )
        queued = GaugeMetricFamily("executor_tasks_queued", "Tasks submitted and not started yet.", labels=["executor"])
        running = GaugeMetricFamily(
            "executor_tasks_running",
            "Tasks running now (for process pools: handed to a worker process).",
            labels=["executor"],
        )
        max_workers = GaugeMetricFamily(
            "executor_max_workers", "Workers the live executors of this name may use.", labels=["executor"]
        )
        invalid = CounterMetricFamily(
            "executor_invalid_transitions",
            "Future state transitions refused with InvalidStateError or RuntimeError, by method.",
            labels=["executor", "method"],
        )
        result_lag = HistogramMetricFamily(
            "futures_result_lag_seconds",
            "Seconds from a task's future finishing to a caller first reading its result or exception.",
            labels=["executor"],
        )
        unretrieved = CounterMetricFamily(
            "executor_exceptions_unretrieved",
            "Futures that finished with an exception nobody read, counted when the future was collected.",
            labels=["executor", "error_type"],
        )
        for stats in executors:
            name = stats.name
            with stats.lock:
                submitted.add_metric([name], stats.submitted)
                for (outcome, etype), count in stats.completed.items():
                    completed.add_metric([name, outcome, etype], count)
                queue.add_metric([name], *stats.queue.snapshot())
                for outcome, hist in stats.run.items():
                    run.add_metric([name, outcome], *hist.snapshot())
                queued.add_metric([name], max(stats.submitted - stats.left_queue, 0))
                running.add_metric([name], max(stats.started - stats.ended_after_start, 0))
                max_workers.add_metric([name], stats.max_workers)
                for method, count in stats.invalid.items():
                    invalid.add_metric([name, method], count)
                result_lag.add_metric([name], *stats.result_lag.snapshot())
                for etype, count in stats.unretrieved.items():
                    unretrieved.add_metric([name, etype], count)
        yield from (submitted, completed, queue, run, queued, running, max_workers, invalid, result_lag, unretrieved)

        wait = HistogramMetricFamily(
            "futures_wait_seconds",
            "Seconds callers blocked in wait(), by return_when and whether the timeout ended the wait.",
            labels=["return_when", "timed_out"],
        )
        as_completed = HistogramMetricFamily(
            "futures_as_completed_seconds",
            "Seconds from the first to the last step of an as_completed() iteration, by whether it timed out.",
            labels=["timed_out"],
        )
        as_completed_next = HistogramMetricFamily(
            "futures_as_completed_next_seconds",
            "Seconds an as_completed() iteration blocked before yielding each future.",
            labels=[],
        )
        if waits is not None:
            with waits.lock:
                for (rw, to), hist in waits.wait.items():
                    wait.add_metric([rw, to], *hist.snapshot())
                for to, hist in waits.as_completed.items():
                    as_completed.add_metric([to], *hist.snapshot())
                as_completed_next.add_metric([], *waits.as_completed_next.snapshot())
        yield from (wait, as_completed, as_completed_next)


class MetricsHook:
    """The metrics side of the lifecycle: records one executor's transitions into its ``ExecutorStats``."""

    __slots__ = ("stats",)

    def __init__(self, stats: ExecutorStats) -> None:
        self.stats = stats

    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        stats = self.stats
        with stats.lock:
            stats.submitted += 1

    def on_start(self, future: TracedFuture) -> None:
        stats = self.stats
        with stats.lock:
            stats.left_queue += 1
            stats.started += 1

    def on_finish(self, future: TracedFuture) -> None:
        stats = self.stats
        outcome = future.outcome
        started = future.started_ns
        context = future._tf_context
        trace = (context.trace_id, context.span_id) if context is not None and context.trace_flags.sampled else None
        with stats.lock:
            if future.ran:
                stats.ended_after_start += 1
            else:
                stats.left_queue += 1
            if outcome == "error":
                key = ("error", stats.error_label(future._exception))  # type: ignore[arg-type]
            else:
                key = (outcome, "")
            stats.completed[key] = stats.completed.get(key, 0) + 1
            if started and outcome != "cancelled":
                stats.queue.observe(max(started - future.submitted_ns, 0) / 1e9, trace)
                stats.run[outcome].observe(max(future.finished_ns - started, 0) / 1e9, trace)
        if outcome == "error":
            # Counted when the future is collected unless a caller reads it first (see on_retrieved).
            finalizer = weakref.finalize(future, stats.count_unretrieved, key[1])
            finalizer.atexit = False
            future._tf_unretrieved = finalizer
            if future._tf_read:
                finalizer.detach()

    def on_retrieved(self, future: TracedFuture) -> None:
        finalizer = future._tf_unretrieved
        if finalizer is not None:
            future._tf_unretrieved = None
            finalizer.detach()
        if future.outcome == "cancelled":
            return
        stats = self.stats
        lag = max(time.time_ns() - future.finished_ns, 0) / 1e9
        with stats.lock:
            stats.result_lag.observe(lag)

    def on_refused(self, future: TracedFuture, method: str) -> None:
        stats = self.stats
        with stats.lock:
            stats.invalid[method] = stats.invalid.get(method, 0) + 1


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, MetricsCollector | None] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry | None, buckets: tuple[float, ...]) -> MetricsCollector | None:
    """The collector of ``registry`` (prometheus_client's ``REGISTRY`` if None), registered on first use.

    A registry that already holds metrics of these names keeps them: tracedfutures then records nothing there
    and says so once in a warning, rather than failing the program.
    """
    if registry is None:
        registry = REGISTRY
    with _collectors_lock:
        if registry in _collectors:
            return _collectors[registry]
        collector: MetricsCollector | None = MetricsCollector(buckets)
        try:
            registry.register(collector)  # type: ignore[arg-type]
        except ValueError as exc:
            _log.warning("tracedfutures metrics disabled for this registry: %s", exc)
            collector = None
        _collectors[registry] = collector
        return collector


def _reset_after_fork() -> None:
    """A forked child starts with clean counts and fresh locks, whatever a parent thread held at fork."""
    global _collectors_lock
    _collectors_lock = threading.Lock()
    for collector in list(_collectors.values()):
        if collector is None:
            continue
        collector.lock = threading.Lock()
        collector.executors = {}
        collector.waits = WaitStats(collector.buckets)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
