"""Reading a timeline that ``tracedfutures record`` (``tracedfutures.timeline.TimelineWriter``) wrote: the
Chrome Trace Event Format, into the tasks, blocking calls and counters that ``tracedfutures report`` draws.

What is read (timestamps and durations in microseconds in the file, seconds here), as the writer's documentation
describes it:

- ``"ph": "X"`` slices of category ``task``: one per task that ran, on the worker (``pid``, ``tid``) that ran it,
  named by its function (in older files by its span's name, the function in ``args`` ``code.function.name`` or
  ``code.function``), with ``args`` ``id``, ``executor``, ``outcome`` (none: a success), ``error.type``,
  ``trace_id``, ``span_id``, ``cpu_time`` (the CPU seconds it used) and ``worker_died`` (the task a worker
  process was running when it died, cut short there);
- ``"ph": "X"`` slices of category ``span``: a span a task's code made, named by the span, on its task's lane
  inside its task's slice, with ``args`` ``task`` (the task's ``id``); a task's slice counts in ``args``
  ``spans_left_out`` those of its spans that were not drawn;
- ``"ph": "X"`` slices of category ``futures`` named ``wait`` or ``as_completed``: the time a caller blocked;
- ``"ph": "b"`` / ``"e"`` async slices of category ``queued`` (matched by ``id``): the time each task spent
  queued, joined to its task by the ``span_id`` in the ``b`` event's args, whose ``outcome`` also tells the
  tasks cancelled before they ran;
- ``"ph": "C"`` counters ``queued`` / ``running`` (one track per executor: the ``args`` key is its name), and
  ``cpu`` and ``cpu_wait``, the CPU seconds the executor's workers used so far and the seconds they waited for a
  CPU, read from time to time;
- ``"ph": "M"`` ``process_name`` / ``thread_name`` metadata: the workers' names;
- the writer's own ``"ph": "M"`` events: ``tracedfutures`` (its header), ``tracedfutures_executor`` (each
  executor's ``name``, ``kind`` and ``max_workers``) and ``tracedfutures_end`` (the count of what it ``left_out``
  past its cap, and of the tasks' spans it held no room for, ``spans_left_out``; a file without it was cut short:
  the program was killed, or ended through ``os._exit``);
- the ``queued`` async slices of tasks that never ran (``outcome`` ``cancelled``, or ``error`` with the
  ``error.type`` of the exception that ended them: a broken pool, a pool shut down): counted by executor,
  function, outcome and error type, as the metrics count them;
- ``"ph": "i"`` instant events of category ``worker`` named ``worker died``: a worker process that died as its
  pool broke, with its ``executor``, ``exit_code`` and ``signal``;
- ``otherData`` of a file in the older layout (a ``traceEvents`` object): the same as the ``tracedfutures_*``
  events.

A file the writer did not finish is read up to its last whole event (the writer flushes at least once a second).

The writer's module is not imported: it needs the OpenTelemetry SDK, which reading a file does not. A file that
is not JSON, or not a trace, raises ``TimelineError`` with a sentence that says why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from tracedfutures._naming import CODE_FUNCTION

ERROR = "error"
CANCELLED = "cancelled"
#: The outcome given to a blocking call's slice on the timeline.
BLOCKED = "blocked"
#: The writer's categories: task slices, blocking calls (``wait``, ``as_completed``), queued async slices, the
#: spans a task's code made.
TASK_CATEGORY, CALL_CATEGORY, QUEUED_CATEGORY, SPAN_CATEGORY = "task", "futures", "queued", "span"
COUNTERS = ("queued", "running", "cpu", "cpu_wait")
US = 1e-6
#: The function's key in the slices' ``args`` of files written by tracedfutures 0.1.0.
OLD_CODE_FUNCTION = "code.function"


class TimelineError(Exception):
    """The file is not a timeline that can be read (the message says why)."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task that ran: where (``lane``), when (``start``, seconds), how long it ran and queued (seconds)."""

    lane: int
    executor: str
    function: str
    start: float
    run: float
    queue: float | None
    outcome: str
    error_type: str
    trace_id: str
    span_id: str
    #: CPU seconds the task used in its worker thread, where the file says (a thread or interpreter pool's).
    cpu: float | None = None
    #: What joins it to its queued slice: its number in the file (its span id in older files).
    key: str = ""
    #: It was running in a worker process that died (``worker_died``): its run is cut short at the death.
    died: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    """A span a task's code made, drawn inside its task's slice: its task's ``key``, its lane (the task's), name,
    when (``start``) and for how long (seconds)."""

    task: str
    lane: int
    name: str
    start: float
    duration: float


@dataclass(frozen=True, slots=True)
class Blocked:
    """One ``wait`` / ``as_completed`` call: the caller's ``lane``, when and for how long (seconds) it blocked."""

    kind: str
    lane: int
    start: float
    duration: float


@dataclass
class Timeline:
    """A trace file's tasks, blocking calls, counters and workers (lanes are indexes into ``lanes``)."""

    tasks: list[Task] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    #: The spans the tasks' code made, in the order of the file.
    spans: list[Span] = field(default_factory=list)
    #: (executor, "queued", "running", "cpu" or "cpu_wait") -> [(seconds, value)], by time.
    counters: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    max_workers: dict[str, int] = field(default_factory=dict)
    #: Each executor's kind (``thread``, ``process``, ``interpreter``, ``other``) where the file says it.
    kinds: dict[str, str] = field(default_factory=dict)
    #: Tasks cancelled before they ran, per executor.
    cancelled: dict[str, int] = field(default_factory=dict)
    #: Each lane's (pid, tid).
    lanes: list[tuple[int, int]] = field(default_factory=list)
    process_names: dict[int, str] = field(default_factory=dict)
    thread_names: dict[tuple[int, int], str] = field(default_factory=dict)
    #: The earliest timestamp in the file (seconds): time zero of the report.
    origin: float = 0.0
    #: Events the writer left out past its cap.
    left_out: int = 0
    #: Spans of tasks the writer did not draw (past its caps, or that would not nest in their task's slice).
    spans_left_out: int = 0
    #: Worker processes that died: (executor, pid, seconds, exit code, signal name or "").
    deaths: list[tuple[str, int, float, int, str]] = field(default_factory=list)
    #: Tasks that ended without running: (executor, function, outcome, error type) -> how many.
    unrun: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    #: Whether the file was finished by its writer (False: cut short, the program was killed or ended abruptly).
    complete: bool = True
    #: The latest time in the file (seconds, as ``origin``).
    end: float = 0.0

    def ended(self) -> dict[tuple[str, str, str], int]:
        """Every task that ended, ran or not: (executor, outcome, error type) -> how many, as the metrics'
        ``executor_tasks_completed_total`` counts them (summed over functions)."""
        counts: dict[tuple[str, str, str], int] = {}
        for task in self.tasks:
            key = (task.executor, task.outcome, task.error_type)
            counts[key] = counts.get(key, 0) + 1
        for (executor, _, outcome, error_type), count in self.unrun.items():
            key = (executor, outcome, error_type)
            counts[key] = counts.get(key, 0) + count
        return counts

    def lane_name(self, lane: int) -> str:
        """``process name pid · thread name`` (``pid``, ``tid N`` where the file names neither)."""
        pid, tid = self.lanes[lane]
        process = self.process_names.get(pid) or "pid"
        thread = self.thread_names.get((pid, tid)) or f"tid {tid}"
        return f"{process} {pid} · {thread}"


#: The first line of a file that ``TimelineWriter`` writes (a JSON array): one event a line follows, each ending
#: with a comma but the last, then ``]``. ``OLD_WRITER_HEAD`` began the object layout of earlier versions.
WRITER_HEAD, OLD_WRITER_HEAD = "[", '{"traceEvents":['
#: The writer's own metadata events.
HEAD, EXECUTOR, END = "tracedfutures", "tracedfutures_executor", "tracedfutures_end"
#: What marks a line of the writer's layout that holds nothing the report draws (submit slices, flow arrows).
SKIPPED = '"cat":"submit"'
_decode = json.JSONDecoder().raw_decode


def read(path: Path) -> Timeline:
    """The timeline in the file at ``path``.

    A file in the writer's layout (``WRITER_HEAD``, then one event a line) is read a line at a time, keeping only
    what the report needs, so that memory grows with the tasks, not with the file's events; any other valid trace
    JSON (an object with ``traceEvents``, or a bare list of events) is read whole.
    """
    reader = _Reader(Timeline())
    try:
        with path.open(encoding="utf-8") as stream:
            head = stream.readline().strip()
            if head in (WRITER_HEAD, OLD_WRITER_HEAD):
                other = _read_lines(stream, reader)
            else:
                stream.seek(0)
                document = json.load(stream)
                if isinstance(document, dict) and isinstance(document.get("traceEvents"), list):
                    events, other = document["traceEvents"], document.get("otherData") or {}
                elif isinstance(document, list):
                    events, other = document, {}
                else:
                    raise TimelineError(f"{path} is not a Chrome trace (no traceEvents list)")
                reader.add_all(events)
    except OSError as exc:
        raise TimelineError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TimelineError(f"{path} is not JSON ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise TimelineError(f"{path} has an event that is not of the format ({exc!r})") from None
    reader.finish(other if isinstance(other, dict) else {})
    return reader.timeline


def _read_lines(stream: TextIO, reader: _Reader) -> dict[str, Any]:
    """The events of the writer's layout, a line at a time, to ``reader``; returns the closing line's
    ``otherData``. A file the writer did not finish (the program was killed) ends without it, maybe in the middle
    of an event: what it holds up to there is read, and ``{}`` returned."""
    reader.complete = False  # until its end is read
    for line in stream:
        event = line.rstrip(",\r\n")
        if event.startswith("]"):
            if event.startswith("],"):  # the object layout's end: its otherData
                tail = json.loads("{" + event[1:].lstrip(",") + stream.read())
                reader.complete = True
                return tail.get("otherData") or {} if isinstance(tail, dict) else {}
            return {}
        if not event or SKIPPED in event:
            continue
        try:
            reader.add(_decode(event)[0])
        except json.JSONDecodeError:
            if line.endswith("\n"):  # a whole line that is not JSON: not the writer's file after all
                raise
            break  # the last event, cut short
    return {}


class _Reader:
    """Takes in events one by one: keeps the tasks, calls, counters and names, joins queue times to tasks."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.lanes: dict[tuple[int, int], int] = {}
        self.opened: dict[Any, tuple[float, str]] = {}  # a queued slice's id -> its start and span id
        self.queued: dict[str, float] = {}  # span id -> seconds queued, until its task slice comes
        self.origin = math.inf
        self.end = -math.inf
        self.complete = True
        self.other: dict[str, Any] = {}  # what the writer's own metadata events say
        self.spans_left_out = 0  # counted on the task slices

    def add_all(self, events: Iterable[Any]) -> None:
        for event in events:
            if isinstance(event, dict):
                self.add(event)

    def lane(self, event: dict[str, Any]) -> int:
        key = (int(event.get("pid", 0)), int(event.get("tid", 0)))
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = len(self.timeline.lanes)
            self.timeline.lanes.append(key)
        return lane

    def add(self, event: dict[str, Any]) -> None:
        timeline = self.timeline
        phase = event.get("ph")
        args = event.get("args") or {}
        if phase == "M":
            own = event.get("name")
            if own in (HEAD, END):
                self.other.update(args)
                self.complete = own == END  # a file with the writer's header is cut short without its end
            elif own == EXECUTOR:
                self.other.setdefault("executors", {})[str(args.get("name", ""))] = args
            elif own == "process_name":
                timeline.process_names[int(event.get("pid", 0))] = str(args.get("name", ""))
            elif own == "thread_name":
                key = (int(event.get("pid", 0)), int(event.get("tid", 0)))
                timeline.thread_names[key] = str(args.get("name", ""))
            return
        if "ts" not in event:
            return
        ts = float(event["ts"]) * US
        self.origin = min(self.origin, ts)
        self.end = max(self.end, ts + float(event.get("dur", 0)) * US)
        category = event.get("cat")
        if phase == "X" and category == TASK_CATEGORY:
            self.task(event, args, ts)
        elif phase == "X" and category == SPAN_CATEGORY:
            timeline.spans.append(
                Span(str(args.get("task", "")), self.lane(event), str(event.get("name", "")), ts,
                     float(event.get("dur", 0)) * US)
            )  # fmt: skip
        elif phase == "X" and category == CALL_CATEGORY:
            name = str(event.get("name", ""))
            timeline.blocked.append(Blocked(name, self.lane(event), ts, float(event.get("dur", 0)) * US))
        elif phase == "b" and category == QUEUED_CATEGORY:
            outcome = args.get("outcome")
            if outcome == CANCELLED or args.get("ran") is False:  # never ran: no task slice to join
                executor = str(args.get("executor", ""))
                if outcome == CANCELLED:
                    timeline.cancelled[executor] = timeline.cancelled.get(executor, 0) + 1
                function = str(args.get("code.function") or event.get("name", ""))  # older files: the span name
                unrun = (executor, function, str(outcome), str(args.get("error.type", "")))
                timeline.unrun[unrun] = timeline.unrun.get(unrun, 0) + 1
            else:  # joined to its task's slice by its id (the task's number; its span id in older files)
                self.opened[event.get("id")] = (ts, str(event.get("id", "")))
        elif phase == "e" and category == QUEUED_CATEGORY:
            begin = self.opened.pop(event.get("id"), None)
            if begin is not None and begin[1]:
                self.queued[begin[1]] = ts - begin[0]
        elif phase == "i" and category == "worker":
            timeline.deaths.append(
                (str(args.get("executor", "")), int(event.get("pid", 0)), ts, int(args.get("exit_code", 0)),
                 str(args.get("signal", "")))
            )  # fmt: skip
        elif phase == "C" and event.get("name") in COUNTERS:
            for executor, value in args.items():
                timeline.counters.setdefault((str(executor), str(event["name"])), []).append((ts, float(value)))

    def task(self, event: dict[str, Any], args: dict[str, Any], ts: float) -> None:
        executor = str(args.get("executor", ""))
        name = str(event.get("name", ""))
        span_id = str(args.get("span_id", ""))
        key = str(args["id"]) if "id" in args else span_id
        self.spans_left_out += int(args.get("spans_left_out", 0))
        self.timeline.tasks.append(
            Task(
                lane=self.lane(event),
                executor=executor,
                function=str(
                    args.get(CODE_FUNCTION) or args.get(OLD_CODE_FUNCTION) or name.removeprefix(f"{executor} ")
                ),
                start=ts,
                run=float(event.get("dur", 0)) * US,
                queue=self.queued.pop(key, None),
                outcome=str(args.get("outcome", "success")),
                error_type=str(args.get("error.type", "")),
                trace_id=str(args.get("trace_id", "")),
                span_id=span_id,
                cpu=float(args["cpu_time"]) if "cpu_time" in args else None,
                key=key,
                died=args.get("worker_died") is True,
            )
        )

    def finish(self, other: dict[str, Any]) -> None:
        """After the last event: queue times that came after their task's slice, the counters in time order,
        and what ``otherData`` says (each executor's ``max_workers``, the events ``left_out``)."""
        timeline = self.timeline
        other = {**other, **self.other}
        timeline.complete = self.complete
        timeline.end = self.end if math.isfinite(self.end) else 0.0
        if self.queued:
            timeline.tasks = [
                replace(task, queue=self.queued.get(task.key)) if task.queue is None else task
                for task in timeline.tasks
            ]
        timeline.origin = self.origin if math.isfinite(self.origin) else 0.0
        for points in timeline.counters.values():
            points.sort(key=_time)  # stable: of two samples at one time, the later one in the file holds
        timeline.left_out = int(other.get("left_out", 0) or 0)
        timeline.spans_left_out = self.spans_left_out + int(other.get("spans_left_out", 0) or 0)
        for executor, info in (other.get("executors") or {}).items():
            if isinstance(info, dict) and isinstance(info.get("max_workers"), int):
                timeline.max_workers[str(executor)] = info["max_workers"]
            if isinstance(info, dict) and isinstance(info.get("kind"), str):
                timeline.kinds[str(executor)] = info["kind"]


def _time(point: tuple[float, float]) -> float:
    return point[0]
