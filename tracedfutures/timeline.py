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
and closes with its end (``tracedfutures_end``: ``drawn``, ``left_out`` and, when some were, ``spans_left_out``),
which a file cut short lacks.

``tracedfutures record -o trace.json -- python app.py`` writes the same file without making spans: the writer is
fed by each executor's lifecycle (``TimelineWriter.lifecycle_hook``, ``state.timeline_hook``), and the tasks it
hears end are written by the writer's own thread, off the tasks' path; the spans of a program that traces are seen
by the writer's ``spans_in_tasks`` processor.

What is written, for each task (times in microseconds from the writer's start, the header's ``origin_unix_ns``;
docs/timeline.md has the whole table):

- a complete slice (``"ph": "X"``) over the task's real run, on the process and thread that ran it (``pid`` the
  worker process, ``tid`` a small number per thread, named by ``"ph": "M"`` ``process_name`` / ``thread_name``
  events, the latter with the ``thread.id``), named by its function, with ``args`` ``id`` (the task's number in
  the file), ``executor`` and, only where they say something, ``outcome`` (none: a success), ``error.type``,
  ``executor.task.batch_size`` for a joblib batch, ``trace_id`` and ``span_id`` where the task has a span and,
  under ``tracedfutures record``, ``cpu_time``: the CPU seconds it used on its worker thread (read in the worker
  for a process pool's task, sent home with its outcome);
- the time it spent queued, an async slice (``"b"`` / ``"e"``, category ``queued``, ``id`` the task's number) from
  submit to its start (to its end for a task that never ran, whose ``b`` args say ``executor``, ``outcome``,
  ``"ran": false`` and, for an error, its ``error.type``: cancelled, refused by a pool shut down or broken, ended by
  ``BrokenProcessPool`` before a worker was heard to start it);
- a ``"ph": "i"`` event ``worker died`` (category ``worker``) on the lane of each worker process of a process pool
  that had died when the pool broke, with its ``exit_code`` and ``signal``; under ``tracedfutures record``, the
  task it was running there (its pool's start board says which, and since when) is a slice on that lane from its
  start to that event, ``args`` ``worker_died`` (true), ``exit_code`` and ``signal`` (a task another worker was
  running, which the break ended too, is drawn the same way, without them);
- the spans the task's own code made (with the program's tracer, under its task span: in a worker thread, and in
  a worker process, whose spans come home with the outcome), as complete slices (category ``span``) on the task's
  lane inside its slice, which the viewers draw below it: named by the span, at its times, with ``args`` ``task``
  (the task's number) and nothing else of it; at most ``MAX_TASK_SPANS`` a task, those that nest (in the task's
  slice and in each other, as a lane's slices must; a span that ends after its task is not drawn either), the rest
  counted on the task's slice (``spans_left_out``). Under ``tracedfutures record`` they are drawn when the program
  sets an SDK tracer provider as the global one (which makes the task spans); the writer as a span processor draws
  those of the tasks whose spans it sees;
- ``wait`` and ``as_completed`` calls as slices on the caller's thread;
- counters (``"C"``) ``queued`` and ``running`` per executor (``id`` and the one ``args`` key are the executor's
  name): each count's mean over each ``COUNTER_EVERY_NS`` step it changed in, then the count after it (``_Step``),
  so that their time integrals are exact;
- a counter ``program_cpu``: the program's CPU seconds at every flush;
- counters ``cpu`` and ``cpu_wait`` per executor: the CPU seconds its workers used so far, and the seconds they
  were runnable but waiting for a CPU (``_worker_cpu``; 0 where the kernel does not say), read as tasks end, at
  most every ``CPU_EVERY_NS``, and when the file is finished (a worker that ended in between keeps its last read,
  so what it used after that is missing).

Memory stays bounded however long the run: events go to the file as spans end (through a buffer of
``BUFFER_BYTES``, flushed every second), and each counter change is written in time order once none can come
before it (``_Counters``: at most ``CHUNK`` held), and a task's spans are held until the task is drawn (at most
``MAX_HELD_SPANS`` of all tasks at once; past it they are counted in the end's ``spans_left_out``). The file is
bounded by ``max_tasks`` (default ``DEFAULT_MAX_TASKS``): tasks and calls that end past it leave no slice (nor do
their spans), and the end's ``left_out`` counts them; the counters still count every task.

Only spans that this processor saw start are drawn as tasks and calls: task spans of this process's executors and
its own ``wait`` / ``as_completed`` calls. Nothing of a task's arguments or results is written, nor exception
messages.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import operator
import os
import signal
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures._base import FINISHED
from itertools import accumulate, repeat, starmap
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from tracedfutures import _start_board, _worker_spans
from tracedfutures._lifecycle import TracedFuture, not_listening
from tracedfutures._naming import error_type, function_name, joblib_calls
from tracedfutures._running import executors_now, pools_by_name, thread_name
from tracedfutures._state import state
from tracedfutures._telemetry import telemetry_failed
from tracedfutures._worker_cpu import WorkerCpu
from tracedfutures.spans import (
    AS_COMPLETED_SPAN,
    BATCH_SIZE,
    CODE_FUNCTION,
    EXECUTOR_KIND,
    EXECUTOR_NAME,
    PROCESS_EXIT_CODE,
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
#: The tasks the lifecycle hooks queue are written by the writer's thread this often (seconds), ...
DRAIN_EVERY_S = 0.05
#: ... or by the thread that ends a task once more than this many wait.
MAX_QUEUED = 50_000
#: Counter changes this recent (ns) are held back at a flush: the task they belong to may not be heard of yet.
HOLD_NS = 100_000_000
#: The names of the writer's own metadata events (``"ph": "M"``): its header (first in the file), each executor
#: the first time it is seen, and the end (last in the file; a file without it was cut short).
HEAD, EXECUTOR, END = "tracedfutures", "tracedfutures_executor", "tracedfutures_end"
#: The queued and running counters are written at most this often per executor (ns): the counts after the last
#: change of each such step, at its time, each only when it is not the value written before.
COUNTER_EVERY_NS = 1_000_000
#: The executors' workers' CPU is read as tasks end, at most this often (ns).
CPU_EVERY_NS = 50_000_000
#: The spans a task's own code makes that are drawn inside its slice at most (as many as travel home from a worker
#: process); the rest are counted on the slice (``spans_left_out``).
MAX_TASK_SPANS = _worker_spans.MAX_WORKER_SPANS
#: Spans of tasks held at most, ended but not drawn yet (their task has not ended, or is waiting to be written);
#: past it, spans are left out and counted in the end event (``spans_left_out``).
MAX_HELD_SPANS = 1 << 16

#: The threads of this process whose lanes the writer keeps at hand (``TimelineWriter._here_lane``).
MAX_LANES = 4096
#: How the error type of a task that a process pool's broken state ended ends.
BROKEN_POOL = "BrokenProcessPool"

_CALLS = {WAIT_SPAN: "wait", AS_COMPLETED_SPAN: "as_completed"}
#: Where the span started: the starting thread's id and name, and when ``on_start`` ran (ns).
_Started = tuple[int, str, int]
#: A span a task's code made, as it is drawn: its name, start and end (ns).
_Inside = tuple[str, int, int]


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
        # Changes the lifecycle hooks add as they happen, from any thread, without the writer's lock.
        self.incoming: deque[tuple[int, int, int, int]] = deque()
        self.written_ns = 0  # the time of the last change written

    def add(self, ns: int, executor: int, queued: int, running: int) -> None:
        self.changes.append((ns, executor, queued, running))

    def held(self) -> int:
        return len(self.changes) + len(self.incoming)

    def ready(self, watermark: int | None) -> list[tuple[int, int, int, int]]:
        """The changes up to ``watermark`` (every one when None), in time order; they are taken out."""
        changes = self.changes
        incoming = self.incoming
        changes.extend(starmap(incoming.popleft, repeat((), len(incoming))))  # those added so far, in C
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


_ns = operator.itemgetter(0)
_d_queued = operator.itemgetter(2)
_d_running = operator.itemgetter(3)


class _Step:
    """One executor's queued and running counters, written a ``COUNTER_EVERY_NS`` step at a time: each sample is
    the mean of the counts over its step (the time each count lasted in it), at the step's start, so that their
    time integrals stay exact (the busy worker-seconds a ``running`` track adds up to are the tasks' run time)
    while the file holds at most two samples per step; a value that did not change is not written again (it holds
    until the next sample)."""

    __slots__ = ("area", "counts", "last", "name", "open", "written")

    def __init__(self, name: str) -> None:
        self.name = name  # the executor's name, as JSON
        self.counts = [0, 0]  # queued, running: now (after the last change read)
        self.open = -1  # the step being summed up (its index), -1: none
        self.last = 0  # the time up to which ``area`` sums the counts (ns)
        self.area = [0, 0]  # the counts' integral (count ns) over the open step, up to ``last``
        self.written = [-1.0, -1.0]  # the values written last

    def feed(self, writer: TimelineWriter, changes: list[tuple[int, int, int, int]]) -> None:
        """Sum up this executor's ``changes`` (ns, executor, d_queued, d_running), in time order: each step they
        leave is written (``_end``), the step of the last one stays open. The counts' integral is summed in C
        (``accumulate``): the work in Python is per step, not per change."""
        if not changes:
            return
        width = COUNTER_EVERY_NS
        last = self.last
        if changes[0][0] < last:  # later than what was written: counted at the last time
            changes = [(max(ns, last), *rest) for ns, *rest in changes]  # type: ignore[misc]
        times = list(map(_ns, changes))
        points = [last, *times]  # the times from which each count holds
        queued = list(accumulate(map(_d_queued, changes), initial=self.counts[0]))
        running = list(accumulate(map(_d_running, changes), initial=self.counts[1]))
        lengths = list(map(operator.sub, times, points))
        area_q = list(accumulate(map(operator.mul, queued, lengths), initial=0))  # the integral from ``last``
        area_r = list(accumulate(map(operator.mul, running, lengths), initial=0))

        def at(ns: int) -> tuple[int, int, int]:
            """The point that holds at ``ns`` (>= last) and the counts' integrals from ``last`` to ``ns``."""
            i = bisect.bisect_right(points, ns) - 1
            held = ns - points[i]
            return i, area_q[i] + queued[i] * held, area_r[i] + running[i] * held

        step = self.open
        from_q, from_r = -self.area[0], -self.area[1]  # the integrals at the open step's start, from ``last``
        for new in dict.fromkeys(map(width.__rfloordiv__, times)):  # the steps of the changes, in order
            if new == step:
                continue
            if step >= 0:  # the step summed so far ends: its means at its start, and the counts at its end if the
                end = (step + 1) * width  # next step is not the one that opens now
                i, end_q, end_r = at(end)
                self._write(writer, step * width, [(end_q - from_q) / width, (end_r - from_r) / width])
                if new > step + 1:
                    self._write(writer, end, [float(queued[i]), float(running[i])])
            step = new
            _, from_q, from_r = at(max(new * width, last))
        self.open = step
        self.last = points[-1]
        self.counts = [queued[-1], running[-1]]
        self.area = [area_q[-1] - from_q, area_r[-1] - from_r]

    def close(self, writer: TimelineWriter, watermark: int | None) -> None:
        """Write the open step if no change can come in it any more (all of them when ``watermark`` is None)."""
        if self.open >= 0 and (watermark is None or (self.open + 1) * COUNTER_EVERY_NS <= watermark):
            self._end(writer, gap=True)

    def _end(self, writer: TimelineWriter, gap: bool) -> None:
        """Write the open step's means at its start, then, if the next step is not the one that opens now
        (``gap``), the counts that hold from its end on; no step is open then."""
        start = self.open * COUNTER_EVERY_NS
        end = start + COUNTER_EVERY_NS
        counts, area = self.counts, self.area
        means = [
            (area[0] + counts[0] * (end - self.last)) / COUNTER_EVERY_NS,
            (area[1] + counts[1] * (end - self.last)) / COUNTER_EVERY_NS,
        ]
        self._write(writer, start, means)
        if gap:
            self._write(writer, end, [float(counts[0]), float(counts[1])])
        self.open = -1
        self.area = [0, 0]

    def _write(self, writer: TimelineWriter, ns: int, values: list[float]) -> None:
        for which, counter in enumerate(("queued", "running")):
            value = round(values[which], 3)
            if value != self.written[which]:
                self.written[which] = value
                writer._counter(counter, self.name, ns, int(value) if value.is_integer() else value)


#: This process's live threads by id, as ``threading`` keeps them (read, never written): the current thread's
#: ``Thread`` without a call in Python (``threading.current_thread()`` where it is missing).
_live_threads: dict[int, threading.Thread] = getattr(threading, "_active", {})


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _SpansInTasks(SpanProcessor):
    """The span processor that keeps the spans a task's own code makes (``tracer.start_as_current_span("resize")``
    in a task function, with the program's tracer) until the writer draws the task, which draws them inside its
    slice (``TimelineWriter._ended``). The writer calls it for the spans it does not draw itself; ``tracedfutures
    record`` adds it to the SDK tracer provider the program sets as the global one (``_recording``).

    A span is a task's when it starts under the task span, or under a span that is a task's: in a worker thread (or
    wherever the task span is current) the parent span object is in the context it starts in, and a task span is one
    with an ``executor.name``. The spans a worker process made for a task come home with its outcome and are handed
    to the processors in one go before the task span ends: ``_worker_spans.home_task`` names their task. Task spans
    and ``wait`` / ``as_completed`` spans are never a task's (the writer draws them as they are); a span that ends
    after its task span ended is not kept (its task may have been drawn). Only a span's name and times are kept.

    A span costs two dict operations and, once it ended, a tuple under a lock of its own; a task that makes no span
    costs nothing but, where the program makes task spans, a look-up of its span as it starts and ends."""

    def __init__(self, writer: TimelineWriter) -> None:
        self.writer = writer
        self._lock = threading.Lock()
        self._owners: dict[int, Span] = {}  # span id of a task's span that started and has not ended -> task span
        self.held: dict[int, list[_Inside]] = {}  # task span id -> its spans that ended, until it is drawn
        self._over: dict[int, int] = {}  # task span id -> its spans past ``MAX_TASK_SPANS``
        self._count = 0  # spans held
        self.left_out = 0  # spans not held: past ``MAX_HELD_SPANS``

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note whose span this is, if it is a task's: its parent is a task span, or a span of a task."""
        parent = span.parent
        if parent is None or self.writer._closed:
            return
        task = self._owners.get(parent.span_id)
        if task is None:
            current = trace.get_current_span(parent_context)  # the parent span object, where the context holds it
            attributes = getattr(current, "attributes", None)
            if not attributes or EXECUTOR_NAME not in attributes or not isinstance(current, Span):
                return
            if current.get_span_context().span_id != parent.span_id:
                return
            task = current
        if span.name in _CALLS or EXECUTOR_NAME in (span.attributes or {}):
            return  # a task's wait or another task: drawn as they are
        if len(self._owners) < MAX_HELD_SPANS:
            self._owners[span.get_span_context().span_id] = task

    def on_end(self, span: ReadableSpan) -> None:
        """Keep a task's span that ended, by its task span's id."""
        context = span.context
        if context is None:
            return
        task = self._owners.pop(context.span_id, None) if self._owners else None
        if task is not None:
            if not task.is_recording():  # its task span ended before it: the task may have been drawn
                return
            task_id = task.get_span_context().span_id
        else:
            if span.parent is None:  # a root span (a task span, say): no task's
                return
            home = _worker_spans.home_task()  # a span a worker process made for the task that ends now?
            if home is None or span.name in _CALLS or EXECUTOR_NAME in (span.attributes or {}):
                return
            task_id = home.span_id
        kept = (span.name, span.start_time or 0, span.end_time or 0)
        with self._lock:
            if self._count >= MAX_HELD_SPANS:
                self.left_out += 1
                return
            spans = self.held.get(task_id)
            if spans is None:
                spans = self.held[task_id] = []
            elif len(spans) >= MAX_TASK_SPANS:
                self._over[task_id] = self._over.get(task_id, 0) + 1
                return
            spans.append(kept)
            self._count += 1

    def take(self, span_id: str) -> tuple[list[_Inside], int]:
        """The spans of the task whose span id is ``span_id`` (hex), taken out, and how many of them were not held
        (past ``MAX_TASK_SPANS``)."""
        key = int(span_id, 16)
        with self._lock:
            spans = self.held.pop(key, None)
            if spans is None:
                return [], 0
            self._count -= len(spans)
            return spans, self._over.pop(key, 0)

    def shutdown(self) -> None:
        """The writer's file is finished by the writer (``TimelineWriter.shutdown``), not by a provider."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._owners, self.held, self._over, self._count = {}, {}, {}, 0


def _nested(spans: list[_Inside], start: int, end: int) -> list[_Inside]:
    """The spans that nest in the slice from ``start`` to ``end`` and in each other, as slices on one lane must (a
    viewer stacks a lane's slices by time), by start, the longer first: a span that would cross one drawn before it
    (one the task's code ended in another thread, say) is not drawn."""
    drawn: list[_Inside] = []
    ends = [end]  # the ends of the slices open at each span's start, innermost last
    for span in sorted(spans, key=_start_then_longest):
        _, span_start, span_end = span
        while len(ends) > 1 and ends[-1] <= span_start:
            ends.pop()
        if span_start < start or span_end > ends[-1] or span_end < span_start:
            continue
        ends.append(span_end)
        drawn.append(span)
    return drawn


def _start_then_longest(span: _Inside) -> tuple[int, int]:
    return span[1], -span[2]


class _Ended(NamedTuple):
    """A task that ended, as the writer draws it, from its span or from its future (``_TimelineHook``)."""

    executor: str
    kind: str
    function: str  # what its slices are named by
    batch: Any  # a joblib batch's size, else None
    submitter: Any  # the submitting thread: its ``Thread``, or (its id, its name)
    submitted: int
    running: int | None  # its real start (ns), None if it never ran
    finished: int  # its real end
    ended: int  # when its future ended here
    outcome: str
    error_type: str
    ran_on: Any  # where it ran: (pid, thread id, thread name), or the ``Thread`` of this process; None: not known
    cpu_time: float | None
    ids: tuple[str, str] | None  # its span's trace id and span id, if it has a span
    # A task its process pool's break ended while a worker process ran it (its pool's start board said so, under
    # ``tracedfutures record``): that worker's pid and exit code (None: it lived, the pool ended it as it broke).
    cut_short: tuple[int, int | None] | None = None


def _broken_pools(executor: str) -> list[Any]:
    """The pools named ``executor`` that broke, and those that do not say (``pools_by_name`` would miss a pool that
    broke with its last task: the break shuts it down, and that task has ended)."""
    with state.running_lock:
        tables = list(state.running)
    pools = [table.executor() for table in tables if table.name == executor and table.executor is not None]
    return [pool for pool in pools if pool is not None and getattr(pool, "_broken", True)]


def _exit(code: int) -> dict[str, Any]:
    """A worker process's ``exit_code`` and, when a signal ended it (a negative code), that ``signal``'s name."""
    found: dict[str, Any] = {"exit_code": code}
    if code < 0:
        with contextlib.suppress(ValueError):
            found["signal"] = signal.Signals(-code).name
    return found


def _us(ns: int) -> str:
    """Nanoseconds as microseconds, exactly (no float rounding in the file)."""
    if ns < 0:
        return "-" + _us(-ns)
    return "%d.%03d" % divmod(ns, 1000)  # noqa: UP031 (one format of a tuple: the fastest, on every event)


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
        self._lanes: dict[Any, str] = {}  # a thread here (its Thread, or its id and name) -> its lane
        self._named_pids = {self._pid}  # the processes named in the file so far
        self._names: dict[str, str] = {}  # span name -> as a JSON string
        self._executors: dict[str, int] = {}  # executor name -> index in the counters
        self._executor_info: dict[str, dict[str, Any]] = {}
        self._counters = _Counters()
        self._remote_hooks: weakref.WeakSet[_TimelineHook] = weakref.WeakSet()  # hooks of pools run elsewhere
        self._ended_queue: deque[_Ended] = deque()  # tasks the lifecycle hooks ended, not written yet
        self._broken: set[str] = set()  # the executors whose pool broke (a task ended with BROKEN_POOL)
        self._marked: weakref.WeakSet[Any] = weakref.WeakSet()  # the broken pools whose dead workers are marked
        self._last_tid: dict[int, int] = {}  # pid -> the tid of the last task drawn there
        self._steps: list[_Step] = []  # each executor's counters, as written so far
        self._cpu: dict[str, WorkerCpu] = {}  # executor name -> its workers' CPU, read as tasks end
        self._cpu_read = 0  # when it was last read (ns)
        self._in_tasks = _SpansInTasks(self)
        self.drawn = 0
        self.left_out = 0
        self._tasks = 0  # the tasks drawn: each one's number is its id in the file
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
    def spans_in_tasks(self) -> SpanProcessor:
        """The span processor that feeds this writer the spans tasks make, to be drawn inside their tasks' slices,
        for a tracer provider whose task spans this writer does not draw itself (``tracedfutures record`` adds it
        to the program's own); the writer, as a provider's span processor, does its work already."""
        return self._in_tasks

    @property
    def executors(self) -> tuple[str, ...]:
        """The names of the executors whose tasks this writer has seen end, in the order it first saw them."""
        return tuple(self._executor_info)

    # -- the span processor ----------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note the thread a task span or a wait / as_completed span starts on (the submitting or calling one), and
        when; any other span may be a task's (``_SpansInTasks``)."""
        attributes = span.attributes or {}
        if span.name in _CALLS or EXECUTOR_NAME in attributes:
            thread = threading.current_thread()
            context = span.get_span_context()
            self._started[context.span_id] = (thread.ident or 0, thread.name, time.time_ns())
        else:
            self._in_tasks.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Write the events of a task or wait span this processor saw start, keep a span a task made; a failure
        loses events, never the span."""
        context = span.context
        started = self._started.pop(context.span_id, None) if context is not None else None
        if started is None:
            if not self._closed:
                self._in_tasks.on_end(span)
            return
        if self._closed:
            return
        self._take(self._call if span.name in _CALLS else self._task, span, started)

    def _take(self, write: Any, *args: Any) -> None:
        """``write(*args)`` under the lock, then the buffer to the file if it is full; a failure loses events,
        never the program's spans or tasks."""
        try:
            with self._lock:
                if self._closed:
                    return
                write(*args)
                if self._buffered >= BUFFER_BYTES:
                    self._write_counters(self._watermark())
                    self._flush()
        except Exception as exc:  # a timeline that fails loses events, never the program's spans
            telemetry_failed("TimelineWriter", exc)

    # -- fed by the lifecycle (tracedfutures record) -----------------------------------------------------------
    def lifecycle_hook(self, executor: str, kind: str) -> _TimelineHook:
        """The hook that feeds this writer the tasks of ``executor`` from its lifecycle, without a span: what
        ``tracedfutures record`` sets up (``state.timeline_hook``)."""
        hook = (_TimedTimelineHook if kind in ("thread", "interpreter") else _TimelineHook)(self, executor, kind)
        if kind != "thread":  # its tasks' starts come home with their outcome (an interpreter pool's real start in
            self._remote_hooks.add(hook)  # its interpreter, too): they hold the watermark
        return hook

    def _queue_ended(self, task: _Ended, executor: str, broke: bool = False) -> None:
        """A task that a lifecycle hook heard end, in the task's thread: queued for the writer's thread, but for
        what must be read now (the workers' CPU, every ``CPU_EVERY_NS``: the pool may end soon; the processes of a
        pool that broke: ``broke``, the first task its pool's break ended, as its hook knows it, or the first of its
        executor name)."""
        if task.ended - self._cpu_read >= CPU_EVERY_NS:
            self._take(self._read_cpu, task.ended)
        queue = self._ended_queue
        if broke or (task.error_type.endswith(BROKEN_POOL) and executor not in self._broken):
            self._take(self._drain)  # now, while the pool's processes are as the break found them
            if broke:  # also a pool named as one that broke before (a program that makes a new one after a break)
                self._take(self._worker_died, executor, task.ended)
            self._take(self._ended, task)
        else:
            queue.append(task)  # written by the writer's thread, off the task's path
            if len(queue) > MAX_QUEUED:  # the writer's thread is behind: this task's thread helps
                self._take(self._drain)

    def call_ended(self, name: str, start: int, end: int, attributes: Any) -> None:
        """A ``wait`` / ``as_completed`` call (span name ``name``) ended in this thread (``state.timeline_call``)."""
        if not self._closed:
            thread = threading.current_thread()
            self._take(self._call_ended, name, (thread.ident or 0, thread.name), start, end, attributes, None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write the events buffered so far, and the counters' changes that are final, to the file (which stays
        readable as it is: see ``tracedfutures._cli.timeline_reader``)."""
        with self._lock:
            if not self._closed:
                self._drain()
                now = time.time_ns()
                self._read_cpu(now)
                # The program's CPU seconds at every flush: a file cut short says how long it covers.
                self._event(
                    f'{{"ph":"C","name":"program_cpu","id":"program","pid":{self._pid},'
                    f'"ts":{_us(now - self._origin)},"args":{{"program":{time.process_time():.6f}}}}}'
                )
                self._write_counters(self._watermark())
                self._flush()
        return True

    def _flush_every_second(self) -> None:
        """The writer's thread: it writes the events of the tasks the lifecycle hooks queued (``_ended_queue``)
        every ``DRAIN_EVERY_S``, off the tasks' path, and what it holds goes to the file every ``FLUSH_EVERY_S``, so
        that a program killed (``os._exit``, SIGKILL, a crash) leaves a file that holds all but its last second."""
        flushed = time.monotonic()
        while not self._stop.wait(DRAIN_EVERY_S):
            try:
                if time.monotonic() - flushed >= FLUSH_EVERY_S:
                    flushed = time.monotonic()
                    self.force_flush()
                elif self._ended_queue:
                    self._take(self._drain)
            except Exception as exc:  # a timeline that fails loses events, never the program's work
                telemetry_failed("TimelineWriter", exc)
            if self._closed:
                return

    def _drain(self) -> None:
        """Write the tasks the lifecycle hooks queued (under ``_lock``)."""
        queue, ended = self._ended_queue, self._ended
        for _ in range(len(queue)):
            ended(queue.popleft())

    def _watermark(self) -> int:
        """The time before which no counter change can come any more: the submit of the oldest task still queued
        or running (its start and its end come later), and not the last ``HOLD_NS``."""
        now = time.time_ns() - HOLD_NS
        oldest = min((started[2] for started in list(self._started.values())), default=now)
        for hook in list(self._remote_hooks):  # a task run elsewhere starts after its submit, and is heard of later
            oldest = min(oldest, min((future.submitted_ns for future in list(hook.pending)), default=oldest))
        return min(now, oldest - HOLD_NS)

    def shutdown(self) -> None:
        """Write the counters, the names and ``otherData``, and close the file (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            try:
                self._drain()
                self._read_cpu(time.time_ns())
                self._write_counters(None)
                end: dict[str, Any] = {"drawn": self.drawn, "left_out": self.left_out}
                if self._in_tasks.left_out:
                    end["spans_left_out"] = self._in_tasks.left_out
                # The last event has no comma after it: the array is closed.
                self._buffer.append(self._own(END, end) + "\n]\n")
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
        """A task span, as a task that ended."""
        attributes = span.attributes or {}
        running = next((e.timestamp for e in span.events if e.name == RUNNING_EVENT), None)
        run_for = attributes.get(RUN_DURATION)
        ended = span.end_time or 0
        thread_id = attributes.get(THREAD_ID)
        worker_pid = attributes.get(PROCESS_PID, self._pid)  # none: a thread of this process
        error = attributes.get(ERROR_TYPE)
        context = span.context
        assert context is not None
        cpu_time = attributes.get(TASK_CPU_TIME)
        cut_short = None
        if running and thread_id is None and isinstance(worker_pid, int) and str(error or "").endswith(BROKEN_POOL):
            # Its worker process was running it when its pool broke (``spans._where_it_was_cut_short``).
            exit_code = attributes.get(PROCESS_EXIT_CODE)
            cut_short = (worker_pid, exit_code if isinstance(exit_code, int) else None)
        task = _Ended(
            executor=str(attributes.get(EXECUTOR_NAME, "")),
            kind=str(attributes.get(EXECUTOR_KIND, "")),
            function=str(attributes.get(CODE_FUNCTION, "")),
            batch=attributes.get(BATCH_SIZE),
            submitter=started[:2],
            submitted=span.start_time or 0,
            running=running,
            finished=running + round(float(run_for) * 1e9) if running and isinstance(run_for, float) else ended,
            ended=ended,
            outcome="error" if error is not None else "cancelled" if attributes.get(TASK_CANCELLED) else "success",
            error_type=str(error or ""),
            ran_on=(worker_pid, thread_id, str(attributes.get(THREAD_NAME, "")))
            if isinstance(worker_pid, int) and isinstance(thread_id, int)
            else None,
            cpu_time=cpu_time if isinstance(cpu_time, float) else None,
            ids=(f"{context.trace_id:032x}", f"{context.span_id:016x}"),
            cut_short=cut_short,
        )
        self._count(self._executor(task.executor, task.kind), task.submitted, task.running, task.finished)
        if task.ended - self._cpu_read >= CPU_EVERY_NS:
            self._read_cpu(task.ended)
        self._ended(task)

    def _ended(self, task: _Ended) -> None:
        """Write a task that ended (under ``_lock``): its queued slice and, if it ran, its slice on the worker that
        ran it, with the spans its code made inside it (its counters' changes are counted apart: ``_Counters``)."""
        (executor, kind, function, batch, submitter, submitted, running, finished, ended, outcome, error, ran_on,
         cpu_time, ids, cut_short) = task  # fmt: skip
        if executor not in self._executor_info:
            self._executor(executor, kind)
        inside, over = self._in_tasks.take(ids[1]) if ids is not None and self._in_tasks.held else ([], 0)
        broke = outcome == "error" and self._broke(executor, error, ended)
        if broke and ran_on is None and cut_short is None:
            running = None  # handed to the call queue, never heard of in a worker: drawn as it queued
        if not self._draw():
            return
        self._tasks = number = self._tasks + 1  # the task's id in the file: joins its queued slice to its slice
        name = self._names.get(function) or self._name(function)  # its slices are named by its function
        submitter = self._lanes.get(submitter) or self._here_lane(submitter)
        head = f'"cat":"queued","name":{name},"id":"{number:x}",{submitter}'
        if running is None:  # it never ran: its queued slice is all there is of it
            self._never_ran(task, head)
            return
        lane = self._lanes.get(ran_on) or self._lane(task) if type(ran_on) is not tuple else self._lane(task)
        if outcome == "success" and batch is None and ids is None and cut_short is None:  # what most tasks have
            extra = f',"cpu_time":{cpu_time!r}' if cpu_time is not None else ""
        else:
            extra = self._more_args(task)
        if inside:
            drawn = _nested(inside, running, max(finished, running))
            over += len(inside) - len(drawn)
            inside = drawn
        if over:
            extra += f',"spans_left_out":{over}'
        origin = self._origin
        if submitted >= origin:  # its times in microseconds, inline (``_us``)
            queued = submitted - origin
            ran = running - origin
            took = max(finished - running, 0)
            ts = f"{queued // 1000}.{queued % 1000:03d}"
            run_ts = f"{ran // 1000}.{ran % 1000:03d}"
            dur = f"{took // 1000}.{took % 1000:03d}"
        else:
            ts, run_ts, dur = _us(submitted - origin), _us(running - origin), _us(max(finished - running, 0))
        # Its queued slice's begin and end, and its slice, in one event of the buffer (one line each in the file).
        self._event(
            f'{{"ph":"b",{head},"ts":{ts}}},\n{{"ph":"e",{head},"ts":{run_ts}}},\n'
            f'{{"ph":"X","cat":"task","name":{name},{lane},"ts":{run_ts},"dur":{dur},'
            f'"args":{{"id":"{number:x}","executor":{self._names.get(executor) or self._name(executor)}{extra}}}}}'
        )
        for span_name, start, end in inside:
            self._event(
                f'{{"ph":"X","cat":"span","name":{self._name(span_name)},{lane},"ts":{_us(start - origin)},'
                f'"dur":{_us(end - start)},"args":{{"task":"{number:x}"}}}}'
            )

    def _never_ran(self, task: _Ended, head: str) -> None:
        """The queued slice of a task that never ran (``head``: its fields past ``ph``), all there is of it."""
        args: dict[str, Any] = {"executor": task.executor, "outcome": task.outcome, "ran": False}
        if task.outcome == "error":
            args["error.type"] = task.error_type
        if task.ids is not None:
            args["span_id"] = task.ids[1]
        self._event(
            f'{{"ph":"b",{head},"ts":{_us(task.submitted - self._origin)},"args":{_json(args)}}},\n'
            f'{{"ph":"e",{head},"ts":{_us(task.ended - self._origin)}}}'
        )

    def _lane(self, task: _Ended) -> str:
        """The lane (``"pid":...,"tid":...``) where a task that ran is drawn: the thread that ran it."""
        ran_on = task.ran_on
        if task.cut_short is not None:  # cut short in a worker process, on the lane of its death (``_worker_lane``)
            worker_pid = task.cut_short[0]
            return f'"pid":{worker_pid},"tid":{self._worker_lane(worker_pid, task.executor)}'
        if ran_on is None:  # where it ran is unknown: an unnamed lane here
            return f'"pid":{self._pid},"tid":{self._tid(self._pid, 0, "")}'
        if type(ran_on) is not tuple:  # a thread of this process
            return self._here_lane(ran_on)
        worker_pid = ran_on[0]
        if worker_pid not in self._named_pids:
            self._named_pids.add(worker_pid)
            self._event(self._meta("process_name", worker_pid, 0, f"{task.executor} worker"))
        tid = self._last_tid[worker_pid] = self._tid(worker_pid, ran_on[1], ran_on[2])
        return f'"pid":{worker_pid},"tid":{tid}'

    def _here_lane(self, thread: Any) -> str:
        """The lane (``"pid":...,"tid":...``) of a thread of this process, its ``Thread`` or (its id, its name),
        kept in ``_lanes`` (at most ``MAX_LANES`` threads: past it they are found again, on the lanes they had)."""
        thread_id, name = thread if type(thread) is tuple else (thread.ident or 0, thread.name)
        lane = f'"pid":{self._pid},"tid":{self._tid(self._pid, thread_id, name)}'
        if len(self._lanes) >= MAX_LANES:
            self._lanes.clear()
        self._lanes[thread] = lane
        return lane

    def _more_args(self, task: _Ended) -> str:
        """The args of a task slice past its id, executor and function, each only where it says something."""
        extra = ""
        if task.outcome != "success":
            extra += f',"outcome":"{task.outcome}"'
            if task.outcome == "error":
                extra += f',"error.type":{self._name(task.error_type)}'
        if task.batch is not None:
            extra += f',"{BATCH_SIZE}":{int(task.batch)}'
        if task.cpu_time is not None:
            extra += f',"cpu_time":{task.cpu_time!r}'
        if task.ids is not None:
            extra += f',"trace_id":"{task.ids[0]}","span_id":"{task.ids[1]}"'
        if task.cut_short is not None and task.cut_short[1] is not None:  # its worker died, running it
            died = {"worker_died": True, **_exit(task.cut_short[1])}
            extra += "," + json.dumps(died, separators=(",", ":"))[1:-1]
        return extra

    def _count(self, index: int, submitted: int, running: int | None, finished: int) -> None:
        """The changes of the queued and running counts that a task made."""
        self._counters.add(submitted, index, 1, 0)
        if running is None:  # cancelled, or refused, before it started
            self._counters.add(finished, index, -1, 0)
        else:
            self._counters.add(running, index, -1, 1)
            self._counters.add(finished, index, 0, -1)
        if self._counters.held() > CHUNK:
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
        it ran (where the task it was running is drawn, ``cut_short``), with its exit code (a negative one: killed
        by that signal). Each pool's once: a pool that broke before is not marked again."""
        for pool in _broken_pools(executor):
            if pool in self._marked:
                continue
            self._marked.add(pool)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                code = _start_board.exit_code(process)
                pid = getattr(process, "pid", None)
                if code is None or not isinstance(pid, int):
                    continue
                tid = self._worker_lane(pid, executor)
                self._event(
                    f'{{"ph":"i","s":"p","cat":"worker","name":"worker died","pid":{pid},"tid":{tid},'
                    f'"ts":{_us(ns - self._origin)},"args":{json.dumps({"executor": executor, **_exit(code)})}}}'
                )

    def _worker_lane(self, pid: int, executor: str) -> int:
        """The lane of worker process ``pid`` of ``executor`` where its death is drawn (its thread is not known):
        that of the last task drawn there, else its main thread's, which runs a process pool worker's tasks (named
        ``MainThread``, with ``thread.id`` 0: its id is not known); a task cut short there is drawn on it."""
        if pid not in self._named_pids:
            self._named_pids.add(pid)
            self._event(self._meta("process_name", pid, 0, f"{executor} worker"))
        tid = self._last_tid.get(pid)
        if tid is None:
            tid = self._last_tid[pid] = self._tid(pid, 0, "MainThread")
        return tid

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
        context = span.context
        assert context is not None
        ids = (f"{context.trace_id:032x}", f"{context.span_id:016x}")
        self._call_ended(span.name, started[:2], span.start_time or 0, span.end_time or 0, span.attributes, ids)

    def _call_ended(
        self, name: str, caller: tuple[int, str], start: int, end: int, attributes: Any, ids: tuple[str, str] | None
    ) -> None:
        """Write a ``wait`` / ``as_completed`` call that ended (under ``_lock``), on its caller's thread."""
        if not self._draw():
            return
        args = {key: value for key, value in (attributes or {}).items() if key.startswith("futures.")}
        if ids is not None:
            args["trace_id"], args["span_id"] = ids
        tid = self._tid(self._pid, caller[0], caller[1])
        self._event(
            f'{{"ph":"X","cat":"futures","name":"{_CALLS[name]}","pid":{self._pid},"tid":{tid},'
            f'"ts":{_us(start - self._origin)},"dur":{_us(max(end - start, 0))},"args":{_json(args)}}}'
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
            meta = self._meta("thread_name", pid, tid, name or f"thread {thread_id}")
            self._event(f'{meta[:-2]},"thread.id":{thread_id}}}}}')
        return tid

    def _name(self, name: str) -> str:
        encoded = self._names.get(name)
        if encoded is None:
            encoded = json.dumps(name)
            if len(self._names) < 4096:
                self._names[name] = encoded
        return encoded

    def _executor(self, name: str, kind: str) -> int:
        index = self._executors.get(name)
        if index is None:
            index = self._executors[name] = len(self._executors)
            live = executors_now().get(name)  # (kind, max_workers) of the live executors of that name
            info = self._executor_info[name] = {
                "kind": kind,
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
        """Each executor's queued and running counts, from the changes up to ``watermark`` (every change held when
        None), in time order, as ``_Step`` writes them."""
        steps = self._steps
        names = list(self._executors)
        while len(steps) < len(names):
            steps.append(_Step(self._name(names[len(steps)])))
        changes = self._counters.ready(watermark)
        if len(steps) == 1:
            steps[0].feed(self, changes)
        else:
            for index, step in enumerate(steps):
                step.feed(self, [change for change in changes if change[1] == index])
        for step in steps:
            step.close(self, watermark)

    def _counter(self, counter: str, name: str, ns: int, value: float) -> None:
        self._event(
            f'{{"ph":"C","name":"{counter}","id":{name},"pid":{self._pid},"ts":{_us(ns - self._origin)},'
            f'"args":{{{name}:{value}}}}}'
        )

    def after_fork(self) -> None:
        """In a forked child: the file is the parent's; the child writes nothing to it and keeps nothing of it."""
        self._closed = True
        self._stop.set()
        if state.timeline_hook == self.lifecycle_hook:  # the child's executors feed no timeline
            state.timeline_hook = state.timeline_call = None
        self._buffer, self._buffered = [], 0
        self._started = {}
        self._counters = _Counters()
        self._cpu = {}
        self._in_tasks.after_fork()
        self._lock = threading.Lock()


#: The callables whose ``__qualname__`` names them: a task's function is found once per name.
_NAMED_BY_QUALNAME = (types.FunctionType, types.MethodType)
#: An ``_Ended`` from a tuple of its fields, without a call in Python.
_new_ended: Callable[[tuple[Any, ...]], _Ended] = functools.partial(tuple.__new__, _Ended)
_get_ident = threading.get_ident
_thread_time_ns = time.thread_time_ns


class _TimelineHook:
    """Feeds a ``TimelineWriter`` one executor's tasks from its lifecycle, without spans (``tracedfutures record``):
    the submit (counted at once: queued + 1), the end (the task queued for the writer's thread, which draws it, its
    start and end counted). A task costs a dict entry while it lives, and a tuple when it ends."""

    __slots__ = ("__weakref__", "broke", "executor", "index", "kind", "named", "pending", "writer")

    def __init__(self, writer: TimelineWriter, executor: str, kind: str) -> None:
        self.writer = writer
        self.executor = executor
        self.kind = kind
        self.index = -1  # the executor's index in the writer's counters, once it has a task
        self.broke = 0  # when the executor's process pool broke: its first task ended by BrokenProcessPool (ns)
        self.named: dict[str, tuple[str, int | None]] = {}  # by a function's __qualname__: (its name, None)
        # The tasks queued or running: their function and joblib batch size, submitting thread, the thread's CPU
        # time at their start (0: not read) and whether their start was counted.
        self.pending: dict[TracedFuture, list[Any]] = {}

    def _naming(self, fn: Any, qualname: str | None) -> tuple[str, int | None]:
        """The function that names a task's slices and, for a joblib batch, its size; that of a function or a
        bound method is kept by its ``qualname`` (None for other callables), at most 256 of them."""
        if qualname is not None:
            naming = self.named[qualname] = (function_name(fn), None)
            if len(self.named) > 256:
                del self.named[qualname]
            return naming
        calls = joblib_calls(fn)
        return function_name(fn), len(calls) if calls is not None else None

    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        writer = self.writer
        if writer._closed:
            return
        try:
            if self.index < 0:
                with writer._lock:
                    self.index = writer._executor(self.executor, self.kind)
            qualname = fn.__qualname__ if type(fn) in _NAMED_BY_QUALNAME else None
            naming = self.named.get(qualname) if qualname is not None else None
            submitter = _live_threads.get(_get_ident()) or threading.current_thread()
            self.pending[future] = [naming or self._naming(fn, qualname), submitter, 0, False]
            writer._counters.incoming.append((future.submitted_ns, self.index, 1, 0))
        except Exception as exc:
            telemetry_failed("TimelineWriter", exc)

    @not_listening
    def on_start(self, future: TracedFuture) -> None:
        """A task run elsewhere starts where it runs: its start comes home with its outcome."""

    def on_finish(self, future: TracedFuture) -> None:
        entry = self.pending.pop(future, None)
        writer = self.writer
        if entry is None or writer._closed:
            return
        try:
            (function, batch), submitter, cpu_start, counted = entry
            running = future.started_ns or None
            finished = ended = future.finished_ns
            ran_on, cpu_time = _where(future, cpu_start)
            error = future._exception
            if error is not None:
                outcome, etype = "error", error_type(type(error))
            else:
                outcome, etype = "success" if future._state == FINISHED else "cancelled", ""
            cut_short = None
            add = writer._counters.incoming.append
            if running is None and etype.endswith(BROKEN_POOL):  # its pool broke: a worker may have been running it
                broke = not self.broke  # the first task the break ended
                running, finished, cut_short = self._cut_short(future, finished)
            else:
                broke = False
            if running is not None:
                if not counted:  # its start came home with its outcome
                    add((running, self.index, -1, 1))
                if future._tf_ran_for >= 0:
                    finished = running + future._tf_ran_for
                add((finished, self.index, 0, -1))
            else:
                add((finished, self.index, -1, 0))
            context = future._tf_context
            task = _new_ended(
                (
                    self.executor,
                    self.kind,
                    function,
                    batch,
                    submitter,
                    future.submitted_ns,
                    running,
                    finished,
                    ended,
                    outcome,
                    etype,
                    ran_on,
                    cpu_time,
                    (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context is not None else None,
                    cut_short,
                )
            )
        except Exception as exc:
            telemetry_failed("TimelineWriter", exc)
            return
        queue = writer._ended_queue
        if etype or ended - writer._cpu_read >= CPU_EVERY_NS or len(queue) >= MAX_QUEUED:
            writer._queue_ended(task, self.executor, broke)
        else:
            queue.append(task)  # written by the writer's thread, off the task's path

    def _cut_short(self, future: TracedFuture, finished: int) -> tuple[int | None, int, tuple[int, int | None] | None]:
        """A task that its process pool's break ended: its start, its end and where it ran (``_Ended.cut_short``)
        when a worker process was running it (``_start_board.cut_short``: one that died, or one the pool ended as it
        broke), drawn from that start to the break (``broke``, the first task the break ended: when the parent heard
        of it, as the ``worker died`` event); else it never ran (None, ``finished``, None)."""
        if not self.broke:
            self.broke = future.finished_ns
        where = _start_board.cut_short(future)
        if where is None:
            return None, finished, None
        pid, start, exit_code = where
        return start, max(self.broke, start), (pid, exit_code)

    @not_listening
    def on_refused(self, future: TracedFuture, method: str) -> None:
        """A refused transition changes nothing drawn."""

    @not_listening
    def on_retrieved(self, future: TracedFuture) -> None:
        """Reading a result happens after the task ended."""


def _where(future: TracedFuture, cpu_start: int) -> tuple[Any, float | None]:
    """Where a task that ended ran, as ``_Ended.ran_on`` has it, and the CPU seconds it used there (``cpu_start``:
    its worker thread's CPU clock at its start, 0 where it was not read)."""
    if cpu_start:  # a thread or interpreter pool's task, which ends on the worker thread that ran it: its Thread
        return _live_threads.get(_get_ident()) or threading.current_thread(), (_thread_time_ns() - cpu_start) / 1e9
    ran_on: Any = future._tf_ran_on  # a task run elsewhere: where it ran and its CPU time came home with its outcome
    if ran_on is not None and ran_on[2] is None:  # a thread of this process (the public-API fallback's interpreter
        ran_on = (*ran_on[:2], thread_name(ran_on[1]) or "")  # pool's), named while it lives
    return ran_on, future._tf_cpu / 1e9 if future._tf_cpu >= 0 else None


class _TimedTimelineHook(_TimelineHook):
    """The hook of a thread or interpreter pool, whose worker thread starts and ends each task: its start is counted
    when it happens, and its own CPU time read (two clock reads a task)."""

    __slots__ = ()

    def on_start(self, future: TracedFuture) -> None:
        entry = self.pending.get(future)
        if entry is not None:
            entry[2] = _thread_time_ns() or 1
            if future.started_ns:  # an interpreter pool's real start comes home with the outcome: counted then
                entry[3] = True
                self.writer._counters.incoming.append((future.started_ns, self.index, -1, 1))


def _program_name() -> str:
    """The program as its command line names it, as ``ps`` shows it less the interpreter: ``app.py`` for
    ``python path/to/app.py``, the module for ``python -m pkg.mod`` (``pkg.mod``), and the interpreter as it was
    called for ``python -c CODE`` or a program read from standard input (``python``). At start-up, where the
    recording names it, ``sys.argv[0]`` is still ``-m`` for a module: its name is read from ``sys.orig_argv``."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    interpreter = os.path.basename(orig[0]) if orig and orig[0] else "python"
    first = argv[0] if argv else ""
    if first == "-m" and len(orig) >= len(argv) >= 1:
        module = orig[len(orig) - len(argv)]  # the arguments after the module are sys.argv[1:]
        return module.removeprefix("-m") or interpreter  # python -mpkg.mod gives one argument
    if first in ("", "-", "-c"):
        return interpreter
    return os.path.basename(first) or interpreter
