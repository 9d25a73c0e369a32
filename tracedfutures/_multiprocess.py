"""Recording through prometheus_client's own metrics, for programs in its multiprocess mode.

A pre-fork server (gunicorn, ``uvicorn --workers``) sets ``PROMETHEUS_MULTIPROC_DIR``; every process then writes
its values to files there and the one serving ``/metrics`` reads them all. Here the definitions of
``tracedfutures.metrics`` (from ``_metric_definitions``) become prometheus_client counters and histograms (not
registered in any registry, as its multiprocess documentation asks), in its ``counter_<pid>.db`` and
``histogram_<pid>.db`` files.

What describes live state is kept apart, in one small file per process (``tracedfutures_live_<pid>.tf``, the same
mmap format, which prometheus_client's collector does not read): for each executor name its queued tasks, its
workers, its capacity offset (so that the worker-seconds offered up to ``t`` are ``offset + workers * t``), its
running tasks' count, the sum of their starts and the oldest start (so that their busy time up to ``t`` is
``running * t - sum``), and the CPU seconds its workers used (written as tasks end, at most every
``CPU_EVERY_SECONDS``, and as a pool shuts down: only this process can read its workers' clocks).
``MultiprocessCollector`` derives from them, at scrape time, the gauges and the worker-seconds of the live
processes, as the in-process backend derives them from its tables; before that it checks which processes still
live (no server hook needed) and folds what dead ones counted into one archive file per kind (see
``MultiprocessCollector``). Process pools never need this mode: their tasks are recorded in the submitting process.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram, mmap_dict, multiprocess
from prometheus_client.metrics_core import Metric

from tracedfutures._metric_definitions import (
    AS_COMPLETED,
    AS_COMPLETED_NEXT,
    AVAILABLE,
    BUSY,
    COMPLETED,
    CPU,
    ENDED,
    EXECUTOR_METRICS,
    INVALID,
    MAX_WORKERS,
    OLDEST_RUNNING,
    OUTCOMES,
    QUEUE,
    QUEUED,
    REFUSABLE_METHODS,
    RESULT_LAG,
    RUN,
    RUNNING_GAUGE,
    SUBMITTED,
    UNRETRIEVED,
    WAIT,
    WAIT_METRICS,
    Definition,
    ErrorLabels,
    ExecutorNames,
    FunctionLabels,
    TaskTrace,
    read_at_last,
    task_ended,
    watch_unretrieved,
)
from tracedfutures._state import state
from tracedfutures._telemetry import telemetry_failed
from tracedfutures._worker_cpu import ThreadExit, WorkerCpu, live_pools

if TYPE_CHECKING:
    from tracedfutures._lifecycle import LifecycleHook, TracedFuture

#: The live state each process keeps per executor name in its own file, and what the collector derives from it.
LIVE_GAUGES = {"queued": QUEUED, "running": RUNNING_GAUGE, "workers": MAX_WORKERS}
#: The definitions recorded through prometheus_client's counters and histograms; the rest is derived at scrape.
_RECORDED = frozenset(d for d in (*EXECUTOR_METRICS, *WAIT_METRICS) if d.type != "gauge" and not d.scrape_time)
#: The file kinds of prometheus_client whose values add up across processes: a dead process's are folded.
_ADDITIVE = ("counter", "histogram", "summary")
_PROCESS_FILE = re.compile(r"(?:(counter|histogram|summary|gauge_[a-z]+)_|tracedfutures_live_)(\d+)\.(db|tf)")
_LIVE_FILE = "tracedfutures_live_{}.tf"
_ARCHIVE_FILE = "tracedfutures_archive.tf"
_START_KEY = "\0process start"
#: How often, at most, a process writes its workers' CPU seconds to its live file: as tasks end (see ``finished``).
CPU_EVERY_SECONDS = 1.0

# prometheus_client's multiprocess files, typed here (it leaves them untyped): an mmap dict of (value, timestamp)
# by key, the merge of files that its MultiProcessCollector serves, and the removal of a dead pid's live gauges.
MmapedDict: Callable[[str], Any] = mmap_dict.MmapedDict
_read_file: Callable[[str], Iterable[tuple[str, float, float, int]]] = mmap_dict.MmapedDict.read_all_values_from_file
_merge: Callable[[list[str]], Iterable[Metric]] = multiprocess.MultiProcessCollector.merge
_mark_dead: Callable[[int, str], None] = multiprocess.mark_process_dead


def _metric(definition: Definition, buckets: tuple[float, ...]) -> Any:
    if definition.type == "histogram":
        return Histogram(definition.name, definition.documentation, definition.labels, registry=None, buckets=buckets)
    return Counter(definition.name, definition.documentation, definition.labels, registry=None)


#: Whether this system has Linux's ``/proc`` (the processes' states and start times).
_PROC = os.path.isdir("/proc/self")


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), None where there is no ``/proc``:
    with its pid, it names a process even after the pid is reused. Raises ``ProcessLookupError`` for a process
    that does not exist or has exited (a zombie; without ``/proc`` only once its parent reaped it)."""
    if not _PROC:
        with contextlib.suppress(PermissionError):  # another user's process: it lives
            os.kill(pid, 0)
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:  # gone, or reaped while being read (ESRCH)
        raise ProcessLookupError(pid) from None
    if fields[0] in (b"Z", b"X"):
        raise ProcessLookupError(pid)
    return int(fields[19])


class _LiveFile:
    """This process's live-state file: written under one lock by every series of the process, opened on the first
    write (a forked child opens its own, see ``after_fork``)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self._file: Any = None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and the child's own file at its first write (the parent's stays
        the parent's)."""
        self.lock = threading.Lock()
        self._file = None

    def write(self, values: Iterable[tuple[str, str, float]]) -> None:
        """Write each (executor, field, value), under ``lock``."""
        live = self._file
        if live is None:
            live = self._file = MmapedDict(os.path.join(self.directory, _LIVE_FILE.format(state.pid)))
            started = _process_start(state.pid)
            live.write_value(_START_KEY, float(started or 0), 0.0)
        for name, field, value in values:
            live.write_value(f"{name}\0{field}", value, 0.0)


class _ThreadEnd(threading.local):
    """Made in each worker thread at its first task: hands the thread's final CPU time to ``cpu`` as it ends."""

    def __init__(self, cpu: WorkerCpu) -> None:
        self.exit = ThreadExit(cpu)


class MultiprocessSeries:
    """One executor name's series in this process: prometheus_client children bound once for what is counted,
    and the live state (queued, running, workers, capacity) written to the process's live file as it changes.

    After a fork, parent and child alike count the pools made before it as *dormant*: they count again in a
    process from that process's next task of this name. So a pool made in a gunicorn master with ``--preload``
    counts once in each worker that uses it and not in the master, and a forked helper that never runs a task
    (a fork-started process pool's worker) counts no inherited pool."""

    def __init__(self, metrics: dict[Definition, Any], name: str, live: _LiveFile) -> None:
        self.metrics = metrics
        self.name = name
        self.live = live
        self.error_label = ErrorLabels()
        self.function_label = FunctionLabels()
        self._submitted = metrics[SUBMITTED].labels(name)
        self._queue = metrics[QUEUE].labels(name)
        self._lag = metrics[RESULT_LAG].labels(name)
        self._busy = metrics[BUSY].labels(name)
        self._ended = {outcome: metrics[ENDED].labels(name, outcome) for outcome in OUTCOMES}
        # Bound now so that they exist at 0 from the executor's start: an alert's increase() sees the first one.
        self._invalid = {method: metrics[INVALID].labels(name, method) for method in REFUSABLE_METHODS}
        self.tables: weakref.WeakSet[Any] = weakref.WeakSet()  # each executor's ``_running.RunningTasks``
        self.queued = 0
        self.workers = 0
        self.dormant = 0  # workers of pools made before a fork, counted again at this process's next task
        self.offset = 0.0  # worker-seconds offered up to t: offset + workers * t
        self._cpu(WorkerCpu())

    def _cpu(self, cpu: WorkerCpu) -> None:
        self.cpu = cpu
        self.cpu_read_at = 0.0  # time.monotonic() of the last CPU read written to the live file
        self.thread_end = _ThreadEnd(cpu)

    def _running(self) -> tuple[tuple[str, str, float], ...]:
        """The running tasks' count, the sum of their starts and the oldest start (unix seconds), read from the
        tables of the executors of this name (under the live file's lock, after the table changed)."""
        starts = [start for table in list(self.tables) for start in table.tasks.copy().values()]
        name = self.name
        oldest = min(starts) / 1e9 if starts else 0.0
        return (name, "running", len(starts)), (name, "starts", sum(starts) / 1e9), (name, "oldest", oldest)

    def _workers(self, count: int) -> tuple[tuple[str, str, float], ...]:
        """Add ``count`` workers now (under the live file's lock): what to write."""
        self.offset -= count * time.time()
        self.workers += count
        return (self.name, "workers", self.workers), (self.name, "offset", self.offset)

    def submitted(self, future: TracedFuture, fn: Any) -> None:
        try:
            self._submitted.inc()
            live = self.live
            with live.lock:
                self.queued += 1
                values: tuple[tuple[str, str, float], ...] = ((self.name, "queued", self.queued),)
                if self.dormant:
                    values += self._workers(self.dormant)
                    self.dormant = 0
                live.write(values)
            future._tf_function = self.function_label(fn)
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def started(self, future: TracedFuture) -> None:
        try:
            self.thread_end.exit  # noqa: B018  (made at the thread's first task: its final CPU, as it ends)
            live = self.live
            with live.lock:
                self.queued -= 1
                live.write(((self.name, "queued", self.queued), *self._running()))
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def finished(
        self, ran: bool, function: str, outcome: str, error_label: str, queue_ns: int, run_ns: int,
        exemplar: TaskTrace | None,
    ) -> None:  # fmt: skip
        live = self.live
        with live.lock:
            if ran:
                live.write(self._running())
                if time.monotonic() - self.cpu_read_at >= CPU_EVERY_SECONDS:
                    self._write_cpu()
            else:
                self.queued -= 1
                live.write(((self.name, "queued", self.queued),))
        self._ended[outcome].inc()
        self.metrics[COMPLETED].labels(self.name, function, outcome, error_label).inc()
        if run_ns >= 0:
            self._queue.observe(queue_ns / 1e9)
            self.metrics[RUN].labels(self.name, function, outcome).observe(run_ns / 1e9)
            self._busy.inc(run_ns / 1e9)

    def _write_cpu(self) -> None:
        """Write the CPU seconds of this name's workers in this process (under the live file's lock): as tasks
        end, at most every ``CPU_EVERY_SECONDS``, and as a pool shuts down, never per task. The workers are threads
        or processes of this process, which only it can read; the collector adds the processes' last writes up."""
        self.cpu_read_at = time.monotonic()
        cpu_ns = self.cpu.read(live_pools(list(self.tables)))
        if cpu_ns is not None:
            self.live.write(((self.name, "cpu", cpu_ns / 1e9),))

    def refused(self, method: str) -> None:
        self._invalid[method].inc()

    def retrieved(self, lag_ns: int) -> None:
        self._lag.observe(lag_ns / 1e9)

    # -- the lifecycle hook: this name's series are its executors' metrics side ----------------------------------
    on_submit = submitted
    on_start = started

    def on_finish(self, future: TracedFuture) -> None:
        try:
            outcome, label, queue_ns, run_ns, exemplar = task_ended(future, self.error_label)
            self.finished(future.ran, future._tf_function, outcome, label, queue_ns, run_ns, exemplar)
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
        try:
            if future._tf_unretrieved is not None:
                read_at_last(future)
            lag_ns = time.time_ns() - future.finished_ns  # only a FINISHED future's first read is reported
            self.retrieved(lag_ns if lag_ns > 0 else 0)
        except Exception as exc:
            telemetry_failed("metrics", exc)

    def hook(self) -> LifecycleHook:
        """The metrics side of this name's executors' lifecycle: these series themselves."""
        return self

    def unretrieved(self, label: str) -> None:
        self.metrics[UNRETRIEVED].labels(self.name, label).inc()

    def add_workers(self, count: int) -> None:
        live = self.live
        with live.lock:
            if count < 0 and self.dormant:  # a pool made before the fork, shut down before it counted here
                taken = min(self.dormant, -count)
                self.dormant -= taken
                count += taken
            if count:
                live.write(self._workers(count))
            if count < 0:  # a pool shuts down: what its workers used, while they can still be read
                self._write_cpu()

    def watch(self, running: Any) -> None:
        """The running tasks are read from the executors' tables when one starts or ends (see ``_running``)."""
        with self.live.lock:
            self.tables.add(running)

    def watch_board(self, board: Any) -> None:
        """Process pools' tasks count as running from their hand-off here, as their table holds them."""

    def after_fork(self, child: bool) -> None:
        """Make the workers counted so far dormant (their capacity so far stays in the parent's file); in the
        child, start from nothing (the parent's queued and running tasks are not there)."""
        now = time.time()
        if child:
            self.error_label.after_fork()
            self.function_label.after_fork()
            self.queued, self.offset = 0, 0.0
            self._cpu(WorkerCpu())  # the parent's workers are not this process's
        else:
            self.offset += self.workers * now
        self.dormant += self.workers
        self.workers = 0
        if not child:
            self.live.write(((self.name, "workers", 0), (self.name, "offset", self.offset)))


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
        self.metrics = {d: _metric(d, buckets) for d in (*EXECUTOR_METRICS, *WAIT_METRICS) if d in _RECORDED}
        self.waits = MultiprocessWaits(self.metrics)
        self.live = _LiveFile(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        self.names = ExecutorNames()
        self._series: dict[str, MultiprocessSeries] = {}
        self._lock = threading.Lock()

    def after_fork(self, child: bool) -> None:
        """After a fork (``_state`` calls it in both processes): in the child, fresh locks (a parent thread may
        have held them at fork) and its own live file; in both, the pools made so far count again from the
        process's next task (``MultiprocessSeries.after_fork``)."""
        if child:
            self._lock = threading.Lock()
            self.live.after_fork()
            self.names.after_fork()
        with self.live.lock:
            for series in self._series.values():
                series.after_fork(child)

    def executor(self, name: str) -> MultiprocessSeries:
        name = self.names(name)
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = MultiprocessSeries(self.metrics, name, self.live)
            return series


def _alive(pid: int, recorded_start: float) -> bool:
    """Whether process ``pid`` lives and is the one that wrote a live file recording ``recorded_start`` (0: no
    record), not a later process given the same pid."""
    try:
        start = _process_start(pid)
    except ProcessLookupError:
        return False
    return not (recorded_start and start is not None and start != recorded_start)


def _read(path: str) -> list[tuple[str, float, float]]:
    """Every (key, value, timestamp) of the mmap file at ``path``."""
    return [(key, value, timestamp) for key, value, timestamp, _ in _read_file(path)]


def _read_whole(path: str) -> list[tuple[str, float, float]]:
    """``_read``, or nothing for a file that a process killed while it added a key left cut short: one such
    file must not fail every scrape (what it held is lost, the rest is exposed)."""
    try:
        return _read(path)
    except (RuntimeError, struct.error, UnicodeDecodeError) as exc:
        telemetry_failed("MultiprocessCollector", exc)
        return []


def _add_into(target_path: str, values: Iterable[tuple[str, float, float]]) -> None:
    """Add each (key, value, timestamp) to the value of that key in the mmap file at ``target_path``."""
    target = MmapedDict(target_path)
    try:
        for key, value, timestamp in values:
            target.write_value(key, target.read_value(key)[0] + value, timestamp)
    finally:
        target.close()


class MultiprocessCollector:
    """What ``/metrics`` serves in multiprocess mode: prometheus_client's ``MultiProcessCollector`` over the
    counter and histogram files, and the live state of every process that still lives, derived at scrape time.

    Each scrape, under an exclusive lock on the directory (``tracedfutures.lock``; scrapes by several workers
    take turns):

    - **Dead processes leave.** A process whose pid no longer runs (or is a zombie, or was reused by a process
      that started later) is dead, whether or not the server called ``mark_process_dead``: its ``gauge_live*``
      files are removed as that call does, its counter, histogram and summary files are added into one
      ``<kind>_archive.db`` file each and removed, and its live file's worker-seconds (offered and busy, up to
      now) are added into the archive. So the files and the scrape's cost follow the live processes, and nothing
      a dead process counted is lost.
    - **Live state is derived.** Queued and running tasks and workers are summed over live processes; the
      worker-seconds offered are the archive's plus ``offset + workers * now`` of each live process, the busy
      ones the counter of ended tasks plus the archive's plus ``running * now - starts``; the oldest running
      task's age is ``now`` minus the oldest start. The two worker-second counters are never exposed lower than
      a scrape before exposed them (a task that ends while the files are read is briefly in neither).
    """

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or os.environ["PROMETHEUS_MULTIPROC_DIR"]

    def collect(self) -> Iterator[Metric]:
        directory = self.directory
        with open(os.path.join(directory, "tracedfutures.lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = time.time()
            live = self._live_processes(now)
            merged = list(_merge(glob.glob(os.path.join(directory, "*.db"))))
            archive = MmapedDict(os.path.join(directory, _ARCHIVE_FILE))
            try:
                derived = self._derive(merged, live, archive, now)
            finally:
                archive.close()
        return iter([*(m for m in merged if m.name != BUSY.name), *derived])

    def _live_processes(self, now: float) -> list[dict[str, float]]:
        """The live files' values of the processes that live; dead processes' files are folded first."""
        directory = self.directory
        files: dict[int, list[tuple[str, str]]] = {}
        for entry in os.listdir(directory):
            found = _PROCESS_FILE.fullmatch(entry)
            if found is not None:
                files.setdefault(int(found[2]), []).append((found[1] or "live", os.path.join(directory, entry)))
        live = []
        for pid, paths in files.items():
            kinds = dict(paths)
            values = {key: value for key, value, _ in _read_whole(kinds["live"])} if "live" in kinds else {}
            if _alive(pid, values.pop(_START_KEY, 0.0)):
                live.append(values)
                continue
            for kind, path in paths:
                if kind in _ADDITIVE:
                    _add_into(os.path.join(directory, f"{kind}_archive.db"), _read_whole(path))
                    os.remove(path)
            _mark_dead(pid, directory)
            if "live" in kinds:
                cpu = ((key, value, now) for key, value in values.items() if key.endswith("\0cpu"))
                _add_into(os.path.join(directory, _ARCHIVE_FILE), [*self._accrued(values, now), *cpu])
                os.remove(kinds["live"])
        return live

    @staticmethod
    def _accrued(values: dict[str, float], now: float) -> Iterator[tuple[str, float, float]]:
        """The worker-seconds one process's live file says its executors offered and were busy up to ``now``."""
        for key, workers in values.items():
            name, _, field = key.partition("\0")
            if field == "workers":
                yield f"{name}\0available", values.get(f"{name}\0offset", 0.0) + workers * now, now
                running = values.get(f"{name}\0running", 0.0)
                yield f"{name}\0busy", running * now - values.get(f"{name}\0starts", 0.0), now

    def _derive(self, merged: list[Metric], live: list[dict[str, float]], archive: Any, now: float) -> list[Metric]:
        """The families derived from the live processes' state and the archive (clamped there, see above)."""
        totals: dict[str, dict[str, float]] = {}  # executor name -> field -> sum over the live processes
        oldest: dict[str, float] = {}
        for values in live:
            for key, value, _ in (*((k, v, 0.0) for k, v in values.items()), *self._accrued(values, now)):
                name, _, field = key.partition("\0")
                if field == "oldest":
                    if value:
                        oldest[name] = min(value, oldest.get(name, value))
                    continue
                fields = totals.setdefault(name, {})
                fields[field] = fields.get(field, 0.0) + value
        ended = {
            sample.labels["executor"]: sample.value
            for metric in merged if metric.name == BUSY.name
            for sample in metric.samples if sample.name.endswith("_total")
        }  # fmt: skip
        names = {*totals, *ended, *(key.partition("\0")[0] for key, _, _ in archive.read_all_values())}
        families = {d: d.family() for d in (*LIVE_GAUGES.values(), BUSY, AVAILABLE, CPU, OLDEST_RUNNING)}
        for name in sorted(names):
            fields = totals.get(name, {})
            for field, definition in LIVE_GAUGES.items():
                families[definition].add_metric([name], max(fields.get(field, 0.0), 0.0))
            busy = ended.get(name, 0.0) + archive.read_value(f"{name}\0busy")[0] + fields.get("busy", 0.0)
            families[BUSY].add_metric([name], _never_lower(archive, f"{name}\0busy exposed", busy))
            available = archive.read_value(f"{name}\0available")[0] + fields.get("available", 0.0)
            families[AVAILABLE].add_metric([name], _never_lower(archive, f"{name}\0available exposed", available))
            families[OLDEST_RUNNING].add_metric([name], max(now - oldest[name], 0.0) if name in oldest else 0.0)
            cpu = archive.read_value(f"{name}\0cpu")[0] + fields.get("cpu", 0.0)
            if cpu or "cpu" in fields:  # where no process could read its workers' CPU: no series
                families[CPU].add_metric([name], _never_lower(archive, f"{name}\0cpu exposed", cpu))
        return list(families.values())


def _never_lower(archive: Any, key: str, value: float) -> float:
    """``value``, or the value exposed under ``key`` before if that was higher; kept as the new one."""
    value = max(value, archive.read_value(key)[0])
    archive.write_value(key, value, 0.0)
    return value
