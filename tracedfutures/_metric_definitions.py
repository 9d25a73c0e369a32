"""The metric definitions (names, help, labels), the label caps and the capped error labels: what the in-process
backend (``metrics``) and the multiprocess backend (``multiprocess``) share, so that neither imports the other's
module for them. ``tracedfutures.metrics`` exposes every name defined here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from tracedfutures._naming import error_type

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

#: Distinct ``error_type`` values per executor before further types are counted as ``other``.
MAX_ERROR_TYPES = 20
OTHER_ERROR_TYPE = "other"
REFUSABLE_METHODS = ("set_result", "set_exception", "set_running_or_notify_cancel")
RETURN_WHEN = ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED")


# -- the metrics --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Definition:
    """One metric: its name (without ``_total``), type, help and labels, shared by both recording backends."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    documentation: str
    labels: tuple[str, ...]
    #: How prometheus_client's multiprocess mode combines the processes' values of a gauge.
    multiprocess_mode: str = ""

    def family(self) -> Any:
        """An empty metric family of this definition, for a collector to fill."""
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        return cls[self.type](self.name, self.documentation, labels=list(self.labels))


SUBMITTED = Definition(
    "executor_tasks_submitted", "counter", "Tasks handed to the executor (submit and map).", ("executor",)
)
COMPLETED = Definition(
    "executor_tasks_completed",
    "counter",
    "Tasks that ended, by outcome (success, error, cancelled) and capped exception class.",
    ("executor", "outcome", "error_type"),
)
QUEUE = Definition(
    "executor_task_queue_seconds",
    "histogram",
    "Seconds from submit to the moment the task's callable really started.",
    ("executor",),
)
RUN = Definition(
    "executor_task_run_seconds",
    "histogram",
    "Seconds from the real start of a task's callable to its result or exception.",
    ("executor", "outcome"),
)
QUEUED = Definition("executor_tasks_queued", "gauge", "Tasks submitted and not started yet.", ("executor",), "livesum")
RUNNING_GAUGE = Definition(
    "executor_tasks_running",
    "gauge",
    "Tasks running now (for process pools: handed to a worker process).",
    ("executor",),
    "livesum",
)
MAX_WORKERS = Definition(
    "executor_max_workers", "gauge", "Workers the live executors of this name may use.", ("executor",), "livesum"
)
INVALID = Definition(
    "executor_invalid_transitions",
    "counter",
    "Future state transitions refused with InvalidStateError or RuntimeError, by method.",
    ("executor", "method"),
)
RESULT_LAG = Definition(
    "futures_result_lag_seconds",
    "histogram",
    "Seconds from a task's future finishing to a caller first reading its result or exception.",
    ("executor",),
)
UNRETRIEVED = Definition(
    "executor_exceptions_unretrieved",
    "counter",
    "Futures that finished with an exception nobody read, counted when the future was collected.",
    ("executor", "error_type"),
)
WAIT = Definition(
    "futures_wait_seconds",
    "histogram",
    "Seconds callers blocked in wait(), by return_when and whether the timeout ended the wait.",
    ("return_when", "timed_out"),
)
AS_COMPLETED = Definition(
    "futures_as_completed_seconds",
    "histogram",
    "Seconds from the first to the last step of an as_completed() iteration, by whether it timed out.",
    ("timed_out",),
)
AS_COMPLETED_NEXT = Definition(
    "futures_as_completed_next_seconds",
    "histogram",
    "Seconds an as_completed() iteration blocked before yielding each future.",
    (),
)
EXECUTOR_METRICS = (
    SUBMITTED, COMPLETED, QUEUE, RUN, QUEUED, RUNNING_GAUGE, MAX_WORKERS, INVALID, RESULT_LAG, UNRETRIEVED
)  # fmt: skip
WAIT_METRICS = (WAIT, AS_COMPLETED, AS_COMPLETED_NEXT)


#: What an observation's exemplar points at: the sampled task span's context, and when the task ended (unix ns).
TaskTrace = tuple["SpanContext", int]



class ErrorLabels:
    """The capped ``error_type`` label of each exception class: the first ``MAX_ERROR_TYPES`` names, then other."""

    __slots__ = ("_labels", "_lock", "_names")

    def __init__(self) -> None:
        self._labels: dict[type[BaseException], str] = {}
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it); the labels stay."""
        self._lock = threading.Lock()

    def __call__(self, exc: BaseException) -> str:
        cls = type(exc)
        label = self._labels.get(cls)
        if label is not None:
            return label
        label = error_type(cls)
        with self._lock:
            if label in self._names:
                return label
            if len(self._names) >= MAX_ERROR_TYPES:
                return OTHER_ERROR_TYPE
            self._names.add(label)
            if len(self._labels) < MAX_ERROR_TYPES:  # classes are kept only for the capped set
                self._labels[cls] = label
            return label
