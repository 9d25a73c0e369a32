"""``tracedfutures record`` on an unchanged program (tests/recordworkload.py): thread, process (fork, forkserver,
spawn) and, from 3.14, interpreter pools with known tasks, errors and cancellations. Every task that ran has
exactly one slice, on a worker of its own pool, with its real duration; the file is the Chrome Trace Event Format
(validated here: fields, microseconds, slices that nest on each thread, flows and async slices that pair up); the
exit status is the program's, also after an uncaught exception or Ctrl-C (which still write the timeline); the
cap counts what it left out."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from timelinesupport import SLEEP_MS, trace_document

from tracedfutures import _stdlib

#: The public-API fallback, forced: an interpreter pool's tasks are then chained to the pool's own futures, whose
#: start in the worker thread the lifecycle never hears of.
FORCED = os.environ.get(_stdlib.FORCE_FALLBACK_ENV, "") not in ("", "0")

TESTS = Path(__file__).resolve().parent
#: Whether this Python has ``InterpreterPoolExecutor`` (3.14 and later), which the workload then runs too.
INTERPRETERS = "InterpreterPoolExecutor" in concurrent.futures.__all__
TIMEOUT = 120
#: How much longer than the task measured itself its slice may be: the call around it, under a loaded machine.
SLACK_NS = 25_000_000
PHASES = {"X", "M", "b", "e", "s", "f", "C", "i"}
UINT32 = 1 << 32


def record(tmp_path: Path, *program: str, options: tuple[str, ...] = ()) -> tuple[int, dict[str, Any], Path]:
    """Run ``tracedfutures record`` on the workload; its exit status, the truth the program wrote (if it did) and
    the timeline file."""
    trace = tmp_path / "trace.json"
    truth = tmp_path / "truth.json"
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), *options, "--"]
    command += [sys.executable, str(TESTS / "recordworkload.py"), str(truth), *program]
    done = subprocess.run(command, cwd=TESTS, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert f"timeline written to {trace}" in done.stderr, done.stderr
    return done.returncode, json.loads(truth.read_text()) if truth.exists() else {}, trace


def validated(path: Path) -> dict[str, Any]:
    """The trace file, after checking it against the Chrome Trace Event Format as ui.perfetto.dev and
    chrome://tracing read it."""
    document = trace_document(path)
    events = document["traceEvents"]
    assert isinstance(events, list) and events
    for event in events:
        phase = event["ph"]
        assert phase in PHASES, event
        assert isinstance(event["pid"], int) and 0 < event["pid"] < UINT32, event
        assert isinstance(event["name"], str) and event["name"], event
        if phase != "M":
            assert isinstance(event["ts"], (int, float)), event
        if phase in "XMsf":
            assert isinstance(event["tid"], int) and 0 <= event["tid"] < UINT32, event
        if phase == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
        elif phase == "M":
            assert event["name"] in ("process_name", "thread_name") and isinstance(event["args"]["name"], str)
        elif phase in "bsf":
            assert isinstance(event["id"], str) and int(event["id"], 16) >= 0 and event["cat"], event
        elif phase == "C":
            assert event["args"] and all(isinstance(v, (int, float)) for v in event["args"].values()), event
        if phase == "f":
            assert event["bp"] == "e", event
    slices_nest(events)
    pairs_match(events)
    return document


def slices_nest(events: list[dict[str, Any]]) -> None:
    """On each thread, two slices are either apart or one holds the other (in ns, as the viewers read them)."""
    by_thread: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for event in events:
        if event["ph"] == "X":
            start = round(event["ts"] * 1000)
            by_thread.setdefault((event["pid"], event["tid"]), []).append((start, start + round(event["dur"] * 1000)))
    for thread, slices in by_thread.items():
        open_ends: list[int] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], (thread, start, end, open_ends)
            open_ends.append(end)


def pairs_match(events: list[dict[str, Any]]) -> None:
    """Every async slice begins and ends once, after its begin; every flow starts once and finishes once, later,
    where a task slice begins; every flow start lies in a slice on its thread."""
    begins = {(e["cat"], e["id"], e["name"]): e["ts"] for e in events if e["ph"] == "b"}
    ends = {(e["cat"], e["id"], e["name"]): e["ts"] for e in events if e["ph"] == "e"}
    assert begins.keys() == ends.keys() and len(begins) == sum(e["ph"] == "b" for e in events)
    assert all(begins[key] <= ends[key] for key in begins)
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == finishes.keys()
    task_starts = {(e["pid"], e["tid"], e["ts"]) for e in events if e["ph"] == "X" and e.get("cat") == "task"}
    slices = [e for e in events if e["ph"] == "X"]
    for flow, start in starts.items():
        finish = finishes[flow]
        assert start["ts"] <= finish["ts"] and (finish["pid"], finish["tid"], finish["ts"]) in task_starts
        assert any(
            s["pid"] == start["pid"] and s["tid"] == start["tid"] and s["ts"] <= start["ts"] < s["ts"] + s["dur"]
            for s in slices
        ), start


def task_slices(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in document["traceEvents"] if e["ph"] == "X" and e.get("cat") == "task"]


def names(document: dict[str, Any], what: str) -> dict[Any, str]:
    found = {}
    for event in document["traceEvents"]:
        if event["ph"] == "M" and event["name"] == what:
            key = event["pid"] if what == "process_name" else (event["pid"], event["tid"])
            assert key not in found, key  # named once
            found[key] = event["args"]["name"]
    return found


def test_every_task_that_ran_has_one_slice_on_a_worker_of_its_pool(tmp_path: Path) -> None:
    status, truth, path = record(tmp_path, "3", "pools")
    assert status == 3
    document = validated(path)
    slices = task_slices(document)
    threads = names(document, "thread_name")
    thread_ids = {
        (e["pid"], e["tid"]): e["args"]["thread.id"]
        for e in document["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    main_pid = truth["pid"]
    assert names(document, "process_name")[main_pid] == "recordworkload.py"

    # Every slice is a task that ran, once: per executor name and function, as many slices as tasks that ran.
    ran = Counter(
        (pool["name"], task["function"])
        for pool in truth["executors"]
        for task in pool["tasks"]
        if task["outcome"] != "cancelled"
    )
    assert Counter((s["args"]["executor"], s["name"]) for s in slices) == ran
    assert ("threads", "quick") not in ran  # the cancelled task left no slice

    for pool in truth["executors"]:
        name, tasks = pool["name"], pool["tasks"]
        worker_pids = {task["pid"] for task in tasks if "pid" in task}
        mine = [s for s in slices if s["args"]["executor"] == name and s["pid"] in worker_pids | {main_pid}]
        if name == "ProcessPoolExecutor":  # three pools of that name: each one's slices are in its own workers
            assert main_pid not in worker_pids and len(worker_pids) <= 2
            mine = [s for s in mine if s["pid"] in worker_pids]
            assert len(mine) == len(tasks), pool["method"]
            assert {threads[s["pid"], s["tid"]] for s in mine} == {"MainThread"}
        else:
            assert worker_pids == {main_pid}
            assert len(mine) == len(tasks) - 1  # all but the cancelled one
            prefix = "threads_" if name == "threads" else "interp_"
            assert all(threads[s["pid"], s["tid"]].startswith(prefix) for s in mine)
        # Each task's own CPU time on its slice: measured on its worker thread from its start to its end, by the
        # lifecycle for a thread or interpreter pool, by the worker for a process pool's task (or an interpreter
        # pool's under the public-API fallback), sent home with its outcome. A thread or process pool's is at most
        # its run time (a worker thread runs one task at a time); an interpreter pool's also holds carrying the
        # call and its outcome in and out of the interpreter (the first task on a worker imports the task's module
        # there, a failed one's exception is formatted there), which its slice leaves out.
        assert all(s["args"]["cpu_time"] >= 0 for s in mine), name
        if name in ("threads", "ProcessPoolExecutor"):
            assert all(s["args"]["cpu_time"] <= s["dur"] * 1e-6 + 0.002 for s in mine)
        # Never more worker threads than max_workers; each task on the worker that really ran it.
        assert len({(s["pid"], s["tid"]) for s in mine}) <= pool["max_workers"]
        by_function = {s["name"]: s for s in mine}
        for task in tasks:
            function = task["function"]
            found = by_function.get(function)
            if task["outcome"] == "cancelled":
                assert found is None
                continue
            # A slice says its outcome when it is not a success (the format's default).
            assert found is not None and found["args"].get("outcome", "success") == task["outcome"], (name, function)
            if function == "blocker":  # one per worker: the one found is one of them
                continue
            if task["outcome"] == "error":
                assert found["args"]["error.type"] == "timelinesupport.KnownError"
            if "ran_ns" in task:  # its real duration: what it measured itself, and the little around the call
                assert found["pid"] == task["pid"] and thread_ids[found["pid"], found["tid"]] == task["thread"]
                slice_ns = round(found["dur"] * 1000)
                assert task["ran_ns"] <= slice_ns < task["ran_ns"] + SLACK_NS, (name, function)
                assert slice_ns >= SLEEP_MS[int(function.split("_")[1])] * 1_000_000
            assert found["name"] == function  # a slice is named by its function
            # No span was made for the timeline (the program set up no tracing): no trace or span id.
            assert "trace_id" not in found["args"] and "span_id" not in found["args"]

    # No task data: no argument, result or exception message.
    assert "a message the timeline must not hold" not in path.read_text()

    # One queued slice per task (cancelled ones too), joined to its task's slice by the task's id, wait /
    # as_completed slices on the caller's thread, and counters that come back to 0 and never exceed what was
    # submitted.
    events = document["traceEvents"]
    submitted = sum(len(pool["tasks"]) for pool in truth["executors"])
    assert sum(e["ph"] == "b" for e in events) == submitted
    queued_ids = {e["id"] for e in events if e["ph"] == "b"}
    assert len(queued_ids) == submitted and {s["args"]["id"] for s in slices} <= queued_ids
    calls = Counter(e["name"] for e in events if e["ph"] == "X" and e.get("cat") == "futures")
    pools, thread_pools = len(truth["executors"]), sum(p["name"] in ("threads", "interp") for p in truth["executors"])
    assert calls == {"wait": pools + thread_pools, "as_completed": pools}  # thread pools wait for their blockers
    assert {threads[e["pid"], e["tid"]] for e in events if e.get("cat") == "futures"} == {"MainThread"}
    last: dict[tuple[str, str], float] = {}
    for event in sorted((e for e in events if e["ph"] == "C"), key=lambda e: e["ts"]):
        ((executor, value),) = event["args"].items()
        assert event["id"] == executor and value >= 0, event
        if event["name"] in ("cpu", "cpu_wait"):  # seconds so far: never down
            assert value >= last.get((executor, event["name"]), 0), event
        else:
            assert value <= submitted
        last[executor, event["name"]] = value
    executors = {pool["name"] for pool in truth["executors"]}
    assert {key: value for key, value in last.items() if key[1] in ("queued", "running")} == {
        (name, counter): 0 for name in executors for counter in ("queued", "running")
    }
    # The running counter's time integral is the time the executor's tasks ran, exactly (a process pool's tasks
    # too, whose start comes home with their outcome: it holds back the counters until then).
    for name in executors:
        points = [(e["ts"], e["args"][name]) for e in events if e["ph"] == "C" and e["name"] == "running"
                  and e["id"] == name]  # fmt: skip
        busy = sum(s["dur"] for s in slices if s["args"]["executor"] == name)
        integral = sum((after[0] - before[0]) * before[1] for before, after in itertools.pairwise(points))
        assert integral == pytest.approx(busy, rel=1e-3, abs=50), name
    # The workers' CPU: every executor here is a thread, interpreter or process pool, whose workers' CPU is read.
    assert {key for key in last if key[1] == "cpu"} == {(name, "cpu") for name in executors}
    assert document["otherData"]["left_out"] == 0
    assert document["otherData"]["executors"]["threads"] == {"kind": "thread", "max_workers": 3}


def ns(us: float) -> int:
    """A time of the file (microseconds, written to the nanosecond) in nanoseconds."""
    return round(us * 1000)


def drawn_as_their_tasks_made_them(
    document: dict[str, Any], spans: dict[str, dict[str, Any]], *, not_drawn: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The span slices of the timeline, checked against ``spans`` (every span the program got, by span id: name,
    ``parent_id``, ``start``, ``end``): one slice for each span that descends from a task span but those named in
    ``not_drawn``, on its task's lane, inside its task's slice, at the span's own times, with the task's number
    and nothing else; task spans are not drawn as spans."""
    origin = document["otherData"]["origin_unix_ns"]
    tasks = {s["args"]["span_id"]: s for s in task_slices(document)}

    def task_of(span: dict[str, Any]) -> dict[str, Any] | None:
        while span["parent_id"] not in tasks:
            if span["parent_id"] not in spans:
                return None
            span = spans[span["parent_id"]]
        return tasks[span["parent_id"]]

    expected = []
    for span in spans.values():
        task = task_of(span)
        if task is not None and span["span_id"] not in tasks and span["name"] not in not_drawn:
            lane = (task["args"]["id"], span["name"], task["pid"], task["tid"])
            expected.append((*lane, span["start"] - origin, span["end"] - span["start"]))
    drawn = [e for e in document["traceEvents"] if e.get("cat") == "span"]
    assert sorted(
        (e["args"]["task"], e["name"], e["pid"], e["tid"], ns(e["ts"]), ns(e["dur"])) for e in drawn
    ) == sorted(expected)  # fmt: skip
    assert all(e["ph"] == "X" and e["args"] == {"task": e["args"]["task"]} for e in drawn)
    by_number = {s["args"]["id"]: s for s in tasks.values()}
    for event in drawn:  # inside its task's slice
        task = by_number[event["args"]["task"]]
        assert ns(task["ts"]) <= ns(event["ts"]) and ns(event["ts"] + event["dur"]) <= ns(task["ts"] + task["dur"])
    return drawn


def test_the_spans_tasks_make_are_drawn_inside_their_slices(tmp_path: Path) -> None:
    """A program with tracing of its own (its SDK tracer provider set as the global one) whose tasks make spans: a
    thread pool's task two nested ones (``resize`` holding ``encode``), a process pool's (fork, spawn) and, from
    3.14, an interpreter pool's one (``compress``, which comes home with the outcome). Each is a slice of category
    ``span`` on its task's lane, inside its task's slice, at the span's own times, named by the span and joined to
    its task by the task's number: nothing else of it is written. Task spans are not drawn as spans."""
    status, truth, path = record(tmp_path, "0", "spans")
    assert status == 0
    document = validated(path)  # the lanes' slices nest, the spans' with them
    spans = {span["span_id"]: span for span in truth["executors"]}
    tasks = {s["args"]["span_id"]: s for s in task_slices(document)}
    interpreters = ["interp compress"] if INTERPRETERS else []
    assert sorted(spans[span_id]["name"] for span_id in tasks) == [
        "ProcessPoolExecutor compress", "ProcessPoolExecutor compress", "images resize", "images resize",
        "images resize", *interpreters,
    ]  # fmt: skip
    drawn = drawn_as_their_tasks_made_them(document, spans)
    assert sorted(e["name"] for e in drawn) == ["compress"] * (2 + len(interpreters)) + ["encode"] * 3 + ["resize"] * 3
    assert not any("spans_left_out" in task["args"] for task in tasks.values())
    by_number = {s["args"]["id"]: s for s in tasks.values()}
    threads = names(document, "thread_name")
    lanes = Counter((by_number[e["args"]["task"]]["args"]["executor"], threads[e["pid"], e["tid"]][:7]) for e in drawn)
    assert lanes.keys() == {("images", "images_"), ("ProcessPoolExecutor", "MainThr")} | (
        {("interp", "interp_")} if INTERPRETERS else set()
    )  # a thread pool's worker threads, the worker processes' main thread, an interpreter pool's worker thread
    workers = {e["pid"] for e in drawn if by_number[e["args"]["task"]]["args"]["executor"] == "ProcessPoolExecutor"}
    assert len(workers) == 2 and truth["pid"] not in workers  # the two worker processes
    assert "spans_left_out" not in document["otherData"]


@pytest.mark.parametrize(
    ("program", "name"),
    [
        (["-m", "recordworkload"], "recordworkload"),
        (["-X", "dev", "-mrecordworkload"], "recordworkload"),
        (["-c", "import recordworkload, sys; sys.exit(recordworkload.main(sys.argv[1:]))"], None),
    ],
    ids=["-m module", "-mmodule after options", "-c"],
)
def test_the_process_is_named_as_its_command_line_names_the_program(
    tmp_path: Path, program: list[str], name: str | None
) -> None:
    """``python -m pkg.mod`` is named ``pkg.mod``, ``python -c CODE`` the interpreter as it was called (``ps``'s
    name for it): not ``-m`` or ``-c``, which is ``sys.argv[0]`` when the recording starts."""
    trace, truth = tmp_path / "trace.json", tmp_path / "truth.json"
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", sys.executable, *program]
    done = subprocess.run(
        [*command, str(truth), "0", "many", "5"], cwd=TESTS, capture_output=True, text=True, timeout=TIMEOUT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = name if name is not None else os.path.basename(sys.executable)
    assert names(validated(trace), "process_name") == {json.loads(truth.read_text())["pid"]: expected}


def test_an_uncaught_exception_still_writes_and_gives_its_status(tmp_path: Path) -> None:
    status, _, path = record(tmp_path, "0", "raise")
    assert status == 1
    assert validated(path)["otherData"]["left_out"] == 0


def test_ctrl_c_still_writes_the_timeline(tmp_path: Path) -> None:
    trace, ready = tmp_path / "trace.json", tmp_path / "ready"
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", sys.executable]
    command += [str(TESTS / "recordworkload.py"), str(tmp_path / "truth.json"), "0", "interrupt", str(ready)]
    recorder = subprocess.Popen(command, cwd=TESTS, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not ready.exists():  # the program writes its pid there (whole: renamed into place) once its tasks ran
        assert recorder.poll() is None, recorder.communicate()[1]
        assert time.monotonic() < deadline, "the program did not get ready"
        time.sleep(0.05)
    # Ctrl-C in a terminal sends SIGINT to record and the program alike; record ignores it (once the program has
    # started, which its readiness does not prove), so it is sent to the program, which ends as it would.
    os.kill(int(ready.read_text()), signal.SIGINT)
    _, stderr = recorder.communicate(timeout=TIMEOUT)
    assert recorder.returncode == 128 + signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    slices = task_slices(validated(trace))
    assert [s["name"] for s in slices] == ["quick"] * 4


def test_the_cap_counts_what_it_left_out(tmp_path: Path) -> None:
    status, _, path = record(tmp_path, "0", "many", "50", options=("--max-tasks", "10"))
    assert status == 0
    document = validated(path)
    assert len(task_slices(document)) == 10
    other = document["otherData"]
    assert (other["max_tasks"], other["drawn"], other["left_out"]) == (10, 10, 40)
    # The counters still count every task: 50 submitted, all of them queued at once at the start of map().
    queued = [e["args"]["many"] for e in document["traceEvents"] if e["ph"] == "C" and e["name"] == "queued"]
    assert max(queued) > 10 and queued[-1] == 0


def test_a_command_that_does_not_run_gives_127(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(tmp_path / "t.json"), "--"]
    done = subprocess.run([*command, str(tmp_path / "missing")], capture_output=True, text=True, check=False)
    assert done.returncode == 127 and "cannot run" in done.stderr
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no command" in done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "must be 0 or more, not '-1'"),
        ("many", "not a whole number: 'many'"),
        ("2.5", "not a whole number: '2.5'"),
    ],
)
def test_a_bad_max_tasks_is_a_usage_error(tmp_path: Path, value: str, message: str) -> None:
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(tmp_path / "t.json"), "--max-tasks", value]
    done = subprocess.run([*command, "--", sys.executable, "-c", "pass"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "usage: tracedfutures record [-h] -o TRACE.json [--max-tasks N] ...\n"
        f"tracedfutures record: error: argument --max-tasks: {message}\n"
    )
    assert not (tmp_path / "t.json").exists()


def test_help_shows_examples_and_the_default_number() -> None:
    from tracedfutures._cli import record as record_verb
    from tracedfutures.timeline import DEFAULT_MAX_TASKS

    assert record_verb.DEFAULT_MAX_TASKS == DEFAULT_MAX_TASKS  # written out in the command line, the same number
    done = subprocess.run([sys.executable, "-m", "tracedfutures", "record", "--help"], capture_output=True,
                          text=True, check=False, env={**os.environ, "COLUMNS": "120"})  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""
    assert f"counts the rest (default: {DEFAULT_MAX_TASKS})\n" in done.stdout
    assert done.stdout.endswith(
        "examples:\n"
        "  tracedfutures record -o trace.json -- python app.py --workers 8\n"
        "  tracedfutures record -o trace.json --max-tasks 50000 -- python -m mypackage.job\n"
        "  tracedfutures report trace.json -o report.html\n"
    )


@pytest.mark.parametrize("max_tasks", [0, 3])
def test_the_writer_alone_bounds_its_file(tmp_path: Path, max_tasks: int) -> None:
    """The span processor set up by a program's own SDK: the same file, the same cap."""
    from opentelemetry.sdk.trace import TracerProvider

    import tracedfutures
    from tracedfutures.timeline import TimelineWriter

    provider = TracerProvider()
    writer = TimelineWriter(tmp_path / "own.json", max_tasks=max_tasks)
    provider.add_span_processor(writer)
    with tracedfutures.TracedThreadPoolExecutor(2, name="own", tracer_provider=provider) as executor:
        assert list(executor.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
    provider.shutdown()
    writer.shutdown()  # a second time does nothing
    document = validated(tmp_path / "own.json")
    assert len(task_slices(document)) == max_tasks
    assert document["otherData"]["left_out"] == 5 - max_tasks
    with pytest.raises(ValueError, match="max_tasks"):
        TimelineWriter(tmp_path / "bad.json", max_tasks=-1)


def writing_provider(path: Path) -> tuple[Any, Any, Any]:
    """A program's own SDK provider whose span processors are a ``TimelineWriter`` writing ``path`` and an in-memory
    exporter: the provider, the writer and the exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tracedfutures.timeline import TimelineWriter

    provider = TracerProvider()
    writer = TimelineWriter(path)
    provider.add_span_processor(writer)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, writer, exporter


def test_the_writer_as_a_span_processor_draws_the_spans_tasks_make(tmp_path: Path) -> None:
    """The span processor of a program's own provider draws the same span slices (two nested ones of a thread
    pool's task, one of a process pool's, spawned), and leaves out what cannot be drawn inside a task: of two spans
    that cross, the one that would cross the other (counted on the task's slice); a span that ends after its task
    (nor is it kept); a task submitted from a task, drawn as a task of its own with its spans on its own lane."""
    import multiprocessing

    from timelinesupport import compress

    import tracedfutures

    provider, writer, exporter = writing_provider(tmp_path / "own.json")
    tracer = provider.get_tracer("app")
    inner = tracedfutures.TracedThreadPoolExecutor(1, name="inner", tracer_provider=provider)

    def traced_resize(size: int) -> int:
        with tracer.start_as_current_span("resize"), tracer.start_as_current_span("encode"):
            return size

    def crossing() -> None:
        first, second = tracer.start_span("first"), tracer.start_span("second")
        first.end()
        second.end()

    def outer() -> int:
        with tracer.start_as_current_span("prepare"):
            pass
        return inner.submit(traced_resize, 7).result()

    with tracedfutures.TracedThreadPoolExecutor(2, name="own", tracer_provider=provider) as pool:
        assert list(pool.map(traced_resize, range(2))) == [0, 1]
        pool.submit(crossing).result()
        late = pool.submit(tracer.start_span, "late").result()
        assert pool.submit(outer).result() == 7
    late.end()
    inner.shutdown()
    spawn = multiprocessing.get_context("spawn")
    with tracedfutures.TracedProcessPoolExecutor(1, name="procs", mp_context=spawn, tracer_provider=provider) as procs:
        assert procs.submit(compress, 1).result() == 1
    assert writer.spans_in_tasks.held == {}  # type: ignore[attr-defined]  # every span drawn with its task, or none
    provider.shutdown()

    document = validated(tmp_path / "own.json")
    spans = {
        f"{span.context.span_id:016x}": {
            "name": span.name,
            "span_id": f"{span.context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "start": span.start_time,
            "end": span.end_time,
        }
        for span in exporter.get_finished_spans()
    }
    drawn = drawn_as_their_tasks_made_them(document, spans, not_drawn=("second", "late"))
    assert sorted(e["name"] for e in drawn) == ["compress", "encode", "encode", "encode", "first", "prepare"] + [
        "resize"
    ] * 3  # fmt: skip
    slices = {s["name"].rsplit(".", 1)[-1]: s for s in task_slices(document) if s["args"]["executor"] == "own"}
    assert slices["crossing"]["args"]["spans_left_out"] == 1
    assert not any("spans_left_out" in s["args"] for s in task_slices(document) if s is not slices["crossing"])
    nested = next(s for s in task_slices(document) if s["args"]["executor"] == "inner")
    assert {e["name"] for e in drawn if e["args"]["task"] == nested["args"]["id"]} == {"resize", "encode"}
    assert {e["name"] for e in drawn if e["args"]["task"] == slices["outer"]["args"]["id"]} == {"prepare"}


def test_slices_are_named_by_their_function_and_older_files_are_read(tmp_path: Path) -> None:
    """Each slice is named by the function its task ran; files written by 0.1.0 (slices named like their spans,
    the function in ``code.function``) and by the releases that put it in ``code.function.name`` read the same."""
    import json

    from opentelemetry.sdk.trace import TracerProvider

    import tracedfutures
    from tracedfutures._cli import timeline_reader
    from tracedfutures.timeline import TimelineWriter

    provider = TracerProvider()
    provider.add_span_processor(TimelineWriter(tmp_path / "new.json"))
    with tracedfutures.TracedThreadPoolExecutor(1, name="named", tracer_provider=provider) as executor:
        assert list(executor.map(abs, [-1, -2])) == [1, 2]
    provider.shutdown()
    slices = task_slices(validated(tmp_path / "new.json"))
    assert [s["name"] for s in slices] == ["abs"] * 2
    assert not any("code.function" in key for s in slices for key in s["args"])
    for key in ("code.function", "code.function.name"):
        old = [
            {"ph": "X", "cat": "task", "name": "named abs", "pid": 1, "tid": 1, "ts": 10 * i, "dur": 5,
             "args": {"executor": "named", key: "abs", "outcome": "success", "span_id": f"{i:016x}"}}
            for i in range(2)
        ]  # fmt: skip
        (tmp_path / "old.json").write_text(json.dumps({"traceEvents": old, "otherData": {}}))
        tasks = timeline_reader.read(tmp_path / "old.json").tasks
        assert [(task.executor, task.function) for task in tasks] == [("named", "abs")] * 2, key
    tasks = timeline_reader.read(tmp_path / "new.json").tasks
    assert [(task.executor, task.function) for task in tasks] == [("named", "abs")] * 2


class _Span:
    """What the writer reads of an SDK span, for a task: made directly, so that many can pass quickly."""

    def __init__(self, span_id: int, submitted: int, started: int, ended: int) -> None:
        from opentelemetry.sdk.trace import Event
        from opentelemetry.trace import SpanContext

        self.name = "many quick"
        self.context = SpanContext(1, span_id, is_remote=False)
        self.attributes = {"executor.name": "many", "executor.kind": "thread", "code.function.name": "quick",
                           "process.pid": os.getpid(), "thread.id": 7, "thread.name": "many_0"}  # fmt: skip
        self.start_time, self.end_time = submitted, ended
        self.events = (Event("running", timestamp=started),)

    def get_span_context(self) -> Any:
        return self.context


def test_memory_stays_bounded_however_many_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """30,000 tasks past a cap of none drawn: the writer's memory does not grow with them (the counters' changes
    are written in time order as they become final, at most ``CHUNK`` held), and the counters are exact."""
    import tracemalloc

    from tracedfutures import timeline

    monkeypatch.setattr(timeline, "CHUNK", 1024)
    monkeypatch.setattr(timeline, "BUFFER_BYTES", 1 << 16)
    writer = timeline.TimelineWriter(tmp_path / "many.json", max_tasks=0)
    # Later than the clock: no change is final by the clock (the synthetic tasks come faster than it runs), only
    # by the cap on what is held.
    base = time.time_ns() + 3600 * 10**9
    tracemalloc.start()
    try:
        for i in range(30_000):  # task i queues at 10 i µs and runs from 10 i + 5 to 10 i + 27: three at once
            at = base + 10_000 * i
            span = _Span(i + 1, at, at + 5_000, at + 27_000)
            writer.on_start(span)  # type: ignore[arg-type]
            writer.on_end(span)  # type: ignore[arg-type]
            assert len(writer._counters.changes) <= 1024
            if i == 1_000:
                tracemalloc.reset_peak()
        _, peak = tracemalloc.get_traced_memory()
        writer.shutdown()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # well under what 29,000 more tasks' counter changes would take (9 MB)
    document = validated(tmp_path / "many.json")
    assert (document["otherData"]["drawn"], document["otherData"]["left_out"]) == (0, 30_000)
    counters = [e for e in document["traceEvents"] if e["ph"] == "C" and e["name"] in ("queued", "running")]
    assert [e["ts"] for e in counters] == sorted(e["ts"] for e in counters)
    running = [e["args"]["many"] for e in counters if e["name"] == "running"]
    queued = [e["args"]["many"] for e in counters if e["name"] == "queued"]
    # Each counter's sample is its mean over a step of COUNTER_EVERY_NS, at most one a step and one for the
    # counts that hold after it: their time integrals are exact (each task queued 5 µs and ran 22 µs).
    step = timeline.COUNTER_EVERY_NS / 1000
    assert len({e["ts"] for e in counters}) <= 2 * (300_027 / step + 2)

    def integral(name: str) -> float:
        points = [(e["ts"], e["args"]["many"]) for e in counters if e["name"] == name]
        return sum((after[0] - before[0]) * before[1] for before, after in itertools.pairwise(points))

    assert integral("queued") == pytest.approx(30_000 * 5, rel=1e-4)  # µs
    assert integral("running") == pytest.approx(30_000 * 22, rel=1e-4)
    assert max(running) <= 3 and max(queued) <= 1
    assert running[-1] == queued[-1] == 0


@pytest.mark.skipif(FORCED, reason="the public-API fallback's process pool has no start board: no worker says so")
def test_the_writer_as_a_span_processor_draws_the_task_a_worker_died_running_where_it_died(tmp_path: Path) -> None:
    """A process pool of two whose worker is killed while both run a task: the task spans of those two say where
    they ran (the ``running`` event at their real start, ``process.pid`` of their worker, the dead one's
    ``process.exit.code``: -9), the four that waited in the call queue say nothing of a worker; the span-fed
    timeline draws the dead worker's task on that worker's lane, from that start, marked with its death."""
    import multiprocessing

    import faultsupport
    from prometheus_client import CollectorRegistry

    import tracedfutures

    provider, _, exporter = writing_provider(tmp_path / "died.json")
    fork = multiprocessing.get_context("fork")
    gates = (fork.Event(), fork.Event(), fork.Queue())
    pool = tracedfutures.TracedProcessPoolExecutor(
        2, mp_context=fork, initializer=faultsupport.set_gates, initargs=gates, name="dies",
        tracer_provider=provider, registry=CollectorRegistry(),
    )  # fmt: skip
    running = [pool.submit(faultsupport.report_and_hold) for _ in range(2)]
    queued = [pool.submit(faultsupport.hold) for _ in range(4)]
    victim, survivor = gates[2].get(timeout=30), gates[2].get(timeout=30)  # both workers inside a task
    os.kill(victim, signal.SIGKILL)
    for future in running + queued:
        assert isinstance(future.exception(30), concurrent.futures.process.BrokenProcessPool)
    pool.shutdown()
    provider.shutdown()

    spans = {span.context.span_id: span for span in exporter.get_finished_spans()}
    where = {}
    for future in running:
        span = spans[future._tf_context.span_id]
        (start,) = [event.timestamp for event in span.events if event.name == "running"]
        attributes = dict(span.attributes)
        assert span.start_time < start < span.end_time
        assert attributes["executor.task.queue_duration"] == (start - span.start_time) / 1e9
        where[attributes["process.pid"]] = (start, attributes.get("process.exit.code"))
    assert where.keys() == {victim, survivor}
    assert where[victim][1] == -signal.SIGKILL
    assert where[survivor][1] in (None, -signal.SIGTERM)  # the pool ends it as it breaks: before or after this read
    for future in queued:
        span = spans[future._tf_context.span_id]
        assert [event.name for event in span.events] == ["exception"]
        assert not {"process.pid", "process.exit.code", "executor.task.queue_duration"} & set(span.attributes)

    document = validated(tmp_path / "died.json")
    events = document["traceEvents"]
    origin = document["otherData"]["origin_unix_ns"]
    (cut,) = [e for e in events if e["ph"] == "X" and e.get("cat") == "task" and e["args"].get("worker_died")]
    assert (cut["pid"], cut["name"], cut["args"]["exit_code"]) == (victim, "report_and_hold", -signal.SIGKILL)
    assert origin + round(cut["ts"] * 1000) == where[victim][0]
    (death,) = [e for e in events if e["ph"] == "i" and e["name"] == "worker died"]
    assert (death["pid"], death["tid"]) == (victim, cut["tid"])
    slices = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"]
    assert sorted((e["name"], e["pid"]) for e in slices) == sorted(("report_and_hold", pid) for pid in where)
    never_ran = [e for e in events if e["ph"] == "b" and e.get("args", {}).get("ran") is False]
    assert [e["name"] for e in never_ran] == ["hold"] * 4
