"""A timeline of every task, written as it happens in the Chrome Trace Event Format, which ui.perfetto.dev and
chrome://tracing open: ``TimelineWriter``, an OpenTelemetry span processor.

Usage::

    from opentelemetry.sdk.trace import TracerProvider
    from tracedfutures.timeline import TimelineWriter

    provider = TracerProvider()
    provider.add_span_processor(TimelineWriter("trace.json"))
    ...                      # tasks traced with this provider (configure(), the instrumentor, traced())
    provider.shutdown()      # or writer.shutdown(): the file is complete (also at exit, by the SDK's atexit hook)

The file is a JSON array, one event a line, flushed at least once a second (``FLUSH_EVERY_S``) by a thread of the
writer's own: a program killed or ended through ``os._exit`` leaves a file that holds everything up to the last
flush, which the viewers and ``tracedfutures report`` read as it is (without its closing ``]``). It opens with the
writer's header (``"ph": "M"`` named ``tracedfutures``: ``writer``, ``origin_unix_ns``, ``max_tasks``), names each
executor the first time one of its tasks ends (``tracedfutures_executor``: ``name``, ``kind``, ``max_workers``)
and closes with its end (``tracedfutures_end``: ``drawn``, ``left_out``), which a file cut short lacks.

``tracedfutures record -o trace.json -- python app.py`` sets this up for a program that has no SDK of its own.

What is written, for each task span (times in microseconds from the writer's start, the header's ``origin_unix_ns``):

- a complete slice (``"ph": "X"``) over the task's real run, on the process and thread that ran it (``pid`` the
  worker process, ``tid`` a small number per thread, named by ``"ph": "M"`` ``process_name`` / ``thread_name``
  events), named like the task span, with ``args`` ``executor``, ``code.function``, ``outcome``, ``error.type``
  (on error), ``thread.id``, ``trace_id``, ``span_id``, ``executor.task.batch_size`` for a joblib batch and, for a
  thread or interpreter pool's task under ``tracedfutures record``, ``cpu_time``: the CPU seconds it used in its
  worker thread;
- the time it spent queued, an async slice (``"b"`` / ``"e"``, category ``queued``) from submit to its start (to
  its end for a task that never ran, whose ``b`` args also say ``"ran": false``, its ``code.function`` and, for an
  error, its ``error.type``: cancelled, refused by a pool shut down or broken, ended by ``BrokenProcessPool`` before
  a worker was heard to start it);
- a ``"ph": "i"`` event ``worker died`` (category ``worker``) on the lane of each worker process of a process pool
  that had died when the pool broke, with its ``exit_code`` and ``signal``;
- a flow arrow (``"s"`` / ``"f"``, category ``submit``) from a short ``submit`` slice on the submitting thread to
  the start of the task's slice;
- ``wait`` and ``as_completed`` calls as slices on the caller's thread;
- counters (``"C"``) ``queued`` and ``running`` per executor (``id`` and the one ``args`` key are the executor's
  name), exact at every change;
- counters ``cpu`` and ``cpu_wait`` per executor: the CPU seconds its workers used so far, and the seconds they
  were runnable but waiting for a CPU (``_worker_cpu``; 0 where the kernel does not say), read as tasks end, at
  most every ``CPU_EVERY_NS``, and when the file is finished (a worker that ended in between keeps its last read,
  so what it used after that is missing).

Memory stays bounded however long the run: events go to the file as spans end (through a buffer of
``BUFFER_BYTES``, flushed every second), and each counter change is written in time order once none can come
before it (``_Counters``: at most ``CHUNK`` held). The file is bounded by ``max_tasks`` (default
``DEFAULT_MAX_TASKS``): tasks and calls that end past it leave no slice, and the end's ``left_out`` counts them;
the counters still count every task.

Only spans that this processor saw start are drawn: task spans of this process's executors and its own ``wait``
/ ``as_completed`` calls, not spans made in worker processes. Nothing of a task's arguments or results is
written, nor exception messages.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from tracedfutures._running import executors_now, pools_by_name
from tracedfutures._state import state
from tracedfutures._worker_cpu import WorkerCpu
from tracedfutures.spans import (
    AS_COMPLETED_SPAN,
    BATCH_SIZE,
    CODE_FUNCTION,
    EXECUTOR_KIND,
    EXECUTOR_NAME,
    PROCESS_PID,
    RUN_DURATION,
    RUNNING_EVENT,
    TASK_CANCELLED,
    TASK_CPU_TIME,
    THREAD_ID,
    THREAD_NAME,
    WAIT_SPAN,
)
from tracedfutures.version import __version__

#: Tasks (and wait / as_completed calls) drawn at most, by default: about 1.2 KB of file each.
DEFAULT_MAX_TASKS = 200_000
#: Bytes of events kept before they are written to the file.
BUFFER_BYTES = 1 << 20
#: Counter changes held in memory at most, waiting for the changes that may come before them.
CHUNK = 1 << 16
#: What is buffered goes to the file at least this often (seconds), by a thread of the writer's own.
FLUSH_EVERY_S = 1.0
#: Counter changes this recent (ns) are held back at a flush: the task they belong to may not be heard of yet.
HOLD_NS = 100_000_000
#: The names of the writer's own metadata events (``"ph": "M"``): its header (first in the file), each executor
#: the first time it is seen, and the end (last in the file; a file without it was cut short).
HEAD, EXECUTOR, END = "tracedfutures", "tracedfutures_executor", "tracedfutures_end"
#: The executors' workers' CPU is read as tasks end, at most this often (ns).
CPU_EVERY_NS = 50_000_000

#: How the error type of a task that a process pool's broken state ended ends.
BROKEN_POOL = "BrokenProcessPool"

_CALLS = {WAIT_SPAN: "wait", AS_COMPLETED_SPAN: "as_completed"}
#: Where the span started: the starting thread's id and name, and when ``on_start`` ran (ns).
_Started = tuple[int, str, int]


class _Counters:
    """The changes of every executor's queued and running counts, (ns, executor, d_queued, d_running), held until
    no change can come before them any more, then written in time order: nothing is left to merge when the file
    is finished, so a file cut short holds exact counters up to its last flush.

    A change is final once it is older than every task still queued or running (``ready(watermark)``). Past
    ``CHUNK`` held changes (a task queued or running for long holds the watermark back) the oldest half is written
    anyway; a change that comes later than what was written is written at the last time written (its value stays
    exact, its time is late)."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, int, int, int]] = []
        self.written_ns = 0  # the time of the last change written

    def add(self, ns: int, executor: int, queued: int, running: int) -> None:
        self.changes.append((ns, executor, queued, running))

    def ready(self, watermark: int | None) -> list[tuple[int, int, int, int]]:
        """The changes up to ``watermark`` (every one when None), in time order; they are taken out."""
        changes = self.changes
        changes.sort()
        if watermark is None:
            cut = len(changes)
        else:
            cut = bisect.bisect_right(changes, watermark, key=_ns)
            if len(changes) - cut > CHUNK:
                cut = len(changes) - CHUNK // 2
        taken, self.changes = changes[:cut], changes[cut:]
        if taken:
            late = self.written_ns
            if taken[0][0] < late:
                taken = [(max(ns, late), *rest) for ns, *rest in taken]  # type: ignore[misc]
            self.written_ns = taken[-1][0]
        return taken


def _ns(change: tuple[int, int, int, int]) -> int:
    return change[0]


def _us(ns: int) -> str:
    """Nanoseconds as microseconds, exactly (no float rounding in the file)."""
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


class TimelineWriter(SpanProcessor):
    """A span processor that streams the tasks it sees to ``path`` in the Chrome Trace Event Format (see the
    module's documentation); the file is complete once ``shutdown()`` ran."""

    def __init__(self, path: str | os.PathLike[str], max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        if not isinstance(max_tasks, int) or max_tasks < 0:
            raise ValueError(f"max_tasks must be an int >= 0, got {max_tasks!r}")
        self.path = os.fspath(path)
        self.max_tasks = max_tasks
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._lock = threading.Lock()
        self._origin = time.time_ns()
        self._pid = os.getpid()
        self._started: dict[int, _Started] = {}  # span id -> where and when it started
        self._buffer: list[str] = ["[\n"]
        self._buffered = 0
        self._tids: dict[tuple[int, int, str], int] = {}  # (pid, thread id, thread name) -> the tid in the file
        self._named_pids = {self._pid}  # the processes named in the file so far
        self._names: dict[str, str] = {}  # span name -> as a JSON string
        self._executors: dict[str, int] = {}  # executor name -> index in the counters
        self._executor_info: dict[str, dict[str, Any]] = {}
        self._counters = _Counters()
        self._broken: set[str] = set()  # the executors whose pool broke (a task ended with BROKEN_POOL)
        self._last_tid: dict[int, int] = {}  # pid -> the tid of the last task drawn there
        self._counts: list[list[int]] = []  # each executor's queued and running count, as written so far
        self._cpu: dict[str, WorkerCpu] = {}  # executor name -> its workers' CPU, read as tasks end
        self._cpu_read = 0  # when it was last read (ns)
        self.drawn = 0
        self.left_out = 0
        self._closed = False
        head = {"writer": f"tracedfutures {__version__}", "origin_unix_ns": self._origin, "max_tasks": max_tasks}
        self._event(self._own(HEAD, head))
        self._event(self._meta("process_name", self._pid, 0, _program_name()))
        self._flush()
        with state.timelines_lock:
            state.timelines.add(self)
        self._stop = threading.Event()
        threading.Thread(target=self._flush_every_second, name="tracedfutures-timeline", daemon=True).start()

    @property
    def executors(self) -> tuple[str, ...]:
        """The names of the executors whose tasks this writer has seen end, in the order it first saw them."""
        return tuple(self._executor_info)

    # -- the span processor ----------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note where and when a task or wait span started (its thread, and the clock)."""
        """Note the thread a task span or a wait / as_completed span starts on (the submitting or calling one)."""
        attributes = span.attributes or {}
        if span.name in _CALLS or EXECUTOR_NAME in attributes:
            thread = threading.current_thread()
            context = span.get_span_context()
            self._started[context.span_id] = (thread.ident or 0, thread.name, time.time_ns())

    def on_end(self, span: ReadableSpan) -> None:
        """Write the events of a task or wait span that ended; a failure loses events, never the span."""
        """Write the events of a span this processor saw start; count it as left out past ``max_tasks``."""
        context = span.context
        started = self._started.pop(context.span_id, None) if context is not None else None
        if started is None or self._closed:
            return
        try:
            with self._lock:
                if self._closed:
                    return
                if span.name in _CALLS:
                    self._call(span, started)
                else:
                    self._task(span, started)
                if self._buffered >= BUFFER_BYTES:
                    self._write_counters(self._watermark())
                    self._flush()
        except Exception as exc:  # a timeline that fails loses events, never the program's spans
            from tracedfutures._telemetry import telemetry_failed

            telemetry_failed("TimelineWriter", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write the events buffered so far, and the counters' changes that are final, to the file (which stays
        readable as it is: see ``tracedfutures._cli.timeline_reader``)."""
        with self._lock:
            if not self._closed:
                self._read_cpu(time.time_ns())  # the workers' CPU at every flush: the file says how long it covers
                self._write_counters(self._watermark())
                self._flush()
        return True

    def _flush_every_second(self) -> None:
        """The writer's thread: what it holds goes to the file every ``FLUSH_EVERY_S``, so that a program killed
        (``os._exit``, SIGKILL, a crash) leaves a file that holds all but its last second."""
        while not self._stop.wait(FLUSH_EVERY_S):
            try:
                self.force_flush()
            except Exception as exc:  # a timeline that fails loses events, never the program's work
                from tracedfutures._telemetry import telemetry_failed

                telemetry_failed("TimelineWriter", exc)
            if self._closed:
                return

    def _watermark(self) -> int:
        """The time before which no counter change can come any more: the submit of the oldest task still queued
        or running (its start and its end come later), and not the last ``HOLD_NS``."""
        now = time.time_ns() - HOLD_NS
        oldest = min((started[2] for started in list(self._started.values())), default=now)
        return min(now, oldest - HOLD_NS)

    def shutdown(self) -> None:
        """Write the counters, the names and ``otherData``, and close the file (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            try:
                self._read_cpu(time.time_ns())
                self._write_counters(None)
                # The last event has no comma after it: the array is closed.
                self._buffer.append(self._own(END, {"drawn": self.drawn, "left_out": self.left_out}) + "\n]\n")
                self._flush()
            finally:
                os.close(self._fd)
                self._started.clear()

    def shutdown_on_signal(self, timeout: float = 2.0) -> None:
        """Finish the file from a signal handler, which may have interrupted this writer in its own thread: wait
        for the lock at most ``timeout`` seconds (else the file keeps what its last flush wrote)."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            self.shutdown()

    # -- what a span becomes ---------------------------------------------------------------------------------
    def _task(self, span: ReadableSpan, started: _Started) -> None:
        attributes = span.attributes or {}
        executor = str(attributes.get(EXECUTOR_NAME, ""))
        index = self._executor(executor, attributes)
        submitted, ended = span.start_time or 0, span.end_time or 0
        running = next((e.timestamp for e in span.events if e.name == RUNNING_EVENT), None)
        run_for = attributes.get(RUN_DURATION)
        finished = running + round(float(run_for) * 1e9) if running and isinstance(run_for, float) else ended
        self._count(index, submitted, running, finished)
        if ended - self._cpu_read >= CPU_EVERY_NS:
            self._read_cpu(ended)
        outcome = "error" if ERROR_TYPE in attributes else "cancelled" if attributes.get(TASK_CANCELLED) else "success"
        broke = outcome == "error" and self._broke(executor, str(attributes[ERROR_TYPE]), ended)
        if broke and PROCESS_PID not in attributes:
            running = None  # handed to the call queue, never heard of in a worker: drawn as it queued
        if not self._draw():
            return
        context = span.context
        assert context is not None
        span_id = f"{context.span_id:016x}"
        name = self._name(span.name)
        pid = self._pid
        submitter = self._tid(pid, started[0], started[1])
        queued_args: dict[str, Any] = {"executor": executor, "outcome": outcome, "span_id": span_id}
        if running is None:  # it never ran: its queued slice is all there is of it
            queued_args |= {"ran": False, "code.function": attributes.get(CODE_FUNCTION, "")}
            if outcome == "error":
                queued_args["error.type"] = attributes[ERROR_TYPE]
        self._event(
            f'{{"ph":"b","cat":"queued","name":{name},"id":"{span_id}","pid":{pid},"tid":{submitter},'
            f'"ts":{_us(submitted - self._origin)},"args":{json.dumps(queued_args)}}}'
        )
        self._event(
            f'{{"ph":"e","cat":"queued","name":{name},"id":"{span_id}","pid":{pid},"tid":{submitter},'
            f'"ts":{_us((ended if running is None else running) - self._origin)}}}'
        )
        if running is None:
            return
        # The submit: a slice on the submitting thread (from the task's submit to its span's start, the part of
        # submit before the task could start), which the flow arrow leaves from.
        submit_ts = _us(submitted - self._origin)
        self._event(
            f'{{"ph":"X","cat":"submit","name":"submit","pid":{pid},"tid":{submitter},"ts":{submit_ts},'
            f'"dur":{_us(max(started[2] - submitted, 1))},"args":{{"span_id":"{span_id}"}}}}'
        )
        self._event(
            f'{{"ph":"s","cat":"submit","name":"submit","id":"{span_id}","pid":{pid},"tid":{submitter},'
            f'"ts":{submit_ts}}}'
        )
        self._slice(span, attributes, executor, outcome, running, finished)

    def _slice(
        self, span: ReadableSpan, attributes: Any, executor: str, outcome: str, running: int, finished: int
    ) -> None:
        """The slice of a task's run, on the worker that ran it, and the end of its flow arrow."""
        context = span.context
        assert context is not None
        span_id = f"{context.span_id:016x}"
        pid = self._pid
        worker_pid = attributes.get(PROCESS_PID)
        thread_id = attributes.get(THREAD_ID)
        if not isinstance(worker_pid, int) or not isinstance(thread_id, int):
            worker_pid, thread_id = pid, 0  # where it ran is not on the span: an unnamed lane of this process
        if worker_pid not in self._named_pids:
            self._named_pids.add(worker_pid)
            self._event(self._meta("process_name", worker_pid, 0, f"{executor} worker"))
        tid = self._tid(worker_pid, thread_id, str(attributes.get(THREAD_NAME, "")))
        self._last_tid[worker_pid] = tid
        args: dict[str, Any] = {
            "executor": executor,
            "code.function": attributes.get(CODE_FUNCTION, ""),
            "outcome": outcome,
            "thread.id": thread_id,
            "trace_id": f"{context.trace_id:032x}",
            "span_id": span_id,
        }
        if outcome == "error":
            args["error.type"] = attributes[ERROR_TYPE]
        batch = attributes.get(BATCH_SIZE)
        if batch is not None:
            args[BATCH_SIZE] = batch
        cpu_time = attributes.get(TASK_CPU_TIME)
        if isinstance(cpu_time, float):
            args["cpu_time"] = cpu_time
        run_ts = _us(running - self._origin)
        self._event(
            f'{{"ph":"X","cat":"task","name":{self._name(span.name)},"pid":{worker_pid},"tid":{tid},"ts":{run_ts},'
            f'"dur":{_us(max(finished - running, 0))},"args":{json.dumps(args)}}}'
        )
        self._event(
            f'{{"ph":"f","bp":"e","cat":"submit","name":"submit","id":"{span_id}","pid":{worker_pid},'
            f'"tid":{tid},"ts":{run_ts}}}'
        )

    def _count(self, index: int, submitted: int, running: int | None, finished: int) -> None:
        """The changes of the queued and running counts that a task made."""
        self._counters.add(submitted, index, 1, 0)
        if running is None:  # cancelled, or refused, before it started
            self._counters.add(finished, index, -1, 0)
        else:
            self._counters.add(running, index, -1, 1)
            self._counters.add(finished, index, 0, -1)
        if len(self._counters.changes) > CHUNK:
            self._write_counters(self._watermark())

    def _broke(self, executor: str, error_type: str, ns: int) -> bool:
        """Whether a task that failed with ``error_type`` was ended by its process pool's broken state; the first
        such task of an executor marks the workers that died."""
        if not error_type.endswith(BROKEN_POOL):
            return False
        if executor not in self._broken:
            self._broken.add(executor)
            self._worker_died(executor, ns)
        return True

    def _worker_died(self, executor: str, ns: int) -> None:
        """An instant event (``"ph": "i"``, category ``worker``) where each worker process of ``executor`` that has
        died ended, as its pool broke (its first task ended by ``BrokenProcessPool``): on the lane of the last task
        it ran, with its exit code (a negative one: killed by that signal)."""
        for _, pool in pools_by_name().get(executor, ()):
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                code = getattr(process, "exitcode", None)
                pid = getattr(process, "pid", None)
                if code is None or not isinstance(pid, int):
                    continue
                args: dict[str, Any] = {"executor": executor, "exit_code": code}
                if code < 0:
                    with contextlib.suppress(ValueError):
                        args["signal"] = signal.Signals(-code).name
                if pid not in self._named_pids:
                    self._named_pids.add(pid)
                    self._event(self._meta("process_name", pid, 0, f"{executor} worker"))
                tid = self._last_tid.get(pid, 0)
                self._event(
                    f'{{"ph":"i","s":"p","cat":"worker","name":"worker died","pid":{pid},"tid":{tid},'
                    f'"ts":{_us(ns - self._origin)},"args":{json.dumps(args)}}}'
                )

    def _read_cpu(self, now: int) -> None:
        """A ``cpu`` counter event for each executor drawn so far whose workers' CPU can be read (under ``_lock``)."""
        self._cpu_read = now
        pools = pools_by_name()
        ts = _us(now - self._origin)
        for name in self._executors:
            cpu = self._cpu.get(name)
            if cpu is None:
                cpu = self._cpu[name] = WorkerCpu(waits=True)
            cpu_ns = cpu.read(pools.get(name, ()))
            if cpu_ns is not None:
                key = json.dumps(name)
                for counter, ns in (("cpu", cpu_ns), ("cpu_wait", cpu.waited_ns)):
                    seconds = f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"  # exactly, as ``_us`` writes times
                    self._event(
                        f'{{"ph":"C","name":"{counter}","id":{key},"pid":{self._pid},"ts":{ts},'
                        f'"args":{{{key}:{seconds}}}}}'
                    )

    def _draw(self) -> bool:
        """Whether one more slice is drawn (at most ``max_tasks``); one past the cap is counted in ``left_out``."""
        if self.drawn >= self.max_tasks:
            self.left_out += 1
            return False
        self.drawn += 1
        return True

    def _call(self, span: ReadableSpan, started: _Started) -> None:
        if not self._draw():
            return
        context = span.context
        assert context is not None
        attributes = span.attributes or {}
        args = {key: value for key, value in attributes.items() if key.startswith("futures.")}
        args["trace_id"], args["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        start, end = span.start_time or 0, span.end_time or 0
        tid = self._tid(self._pid, started[0], started[1])
        self._event(
            f'{{"ph":"X","cat":"futures","name":"{_CALLS[span.name]}","pid":{self._pid},"tid":{tid},'
            f'"ts":{_us(start - self._origin)},"dur":{_us(max(end - start, 0))},"args":{json.dumps(args)}}}'
        )

    # -- names, tracks and the file --------------------------------------------------------------------------
    def _tid(self, pid: int, thread_id: int, name: str) -> int:
        """The small tid that stands for the thread ``thread_id`` called ``name`` in ``pid`` (JSON readers take
        32-bit tids, a Python thread id is 64-bit; a thread that started after another one ended may get its id),
        named in the file the first time it is seen."""
        key = (pid, thread_id, name)
        tid = self._tids.get(key)
        if tid is None:
            tid = self._tids[key] = len(self._tids) + 1
            self._event(self._meta("thread_name", pid, tid, name or f"thread {thread_id}"))
        return tid

    def _name(self, name: str) -> str:
        encoded = self._names.get(name)
        if encoded is None:
            encoded = json.dumps(name)
            if len(self._names) < 4096:
                self._names[name] = encoded
        return encoded

    def _executor(self, name: str, attributes: Any) -> int:
        index = self._executors.get(name)
        if index is None:
            index = self._executors[name] = len(self._executors)
            live = executors_now().get(name)  # (kind, max_workers) of the live executors of that name
            info = self._executor_info[name] = {
                "kind": str(attributes.get(EXECUTOR_KIND, "")),
                "max_workers": live[1] if live is not None else None,
            }
            self._event(self._own(EXECUTOR, {"name": name, **info}))
        return index

    @staticmethod
    def _meta(what: str, pid: int, tid: int, name: str) -> str:
        return f'{{"ph":"M","name":"{what}","pid":{pid},"tid":{tid},"args":{{"name":{json.dumps(name)}}}}}'

    def _own(self, what: str, args: dict[str, Any]) -> str:
        encoded = json.dumps(args, separators=(",", ":"))
        return f'{{"ph":"M","name":"{what}","pid":{self._pid},"tid":0,"args":{encoded}}}'

    def _event(self, event: str) -> None:
        """One event, a line of its own ending with a comma: the file is a JSON array that the viewers (and the
        report) read also without its end, cut at any line."""
        event += ",\n"
        self._buffer.append(event)
        self._buffered += len(event)

    def _flush(self) -> None:
        data = "".join(self._buffer).encode("utf-8")
        self._buffer, self._buffered = [], 0
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _write_counters(self, watermark: int | None) -> None:
        """Each executor's queued and running counts at every change up to ``watermark`` (every change held when
        None), in time order: one sample per change of the time, for the executors that changed then."""
        names = list(self._executors)
        counts = self._counts
        while len(counts) < len(names):
            counts.append([0, 0])
        changed: set[int] = set()
        now = None
        for ns, index, queued, running in self._counters.ready(watermark):
            if ns != now and changed:
                assert now is not None
                for changed_index in sorted(changed):
                    self._counter_events(now, names[changed_index], counts[changed_index])
                changed.clear()
            now = ns
            counts[index][0] += queued
            counts[index][1] += running
            changed.add(index)
        if changed:
            assert now is not None
            for changed_index in sorted(changed):
                self._counter_events(now, names[changed_index], counts[changed_index])

    def _counter_events(self, ns: int, executor: str, counts: list[int]) -> None:
        name = json.dumps(executor)
        ts = _us(ns - self._origin)
        for counter, value in zip(("queued", "running"), counts):
            self._event(
                f'{{"ph":"C","name":"{counter}","id":{name},"pid":{self._pid},"ts":{ts},"args":{{{name}:{value}}}}}'
            )

    def after_fork(self) -> None:
        """In a forked child: the file is the parent's; the child writes nothing to it and keeps nothing of it."""
        self._closed = True
        self._stop.set()
        self._buffer, self._buffered = [], 0
        self._started = {}
        self._counters = _Counters()
        self._cpu = {}
        self._lock = threading.Lock()


def _program_name() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return program or "python"
