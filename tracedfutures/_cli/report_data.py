"""What ``tracedfutures report`` embeds in its page: a timeline read by ``timeline_reader``, aggregated in Python.

The page must stay responsive with 100,000 tasks and more, so nothing here grows with the trace past fixed caps:
the timeline's slices are merged per worker into busy blocks when there are more than ``MAX_SLICES`` of them;
the queued / running counters are resampled onto ``TIME_BINS`` bins (time-weighted mean per bin); the
distributions are log-spaced histograms (``BUCKETS_PER_DECADE`` per decade), per executor and for at most
``MAX_FUNCTIONS`` functions; the tables hold the ``TOP`` slowest tasks and the first ``TOP`` errors.
Times are in seconds from the start of the trace.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tracedfutures._cli.timeline_reader import BLOCKED, CANCELLED, ERROR, Span, Timeline

#: Slices drawn one by one; past this, each worker's slices are merged into busy blocks (gaps shorter than a
#: resolution that keeps the total under the cap are closed).
MAX_SLICES = 200_000
#: Time bins of the queued / running / utilization charts.
TIME_BINS = 1_000
#: The histograms' log-spaced buckets: this many per decade, from 1 µs to 10,000 s.
BUCKETS_PER_DECADE = 5
LOWEST, HIGHEST = 1e-6, 1e4
#: Functions with their own histograms and table rows (by task count); the others are summed as ``OTHER``.
MAX_FUNCTIONS = 50
OTHER = "(other functions)"
#: Rows of the slowest-tasks and errors tables.
TOP = 25
#: Decimal places kept of times in seconds (1 µs).
DIGITS = 6
#: The outcome of a span's slice on the timeline (a task's are its own, a blocking call's ``BLOCKED``).
SPAN = "span"


def report_data(timeline: Timeline, title: str) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready values (see the module docstring for the caps)."""
    tasks = timeline.tasks
    origin = timeline.origin
    end = max([origin, *(t.start + t.run for t in tasks), *(b.start + b.duration for b in timeline.blocked)])
    end = max(end, *(points[-1][0] for points in timeline.counters.values() if points), origin)
    wall = end - origin
    functions = _top_functions(t.function for t in tasks)
    ended = timeline.ended()
    executors = sorted(
        {t.executor for t in tasks} | {executor for executor, _ in timeline.counters} | {key[0] for key in ended}
    )
    outcomes: Counter[str] = Counter()
    for (_, outcome, _), count in ended.items():
        outcomes[outcome] += count
    return {
        "title": title,
        "summary": {
            "tasks": sum(ended.values()),
            "ran": len(tasks),
            "errors": outcomes[ERROR],
            "cancelled": outcomes[CANCELLED],
            "complete": timeline.complete,
            "recorded": round(timeline.end - origin, DIGITS),
            "executors": len(executors),
            "workers": len({t.lane for t in tasks}),
            "wall": round(wall, DIGITS),
            "blocked": round(sum(b.duration for b in timeline.blocked), DIGITS),
            "left_out": timeline.left_out,
            "spans": len(timeline.spans),
            "spans_left_out": timeline.spans_left_out,
        },
        "executors": executors,
        "timeline": _timeline(timeline, wall),
        "counters": _counters(timeline, executors, wall),
        "utilization": _utilization(timeline, executors, wall),
        "cpu": _cpu(timeline, executors, wall),
        "histograms": _histograms(timeline, executors, functions),
        "functions": _function_rows(timeline),
        "slowest": [_task_row(timeline, t) for t in sorted(tasks, key=lambda t: -t.run)[:TOP]],
        "errors": [_task_row(timeline, t) for t in sorted(tasks, key=lambda t: t.start) if t.outcome == ERROR][:TOP],
        "blocked": _blocked_rows(timeline),
        "spans": _span_rows(timeline),
        "deaths": _deaths(timeline),
        "outcomes": [
            {"executor": executor, "outcome": outcome, "error_type": error_type, "tasks": count}
            for (executor, outcome, error_type), count in sorted(ended.items())
        ],
    }


def _deaths(timeline: Timeline) -> list[dict[str, Any]]:
    """Each worker process that died: its executor, pid, when (``at``), exit code and signal, and the task it was
    running (``task``: the row of its slice marked ``worker_died``, None when it was idle)."""
    running = {(t.executor, timeline.lanes[t.lane][0]): t for t in timeline.tasks if t.died}
    return [
        {
            "executor": executor,
            "pid": pid,
            "at": _rel(timeline, ts),
            "exit_code": code,
            "signal": name,
            "task": _task_row(timeline, task) if (task := running.get((executor, pid))) is not None else None,
        }
        for executor, pid, ts, code, name in timeline.deaths
    ]


def _rel(timeline: Timeline, ts: float) -> float:
    return round(ts - timeline.origin, DIGITS)


def _top_functions(names: Iterable[str]) -> list[str]:
    return [name for name, _ in Counter(names).most_common(MAX_FUNCTIONS)]


# -- the per-worker timeline ---------------------------------------------------------------------------------------
def _timeline(timeline: Timeline, wall: float) -> dict[str, Any]:
    """The lanes and their slices as columns (lane, start, dur, label, outcome, depth, count), sorted by lane, start
    and depth.

    ``labels`` are the task functions, the blocking calls' kinds and the spans' names (a span's label is apart from
    a function's of the same name). ``depth`` is 0 for a task or a call, 1 for a span its task's code made directly
    in it, 2 for one made in that span, and so on. Past ``MAX_SLICES``, a worker's tasks (and, apart, its blocking
    calls and its spans) less than a resolution apart are merged into one bar: its label is -1 when it holds
    several, its outcome an error when any of its tasks failed, ``count`` its slices (merged spans are at depth 1)."""
    labels: dict[tuple[str, str], int] = {}
    raw: list[tuple[int, float, float, int, str, int]] = []
    for t in timeline.tasks:
        raw.append((t.lane, t.start, t.run, labels.setdefault(("", t.function), len(labels)), t.outcome, 0))
    for b in timeline.blocked:
        raw.append((b.lane, b.start, b.duration, labels.setdefault(("", b.kind), len(labels)), BLOCKED, 0))
    for span, depth in _depths(timeline.spans):
        raw.append((span.lane, span.start, span.duration, labels.setdefault((SPAN, span.name), len(labels)), SPAN,
                    depth))  # fmt: skip
    outcome_codes = {name: code for code, name in enumerate(("success", ERROR, "cancelled", BLOCKED, SPAN))}
    lanes = sorted({s[0] for s in raw}, key=lambda lane: timeline.lanes[lane])  # by process, then thread
    order = {lane: index for index, lane in enumerate(lanes)}
    resolution = 0.0
    if len(raw) > MAX_SLICES:
        resolution = wall * len(lanes) / MAX_SLICES
    columns: dict[str, list[Any]] = {
        "lane": [], "start": [], "dur": [], "label": [], "outcome": [], "depth": [], "count": []
    }  # fmt: skip
    bars = _merged(raw, order, resolution, outcome_codes) if resolution else [
        (order[lane], start, start + duration, label, outcome_codes.get(outcome, 0), depth, 1)
        for lane, start, duration, label, outcome, depth in raw
    ]  # fmt: skip
    bars.sort(key=lambda bar: (bar[0], bar[1], bar[5]))
    for lane, start, stop, label, outcome, depth, count in bars:
        columns["lane"].append(lane)
        columns["start"].append(_rel(timeline, start))
        columns["dur"].append(round(stop - start, DIGITS))
        columns["label"].append(label)
        columns["outcome"].append(outcome)
        columns["depth"].append(depth)
        columns["count"].append(count)
    return {
        "lanes": [timeline.lane_name(lane) for lane in lanes],
        "labels": [name for _, name in labels],
        "outcomes": list(outcome_codes),
        "merged": resolution > 0,
        "resolution": resolution,
        "slices": len(raw),
        **columns,
    }


#: One bar of the timeline: lane (its place), start, stop, label, outcome code, depth, slices merged in it.
_Bar = tuple[int, float, float, int, int, int, int]


def _merged(
    raw: list[tuple[int, float, float, int, str, int]], order: dict[int, int], resolution: float, codes: dict[str, int]
) -> list[_Bar]:
    """Each lane's slices of one kind (tasks, blocking calls, spans) less than ``resolution`` apart, merged into
    bars: a bar's label is -1 when it holds several, its outcome an error when any of its tasks failed."""
    error, kinds = codes[ERROR], {BLOCKED: 1, SPAN: 2}
    bars: list[_Bar] = []
    block: list[Any] = []  # the bar being merged: lane, start, stop, label, outcome, depth, count; and its kind
    for lane, start, duration, label, outcome_name, _ in sorted(
        raw, key=lambda s: (order[s[0]], kinds.get(s[4], 0), s[1])
    ):
        outcome, kind = codes.get(outcome_name, 0), kinds.get(outcome_name, 0)
        if block and block[0] == order[lane] and block[7] == kind and start - block[2] < resolution:
            block[2] = max(block[2], start + duration)
            block[3] = block[3] if block[3] == label else -1
            block[4] = outcome if outcome == error else block[4]
            block[6] += 1
            continue
        if block:
            bars.append((block[0], block[1], block[2], block[3], block[4], block[5], block[6]))
        block = [order[lane], start, start + duration, label, outcome, 1 if kind == 2 else 0, 1, kind]
    if block:
        bars.append((block[0], block[1], block[2], block[3], block[4], block[5], block[6]))
    return bars


def _depths(spans: list[Span]) -> list[tuple[Span, int]]:
    """Each span with its depth in its task: 1 for one its task's code made directly in it, 2 for one made in that
    one, and so on (the writer draws only spans that nest: a span inside another one started no later and ends no
    earlier)."""
    by_task: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_task[span.task].append(span)
    found = []
    for inside in by_task.values():
        ends: list[float] = []  # the spans open at each one's start, innermost last
        for span in sorted(inside, key=lambda s: (s.start, -s.duration)):
            while ends and ends[-1] <= span.start:
                ends.pop()
            ends.append(span.start + span.duration)
            found.append((span, len(ends)))
    return found


# -- queued and running over time, utilization ----------------------------------------------------------------------
def _resample(points: Sequence[tuple[float, float]], origin: float, wall: float) -> list[float]:
    """The time-weighted mean over each of ``TIME_BINS`` bins of a step function (each point's value held until
    the next point, the last one's until the end of the trace)."""
    width = wall / TIME_BINS if wall > 0 else 1.0
    last_bin = TIME_BINS - 1
    area = [0.0] * TIME_BINS
    for (ts, value), (following, _) in zip(points, [*points[1:], (origin + wall, 0.0)]):
        left, right = ts - origin, min(following - origin, wall)
        if not value or right <= left:
            continue
        first, last = min(int(left / width), last_bin), min(int(right / width), last_bin)
        if first == last:  # most steps are shorter than a bin
            area[first] += value * (right - left)
            continue
        for index in range(first, last + 1):
            overlap = min(right, (index + 1) * width) - max(left, index * width)
            if overlap > 0:
                area[index] += value * overlap
    return [round(total / width, 3) for total in area]


def _counters(timeline: Timeline, executors: list[str], wall: float) -> dict[str, Any]:
    """Queued and running per executor, resampled onto ``TIME_BINS`` bins (x: each bin's start)."""
    width = wall / TIME_BINS if wall > 0 else 1.0
    series = []
    for executor in executors:
        for kind in ("queued", "running"):  # the cpu counter is drawn as a rate (``_cpu``)
            points = timeline.counters.get((executor, kind), [])
            if points:
                series.append({"executor": executor, "kind": kind, "values": _resample(points, timeline.origin, wall)})
    return {"t": [round(i * width, DIGITS) for i in range(TIME_BINS)], "series": series}


def _utilization(timeline: Timeline, executors: list[str], wall: float) -> list[dict[str, Any]]:
    """Per executor: tasks, workers, busy seconds and busy / (workers x the trace's duration)."""
    rows = []
    for executor in executors:
        tasks = [t for t in timeline.tasks if t.executor == executor]
        workers = timeline.max_workers.get(executor) or len({t.lane for t in tasks})
        busy = sum(t.run for t in tasks)
        capacity = workers * wall
        rows.append(
            {
                "executor": executor,
                "tasks": len(tasks),
                "workers": workers,
                "busy": round(busy, DIGITS),
                "utilization": round(busy / capacity, 4) if capacity > 0 else 0.0,
            }
        )
    return rows


# -- CPU used against busy workers -------------------------------------------------------------------------------------
def _cpu(timeline: Timeline, executors: list[str], wall: float) -> dict[str, Any]:
    """Per executor whose workers' CPU the timeline holds: the CPUs they used over time (the rate of its ``cpu``
    counter, resampled as the counters are) and one sentence that says what the run's numbers mean."""
    series, verdicts = [], []
    for executor in executors:
        points = timeline.counters.get((executor, "cpu"), [])
        tasks = [t for t in timeline.tasks if t.executor == executor]
        if not points or not tasks:
            continue
        first = min(t.start for t in tasks)
        if first < points[0][0]:  # the first read holds what the workers used from the first task on
            points = [(first, 0.0), *points]
        rates = [(t0, max(c1 - c0, 0.0) / (t1 - t0)) for (t0, c0), (t1, c1) in itertools.pairwise(points) if t1 > t0]
        values = _resample([*rates, (points[-1][0], 0.0)], timeline.origin, wall)
        series.append({"executor": executor, "values": values})
        active = _union(sorted((t.start, t.start + t.run) for t in tasks))
        if active > 0:
            waits = timeline.counters.get((executor, "cpu_wait"), [])
            busy, cpus = sum(t.run for t in tasks) / active, points[-1][1] / active
            waited = waits[-1][1] / active if waits else 0.0
            sentence = cpu_sentence(executor, timeline.kinds.get(executor, ""), busy, cpus, waited)
            verdicts.append({"executor": executor, "busy_workers": round(busy, 3), "cpus": round(cpus, 3),
                             "waiting_for_cpu": round(waited, 3), "sentence": sentence})  # fmt: skip
    return {"series": series, "verdicts": verdicts}


def _union(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by the sorted ``intervals``: when at least one task ran."""
    total, reach = 0.0, -math.inf
    for start, stop in intervals:
        if stop > reach:
            total += stop - max(start, reach)
            reach = stop
    return total


def _several(value: float, one: str, tenths: bool) -> str:
    """``value`` of ``one``, in tenths (else whole from 1 up), in the plural but for 1."""
    shown = f"{value:.1f}" if tenths or value < 0.95 else f"{value:.0f}"
    return f"{shown} {one}" if shown in ("1", "1.0") else f"{shown} {one}s"


def cpu_sentence(executor: str, kind: str, busy: float, cpus: float, waiting: float) -> str:
    """What ``busy`` workers on average busy, on ``cpus`` CPUs and runnable but waiting for one on ``waiting``
    more, while any of them was busy, say: that the tasks compute (each on a CPU, or short of cores), wait (I/O,
    locks, other services), or are serialized by the GIL (a thread pool of several busy workers of which about one
    at a time runs or waits for a CPU)."""
    runnable = (cpus + waiting) / busy if busy > 0 else 0.0
    if kind == "thread" and busy >= 1.5 and cpus + waiting >= 0.6 and runnable < 0.7:
        meaning = "CPU-bound under the GIL, a process or interpreter pool would run them in parallel"
    elif runnable < 0.3:
        meaning = "the tasks mostly wait"
    elif runnable < 0.7:
        meaning = "the tasks compute part of the time and wait the rest"
    elif cpus / busy >= 0.7:
        meaning = "the tasks compute, each busy worker on a CPU of its own"
    else:
        share = waiting / (cpus + waiting)
        meaning = f"the tasks compute, but waited for a CPU {share:.0%} of the time: the machine's cores were busy"
    return f"{executor}: {_several(busy, 'worker', False)} busy on {_several(cpus, 'CPU', True)}: {meaning}"


# -- distributions ---------------------------------------------------------------------------------------------------
def bucket_edges() -> list[float]:
    """The histograms' upper bounds: ``BUCKETS_PER_DECADE`` log-spaced per decade from ``LOWEST`` to ``HIGHEST``."""
    decades = round(math.log10(HIGHEST / LOWEST))
    return [float(f"{LOWEST * 10 ** (i / BUCKETS_PER_DECADE):.3g}") for i in range(decades * BUCKETS_PER_DECADE + 1)]


def _histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)  # the last: above HIGHEST
    for value in values:
        counts[bisect.bisect_left(edges, value)] += 1
    return counts


def _histograms(timeline: Timeline, executors: list[str], functions: list[str]) -> dict[str, Any]:
    """Queue-wait and run-time histograms per executor and per function (the tasks of the other functions summed),
    trimmed to the buckets that hold anything."""
    edges = bucket_edges()
    groups: dict[str, list[tuple[str, str]]] = {"executor": [], "function": []}
    queue: dict[tuple[str, str], list[float]] = defaultdict(list)
    run: dict[tuple[str, str], list[float]] = defaultdict(list)
    kept = set(functions)
    for t in timeline.tasks:
        for key in (("executor", t.executor), ("function", t.function if t.function in kept else OTHER)):
            run[key].append(t.run)
            if t.queue is not None:
                queue[key].append(t.queue)
    for key in sorted(run.keys() | queue.keys(), key=lambda k: (k[0], -len(run[k]), k[1])):
        groups[key[0]].append(key)
    counted = {
        name: {f"{key[0]}:{key[1]}": _histogram(values[key], edges) for key in run.keys() | queue.keys()}
        for name, values in (("queue", queue), ("run", run))
    }
    used = [i for i in range(len(edges) + 1) if any(counts[i] for side in counted.values() for counts in side.values())]
    first, last = (used[0], used[-1]) if used else (0, 0)
    return {
        # bucket i of the lists below holds the values in (bounds[i], bounds[i + 1]]; None: no upper bound
        "bounds": [0.0, *edges, None][first : last + 2],
        "groups": {group: [f"{key[0]}:{key[1]}" for key in keys] for group, keys in groups.items()},
        "names": {f"{key[0]}:{key[1]}": key[1] for keys in groups.values() for key in keys},
        "queue": {key: counts[first : last + 1] for key, counts in counted["queue"].items()},
        "run": {key: counts[first : last + 1] for key, counts in counted["run"].items()},
    }


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank), None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _stats(values: list[float]) -> dict[str, float | None]:
    values.sort()
    return {
        "p50": quantile(values, 0.5),
        "p95": quantile(values, 0.95),
        "max": values[-1] if values else None,
    }


def _function_rows(timeline: Timeline) -> list[dict[str, Any]]:
    """One row per (executor, function): count, errors, busy and CPU seconds, the CPU share of the time its tasks
    ran, queue-wait and run-time quantiles, busiest first."""
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for t in timeline.tasks:
        grouped[(t.executor, t.function)].append(t)
    rows = []
    for (executor, function), tasks in grouped.items():
        busy = sum(t.run for t in tasks)
        timed = [t for t in tasks if t.cpu is not None]
        ran = sum(t.run for t in timed)
        rows.append(
            {
                "executor": executor,
                "function": function,
                "tasks": len(tasks),
                "errors": sum(t.outcome == ERROR for t in tasks),
                "busy": round(busy, DIGITS),
                # The CPU its tasks used over the time they ran (those whose CPU the file holds): near 1 they
                # compute, near 0 they wait.
                "cpu": round(sum(t.cpu or 0.0 for t in timed), DIGITS) if timed else None,
                "cpu_share": round(sum(t.cpu or 0.0 for t in timed) / ran, 4) if timed and ran > 0 else None,
                "queue": _stats([t.queue for t in tasks if t.queue is not None]),
                "run": _stats([t.run for t in tasks]),
            }
        )
    rows.sort(key=lambda row: -row["busy"])
    return rows[: MAX_FUNCTIONS * 2]


# -- tables ------------------------------------------------------------------------------------------------------------
def _task_row(timeline: Timeline, task: Any) -> dict[str, Any]:
    return {
        "function": task.function,
        "executor": task.executor,
        "worker": timeline.lane_name(task.lane),
        "start": _rel(timeline, task.start),
        "run": round(task.run, DIGITS),
        "queue": None if task.queue is None else round(task.queue, DIGITS),
        "outcome": task.outcome,
        "error_type": task.error_type,
        "trace_id": task.trace_id,
        "span_id": task.span_id,
        "worker_died": task.died,
    }


def _span_rows(timeline: Timeline) -> list[dict[str, Any]]:
    """Per executor, function and span name, the spans the tasks' code made: how many, in how many tasks, their
    seconds in all, median and longest, and their share of the time those tasks ran; most time first."""
    if not timeline.spans:
        return []
    tasks = {t.key: t for t in timeline.tasks}
    grouped: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    ran: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)  # the tasks that made them: run time
    for span in timeline.spans:
        task = tasks.get(span.task)
        key = (task.executor, task.function, span.name) if task is not None else ("", "", span.name)
        grouped[key].append(span.duration)
        if task is not None:
            ran[key][task.key] = task.run
    rows: list[dict[str, Any]] = []
    for (executor, function, name), durations in grouped.items():
        durations.sort()
        total, run = sum(durations), sum(ran[executor, function, name].values())
        rows.append(
            {
                "executor": executor,
                "function": function,
                "span": name,
                "spans": len(durations),
                "tasks": len(ran[executor, function, name]),
                "total": round(total, DIGITS),
                "p50": quantile(durations, 0.5),
                "max": durations[-1],
                "share": round(total / run, 4) if run > 0 else None,
            }
        )
    rows.sort(key=lambda row: -row["total"])
    return rows[: MAX_FUNCTIONS * 2]


def _blocked_rows(timeline: Timeline) -> list[dict[str, Any]]:
    """Per blocking call kind and calling thread: calls, total seconds blocked, median and longest call."""
    grouped: dict[tuple[str, int], list[float]] = defaultdict(list)
    for b in timeline.blocked:
        grouped[(b.kind, b.lane)].append(b.duration)
    rows: list[dict[str, Any]] = []
    for (kind, lane), durations in grouped.items():
        durations.sort()
        rows.append(
            {
                "kind": kind,
                "caller": timeline.lane_name(lane),
                "calls": len(durations),
                "total": round(sum(durations), DIGITS),
                "p50": quantile(durations, 0.5),
                "max": durations[-1],
            }
        )
    rows.sort(key=lambda row: -row["total"])
    return rows
