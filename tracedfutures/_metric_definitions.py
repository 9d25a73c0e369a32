"""The metric definitions (names, help, labels), the label caps and the capped error labels, and what a task that
ended gives its metrics: what the in-process backend (``metrics``) and the multiprocess backend
(``_multiprocess``) share, so that neither imports the other's module for them. ``tracedfutures.metrics`` exposes
every name defined here.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Hashable
from concurrent.futures._base import FINISHED
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from tracedfutures._naming import error_type, function_name, name_key
from tracedfutures._telemetry import telemetry_failed

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from tracedfutures._lifecycle import TracedFuture

#: Distinct ``error_type`` values per executor before further types are counted as ``other``.
MAX_ERROR_TYPES = 20
OTHER_ERROR_TYPE = "other"
#: Distinct ``function`` values per executor before further functions are counted as ``other``.
MAX_FUNCTIONS = 10
OTHER_FUNCTION = "other"
#: Distinct executor names per process (per registry) before further executors are counted as ``other``.
MAX_EXECUTORS = 64
OTHER_EXECUTOR = "other"
#: Every ``outcome`` a task can end with; each executor exposes its totals (``ENDED``) for all three from the start.
OUTCOMES = ("success", "error", "cancelled")
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
    #: Computed from live state at scrape time (capacity integrated up to now, the running tasks' ages), in both
    #: backends: the multiprocess one derives it from each process's live file rather than record it.
    scrape_time: bool = False

    def family(self) -> Any:
        """An empty metric family of this definition, for a collector to fill."""
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        return cls[self.type](self.name, self.documentation, labels=list(self.labels))


SUBMITTED = Definition(
    "executor_tasks_submitted", "counter", "Tasks handed to the executor (submit and map).", ("executor",)
)
ENDED = Definition(
    "executor_tasks_ended",
    "counter",
    "Tasks that ended, by outcome (success, error, cancelled); every outcome is exposed from the executor's start.",
    ("executor", "outcome"),
)
COMPLETED = Definition(
    "executor_tasks_completed",
    "counter",
    "Tasks that ended, by capped function, outcome (success, error, cancelled) and capped exception class.",
    ("executor", "function", "outcome", "error_type"),
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
    "Seconds from the real start of a task's callable to its result or exception, by capped function.",
    ("executor", "function", "outcome"),
)
QUEUED = Definition(
    "executor_tasks_queued",
    "gauge",
    "Tasks submitted and not running yet (for process pools: those in the pool's call queue too).",
    ("executor",),
)
RUNNING_GAUGE = Definition(
    "executor_tasks_running",
    "gauge",
    "Tasks running now (for process pools: started in a worker process, as the pool's start board says).",
    ("executor",),
)
MAX_WORKERS = Definition(
    "executor_max_workers", "gauge", "Workers the live executors of this name may use.", ("executor",)
)
BUSY = Definition(
    "executor_workers_busy_seconds",
    "counter",
    "Worker-seconds spent running tasks (a running task counts up to the scrape).",
    ("executor",),
)
AVAILABLE = Definition(
    "executor_workers_available_seconds",
    "counter",
    "Worker-seconds the executors of this name offered: max_workers integrated over each executor's life.",
    ("executor",),
    scrape_time=True,
)
CPU = Definition(
    "executor_workers_cpu_seconds",
    "counter",
    "CPU seconds the executors' workers used (worker threads' CPU clocks, worker processes' user plus system time), "
    "read at scrape time.",
    ("executor",),
    scrape_time=True,
)
OLDEST_RUNNING = Definition(
    "executor_oldest_running_task_age_seconds",
    "gauge",
    "Seconds the oldest task running now has been running (0 when none runs).",
    ("executor",),
    scrape_time=True,
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
    SUBMITTED, ENDED, COMPLETED, QUEUE, RUN, QUEUED, RUNNING_GAUGE, MAX_WORKERS, BUSY, AVAILABLE, CPU, OLDEST_RUNNING,
    INVALID, RESULT_LAG, UNRETRIEVED,
)  # fmt: skip
WAIT_METRICS = (WAIT, AS_COMPLETED, AS_COMPLETED_NEXT)


#: What an observation's exemplar points at: the sampled task span's context, and when the task ended (unix ns).
TaskTrace = tuple["SpanContext", int]


class CappedLabels:
    """The values of one label, capped per executor: the first ``cap`` distinct names are kept, later ones are
    ``other``. Admitting a name takes the lock; the subclasses cache what they resolved so a task rarely does."""

    __slots__ = ("_cap", "_lock", "_names", "_other")

    def __init__(self, cap: int, other: str) -> None:
        self._cap = cap
        self._other = other
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it); the labels stay."""
        self._lock = threading.Lock()

    def release(self, label: str) -> None:
        """Free ``label``'s place under the cap (its series were dropped)."""
        with self._lock:
            self._names.discard(label)

    def _admit(self, label: str) -> str:
        """``label`` if it is one of the kept names or there is room for it, else the ``other`` label."""
        with self._lock:
            if label in self._names:
                return label
            if len(self._names) >= self._cap:
                return self._other
            self._names.add(label)
            return label


class ErrorLabels(CappedLabels):
    """The capped ``error_type`` label of each exception class: the first ``MAX_ERROR_TYPES`` names, then other."""

    __slots__ = ("_labels",)

    def __init__(self) -> None:
        super().__init__(MAX_ERROR_TYPES, OTHER_ERROR_TYPE)
        self._labels: dict[type[BaseException], str] = {}

    def __call__(self, exc: BaseException) -> str:
        cls = type(exc)
        label = self._labels.get(cls)
        if label is not None:
            return label
        label = self._admit(error_type(cls))
        if label != self._other and len(self._labels) < MAX_ERROR_TYPES:  # classes are kept only for the capped set
            self._labels[cls] = label
        return label


class FunctionLabels(CappedLabels):
    """The capped ``function`` label of a task's callable: the qualified name its span carries
    (``_naming.function_name``), the first ``MAX_FUNCTIONS`` names per executor, then ``other``.

    Each callable is named once (``_naming.name_key``: a function's ``__qualname__``, a partial's or a chunk's
    function, a callable object's class) and looked up by that key after; a callable that must be named each
    time (a joblib batch) is."""

    __slots__ = ("labels",)

    def __init__(self) -> None:
        super().__init__(MAX_FUNCTIONS, OTHER_FUNCTION)
        #: The label of each key resolved so far (the metrics look it up before calling this).
        self.labels: dict[Hashable, str] = {}

    def __call__(self, fn: Any) -> str:
        """The label of ``fn``; never raises (it runs in ``submit``): a callable that cannot be named is other."""
        try:
            key = name_key(fn)
            label = self.labels.get(key) if key is not None else None
            if label is not None:
                return label
            label = self._admit(function_name(fn))
            if key is not None and len(self.labels) < 2 * MAX_FUNCTIONS:
                self.labels[key] = label  # the kept names and a few of those counted as other
            return label
        except Exception:
            return self._other


class ExecutorNames(CappedLabels):
    """The capped ``executor`` label of a backend: the first ``MAX_EXECUTORS`` names, then ``other``, with a
    warning the first time a name is counted as ``other`` (a program that names a pool per job, say). Asked once
    per executor made, never per task."""

    __slots__ = ("_warned",)

    def __init__(self) -> None:
        super().__init__(MAX_EXECUTORS, OTHER_EXECUTOR)
        self._warned = False

    def __call__(self, name: str) -> str:
        label = self._admit(name)
        if label != name and not self._warned:
            self._warned = True
            logging.getLogger("tracedfutures").warning(
                "more than %d executor names: executor %r and later new names are counted as %r (name pools by "
                "role, not by job)", MAX_EXECUTORS, name, OTHER_EXECUTOR,
            )  # fmt: skip
        return label


# -- what a task that ended gives its metrics ---------------------------------------------------------------------
class Unretrieved(Protocol):
    def unretrieved(self, label: str) -> None:
        """A failed task's future was collected and nobody had read its exception."""


def task_ended(future: TracedFuture, error_label: ErrorLabels) -> tuple[str, str, int, int, TaskTrace | None]:
    """What the metrics take from a task that ended: its outcome, its ``error_type`` label, its queue and run
    durations in ns (-1 both where its start is not known: cancelled, or never started here) and the exemplar that
    points at its span (sampled spans only). Wall clocks may step back: a negative duration counts as 0."""
    exception = future._exception
    if future._state != FINISHED:
        return "cancelled", "", -1, -1, None
    outcome, label = ("success", "") if exception is None else ("error", error_label(exception))
    started = future.started_ns
    if not started:
        return outcome, label, -1, -1, None
    queue_ns = started - future.submitted_ns
    ran_for = future._tf_ran_for  # a task run in another process: timed there, result transfer left out
    run_ns = ran_for if ran_for >= 0 else future.finished_ns - started
    context = future._tf_context
    exemplar = (context, future.finished_ns) if context is not None and context.trace_flags.sampled else None
    return outcome, label, (queue_ns if queue_ns > 0 else 0), (run_ns if run_ns > 0 else 0), exemplar


def watch_unretrieved(future: TracedFuture, recorder: Unretrieved, label: str) -> None:
    """A failed task: counted as unretrieved when its future is collected unless a caller reads it first."""
    finalizer = weakref.finalize(future, _count_unretrieved, recorder, label)
    finalizer.atexit = False
    future._tf_unretrieved = finalizer
    if future._tf_read:
        finalizer.detach()


def read_at_last(future: TracedFuture) -> None:
    """A failed task's first read: its exception will not count as unretrieved."""
    finalizer, future._tf_unretrieved = future._tf_unretrieved, None
    if finalizer is not None:
        finalizer.detach()


def _count_unretrieved(recorder: Unretrieved, label: str) -> None:
    """The finalizer of a failed future nobody read: runs from garbage collection, so it must never raise."""
    try:
        recorder.unretrieved(label)
    except Exception as exc:
        telemetry_failed("metrics", exc)
