"""``tracedfutures record`` on unchanged programs that run their work through libraries: ``joblib.Parallel`` on
its default backend (tests/joblib_workload.py) is on the timeline batch by batch, and the report of that timeline
says what ``/metrics`` says; a program whose work went through pools that are not ``concurrent.futures``
executors (``multiprocessing.Pool``, ``ThreadPool``, joblib's threading backend) is told so in one line, with its
exit status unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_record import task_slices, validated

from tracedfutures._cli import report_data, timeline_reader

TESTS = Path(__file__).resolve().parent
TIMEOUT = 180
DOCS = "(see 'What record cannot see' in the docs' usage page)"


def record(tmp_path: Path, *command: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    trace = tmp_path / "trace.json"
    done = subprocess.run(
        [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", *command],
        cwd=TESTS, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return done, trace


def samples(metrics: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
    }


def test_joblib_parallel_is_recorded_batch_by_batch(tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.json"
    done, trace = record(tmp_path, sys.executable, "joblib_workload.py", str(truth_file))
    assert done.returncode == 0, done.stderr
    assert "no task was recorded" not in done.stderr and "not in a concurrent.futures" not in done.stderr
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    document = validated(trace)

    slices = task_slices(document)
    assert {s["name"] for s in slices} == {"work"}
    assert {s["args"]["executor"] for s in slices} == {"joblib"}
    assert sum(s["args"]["executor.task.batch_size"] for s in slices) == 200  # every call, once, in some batch
    assert truth["pid"] not in {s["pid"] for s in slices}  # each batch ran on a loky worker process
    failed = [s for s in slices if s["args"].get("outcome") == "error"]
    assert Counter(s["args"].get("error.type") for s in failed) == {"ValueError": 2}

    report = report_data.report_data(timeline_reader.read(trace), "joblib")
    completed = samples(truth["metrics"], "executor_tasks_completed_total")
    by_outcome = {(dict(k)["outcome"], dict(k)["error_type"]): v for k, v in completed.items() if v}
    assert by_outcome == {("success", ""): len(slices) - 2, ("error", "ValueError"): 2}
    submitted = samples(truth["metrics"], "executor_tasks_submitted_total")
    assert submitted == {frozenset({("executor", "joblib")}): report["summary"]["tasks"]}
    assert report["summary"]["tasks"] == len(slices)
    assert report["summary"]["errors"] == 2
    assert report["summary"]["cancelled"] == 0
    assert [(r["executor"], r["function"], r["tasks"], r["errors"]) for r in report["functions"]] == [
        ("joblib", "work", len(slices), 2)
    ]
    assert [(r["function"], r["error_type"]) for r in report["errors"]] == [("work", "ValueError")] * 2


MULTIPROCESSING_POOLS = """
import multiprocessing
import sys
from multiprocessing.pool import ThreadPool

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(abs, range(-5, 5)) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    with ThreadPool(2) as pool:
        assert pool.apply_async(abs, (-1,)).get(60) == 1
    sys.exit(3)
"""
JOBLIB_THREADS = """
import joblib

assert joblib.Parallel(n_jobs=2, backend="threading")(joblib.delayed(abs)(-n) for n in range(10)) == list(range(10))
"""
BESIDE_TRACED = """
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

with ThreadPoolExecutor(1) as executor:
    assert executor.submit(abs, -2).result() == 2
with ThreadPool(1) as pool:
    assert pool.apply(abs, (-3,)) == 3
"""
NOTHING = """
print(sum(range(10)))
"""


@pytest.mark.parametrize(
    ("program", "status", "line"),
    [
        (
            MULTIPROCESSING_POOLS,
            3,
            "no task was recorded: the program ran its work in multiprocessing.pool.Pool and "
            f"multiprocessing.pool.ThreadPool, not in a concurrent.futures executor {DOCS}",
        ),
        (
            JOBLIB_THREADS,
            0,
            "no task was recorded: the program ran its work in multiprocessing.pool.ThreadPool "
            f"(joblib's ThreadingBackend), not in a concurrent.futures executor {DOCS}",
        ),
        (
            BESIDE_TRACED,
            0,
            "the program also ran work in multiprocessing.pool.ThreadPool, not in a concurrent.futures executor: "
            f"that work is not on the timeline {DOCS}",
        ),
        (NOTHING, 0, "no task was recorded: the program submitted nothing to a concurrent.futures executor"),
    ],
    ids=["multiprocessing", "joblib-threading", "beside-traced", "nothing"],
)
def test_what_record_cannot_see_is_said_in_one_line(tmp_path: Path, program: str, status: int, line: str) -> None:
    """The line at exit, and the program's own exit status passed through."""
    path = tmp_path / "program.py"
    path.write_text(program)
    done, trace = record(tmp_path, sys.executable, str(path))
    assert trace.exists()
    assert done.returncode == status, done.stderr
    assert [s for s in done.stderr.splitlines() if "concurrent.futures" in s] == [f"tracedfutures record: {line}"]


def test_the_programs_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    """record's ``sitecustomize`` comes first on the path: it sets the recording up, then runs the one it hides."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nprint(\"the program's sitecustomize ran\", file=sys.stderr)\n")
    program = tmp_path / "program.py"
    program.write_text("print('program')\n")
    trace = tmp_path / "trace.json"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", sys.executable, str(program)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "program\n"
    assert done.stderr.splitlines()[0] == "the program's sitecustomize ran", done.stderr
    assert "Error in sitecustomize" not in done.stderr
