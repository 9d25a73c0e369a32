"""``tracedfutures record`` when things go wrong (tests/recordworkload.py): a program killed by SIGKILL or ended
through ``os._exit`` after 200 tasks and a pause (the writer flushes every second) leaves a timeline that holds
those tasks, ``record`` passes its status through and says the run was cut short, and the report (read in
Chromium) shows the tasks and says so too; SIGTERM left to the default finishes the file; tasks that never ran
(a broken process pool, a cancelling shutdown, submits refused) are on the page in the numbers ``/metrics`` gives;
a program with tracing of its own keeps its task spans.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browsersupport import Page, chromium, table
from clisupport import tracedfutures
from prometheus_client.parser import text_string_to_metric_families
from timelinesupport import trace_document

TESTS = Path(__file__).resolve().parent
TIMEOUT = 120

needs_chromium = pytest.mark.skipif(chromium() is None, reason="needs chromium (Debian: apt-get install chromium)")


@pytest.fixture
def page() -> Iterator[Page]:
    with Page() as opened:
        yield opened


def record(tmp_path: Path, *program: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    trace = tmp_path / "trace.json"
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--"]
    command += [sys.executable, str(TESTS / "recordworkload.py"), str(tmp_path / "truth.json"), *program]
    done = subprocess.run(command, cwd=TESTS, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return done, trace


def summary(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.summary dd')].map((d) => [d.id, d.textContent]))"
    )
    return found


@needs_chromium
@pytest.mark.parametrize(
    ("how", "status", "said"),
    [
        ("killed", 128 + signal.SIGKILL, "the program was killed by signal 9 (SIGKILL)"),
        ("exit", 3, "the program ended with status 3 without finishing its timeline (os._exit, or a crash)"),
    ],
)
def test_a_crash_keeps_the_timeline_up_to_the_last_flush(
    tmp_path: Path, page: Page, how: str, status: int, said: str
) -> None:
    done, trace = record(tmp_path, str(status), how)
    assert done.returncode == status, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"tracedfutures record: {said}; the timeline in {trace} was cut short"), line
    # 200 tasks, then a pause of 1.5 s: the last flush (once a second) was at 1 s, or at 2 s on a slow start.
    assert re.search(r"holds the first [12]\.\d s: 200 tasks$", line), line

    # Chrome's and Perfetto's reading: a JSON array without its end, one whole event a line.
    text = trace.read_text(encoding="utf-8")
    assert text.startswith("[\n") and text.endswith(",\n")
    events = json.loads(text.rstrip(",\n") + "]")
    tasks = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"]
    assert len(tasks) == 200 and {e["args"]["executor"] for e in tasks} == {"before"}
    running = [e["args"]["before"] for e in events if e["ph"] == "C" and e["name"] == "running"]
    assert running and running[-1] == 0  # the counters were written as they came, up to the end of the tasks

    report = tmp_path / "report.html"
    made = tracedfutures("report", trace, "-o", report, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "cut short" in made.stdout
    page.open(report)
    assert page.errors == []
    shown = summary(page)
    assert (shown["summary-tasks"], shown["summary-errors"], shown["summary-cancelled"]) == ("200", "0", "0")
    note = page.evaluate("document.getElementById('cut-short').textContent")
    assert note.startswith("The run was cut short") and note.endswith(": 200 tasks."), note


def test_sigterm_finishes_the_timeline(tmp_path: Path) -> None:
    trace, ready = tmp_path / "trace.json", tmp_path / "ready"
    command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", sys.executable]
    command += [str(TESTS / "recordworkload.py"), str(tmp_path / "truth.json"), "0", "interrupt", str(ready)]
    recorder = subprocess.Popen(command, cwd=TESTS, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(int(ready.read_text()), signal.SIGTERM)  # the program, as a service manager would
    _, stderr = recorder.communicate(timeout=TIMEOUT)
    assert recorder.returncode == 128 + signal.SIGTERM, stderr
    assert f"timeline written to {trace}" in stderr
    document = trace_document(trace)  # finished: it closes with the writer's end
    slices = [e for e in document["traceEvents"] if e["ph"] == "X" and e.get("cat") == "task"]
    assert [s["name"] for s in slices] == ["quick"] * 4
    assert document["otherData"]["left_out"] == 0


def samples(metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name and sample.value
    }


@needs_chromium
def test_tasks_that_never_ran_are_counted_as_the_metrics_count_them(tmp_path: Path, page: Page) -> None:
    done, trace = record(tmp_path, "0", "failures")
    assert done.returncode == 0, done.stderr
    assert f"timeline written to {trace}" in done.stderr
    metrics = json.loads((tmp_path / "truth.json").read_text())["executors"][0]["metrics"]
    ended = samples(metrics, "executor_tasks_ended_total")
    completed = samples(metrics, "executor_tasks_completed_total")
    by_type: Counter[tuple[str, str, str]] = Counter()
    for labels, value in completed.items():
        found = dict(labels)
        by_type[found["executor"], found["outcome"], found["error_type"]] += int(value)
    broken = "concurrent.futures.process.BrokenProcessPool"
    # What the program made happen, as /metrics says it: a broken pool (its killed worker's task, those queued
    # behind it and the submit after it end with BrokenProcessPool), 5 cancelled in the queue of a shut-down pool,
    # and a submit it refused.
    assert by_type["ProcessPoolExecutor", "error", broken] >= 2
    assert by_type["stopped", "cancelled", ""] == 5 and by_type["stopped", "error", "RuntimeError"] == 1
    assert by_type["stopped", "success", ""] == 2

    report = tmp_path / "report.html"
    made = tracedfutures("report", trace, "-o", report, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    page.open(report)
    assert page.errors == []
    shown = summary(page)
    assert shown["summary-tasks"] == str(int(sum(ended.values())))
    assert shown["summary-errors"] == str(sum(n for (_, outcome, _), n in by_type.items() if outcome == "error"))
    assert shown["summary-cancelled"] == str(sum(n for (_, outcome, _), n in by_type.items() if outcome == "cancelled"))
    rows = {(r["executor"], r["outcome"], r["exception"]): int(r["tasks"]) for r in table(page, "outcomes-table")}
    assert rows == dict(by_type)

    # The worker that died is marked where it died.
    deaths = page.evaluate("[...document.querySelectorAll('#deaths li')].map((li) => li.textContent)")
    assert len(deaths) == 1 and "(killed by SIGKILL)" in deaths[0], deaths
    assert deaths[0].endswith(f"{by_type['ProcessPoolExecutor', 'error', broken]} tasks ended with BrokenProcessPool.")
    events: list[dict[str, Any]] = trace_document(trace)["traceEvents"]
    (died,) = [e for e in events if e["ph"] == "i"]
    assert (died["name"], died["args"]["exit_code"], died["args"]["signal"]) == ("worker died", -9, "SIGKILL")
    pool = "ProcessPoolExecutor"
    worker_pids = {e["pid"] for e in events if e.get("cat") == "task" and e["args"]["executor"] == pool}
    assert died["pid"] in worker_pids  # on the lane of the tasks it ran


@pytest.fixture(scope="module")
def died(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int, int]:
    """A recorded process pool of 2 that runs five tasks, then a sixth that kills its own worker (SIGKILL) mid-task:
    the run's directory, its timeline, and that worker's pid and the task's start (unix ns) as the task said them."""
    where = tmp_path_factory.mktemp("died")
    done, trace = record(where, "0", "died", "1")
    assert done.returncode == 0, done.stderr
    pid, started = (int(word) for word in (where / "truth.json.died0").read_text().split())
    return where, trace, pid, started


POOL, BROKEN = "ProcessPoolExecutor", "concurrent.futures.process.BrokenProcessPool"


def test_the_task_a_worker_died_running_is_drawn_where_it_died(died: tuple[Path, Path, int, int]) -> None:
    """That task is a slice on the dead worker's lane from its real start to the death, marked so, with the ``worker
    died`` event at its end, and counted as running over it."""
    _, trace, pid, started = died
    document = trace_document(trace)
    events: list[dict[str, Any]] = document["traceEvents"]
    origin = document["otherData"]["origin_unix_ns"]

    def ns(us: float) -> int:  # the file's microseconds (three decimals) as unix ns, exactly
        return origin + round(us * 1000)

    slices = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"]
    (cut,) = [s for s in slices if s["name"] == "kills_its_worker"]
    assert cut["pid"] == pid
    assert cut["args"] == {
        "id": cut["args"]["id"], "executor": POOL, "outcome": "error", "error.type": BROKEN,
        "worker_died": True, "exit_code": -signal.SIGKILL, "signal": "SIGKILL",
    }  # fmt: skip
    # From its real start in the worker (read there before the task's first line) to the death, after the others.
    start, end = ns(cut["ts"]), ns(cut["ts"]) + round(cut["dur"] * 1000)
    others = [s for s in slices if s is not cut]
    assert sorted(s["name"] for s in others) == [f"task_{i}" for i in range(5)]
    assert {s["args"].get("outcome", "success") for s in others} == {"success"}
    assert max(ns(s["ts"]) + round(s["dur"] * 1000) for s in others) <= start <= started < end
    # The worker's death at the slice's end, on the same lane, which is that of the tasks it ran before.
    (death,) = [e for e in events if e["ph"] == "i"]
    assert (death["name"], death["pid"], death["tid"], ns(death["ts"])) == ("worker died", pid, cut["tid"], end)
    assert death["args"] == {"executor": POOL, "exit_code": -signal.SIGKILL, "signal": "SIGKILL"}
    assert {s["tid"] for s in others if s["pid"] == pid} <= {cut["tid"]}
    # The running counter counts it as running over its slice: its time integral is the tasks' run time.
    points = [(e["ts"], e["args"][POOL]) for e in events if e["ph"] == "C" and e["name"] == "running"]
    integral = sum((after[0] - before[0]) * before[1] for before, after in itertools.pairwise(points))
    assert integral == pytest.approx(sum(s["dur"] for s in slices), rel=1e-3, abs=50)
    assert points[-1][1] == 0


def test_a_new_pool_named_as_one_that_broke_is_marked_when_it_breaks(tmp_path: Path) -> None:
    """A program that makes a new pool after a break (each named ``ProcessPoolExecutor``) gets each death marked,
    each with the task it killed, its event at that slice's end, and no pool's workers marked twice."""
    done, trace = record(tmp_path, "0", "died", "2")
    assert done.returncode == 0, done.stderr
    pids = [int((tmp_path / f"truth.json.died{i}").read_text().split()[0]) for i in range(2)]
    events: list[dict[str, Any]] = trace_document(trace)["traceEvents"]
    cut = sorted((e for e in events if e["ph"] == "X" and e["args"].get("worker_died")), key=lambda e: e["ts"])
    deaths = sorted((e for e in events if e["ph"] == "i"), key=lambda e: e["ts"])
    assert [(e["name"], e["pid"]) for e in cut] == [("kills_its_worker", pid) for pid in pids]
    assert [(e["pid"], e["tid"], round((e["ts"] - s["ts"] - s["dur"]) * 1000)) for e, s in zip(deaths, cut)] == [
        (s["pid"], s["tid"], 0) for s in cut
    ]
    assert {(e["args"]["exit_code"], e["args"]["signal"]) for e in deaths} == {(-signal.SIGKILL, "SIGKILL")}


def test_a_worker_that_dies_running_its_first_task_is_marked_on_a_named_lane(tmp_path: Path) -> None:
    """No task of that worker was drawn before: its death and the task it cut short are on a lane of their own,
    named as the thread that runs a process pool worker's tasks (``MainThread``; its thread id is not known: 0)."""
    done, trace = record(tmp_path, "0", "died", "1", "first")
    assert done.returncode == 0, done.stderr
    pid = int((tmp_path / "truth.json.died0").read_text().split()[0])
    events: list[dict[str, Any]] = trace_document(trace)["traceEvents"]
    (cut,) = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"]
    (death,) = [e for e in events if e["ph"] == "i"]
    assert (cut["name"], cut["pid"], cut["args"]["worker_died"]) == ("kills_its_worker", pid, True)
    assert (death["pid"], death["tid"]) == (pid, cut["tid"])
    lanes = {(e["pid"], e["tid"]): e["args"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert lanes[pid, cut["tid"]] == {"name": "MainThread", "thread.id": 0}


@needs_chromium
def test_the_report_names_the_task_a_worker_died_running(died: tuple[Path, Path, int, int], page: Page) -> None:
    """The report names that task in the death's line and marks it among the errors, in the counts ``/metrics``
    gives (it ended with ``BrokenProcessPool``, as the tasks that never ran in a broken pool do)."""
    where, trace, pid, _ = died
    metrics = json.loads((where / "truth.json").read_text())["executors"][0]["metrics"]
    by_type: Counter[tuple[str, str]] = Counter()  # summed over functions
    for labels, value in samples(metrics, "executor_tasks_completed_total").items():
        by_type[dict(labels)["outcome"], dict(labels)["error_type"]] += int(value)
    assert by_type == {("success", ""): 5, ("error", BROKEN): 1}
    report = where / "report.html"
    made = tracedfutures("report", trace, "-o", report, cwd=where)
    assert made.returncode == 0, made.stderr
    page.open(report)
    assert page.errors == []
    shown = summary(page)
    assert (shown["summary-tasks"], shown["summary-errors"]) == ("6", "1")
    rows = {(r["outcome"], r["exception"]): int(r["tasks"]) for r in table(page, "outcomes-table")}
    assert rows == dict(by_type)
    (death,) = page.evaluate("[...document.querySelectorAll('#deaths li')].map((li) => li.textContent)")
    assert death.startswith(f"A worker process of {POOL} (pid {pid}) died (killed by SIGKILL) at "), death
    assert " while running kills_its_worker (started at " in death, death
    assert death.endswith(": its pool broke, 1 task ended with BrokenProcessPool."), death
    (error,) = table(page, "errors-table")
    assert error["function"] == "kills_its_worker"
    assert error["outcome"] == f"error: {BROKEN} (its worker died running it)"
    assert error["worker"].startswith(f"{POOL} worker {pid} · "), error


def test_a_program_that_traces_gets_its_task_spans(tmp_path: Path) -> None:
    """The recording makes no span and sets no tracer provider: a program that sets up its own gets every task span
    exported where it said, and each slice carries its span's ids."""
    done, trace = record(tmp_path, "0", "traced")
    assert done.returncode == 0, done.stderr
    spans = json.loads((tmp_path / "truth.json").read_text())["executors"]
    assert sorted(span["name"] for span in spans) == ["mine quick"] * 5
    slices = [e for e in trace_document(trace)["traceEvents"] if e["ph"] == "X" and e.get("cat") == "task"]
    assert sorted((s["args"]["trace_id"], s["args"]["span_id"]) for s in slices) == sorted(
        (span["trace_id"], span["span_id"]) for span in spans
    )
