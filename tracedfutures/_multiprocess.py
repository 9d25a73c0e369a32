"""Recording through prometheus_client's own metrics, for programs in its multiprocess mode.

A pre-fork server (gunicorn and the like) sets ``PROMETHEUS_MULTIPROC_DIR``; every process then writes its
values to files there and the one exposing ``/metrics`` reads them all with ``MultiProcessCollector``. Here the
definitions of ``tracedfutures.metrics`` (from ``_metric_definitions``) become prometheus_client metrics (not
registered in any registry, as its multiprocess documentation asks), gauges summed over live processes
(``livesum``). Exemplars do not exist in this mode, nor do the metrics computed at scrape time
(``Definition.scrape_time``: worker-seconds available, the oldest running task's age); busy worker-seconds are
counted when a task ends. Process pools never need it: their tasks are recorded in the submitting process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from tracedfutures._metric_definitions import (
    AS_COMPLETED,
    AS_COMPLETED_NEXT,
    BUSY,
    COMPLETED,
    ENDED,
    EXECUTOR_METRICS,
    INVALID,
    MAX_WORKERS,
    OUTCOMES,
    QUEUE,
    QUEUED,
    RESULT_LAG,
    RUN,
    RUNNING_GAUGE,
    SUBMITTED,
    UNRETRIEVED,
    WAIT,
    WAIT_METRICS,
    Definition,
    ErrorLabels,
    FunctionLabels,
    TaskTrace,
)
from tracedfutures._telemetry import telemetry_failed

if TYPE_CHECKING:
    from tracedfutures._lifecycle import TracedFuture


def _metric(definition: Definition, buckets: tuple[float, ...]) -> Any:
    kwargs: dict[str, Any] = {"registry": None}
    if definition.type == "histogram":
        kwargs["buckets"] = buckets
        return Histogram(definition.name, definition.documentation, definition.labels, **kwargs)
    if definition.type == "gauge":
        kwargs["multiprocess_mode"] = definition.multiprocess_mode
        return Gauge(definition.name, definition.documentation, definition.labels, **kwargs)
    return Counter(definition.name, definition.documentation, definition.labels, **kwargs)


class MultiprocessSeries:
    """One executor name's series, as prometheus_client children bound once."""

    def __init__(self, metrics: dict[Definition, Any], name: str) -> None:
        self.metrics = metrics
        self.name = name
        self.error_label = ErrorLabels()
        self.function_label = FunctionLabels()
        self._submitted = metrics[SUBMITTED].labels(name)
        self._queue = metrics[QUEUE].labels(name)
        self._queued = metrics[QUEUED].labels(name)
        self._running = metrics[RUNNING_GAUGE].labels(name)
        self._max_workers = metrics[MAX_WORKERS].labels(name)
        self._lag = metrics[RESULT_LAG].labels(name)
        self._busy = metrics[BUSY].labels(name)
        self._ended = {outcome: metrics[ENDED].labels(name, outcome) for outcome in OUTCOMES}

    def submitted(self, future: TracedFuture, fn: Any) -> None:
        try:
            self._submitted.inc()
            self._queued.inc()
            future._tf_function = self.function_label(fn)
        except Exception as exc:
            telemetry_failed("MetricsHook", exc)

    def started(self, future: TracedFuture) -> None:
        try:
            self._queued.dec()
            self._running.inc()
        except Exception as exc:
            telemetry_failed("MetricsHook", exc)

    def finished(
        self, ran: bool, function: str, outcome: str, error_label: str, queue_ns: int, run_ns: int,
        exemplar: TaskTrace | None,
    ) -> None:  # fmt: skip
        (self._running if ran else self._queued).dec()
        self._ended[outcome].inc()
        self.metrics[COMPLETED].labels(self.name, function, outcome, error_label).inc()
        if run_ns >= 0:
            self._queue.observe(queue_ns / 1e9)
            self.metrics[RUN].labels(self.name, function, outcome).observe(run_ns / 1e9)
            self._busy.inc(run_ns / 1e9)

    def refused(self, method: str) -> None:
        self.metrics[INVALID].labels(self.name, method).inc()

    def retrieved(self, lag_ns: int) -> None:
        self._lag.observe(lag_ns / 1e9)

    def unretrieved(self, label: str) -> None:
        self.metrics[UNRETRIEVED].labels(self.name, label).inc()

    def add_workers(self, count: int) -> None:
        self._max_workers.inc(count)

    def watch(self, running: Any) -> None:
        """Running tasks are read only at scrape time, which this mode has not: busy time counts at the end."""

    def watch_board(self, board: Any) -> None:
        """Process pools' start boards are read at scrape time too: their tasks run from their hand-off here."""


class MultiprocessWaits:
    """``wait`` / ``as_completed`` latencies as prometheus_client histograms."""

    def __init__(self, metrics: dict[Definition, Any]) -> None:
        self.metrics = metrics

    def observe_wait(self, return_when: str, timed_out: bool, ns: int) -> None:
        self.metrics[WAIT].labels(return_when, "true" if timed_out else "false").observe(ns / 1e9)

    def observe_as_completed(self, timed_out: bool, ns: int) -> None:
        self.metrics[AS_COMPLETED].labels("true" if timed_out else "false").observe(ns / 1e9)

    def observe_as_completed_steps(self, steps: Sequence[int], zeros: int) -> None:
        histogram = self.metrics[AS_COMPLETED_NEXT]
        for ns in steps:
            histogram.observe(ns / 1e9)
        for _ in range(zeros):  # prometheus_client has no bulk observe
            histogram.observe(0.0)


class MultiprocessMetrics:
    """The multiprocess backend: one per process, shared by every registry."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.metrics = {d: _metric(d, buckets) for d in (*EXECUTOR_METRICS, *WAIT_METRICS) if not d.scrape_time}
        self.waits = MultiprocessWaits(self.metrics)
        self._series: dict[str, MultiprocessSeries] = {}
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child (``_state`` calls it): fresh locks, a parent thread may have held them at fork."""
        self._lock = threading.Lock()
        for series in self._series.values():
            series.error_label.after_fork()
            series.function_label.after_fork()

    def executor(self, name: str) -> MultiprocessSeries:
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = MultiprocessSeries(self.metrics, name)
            return series
