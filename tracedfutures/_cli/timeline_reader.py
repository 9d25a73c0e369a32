"""Reading a timeline that ``tracedfutures record`` (or the timeline exporter) wrote: the Chrome Trace Event
Format, into the tasks, blocking calls and counters that ``tracedfutures report`` draws.

What is read (timestamps and durations in microseconds in the file, seconds here):

- ``"ph": "X"`` slices whose ``args`` name an ``executor``: one task each, on the worker (``pid``, ``tid``) that
  ran it, with its ``outcome``, ``error.type``, ``trace_id`` and ``span_id``; the function is ``code.function``
  or the slice name less the executor's prefix.
- ``"ph": "X"`` slices named ``wait`` or ``as_completed`` without an executor: time a caller blocked.
- ``"ph": "b"`` / ``"e"`` async slices (matched by ``cat``, ``id`` and name): the time a task spent queued,
  joined to its task by the ``span_id`` in the ``b`` event's args.
- ``"ph": "C"`` counters named ``queued`` / ``running`` (one track per executor, ``args`` their value).
- ``"ph": "M"`` ``process_name`` / ``thread_name`` metadata: the workers' names.
- The writer's count of what it left out past its cap (``otherData``).

A file that is not the format, or not JSON, raises ``TimelineError`` with a sentence that says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERROR = "error"
#: The outcome given to a blocking call's slice on the timeline.
BLOCKED = "blocked"
BLOCKING_CALLS = ("wait", "as_completed")
COUNTERS = ("queued", "running")
US = 1e-6


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
    #: (executor, "queued" or "running") -> [(seconds, value)], by time.
    counters: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    max_workers: dict[str, int] = field(default_factory=dict)
    #: Each lane's (pid, tid).
    lanes: list[tuple[int, int]] = field(default_factory=list)
    process_names: dict[int, str] = field(default_factory=dict)
    thread_names: dict[tuple[int, int], str] = field(default_factory=dict)
    #: The earliest timestamp in the file (seconds): time zero of the report.
    origin: float = 0.0
    #: Events the writer left out past its cap.
    left_out: int = 0

    def lane_name(self, lane: int) -> str:
        """``process name (pid) / thread name (tid)``, the ids alone when the file names neither."""
        pid, tid = self.lanes[lane]
        process = self.process_names.get(pid, "pid")
        thread = self.thread_names.get((pid, tid), "tid")
        return f"{process} {pid} / {thread} {tid}"


def read(path: Path) -> Timeline:
    """The timeline in the file at ``path``."""
    try:
        with path.open("rb") as stream:
            document = json.load(stream)
    except OSError as exc:
        raise TimelineError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TimelineError(f"{path} is not JSON ({exc})") from None
    if isinstance(document, dict) and isinstance(document.get("traceEvents"), list):
        events, other = document["traceEvents"], document.get("otherData") or {}
    elif isinstance(document, list):
        events, other = document, {}
    else:
        raise TimelineError(f"{path} is not a Chrome trace (no traceEvents list)")
    return parse(events, other)


def parse(events: list[Any], other: dict[str, Any]) -> Timeline:
    """The timeline of a list of trace events (and the file's ``otherData``)."""
    timeline = Timeline()
    lanes: dict[tuple[int, int], int] = {}
    opened: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    queued: dict[str, float] = {}
    slices: list[dict[str, Any]] = []
    stamps: list[float] = []

    def lane(event: dict[str, Any]) -> int:
        key = (int(event.get("pid", 0)), int(event.get("tid", 0)))
        if key not in lanes:
            lanes[key] = len(timeline.lanes)
            timeline.lanes.append(key)
        return lanes[key]

    for event in events:
        if not isinstance(event, dict):
            continue
        phase = event.get("ph")
        args = event.get("args") or {}
        if phase == "M":
            if event.get("name") == "process_name":
                timeline.process_names[int(event.get("pid", 0))] = str(args.get("name", ""))
            elif event.get("name") == "thread_name":
                key = (int(event.get("pid", 0)), int(event.get("tid", 0)))
                timeline.thread_names[key] = str(args.get("name", ""))
            continue
        if "ts" not in event:
            continue
        ts = float(event["ts"]) * US
        stamps.append(ts)
        if phase == "X":
            slices.append(event)
        elif phase == "b":
            opened[(event.get("cat"), event.get("id"), event.get("name"))] = event
        elif phase == "e":
            begin = opened.pop((event.get("cat"), event.get("id"), event.get("name")), None)
            if begin is not None and (begin.get("args") or {}).get("span_id"):
                queued[str(begin["args"]["span_id"])] = ts - float(begin["ts"]) * US
        elif phase == "C" and event.get("name") in COUNTERS:
            for executor, value in args.items():
                timeline.counters.setdefault((str(executor), str(event["name"])), []).append((ts, float(value)))
    timeline.origin = min(stamps, default=0.0)
    for event in slices:
        args = event.get("args") or {}
        start, duration = float(event["ts"]) * US, float(event.get("dur", 0)) * US
        name = str(event.get("name", ""))
        executor = args.get("executor")
        if executor is None:
            if name in BLOCKING_CALLS:
                timeline.blocked.append(Blocked(name, lane(event), start, duration))
            continue
        executor = str(executor)
        function = str(args.get("code.function") or name.removeprefix(f"{executor} "))
        span_id = str(args.get("span_id", ""))
        timeline.tasks.append(
            Task(
                lane=lane(event),
                executor=executor,
                function=function,
                start=start,
                run=duration,
                queue=queued.get(span_id),
                outcome=str(args.get("outcome", "success")),
                error_type=str(args.get("error.type", "")),
                trace_id=str(args.get("trace_id", "")),
                span_id=span_id,
            )
        )
    for points in timeline.counters.values():
        points.sort()
    timeline.left_out = int(other.get("left_out", 0) or 0)
    return timeline
