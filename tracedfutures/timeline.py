"""A timeline of every task, written as it happens in the Chrome Trace Event Format, which ui.perfetto.dev and
chrome://tracing open: ``TimelineWriter``, an OpenTelemetry span processor.

Usage::

    from opentelemetry.sdk.trace import TracerProvider
    from tracedfutures.timeline import TimelineWriter

    provider = TracerProvider()
    provider.add_span_processor(TimelineWriter("trace.json"))
    ...                      # tasks traced with this provider (configure(), the instrumentor, traced())
    provider.shutdown()      # or writer.shutdown(): the file is complete (also at exit, by the SDK's atexit hook)

``tracedfutures record -o trace.json -- python app.py`` sets this up for a program that has no SDK of its own.

What is written, for each task span (times in microseconds from the writer's start, ``otherData.origin_unix_ns``):

- a complete slice (``"ph": "X"``) over the task's real run, on the process and thread that ran it (``pid`` the
  worker process, ``tid`` a small number per thread, named by ``"ph": "M"`` ``process_name`` / ``thread_name``
  events), named like the task span, with ``args`` ``executor``, ``code.function.name``, ``outcome``, ``error.type``
  (on error), ``thread.id``, ``trace_id``, ``span_id``, ``executor.task.batch_size`` for a joblib batch and, for a
  thread or interpreter pool's task under ``tracedfutures record``, ``cpu_time``: the CPU seconds it used in its
  worker thread;
- the time it spent queued, an async slice (``"b"`` / ``"e"``, category ``queued``) from submit to its start (to
  its cancellation for a task that never ran);
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
``BUFFER_BYTES``), and the counters' changes are sorted in chunks spilled to a temporary file and merged when the
file is finished. The file is bounded by ``max_tasks`` (default ``DEFAULT_MAX_TASKS``): tasks and calls that end
past it leave no slice, and ``otherData.left_out`` counts them; the counters still count every task.

Only spans that this processor saw start are drawn: task spans of this process's executors and its own ``wait``
/ ``as_completed`` calls, not spans made in worker processes. Nothing of a task's arguments or results is
written, nor exception messages.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from typing import IO, Any

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
#: Counter changes kept in memory before a sorted chunk of them goes to the temporary file.
CHUNK = 1 << 16
#: The executors' workers' CPU is read as tasks end, at most this often (ns).
CPU_EVERY_NS = 50_000_000

_CALLS = {WAIT_SPAN: "wait", AS_COMPLETED_SPAN: "as_completed"}
#: Where the span started: the starting thread's id and name, and when ``on_start`` ran (ns).
_Started = tuple[int, str, int]


class _Counters:
    """The changes of every executor's queued and running counts, (ns, executor, d_queued, d_running), kept in
    sorted chunks in a temporary file so that memory stays bounded, merged in time order at the end."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, int, int, int]] = []
        self.spill: IO[bytes] | None = None
        self.runs: list[tuple[int, int]] = []  # (offset, count) of each sorted chunk in ``spill``

    def add(self, ns: int, executor: int, queued: int, running: int) -> None:
        self.changes.append((ns, executor, queued, running))
        if len(self.changes) >= CHUNK:
            self._spill()

    def _spill(self) -> None:
        if self.spill is None:
            self.spill = tempfile.TemporaryFile()  # noqa: SIM115 (open until close(): chunks go on being added)
        flat = array("q", itertools.chain.from_iterable(sorted(self.changes)))
        self.runs.append((self.spill.seek(0, os.SEEK_END), len(self.changes)))
        flat.tofile(self.spill)
        self.changes = []

    def _run(self, offset: int, count: int) -> Iterator[tuple[int, int, int, int]]:
        assert self.spill is not None
        step = 4096
        for start in range(0, count, step):
            block = array("q")
            self.spill.seek(offset + start * 32)
            block.fromfile(self.spill, 4 * min(step, count - start))
            for i in range(0, len(block), 4):
                yield block[i], block[i + 1], block[i + 2], block[i + 3]

    def merged(self) -> Iterator[tuple[int, int, int, int]]:
        """Every change, in time order."""
        self.changes.sort()
        yield from heapq.merge(*(self._run(offset, count) for offset, count in self.runs), iter(self.changes))

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
        self.changes = []


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
        self._buffer: list[str] = ['{"traceEvents":[\n']
        self._buffered = 0
        self._first = True
        self._tids: dict[tuple[int, int, str], int] = {}  # (pid, thread id, thread name) -> the tid in the file
        self._named_pids = {self._pid}  # the processes named in the file so far
        self._names: dict[str, str] = {}  # span name -> as a JSON string
        self._executors: dict[str, int] = {}  # executor name -> index in the counters
        self._executor_info: dict[str, dict[str, Any]] = {}
        self._counters = _Counters()
        self._cpu: dict[str, WorkerCpu] = {}  # executor name -> its workers' CPU, read as tasks end
        self._cpu_read = 0  # when it was last read (ns)
        self.drawn = 0
        self.left_out = 0
        self._closed = False
        self._event(self._meta("process_name", self._pid, 0, _program_name()))
        with state.timelines_lock:
            state.timelines.add(self)

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
                    self._flush()
        except Exception as exc:  # a timeline that fails loses events, never the program's spans
            from tracedfutures._telemetry import telemetry_failed

            telemetry_failed("TimelineWriter", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write out what is buffered."""
        """Write the events buffered so far to the file (the file is still unfinished)."""
        with self._lock:
            if not self._closed:
                self._flush()
        return True

    def shutdown(self) -> None:
        """Write the counters, the names and ``otherData``, and close the file (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._read_cpu(time.time_ns())
                self._write_counters()
                other = {
                    "writer": f"tracedfutures {__version__}",
                    "origin_unix_ns": self._origin,
                    "max_tasks": self.max_tasks,
                    "drawn": self.drawn,
                    "left_out": self.left_out,
                    "executors": self._executor_info,
                }
                self._buffer.append(f'\n],"displayTimeUnit":"ms","otherData":{json.dumps(other)}}}\n')
                self._flush()
            finally:
                os.close(self._fd)
                self._counters.close()
                self._started.clear()

    # -- what a span becomes ---------------------------------------------------------------------------------
    def _task(self, span: ReadableSpan, started: _Started) -> None:
        attributes = span.attributes or {}
        executor = str(attributes.get(EXECUTOR_NAME, ""))
        index = self._executor(executor, attributes)
        submitted, ended = span.start_time or 0, span.end_time or 0
        running = next((e.timestamp for e in span.events if e.name == RUNNING_EVENT), None)
        self._counters.add(submitted, index, 1, 0)
        if running is None:  # cancelled, or refused, before it started
            self._counters.add(ended, index, -1, 0)
        else:
            run_for = attributes.get(RUN_DURATION)
            finished = running + round(float(run_for) * 1e9) if isinstance(run_for, float) else ended
            self._counters.add(running, index, -1, 1)
            self._counters.add(finished, index, 0, -1)
        if ended - self._cpu_read >= CPU_EVERY_NS:
            self._read_cpu(ended)
        if not self._draw():
            return
        context = span.context
        assert context is not None
        span_id = f"{context.span_id:016x}"
        name = self._name(span.name)
        outcome = "error" if ERROR_TYPE in attributes else "cancelled" if attributes.get(TASK_CANCELLED) else "success"
        pid = self._pid
        submitter = self._tid(pid, started[0], started[1])
        queued_args = {"executor": executor, "outcome": outcome, "span_id": span_id}
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
        worker_pid = attributes.get(PROCESS_PID)
        thread_id = attributes.get(THREAD_ID)
        if not isinstance(worker_pid, int) or not isinstance(thread_id, int):
            worker_pid, thread_id = pid, 0  # where it ran is not on the span: an unnamed lane of this process
        if worker_pid not in self._named_pids:
            self._named_pids.add(worker_pid)
            self._event(self._meta("process_name", worker_pid, 0, f"{executor} worker"))
        tid = self._tid(worker_pid, thread_id, str(attributes.get(THREAD_NAME, "")))
        args: dict[str, Any] = {
            "executor": executor,
            CODE_FUNCTION: attributes.get(CODE_FUNCTION, ""),
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
            f'{{"ph":"X","cat":"task","name":{name},"pid":{worker_pid},"tid":{tid},"ts":{run_ts},'
            f'"dur":{_us(max(finished - running, 0))},"args":{json.dumps(args)}}}'
        )
        self._event(
            f'{{"ph":"f","bp":"e","cat":"submit","name":"submit","id":"{span_id}","pid":{worker_pid},'
            f'"tid":{tid},"ts":{run_ts}}}'
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
            self._executor_info[name] = {
                "kind": str(attributes.get(EXECUTOR_KIND, "")),
                "max_workers": live[1] if live is not None else None,
            }
        return index

    @staticmethod
    def _meta(what: str, pid: int, tid: int, name: str) -> str:
        return f'{{"ph":"M","name":"{what}","pid":{pid},"tid":{tid},"args":{{"name":{json.dumps(name)}}}}}'

    def _event(self, event: str) -> None:
        if self._first:
            self._first = False
        else:
            event = ",\n" + event
        self._buffer.append(event)
        self._buffered += len(event)

    def _flush(self) -> None:
        data = "".join(self._buffer).encode("utf-8")
        self._buffer, self._buffered = [], 0
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _write_counters(self) -> None:
        """Each executor's queued and running counts at every change, in time order (one sample per change of
        the time, for the executors that changed then)."""
        names = list(self._executors)
        counts = [[0, 0] for _ in names]
        changed: set[int] = set()
        now = None
        for ns, index, queued, running in itertools.chain(self._counters.merged(), [(None, 0, 0, 0)]):
            if ns != now and changed:
                assert now is not None
                for changed_index in sorted(changed):
                    self._counter_events(now, names[changed_index], counts[changed_index])
                changed.clear()
                if self._buffered >= BUFFER_BYTES:
                    self._flush()
            if ns is None:
                break
            now = ns
            counts[index][0] += queued
            counts[index][1] += running
            changed.add(index)

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
        self._buffer, self._buffered = [], 0
        self._started = {}
        self._counters = _Counters()
        self._cpu = {}
        self._lock = threading.Lock()


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
