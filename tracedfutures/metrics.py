"""The Prometheus metrics: how they are recorded, their buckets, and (from ``_metric_definitions``) their definitions.

By default counts live in plain per-executor state under one lock and become metric families at scrape time,
through one collector per registry: a task costs a few integer updates, the gauges are derived from the
counters (exact by construction, 0 when the pool is idle) and histograms carry trace exemplars. When
``PROMETHEUS_MULTIPROC_DIR`` is set (a pre-fork server in prometheus_client's multiprocess mode) the same
definitions are recorded through prometheus_client's own metrics instead: see ``tracedfutures._multiprocess``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
import time
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Protocol, cast

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample

# Every definition, exposed here too (dashboards/ and users read them from tracedfutures.metrics).
# isort: off
from tracedfutures._metric_definitions import (
    AS_COMPLETED as AS_COMPLETED,
    AS_COMPLETED_NEXT as AS_COMPLETED_NEXT,
    AVAILABLE as AVAILABLE,
    BUSY as BUSY,
    COMPLETED as COMPLETED,
    CPU as CPU,
    ENDED as ENDED,
    EXECUTOR_METRICS as EXECUTOR_METRICS,
    INVALID as INVALID,
    MAX_ERROR_TYPES as MAX_ERROR_TYPES,
    MAX_EXECUTORS as MAX_EXECUTORS,
    MAX_FUNCTIONS as MAX_FUNCTIONS,
    MAX_WORKERS as MAX_WORKERS,
    OLDEST_RUNNING as OLDEST_RUNNING,
    OTHER_ERROR_TYPE as OTHER_ERROR_TYPE,
    OTHER_EXECUTOR as OTHER_EXECUTOR,
    OTHER_FUNCTION as OTHER_FUNCTION,
    OUTCOMES as OUTCOMES,
    QUEUE as QUEUE,
    QUEUED as QUEUED,
    REFUSABLE_METHODS as REFUSABLE_METHODS,
    RESULT_LAG as RESULT_LAG,
    RETURN_WHEN as RETURN_WHEN,
    RUN as RUN,
    RUNNING_GAUGE as RUNNING_GAUGE,
    SUBMITTED as SUBMITTED,
    UNRETRIEVED as UNRETRIEVED,
    WAIT as WAIT,
    WAIT_METRICS as WAIT_METRICS,
    Definition as Definition,
    ErrorLabels as ErrorLabels,
    ExecutorNames as ExecutorNames,
    FunctionLabels as FunctionLabels,
    TaskTrace as TaskTrace,
    read_at_last,
    task_ended,
    watch_unretrieved,
)

# isort: on
from tracedfutures._state import state
from tracedfutures._telemetry import telemetry_failed
from tracedfutures._worker_cpu import ThreadExit, WorkerCpu, live_pools

if TYPE_CHECKING:
    from tracedfutures._lifecycle import LifecycleHook, TracedFuture

__all__ = [
    "AS_COMPLETED",
    "AS_COMPLETED_NEXT",
    "AVAILABLE",
    "BUSY",
    "COMPLETED",
    "CPU",
    "DEFAULT_BUCKETS",
    "DROP_AFTER_SECONDS",
    "ENDED",
    "EXECUTOR_METRICS",
    "INVALID",
    "MAX_ERROR_TYPES",
    "MAX_EXECUTORS",
    "MAX_FUNCTIONS",
    "MAX_WORKERS",
    "OLDEST_RUNNING",
    "OTHER_ERROR_TYPE",
    "OTHER_EXECUTOR",
    "OTHER_FUNCTION",
    "OUTCOMES",
    "QUEUE",
    "QUEUED",
    "REFUSABLE_METHODS",
    "RESULT_LAG",
    "RETURN_WHEN",
    "RUN",
    "RUNNING_GAUGE",
    "SUBMITTED",
    "UNRETRIEVED",
    "WAIT",
    "WAIT_METRICS",
    "Definition",
]

_log = logging.getLogger("tracedfutures")

#: Buckets for every latency histogram, in seconds: 100 µs to one hour, so sub-millisecond tasks and backlogs of
#: half an hour and more both land in a finite bucket. Change them with ``configure(buckets=...)``.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

#: Seconds the series of an executor name whose executors are all gone keep being exposed, unchanged, before they
#: are dropped (see ``MetricsCollector``): ten minutes, so that every scraper has seen their last counts.
DROP_AFTER_SECONDS = 600.0

#: Whether prometheus_client's multiprocess mode is on, decided once at import as prometheus_client does.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def validate_buckets(buckets: Iterable[float]) -> tuple[float, ...]:
    """Return ``buckets`` as a tuple of finite, positive, strictly increasing bounds, else raise ``ValueError``."""
    if isinstance(buckets, (str, bytes)):
        raise ValueError(f"buckets must be numbers, got {buckets!r}")
    try:
        bounds = tuple(float(b) for b in buckets)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"buckets must be an iterable of numbers: {exc}") from None
    if not bounds:
        raise ValueError("buckets must not be empty")
    if any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError(f"buckets must be finite and positive (+Inf is implied): {bounds!r}")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"buckets not in strictly increasing order: {bounds!r}")
    return bounds


# -- what a backend records ---------------------------------------------------------------------------------------
class ExecutorRecorder(Protocol):
    """One executor name's series in one backend: the metrics side of its executors' lifecycle (``hook``, which
    sets each future's capped ``function`` label at submit and never raises), and what the executors tell it."""

    def unretrieved(self, label: str) -> None: ...
    def add_workers(self, count: int) -> None: ...
    def watch(self, running: RunningTable) -> None:
        """Read the running tasks of one more executor of this name at scrape time (busy worker-seconds up to
        the scrape, the oldest running task's age)."""

    def watch_board(self, board: WorkerBoard) -> None:
        """Read a process pool's start board at scrape time: its tasks run from their start in a worker."""

    @property
    def error_label(self) -> ErrorLabels:
        """The capped ``error_type`` label of an exception."""

    def hook(self) -> LifecycleHook:
        """The metrics side of the lifecycle of this name's executors, recording here."""


class RunningTable(Protocol):
    """One executor's running tasks as ``_running.RunningTasks`` keeps them: each task's future and its start in
    unix ns; the table is as long as the tasks running now."""

    @property
    def kind(self) -> str: ...
    @property
    def tasks(self) -> dict[Any, int]: ...
    def alive(self) -> bool:
        """Whether the executor lives and is not shut down."""

    @property
    def executor(self) -> weakref.ref[Any] | None:
        """The executor, weakly (None where it cannot be weakly referenced): its workers' CPU is read from it."""


class WorkerBoard(Protocol):
    """A process pool's start board (``_start_board.StartBoard``): the start (unix ns) of the task each worker
    runs now, and how many tasks were handed to the pool's call queue and have not ended."""

    @property
    def tasks(self) -> dict[int, int]: ...
    @property
    def handed(self) -> int: ...


class WaitRecorder(Protocol):
    def observe_wait(self, return_when: str, timed_out: bool, ns: int) -> None: ...
    def observe_as_completed(self, timed_out: bool, ns: int) -> None: ...
    def observe_as_completed_steps(self, steps: Sequence[int], zeros: int) -> None:
        """The time each of several ``as_completed`` steps blocked before yielding its future, and how many
        more steps did not block at all (0 s)."""


class MetricsBackend(Protocol):
    """Where one registry's metrics are recorded: in-process (``MetricsCollector``) or multiprocess."""

    @property
    def waits(self) -> WaitRecorder: ...

    def executor(self, name: str) -> ExecutorRecorder: ...


# -- the in-process backend ---------------------------------------------------------------------------------------
# An exemplar as recorded: what it points at and the observed value in ns. Formatted only when scraped.
_RawExemplar = tuple[TaskTrace, int]


@functools.lru_cache(maxsize=16)
def _layout(buckets: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Bucket bounds in whole nanoseconds (``ns <= bound`` exactly when ``ns / 1e9 <= seconds``), and the ``le``
    label of each bucket, +Inf last."""
    return tuple(math.floor(round(b * 1e9, 3)) for b in buckets), (*map(repr, buckets), "+Inf")


class _ThreadCounts(threading.local):
    """Each thread's ``counts``, made by the thread's first access (a ``threading.local`` runs ``__init__`` once in
    every thread that touches it): the per-task path reads ``self._local.counts`` with no call and no check."""

    counts: _TaskCounts
    exit: ThreadExit

    def __init__(self, stats: weakref.ref[ExecutorStats]) -> None:
        owner = stats()
        assert owner is not None  # the stats hold this object: they live while any thread reads it
        self.counts = owner._first_counts()
        # A worker thread's final CPU time, handed over as the thread ends (its thread-local data is cleared then).
        self.exit = ThreadExit(owner.cpu)


class _Histogram:
    """Bucket counts (not cumulative; the last one is +Inf), a sum, and the latest exemplar of each bucket, kept
    in integer nanoseconds (no float arithmetic per observation) and exposed in seconds.

    Written by one thread at a time: its shard's thread, or a caller holding the owner's lock.
    """

    __slots__ = ("bounds", "counts", "exemplars", "labels", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds, self.labels = _layout(buckets)
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0
        self.exemplars: list[_RawExemplar | None] | None = None

    def observe(self, ns: int, exemplar: TaskTrace | None = None) -> None:
        index = bisect_left(self.bounds, ns)
        self.counts[index] += 1
        self.sum += ns
        if exemplar is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[index] = (exemplar, ns)

    def observe_many(self, values: Iterable[int], zeros: int = 0) -> None:
        """``observe`` each value and ``zeros`` values of 0 (no exemplars), in one call: sorted once, each bucket's
        count is where its bound falls in them (C work, not a Python step per value). A negative value (the wall
        clock stepped back) counts as 0."""
        ordered = sorted(values)
        below = bisect_left(ordered, 0)  # the wall clock stepped back: 0 s
        self.sum += sum(ordered) - (sum(ordered[:below]) if below else 0)
        counts, previous = self.counts, 0
        counts[0] += zeros
        for index, at in enumerate(map(bisect_right, itertools.repeat(ordered), self.bounds)):
            counts[index] += at - previous
            previous = at
        counts[-1] += len(ordered) - previous

    def add(self, other: _Histogram) -> None:
        """Fold ``other`` in: counts and sums add up, each bucket keeps the newer exemplar."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sum += other.sum
        if other.exemplars is not None:
            mine = self.exemplars or [None] * len(self.counts)
            self.exemplars = [b if a is None or (b is not None and b[0][1] >= a[0][1]) else a
                              for a, b in zip(mine, other.exemplars)]  # fmt: skip

    def snapshot(self) -> tuple[list[tuple[Any, ...]], float]:
        buckets: list[tuple[Any, ...]] = []
        total = 0
        exemplars = self.exemplars or [None] * len(self.counts)
        for bound, count, raw in zip(self.labels, self.counts, exemplars):
            total += count
            if raw is None:
                buckets.append((bound, float(total)))
            else:
                (context, at_ns), ns = raw
                labels = {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
                buckets.append((bound, float(total), Exemplar(labels, ns / 1e9, at_ns / 1e9)))
        return buckets, self.sum / 1e9


#: How many tasks a thread logs (``_TaskCounts.log``) before it folds them into its counts.
FOLD_EVERY = 128


class _TaskCounts:
    """The per-task counts of one executor name made by one thread, which alone writes them (no lock); or, for
    the owner's ``retired`` totals, those of threads that have ended, folded in under the owner's lock.

    ``completed`` and ``run`` are keyed by the task's labels; ``created`` holds when each ``completed`` key was
    first counted here (unix seconds), the ``_created`` timestamp of its series.

    The commonest task (it started here and succeeded, no exemplar to keep) is only logged as it ends: its
    ``(function, queue_ns, run_ns, finished_ns)`` in ``log``, as each first read's result lag
    in ``lags``. Its counts are derived from them when they are read (``add``) or when ``FOLD_EVERY`` have
    gathered (``take``, under the owner's lock): sorted and bisected in C, not counted one by one in Python."""

    __slots__ = (
        "buckets", "completed", "created", "ended_after_start", "lags", "log", "queue", "result_lag", "run", "started",
        "submitted", "thread", "unstarted",
    )  # fmt: skip

    def __init__(self, buckets: tuple[float, ...], thread: weakref.ref[threading.Thread] | None) -> None:
        self.thread = thread
        self.buckets = buckets
        self.submitted = 0
        self.started = 0  # entered RUNNING here
        self.unstarted = 0  # finished without entering RUNNING here (cancelled, or run by another executor)
        self.ended_after_start = 0
        self.completed: dict[tuple[str, str, str], int] = {}  # (function, outcome, error_type)
        self.created: dict[tuple[str, str, str], float] = {}
        self.queue = _Histogram(buckets)
        self.run: dict[str, dict[str, _Histogram]] = {"success": {}, "error": {}}  # outcome -> function -> run
        self.result_lag = _Histogram(buckets)
        self.log: list[tuple[str, int, int, int]] = []
        self.lags: list[int] = []

    def alive(self) -> bool:
        thread = self.thread() if self.thread is not None else None
        return thread is not None and thread.is_alive()

    def add(self, other: _TaskCounts) -> None:
        self.submitted += other.submitted
        self.started += other.started
        self.unstarted += other.unstarted
        self.ended_after_start += other.ended_after_start
        created = self.created
        for key, at in list(other.created.items()):
            mine = created.get(key)
            created[key] = at if mine is None or at < mine else mine
        for key, count in list(other.completed.items()):
            self.completed[key] = self.completed.get(key, 0) + count
        self.queue.add(other.queue)
        for outcome in self.run:
            for function, hist in list(other.run[outcome].items()):
                self._run(outcome, function).add(hist)
        self.result_lag.add(other.result_lag)
        self.take(other.log.copy(), other.lags.copy())  # what it logged since it last folded, as it is now

    def _run(self, outcome: str, function: str) -> _Histogram:
        by_function = self.run[outcome]
        hist = by_function.get(function)
        if hist is None:
            hist = by_function[function] = _Histogram(self.buckets)
        return hist

    def take(self, log: list[tuple[str, int, int, int]], lags: list[int]) -> None:
        """Count the tasks of ``log`` and the result lags of ``lags`` (see the class)."""
        if lags:
            self.result_lag.observe_many(lags)
        if not log:
            return
        functions, queues, runs, finished = zip(*log)
        self.ended_after_start += len(log)
        self.queue.observe_many(queues)
        first = functions[0]
        by_function: dict[str, Sequence[int]]
        if functions.count(first) == len(functions):  # one function, as most batches are
            by_function = {first: runs}
        else:
            by_function = {}
            for function, run in zip(functions, runs):
                cast("list[int]", by_function.setdefault(function, [])).append(run)
        completed, created = self.completed, self.created
        for function, function_runs in by_function.items():
            key = (function, "success", "")
            completed[key] = completed.get(key, 0) + len(function_runs)
            at = finished[functions.index(function)] / 1e9  # its first task here ended then
            mine = created.get(key)
            created[key] = at if mine is None or at < mine else mine
            self._run("success", function).observe_many(function_runs)


def _histogram_with_created(family: Any, labels: list[str], hist: _Histogram, created: float) -> None:
    """A histogram series and its ``_created`` sample, as prometheus_client's own histograms expose it (its
    ``HistogramMetricFamily`` takes no created timestamp)."""
    family.add_metric(labels, *hist.snapshot())
    family.samples.append(Sample(family.name + "_created", dict(zip(family._labelnames, labels)), created))


class ExecutorStats:
    """Everything counted for one executor name in one registry, shared by every executor of that name.

    The counts every task makes go to the calling thread's own ``_TaskCounts``, without a lock: threads that
    submit, run and finish tasks at once never wait on each other. A scrape adds them up (an ended thread's
    counts are folded into ``retired`` first), so exposition stays exact; the rare events take ``lock``.

    The series that exist from the start (``executor_tasks_submitted_total``, ``executor_tasks_ended_total`` by
    outcome, the worker-seconds, the queue and result-lag histograms) carry the stats' creation as their
    ``_created`` timestamp; a series born on its first event (a function, an error type) carries that event's
    time, so that a Prometheus that ingests created timestamps sees its first count.
    """

    def __init__(self, name: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.buckets = buckets
        self.error_label = ErrorLabels()
        self.function_label = FunctionLabels()
        # The running tasks of the executors of this name (kept through a fork: the child empties the tables), and
        # the process pools' start boards.
        self.running: weakref.WeakSet[RunningTable] = weakref.WeakSet()
        self.boards: weakref.WeakSet[WorkerBoard] = weakref.WeakSet()
        #: The kinds of the executors of this name (``executor.kind`` of the OpenTelemetry export), first one first.
        self.kinds: dict[str, None] = {}
        self.reset()

    def reset(self) -> None:
        """Zero everything, with a fresh lock and fresh per-thread counts (also what a forked child does)."""
        # Re-entrant: the unretrieved-exception finalizer may run from garbage collection in a thread that
        # already holds it.
        self.lock = threading.RLock()
        self.cpu = WorkerCpu()  # before ``_local``: each thread's counts hand their thread's end to it
        self._threads: list[_TaskCounts] = []
        self.retired = _TaskCounts(self.buckets, None)
        self._local = _ThreadCounts(weakref.ref(self))  # after the tables: it makes this thread's counts now
        self.created = time.time()
        self.max_workers = 0
        # Worker-nanoseconds offered up to ``capacity_since`` (max_workers integrated over time).
        self.capacity_ns = 0
        self.capacity_since = time.time_ns()
        self.invalid = dict.fromkeys(REFUSABLE_METHODS, 0)
        self.unretrieved_count: dict[str, int] = {}
        self.unretrieved_created: dict[str, float] = {}
        # Busy and available worker-nanoseconds as last exposed (see ``_exposed_busy_ns``).
        self.busy_exposed = 0
        self.capacity_exposed = 0
        #: What the last scrape exposed (``_fingerprint``), and since when scrapes have exposed it (monotonic s).
        self.seen: tuple[int, ...] = ()
        self.seen_since = 0.0

    def _first_counts(self) -> _TaskCounts:
        """This thread's counts, made on its first task (when ended threads' counts are folded in); later tasks
        find them in ``self._local.counts`` (see ``_ThreadCounts``)."""
        counts = _TaskCounts(self.buckets, weakref.ref(threading.current_thread()))
        with self.lock:
            self._fold_ended()
            self._threads.append(counts)
        return counts

    def _fold_ended(self) -> None:
        """Fold the counts of threads that have ended into ``retired`` (under ``lock``): the list stays as long
        as the live threads, however many threads come and go."""
        live = []
        for counts in self._threads:
            if counts.alive():
                live.append(counts)
            else:
                self.retired.add(counts)
        self._threads = live

    def submitted(self, future: TracedFuture, fn: Any) -> None:
        self._local.counts.submitted += 1
        if type(fn) is FunctionType or type(fn) is MethodType:  # seen before: an attribute read and a lookup
            try:
                future._tf_function = self.function_label.labels[fn.__qualname__]
                return
            except KeyError:  # its first task
                pass
        future._tf_function = self.function_label(fn)  # anything else: named once, by its key (name_key)

    def started(self, future: TracedFuture) -> None:
        self._local.counts.started += 1

    # -- the lifecycle hook: an in-process executor's stats are its metrics side (see ``hook``) -------------------
    on_submit = submitted
    on_start = started

    def on_finish(self, future: TracedFuture) -> None:
        """A task ended: logged when it started and succeeded with no exemplar to keep (see ``_TaskCounts``);
        else its counts and, where it started, its queue and run durations, in this thread's counts."""
        try:
            # A future that entered RUNNING here ends FINISHED (nothing cancels a running future).
            started, context = future.started_ns, future._tf_context
            if (
                started
                and future._exception is None
                and future.ran
                and (context is None or not context.trace_flags.sampled)
            ):
                finished, ran_for = future.finished_ns, future._tf_ran_for
                counts = self._local.counts
                log = counts.log
                log.append((future._tf_function, started - future.submitted_ns,
                            finished - started if ran_for < 0 else ran_for, finished))  # fmt: skip
                if len(log) >= FOLD_EVERY:
                    self._fold(counts)
                return
            outcome, label, queue_ns, run_ns, exemplar = task_ended(future, self.error_label)
            counts = self._local.counts
            function = future._tf_function
            if future.ran:
                counts.ended_after_start += 1
            else:
                counts.unstarted += 1
            key = (function, outcome, label)
            completed = counts.completed
            count = completed.get(key)
            if count is None:  # this thread's first task of these labels: when the series may have been born
                counts.created[key] = time.time()
                completed[key] = 1
            else:
                completed[key] = count + 1
            if run_ns >= 0:
                queue = counts.queue
                run = counts._run(outcome, function)
                if exemplar is None:
                    queue.counts[bisect_left(queue.bounds, queue_ns)] += 1
                    queue.sum += queue_ns
                    run.counts[bisect_left(run.bounds, run_ns)] += 1
                    run.sum += run_ns
                else:
                    queue.observe(queue_ns, exemplar)
                    run.observe(run_ns, exemplar)
            if outcome == "error":
                watch_unretrieved(future, self, label)
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def on_refused(self, future: TracedFuture, method: str) -> None:
        try:
            self.refused(method)
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def on_retrieved(self, future: TracedFuture) -> None:
        """A finished task's first read: its result lag."""
        try:
            if future._tf_unretrieved is not None:
                read_at_last(future)
            counts = self._local.counts
            lags = counts.lags
            lags.append(time.time_ns() - future.finished_ns)
            if len(lags) >= FOLD_EVERY:
                self._fold(counts)
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def _fold(self, counts: _TaskCounts) -> None:
        """Count what this thread logged (``counts``, its own), under the lock: a scrape reads the counts and the
        logs either before or after."""
        with self.lock:
            log, lags, counts.log, counts.lags = counts.log, counts.lags, [], []
            counts.take(log, lags)

    def hook(self) -> LifecycleHook:
        """The metrics side of this name's executors' lifecycle: these stats themselves."""
        return self

    def refused(self, method: str) -> None:
        with self.lock:
            self.invalid[method] = self.invalid.get(method, 0) + 1

    def unretrieved(self, label: str) -> None:
        with self.lock:
            self.unretrieved_count[label] = self.unretrieved_count.get(label, 0) + 1
            self.unretrieved_created.setdefault(label, time.time())

    def add_workers(self, count: int) -> None:
        with self.lock:
            self.capacity_ns = self._capacity_ns(time.time_ns())
            self.max_workers += count

    def watch(self, running: RunningTable) -> None:
        with self.lock:
            self.running.add(running)
            self.kinds.setdefault(running.kind)

    def watch_board(self, board: WorkerBoard) -> None:
        with self.lock:
            self.boards.add(board)

    def _pools(self) -> list[tuple[str, Any]]:
        """The kind and the object of each live executor of this name, whose workers' CPU is read."""
        with self.lock:
            tables = list(self.running)
        return live_pools(tables)

    def _running_now(self) -> tuple[list[int], int]:
        """The real start (unix ns) of every task running now in the executors of this name, and how many of the
        tasks they count as started are in fact waiting in a process pool's call queue. A process pool's table
        holds each task's hand-off to that queue: its start board says which run, and since when."""
        with self.lock:
            tables = [table for table in self.running if table.kind != "process"]
            boards = list(self.boards)
        starts = [start for table in tables for start in table.tasks.copy().values()]
        waiting = 0
        for board in boards:
            handed, running = board.handed, list(board.tasks.values())
            starts += running
            waiting += max(handed - len(running), 0)
        return starts, waiting

    def _exposed_busy_ns(self, busy_ns: int) -> int:
        """The busy worker-nanoseconds to expose for ``busy_ns`` counted now (under ``lock``, after
        ``capacity_ns`` is brought up to now): never less than last time (a task that ended between the reads
        of one scrape is missing from it), and never grown by more than the capacity grew since (what such a
        task adds back comes as workers are free), so busy over available worker-seconds stays at or below 1
        between any two scrapes."""
        grown = self.capacity_ns - self.capacity_exposed
        busy_ns = min(max(busy_ns, self.busy_exposed), self.busy_exposed + max(grown, 0))
        self.busy_exposed, self.capacity_exposed = busy_ns, self.capacity_ns
        return busy_ns

    def _capacity_ns(self, now_ns: int) -> int:
        """Worker-nanoseconds offered up to ``now_ns`` (under ``lock``); moves ``capacity_since`` there."""
        elapsed = now_ns - self.capacity_since
        self.capacity_since = now_ns
        return self.capacity_ns + self.max_workers * (elapsed if elapsed > 0 else 0)

    def totals(self) -> _TaskCounts:
        """The sum of every thread's counts, now."""
        total = _TaskCounts(self.buckets, None)
        with self.lock:
            self._fold_ended()
            total.add(self.retired)
            for counts in self._threads:
                total.add(counts)
        return total

    def _fingerprint(self, total: _TaskCounts) -> tuple[int, ...]:
        """What changes with every event counted here: the last scrape saw them all if it is unchanged since."""
        with self.lock:
            rare = (sum(self.invalid.values()), sum(self.unretrieved_count.values()), self.max_workers)
        return (total.submitted, total.started, total.unstarted, total.ended_after_start,
                sum(total.completed.values()), sum(total.result_lag.counts), *rare)  # fmt: skip

    def changed(self) -> bool:
        """Whether anything was counted here since the last scrape (a dropped name's late event: see
        ``MetricsCollector``)."""
        return self._fingerprint(self.totals()) != self.seen

    def collect_into(self, families: dict[Definition, Any]) -> bool:
        """Add this name's series to ``families``; True when they may be dropped now: every executor of the name
        is gone (collected or shut down), nothing runs or waits, and scrapes have exposed these same counts for
        ``DROP_AFTER_SECONDS`` (every scraper, a second Prometheus of a pair too, has seen them)."""
        name, created = self.name, self.created
        total = self.totals()
        # Read right after the totals: a task that ends in between is missing from both (never counted twice), and
        # the moment between them is short, so that busy seldom misses one (what it misses comes back only as
        # workers are free: ``_exposed_busy_ns``).
        starts, waiting = self._running_now()
        now_ns = time.time_ns()
        families[SUBMITTED].add_metric([name], total.submitted, created)
        ended = dict.fromkeys(OUTCOMES, 0)
        born: dict[tuple[str, str], float] = {}  # each run histogram's first task: its outcome's earliest count
        for key, count in total.completed.items():
            function, outcome, etype = key
            at = total.created[key]
            ended[outcome] += count
            families[COMPLETED].add_metric([name, function, outcome, etype], count, at)
            if at < born.get((function, outcome), at + 1):
                born[function, outcome] = at
        for outcome, count in ended.items():
            families[ENDED].add_metric([name, outcome], count, created)
        _histogram_with_created(families[QUEUE], [name], total.queue, created)
        busy_ns = 0
        for outcome, by_function in total.run.items():
            for function, hist in by_function.items():
                at = born.get((function, outcome), created)
                _histogram_with_created(families[RUN], [name, function, outcome], hist, at)
                busy_ns += hist.sum
        # The tasks in the executors now, split between queued and running. Each thread's counts, and a process
        # pool's start board, are read a moment apart while tasks move (a task handed to the call queue in between
        # is on the board and not in the totals): the split is clamped, never the sum, which the totals alone give.
        in_pool = max(total.submitted - total.unstarted - total.ended_after_start, 0)
        running = min(max(total.started - total.ended_after_start - waiting, 0), in_pool)
        families[QUEUED].add_metric([name], in_pool - running)
        families[RUNNING_GAUGE].add_metric([name], running)
        _histogram_with_created(families[RESULT_LAG], [name], total.result_lag, created)
        busy_ns += sum(now_ns - start for start in starts if start < now_ns)
        families[OLDEST_RUNNING].add_metric([name], max(now_ns - min(starts), 0) / 1e9 if starts else 0.0)
        cpu_ns = self.cpu.read(self._pools())
        if cpu_ns is not None:
            families[CPU].add_metric([name], cpu_ns / 1e9, created)
        with self.lock:
            # Offered up to the same moment as busy (not after the CPU read): a pool busy throughout reads 100%.
            self.capacity_ns = self._capacity_ns(now_ns)
            families[BUSY].add_metric([name], self._exposed_busy_ns(busy_ns) / 1e9, created)
            families[AVAILABLE].add_metric([name], self.capacity_ns / 1e9, created)
            families[MAX_WORKERS].add_metric([name], self.max_workers)
            for method, count in self.invalid.items():
                families[INVALID].add_metric([name, method], count, created)
            for etype, count in self.unretrieved_count.items():
                families[UNRETRIEVED].add_metric([name, etype], count, self.unretrieved_created[etype])
            workers, tables = self.max_workers, list(self.running)
        fingerprint, now = self._fingerprint(total), time.monotonic()
        if fingerprint != self.seen:
            self.seen, self.seen_since = fingerprint, now
            return False
        idle = not starts and total.submitted == total.ended_after_start + total.unstarted
        gone = idle and not workers and not any(table.alive() for table in tables)
        return gone and now - self.seen_since >= DROP_AFTER_SECONDS


class WaitStats:
    """``wait`` and ``as_completed`` latencies for one registry."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.created = time.time()  # every series exists from the start: the ``_created`` of them all
        self.wait = {(rw, to): _Histogram(self.buckets) for rw in RETURN_WHEN for to in ("false", "true")}
        self.as_completed = {to: _Histogram(self.buckets) for to in ("false", "true")}
        self.as_completed_next = _Histogram(self.buckets)

    def observe_wait(self, return_when: str, timed_out: bool, ns: int) -> None:
        hist = self.wait.get((return_when, "true" if timed_out else "false"))
        if hist is not None:
            with self.lock:
                hist.observe(ns)

    def observe_as_completed(self, timed_out: bool, ns: int) -> None:
        with self.lock:
            self.as_completed["true" if timed_out else "false"].observe(ns)

    def observe_as_completed_steps(self, steps: Sequence[int], zeros: int) -> None:
        with self.lock:
            self.as_completed_next.observe_many(steps, zeros)

    def collect_into(self, families: dict[Definition, Any]) -> None:
        created = self.created
        with self.lock:
            for (rw, to), hist in self.wait.items():
                _histogram_with_created(families[WAIT], [rw, to], hist, created)
            for to, hist in self.as_completed.items():
                _histogram_with_created(families[AS_COMPLETED], [to], hist, created)
            _histogram_with_created(families[AS_COMPLETED_NEXT], [], self.as_completed_next, created)


class MetricsCollector:
    """The one collector per registry that exposes every executor's and every wait's metrics at scrape time.

    Executor names are capped (``ExecutorNames``), and a name whose executors are all gone is dropped once
    scrapes have exposed its final counts for ``DROP_AFTER_SECONDS`` (``ExecutorStats.collect_into``): its series
    end, its slot under the cap is free. Its counts are kept while anything still refers to them (a future not
    read yet, a finalizer): a late event brings the name back with them at the next scrape, as does a new
    executor of that name."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.lock = threading.Lock()
        self.executors: dict[str, ExecutorStats] = {}
        self.dropped: weakref.WeakValueDictionary[str, ExecutorStats] = weakref.WeakValueDictionary()
        self.names = ExecutorNames()
        self.waits = WaitStats(buckets)

    def executor(self, name: str) -> ExecutorStats:
        name = self.names(name)
        with self.lock:
            stats = self.executors.get(name)
            if stats is None:
                stats = self.dropped.pop(name, None) or ExecutorStats(name, self.buckets)
                self.executors[name] = stats
            return stats

    def describe(self) -> list[Metric]:
        return [d.family() for d in (*EXECUTOR_METRICS, *WAIT_METRICS)]

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            back = [stats for name, stats in self.dropped.items() if name not in self.executors]
        back = [stats for stats in back if stats.changed()]  # counted after it was dropped: exposed again
        with self.lock:
            for stats in back:
                if stats.name not in self.executors and self.dropped.pop(stats.name, None) is stats:
                    self.executors[stats.name] = stats
            executors: Sequence[ExecutorStats] = list(self.executors.values())
        families = {d: d.family() for d in (*EXECUTOR_METRICS, *WAIT_METRICS)}
        gone = [stats for stats in executors if stats.collect_into(families)]
        self.waits.collect_into(families)
        with self.lock:
            for stats in gone:
                if self.executors.get(stats.name) is stats:
                    del self.executors[stats.name]
                    self.dropped[stats.name] = stats
                    self.names.release(stats.name)
        return iter(families.values())

    def reset(self) -> None:
        self.lock = threading.Lock()
        for stats in [*self.executors.values(), *self.dropped.values()]:
            stats.reset()
        self.waits.reset()

    def after_fork(self) -> None:
        """In a forked child (``_state`` calls it): clean counts and fresh locks, whatever a parent thread held at
        fork. The executors the child inherited are still live objects there: their workers stay counted, so
        that shutting one down in the child brings the gauge back to 0, not below."""
        workers = {name: stats.max_workers for name, stats in self.executors.items()}
        self.reset()
        for stats in [*self.executors.values(), *self.dropped.values()]:
            stats.max_workers = workers.get(stats.name, 0)
            stats.error_label.after_fork()
            stats.function_label.after_fork()
        self.names.after_fork()


# -- one backend per registry -------------------------------------------------------------------------------------
def backend_for(registry: CollectorRegistry | None, buckets: tuple[float, ...]) -> MetricsBackend | None:
    """The backend recording into ``registry`` (prometheus_client's ``REGISTRY`` if None), made on first use.

    A registry that already holds metrics of these names keeps them: tracedfutures then records nothing there
    and says so once in a warning, rather than failing the program. In multiprocess mode every registry shares
    the one multiprocess backend (prometheus_client's ``MultiProcessCollector`` exposes it).
    """
    if MULTIPROCESS:
        with state.collectors_lock:
            if state.multiprocess is None:
                from tracedfutures._multiprocess import MultiprocessMetrics

                state.multiprocess = MultiprocessMetrics(buckets)
            shared: MetricsBackend = state.multiprocess
            return shared
    if registry is None:
        registry = REGISTRY
    with state.collectors_lock:
        if registry in state.collectors:
            found: MetricsCollector | None = state.collectors[registry]
            return found
        collector: MetricsCollector | None = MetricsCollector(buckets)
        try:
            registry.register(collector)  # type: ignore[arg-type]
        except ValueError as exc:
            _log.warning("tracedfutures metrics disabled for this registry: %s", exc)
            collector = None
        state.collectors[registry] = collector
        return collector
