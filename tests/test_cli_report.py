"""``tracedfutures report`` (tracedfutures/_cli/report.py and the modules it uses), as a user meets it.

``tracedfutures record`` runs tests/report_workload.py (known tasks, errors, cancellations, a wait and an
as_completed on a thread pool and a process pool); ``tracedfutures report`` makes its page, and a headless
Chromium (Debian's ``chromium``, driven over the DevTools protocol by tests/browsersupport.py, with the flags of a
closed network) opens it: no console error, no request but the file itself, the numbers of the trace on the page, zoom
and pan that move the timeline; a screenshot is kept (its path is printed). A trace of 100,000 tasks must make a
page that renders in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import pytest
from browsersupport import Page, chromium, table
from clisupport import tracedfutures
from timelinesupport import trace_document

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "tests" / "report_workload.py"
CPU_WORKLOAD = ROOT / "tests" / "cpu_workload.py"
#: Where the screenshots are kept (printed by each test that writes one); TF_ARTIFACTS overrides it.
ARTIFACTS = Path(os.environ.get("TF_ARTIFACTS") or Path(tempfile.gettempdir()) / "tracedfutures-test-artifacts")

needs_chromium = pytest.mark.skipif(chromium() is None, reason="needs chromium (Debian: apt-get install chromium)")


def keep(path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Where to keep the artifact ``path`` names, said in the test log."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / path.name
    with capsys.disabled():
        print(f"\n[artifact] {kept}")
    return kept


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The timeline of the workload, written by ``tracedfutures record``."""
    directory = tmp_path_factory.mktemp("recorded")
    trace = directory / "trace.json"
    done = tracedfutures("record", "-o", trace, "--", sys.executable, WORKLOAD, cwd=directory)
    assert done.returncode == 0, done.stderr
    return trace


def events(trace: Path) -> list[dict[str, Any]]:
    trace_events: list[dict[str, Any]] = trace_document(trace)["traceEvents"]
    return trace_events


@pytest.fixture
def page() -> Iterator[Page]:
    with Page() as opened:
        yield opened


@needs_chromium
def test_the_report_of_a_recorded_run(
    recorded: Path, tmp_path: Path, page: Page, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    done = tracedfutures("report", recorded, "-o", report, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {report} (61 tasks")
    page.open(report)
    assert page.errors == []
    assert page.requests == [report.resolve().as_uri()]  # nothing but the file itself

    # What the trace says, read here on its own.
    trace = events(recorded)
    tasks = [e for e in trace if e["ph"] == "X" and e.get("cat") == "task"]
    failed = [e for e in tasks if e["args"].get("outcome") == "error"]  # a success says none
    per_executor = Counter(e["args"]["executor"] for e in tasks)
    assert len(tasks) == 59 and len(failed) == 5 and per_executor == {"io": 48, "ProcessPoolExecutor": 11}

    summary = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.summary dd')].map((d) => [d.id, d.textContent]))"
    )
    assert summary["summary-tasks"] == "61"  # every task that ended: 59 that ran, 2 cancelled before they ran
    assert summary["summary-errors"] == "5"
    assert summary["summary-cancelled"] == "2"
    assert summary["summary-executors"] == "2"
    assert summary["summary-workers"] == str(len({(e["pid"], e["tid"]) for e in tasks}))

    utilization = {row["executor"]: row for row in table(page, "utilization-table")}
    assert {name: (row["tasks"], row["workers"]) for name, row in utilization.items()} == {
        "io": ("48", "3"),
        "ProcessPoolExecutor": ("11", "2"),
    }
    assert all(row["utilization"].endswith(" %") for row in utilization.values())

    errors = table(page, "errors-table")
    assert len(errors) == len(failed)
    assert {row["trace id"] for row in errors} == {""}  # the program traced nothing: no span, no trace id
    assert {row["outcome"] for row in errors} == {"error: ValueError"}
    assert {row["function"] for row in errors} == {"fails"}

    slowest = table(page, "slowest-table")
    assert (slowest[0]["function"], slowest[0]["span id"]) == ("slow", "")
    assert slowest[0]["ran"].endswith(" ms") and 200 <= float(slowest[0]["ran"].split()[0]) < 1000

    functions = {(row["executor"], row["function"]): row for row in table(page, "function-table")}
    assert functions[("io", "ok")]["tasks"] == "40" and functions[("io", "fails")]["errors"] == "4"
    assert functions[("ProcessPoolExecutor", "ok")]["tasks"] == "10"

    # The distributions per function instead of per executor.
    legend = "[...document.querySelectorAll('#run-histogram .u-legend .u-label')].map((e) => e.textContent)"
    assert set(page.evaluate(legend)) == {"bucket", "io", "ProcessPoolExecutor"}
    page.evaluate(
        "(() => { const s = document.getElementById('distribution-group');"
        " s.value = 'function'; s.dispatchEvent(new Event('change')); })()"
    )
    assert set(page.evaluate(legend)) == {"bucket", "ok", "fails", "slow", "Event.wait"}

    blocked = Counter()
    for row in table(page, "blocked-table"):
        blocked[row["call"]] += int(row["calls"])
    assert blocked == {"wait": 2, "as_completed": 1}

    # The timeline was drawn: task bars in the first function's colour and error bars in red.
    colours = page.evaluate(
        """(() => {
            const canvas = document.querySelector('#timeline canvas');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let blue = 0, red = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
                if (r < 80 && g > 90 && g < 150 && b > 150) blue++;
                if (r > 180 && g < 90 && b < 90) red++;
            }
            return {blue, red};
        })()"""
    )
    assert colours["blue"] > 100 and colours["red"] > 0, colours

    # Zoom with the wheel, pan with shift + wheel, double-click for everything again.
    whole = [float(x) for x in page.evaluate("document.getElementById('timeline').dataset.range").split()]
    box = page.evaluate("(() => { const r = document.querySelector('#timeline .u-over').getBoundingClientRect();"
                        " return [r.x + r.width / 2, r.y + r.height / 2]; })()")  # fmt: skip
    page.wheel(*box, delta_y=-300)
    page.wheel(*box, delta_y=-300)
    zoomed = [float(x) for x in page.evaluate("document.getElementById('timeline').dataset.range").split()]
    assert zoomed[1] - zoomed[0] < 0.6 * (whole[1] - whole[0])
    page.wheel(*box, delta_y=100, shift=True)
    panned = [float(x) for x in page.evaluate("document.getElementById('timeline').dataset.range").split()]
    assert panned[0] > zoomed[0] and panned[1] - panned[0] == pytest.approx(zoomed[1] - zoomed[0])
    page.double_click(*box)
    again = [float(x) for x in page.evaluate("document.getElementById('timeline').dataset.range").split()]
    assert again == pytest.approx(whole)

    page.settle()
    assert page.errors == []
    page.screenshot(keep(tmp_path / "report.png", capsys))


@needs_chromium
def test_the_cpu_sentence_of_each_pool(tmp_path: Path, page: Page, capsys: pytest.CaptureFixture[str]) -> None:
    """tests/cpu_workload.py, recorded: a GIL-bound thread pool, a process pool and a pool of sleeping threads,
    each told apart by its sentence; the timeline holds each executor's ``cpu`` counter, and the chart draws it."""
    trace, report = tmp_path / "trace.json", tmp_path / "report.html"
    done = tracedfutures("record", "-o", trace, "--", sys.executable, CPU_WORKLOAD, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cpu = {}
    for event in events(trace):
        if event["ph"] == "C" and event["name"] == "cpu":
            cpu.setdefault(event["id"], []).append(event["args"][event["id"]])
    assert set(cpu) == {"resize", "ProcessPoolExecutor", "io"}
    assert all(values == sorted(values) for values in cpu.values())  # CPU seconds so far: never down
    # Each task's own CPU time on its slice (its worker thread's CPU clock; a process pool's read in the worker).
    slices = [e for e in events(trace) if e["ph"] == "X" and e.get("cat") == "task"]
    computing = [e for e in slices if e["args"]["executor"] in ("resize", "ProcessPoolExecutor")]
    assert {e["args"]["executor"] for e in computing} == {"resize", "ProcessPoolExecutor"}
    assert all(0 < e["args"]["cpu_time"] <= e["dur"] * 1e-6 + 0.01 for e in computing)
    assert all(e["args"]["cpu_time"] < 0.01 for e in slices if e["args"]["executor"] == "io")
    done = tracedfutures("report", trace, "-o", report, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page.open(report)
    assert page.errors == []
    sentences = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#cpu-verdicts li')]"
        ".map((li) => [li.dataset.executor, li.textContent]))"
    )
    assert set(sentences) == {"resize", "ProcessPoolExecutor", "io"}, sentences
    # On a loaded machine (the suite shares its cores) the processes may get less than a CPU each: the sentence
    # then says that they waited for one; and the 4 threads may start apart, 3 of them busy on average.
    assert re.fullmatch(
        r"resize: [34] workers busy on [01]\.\d CPUs?: CPU-bound under the GIL, a process or interpreter pool "
        r"would run them in parallel", sentences["resize"]
    ), sentences
    assert re.fullmatch(
        r"ProcessPoolExecutor: 2 workers busy on \d\.\d CPUs?: the tasks compute, (each busy worker on a CPU of its "
        r"own|but waited for a CPU \d+% of the time: the machine's cores were busy)", sentences["ProcessPoolExecutor"]
    ), sentences
    assert re.fullmatch(r"io: 4 workers busy on 0\.0 CPUs: the tasks mostly wait", sentences["io"]), sentences
    # Per function: the CPU share of the time the tasks ran. A GIL-bound task of 4 runs about a quarter of the
    # time it is busy (more when the threads start apart); a sleeping one next to never.
    functions = {row["executor"]: row for row in table(page, "function-table")}
    share = {name: row["CPU share"] for name, row in functions.items()}
    assert 0 < float(share["ProcessPoolExecutor"].removesuffix(" %")) <= 100, share  # timed in the worker
    # The share is the file's own: its tasks' CPU over their run time (how much CPU the process got depends on
    # the machine's load, so no lower bound beyond "more than the sleepers").
    resize = [e for e in computing if e["args"]["executor"] == "resize"]
    expected = 100 * sum(e["args"]["cpu_time"] for e in resize) / sum(e["dur"] * 1e-6 for e in resize)
    assert float(share["resize"].removesuffix(" %")) == pytest.approx(expected, abs=0.06), (share, expected)
    assert float(share["io"].removesuffix(" %")) < float(share["resize"].removesuffix(" %")) <= 45, share
    assert float(share["io"].removesuffix(" %")) <= 2, share
    legend = "[...document.querySelectorAll('#cpu-chart .u-legend .u-label')].map((e) => e.textContent)"
    assert set(page.evaluate(legend)) == {"s"} | {f"{name} {what}" for name in sentences
                                               for what in ("CPUs used", "busy workers")}  # fmt: skip
    page.settle()
    assert page.errors == []
    page.screenshot(keep(tmp_path / "report-cpu.png", capsys))


@needs_chromium
def test_the_spans_tasks_make_are_on_the_page(tmp_path: Path, page: Page, capsys: pytest.CaptureFixture[str]) -> None:
    """tests/recordworkload.py's program whose tasks make spans (a thread pool's two nested ones, ``resize`` holding
    ``encode``; a process pool's one, ``compress``, for a forked and a spawned worker), recorded: the page counts
    them, draws each inside its task's bar (the hover over one, zoomed in, names it) and sums them up per function
    and span name against the time their tasks ran, as the file says."""
    trace, report = tmp_path / "trace.json", tmp_path / "report.html"
    program = (sys.executable, ROOT / "tests" / "recordworkload.py", tmp_path / "truth.json", "0", "spans")
    done = tracedfutures("record", "-o", trace, "--", *program, cwd=ROOT / "tests")
    assert done.returncode == 0, done.stderr
    done = tracedfutures("report", trace, "-o", report, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page.open(report)
    assert page.errors == []
    assert page.evaluate("document.getElementById('summary-spans').textContent") == "8"

    # The table, from the file's own slices: per (executor, function, span), the spans, their tasks, their time
    # and its share of those tasks' run time.
    trace_events = events(trace)
    tasks = {e["args"]["id"]: e for e in trace_events if e.get("cat") == "task"}
    made: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for span in (e for e in trace_events if e.get("cat") == "span"):
        task = tasks[span["args"]["task"]]
        made.setdefault((task["args"]["executor"], task["name"], span["name"]), []).append(span)
    assert set(made) == {("images", "resize", "resize"), ("images", "resize", "encode"),
                         ("ProcessPoolExecutor", "compress", "compress")}  # fmt: skip
    rows = {(row["executor"], row["function"], row["span"]): row for row in table(page, "spans-table")}
    assert rows.keys() == made.keys()
    for key, spans in made.items():
        row, run = rows[key], sum(tasks[s["args"]["task"]]["dur"] for s in spans)
        assert (row["spans"], row["in tasks"]) == (str(len(spans)), str(len({s["args"]["task"] for s in spans})))
        # The share, to the tenth the page shows (rounded twice: to 4 places in the data, to 1 on the page).
        share = float(row["of the tasks' run"].removesuffix(" %"))
        assert share == pytest.approx(100 * sum(s["dur"] for s in spans) / run, abs=0.056), key

    # Zoomed in on an encode span (inside resize, inside its task), the hover names it.
    data = page.evaluate("JSON.parse(document.getElementById('report-data').textContent).timeline")
    encode = next(i for i, label in enumerate(data["label"]) if data["labels"][label] == "encode")
    assert data["outcomes"][data["outcome"][encode]] == "span" and data["depth"][encode] == 2
    middle = data["start"][encode] + data["dur"][encode] / 2

    def where() -> tuple[float, float]:
        x, y, width, height = page.evaluate(
            "(() => { const r = document.querySelector('#timeline .u-over').getBoundingClientRect();"
            " return [r.x, r.y, r.width, r.height]; })()"
        )
        low, high = (float(v) for v in page.evaluate("document.getElementById('timeline').dataset.range").split())
        lanes, lane = len(data["lanes"]), data["lane"][encode]
        return x + (middle - low) / (high - low) * width, y + (lane + 0.5) / lanes * height

    for _ in range(12):
        page.wheel(*where(), delta_y=-300)
    page.move(*where())
    hover = page.evaluate("document.getElementById('timeline-hover').textContent")
    lane = data["lanes"][data["lane"][encode]]
    assert hover.startswith(f"{lane} · encode · span · from "), hover
    page.settle()
    assert page.errors == []
    page.screenshot(keep(tmp_path / "report-spans.png", capsys))


def test_a_file_that_is_not_a_timeline_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{not json", encoding="utf-8")
    done = tracedfutures("report", "notes.json", "-o", "out.html", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("tracedfutures report: notes.json is not JSON") and done.stderr.count("\n") == 1
    done = tracedfutures("report", "missing.json", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "tracedfutures report: cannot read missing.json: No such file or directory\n"
    assert not (tmp_path / "out.html").exists() and not (tmp_path / "missing.html").exists()
    # Another tool's trace: a page with nothing in it, and a line that says why.
    (tmp_path / "other.json").write_text('{"traceEvents":[{"ph":"X","name":"f","ts":0,"dur":5,"pid":1,"tid":1}]}')
    done = tracedfutures("report", "other.json", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("wrote other.html (0 tasks")
    assert done.stderr.startswith("tracedfutures report: other.json holds no task and no wait / as_completed call")


def hundredfold(source: Path, target: Path, copies: int = 100) -> int:
    """A trace of ``copies`` runs of ``source`` back to back: its events, in the writer's layout, each copy moved
    past the end of the one before; returns the tasks written. The copies keep the ids (a copy's queued slices
    still pair up, the copies following each other in the file and in time).

    ``record`` itself draws about 5,000 tasks a second on the test machine: 100,000 of them would take the test's
    whole budget, so the real writer's output is multiplied instead (the format stays the writer's)."""
    trace = json.loads(source.read_text(encoding="utf-8"))
    end = trace.pop()  # the writer's end, which stays last
    length = max(e["ts"] + e.get("dur", 0) for e in trace if "ts" in e) + 1000
    lines = [json.dumps(e) for e in trace if e["ph"] == "M"]
    # Each event as its timestamp and the rest of its JSON, so that a copy is a string made, not an event dumped.
    events = [
        (e["ts"], json.dumps({k: v for k, v in e.items() if k != "ts"}, separators=(",", ":"))[1:])
        for e in trace
        if e["ph"] != "M"
    ]
    for copy in range(copies):
        shift = copy * length
        lines.extend(f'{{"ts":{ts + shift:.3f},{rest}' for ts, rest in events)
    target.write_text("[\n" + ",\n".join([*lines, json.dumps(end)]) + "\n]\n", encoding="utf-8")
    return copies * sum(e["ph"] == "X" and e.get("cat") == "task" for e in trace)


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The timeline of 1,000 tasks on 8 workers (a tenth raising), written by the real TimelineWriter."""
    from opentelemetry.sdk.trace import TracerProvider

    import tracedfutures
    from tracedfutures.timeline import TimelineWriter

    trace = tmp_path_factory.mktemp("thousand") / "trace.json"
    provider = TracerProvider()
    provider.add_span_processor(TimelineWriter(trace))

    def work(i: int) -> int:
        if i % 10 == 3:
            raise KeyError(i)
        return sum(range(200 + i % 50 * 40))

    with tracedfutures.TracedThreadPoolExecutor(8, name="hundredfold", tracer_provider=provider) as pool:
        wait([pool.submit(work, i) for i in range(1000)])
    provider.shutdown()
    return trace


@needs_chromium
def test_a_100000_task_report_is_aggregated_and_zooms(
    thousand: Path, tmp_path: Path, page: Page, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.json"
    assert hundredfold(thousand, trace) == 100_000
    report = tmp_path / "report-100000.html"
    began = time.monotonic()
    done = tracedfutures("report", trace, "-o", report, cwd=tmp_path)
    made = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    took = page.open(report)
    drawn_ms = int(page.evaluate("document.body.dataset.renderMs"))
    # Responsive: ten turns of the wheel over the timeline, each a zoom and a redraw of every chart.
    box = page.evaluate(
        "(() => { const r = document.querySelector('#timeline .u-over').getBoundingClientRect();"
        " return [r.x + r.width / 3, r.y + r.height / 2]; })()"
    )
    began = time.monotonic()
    for _ in range(10):
        page.wheel(*box, delta_y=-100)
    zoomed = [float(x) for x in page.evaluate("document.getElementById('timeline').dataset.range").split()]
    zooming = (time.monotonic() - began) / 10
    with capsys.disabled():
        print(
            f"\n[100,000 tasks] trace {trace.stat().st_size / 1e6:.0f} MB, report made in {made:.1f} s"
            f" ({report.stat().st_size / 1e6:.1f} MB), page loaded and drawn in {took:.2f} s"
            f" (its script: {drawn_ms} ms), a zoom in {zooming * 1000:.0f} ms"
        )
    # The times above are printed, not asserted (docs/report.md quotes them): what is asserted is what they rest
    # on, the page aggregated (its size) and drawn whole, and the wheel zooming in.
    assert zoomed[1] - zoomed[0] < 0.1 * float(page.evaluate("JSON.parse(document.getElementById('report-data')"
                                                             ".textContent).summary.wall"))  # fmt: skip
    assert page.errors == [] and page.requests == [report.resolve().as_uri()]
    assert page.evaluate("document.getElementById('summary-tasks').textContent") == "100,000"
    assert page.evaluate("document.getElementById('summary-errors').textContent") == "10,000"
    assert report.stat().st_size < 10e6  # aggregated in Python, not every event embedded
    page.screenshot(keep(tmp_path / "report-100000.png", capsys))


def test_the_page_inlines_the_vendored_uplot_with_its_licence(thousand: Path) -> None:
    from tracedfutures._cli import report_data, report_page, timeline_reader

    vendored = ROOT / "tracedfutures" / "_report" / "uplot"
    readme = (vendored / "README.md").read_text(encoding="utf-8")
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):  # the files are those the README names
        digest = hashlib.sha256((vendored / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in readme
    assert f"npm pack uplot@{report_page.UPLOT_VERSION}" in readme
    page = report_page.render(report_data.report_data(timeline_reader.read(thousand), "a <b>"))
    assert (vendored / "uPlot.iife.min.js").read_text(encoding="utf-8") in page
    licence = (vendored / "LICENSE").read_text(encoding="utf-8").strip()
    assert licence in page and page.index(licence) < page.index("var uPlot=")
    assert "<title>tracedfutures report: a &lt;b&gt;</title>" in page
    assert "default-src 'none'" in page  # the page may load nothing
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_counters_and_merged_slices_keep_their_totals(thousand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracedfutures._cli import report_data, timeline_reader

    timeline = timeline_reader.read(thousand)
    data = report_data.report_data(timeline, "thousand")
    busy = sum(task.run for task in timeline.tasks)
    # The running counter resampled onto bins: its time integral is the tasks' run time.
    [running] = [s for s in data["counters"]["series"] if s["kind"] == "running"]
    width = data["summary"]["wall"] / report_data.TIME_BINS
    assert sum(running["values"]) * width == pytest.approx(busy, rel=0.01)
    assert data["utilization"][0]["busy"] == pytest.approx(busy, abs=1e-5)
    assert not data["timeline"]["merged"] and len(data["timeline"]["lane"]) == 1000 + len(timeline.blocked)

    monkeypatch.setattr(report_data, "MAX_SLICES", 100)  # past the cap: each worker's slices merged into bars
    merged = report_data.report_data(timeline, "thousand")["timeline"]
    assert merged["merged"] and merged["slices"] == 1000 + len(timeline.blocked)
    assert sum(merged["count"]) == merged["slices"]
    assert len(merged["lane"]) <= 100 + len(merged["lanes"])
    errors = {i for i, outcome in enumerate(merged["outcome"]) if outcome == merged["outcomes"].index("error")}
    assert errors  # a bar that holds an error is drawn as one


def test_spans_are_drawn_at_their_depth_and_merged_apart_from_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 tasks that each make a span holding another one, written by the real TimelineWriter: each span is a bar
    at its depth in its task (1, then 2); past ``MAX_SLICES`` each worker's spans are merged apart from its tasks,
    every slice counted once."""
    from opentelemetry.sdk.trace import TracerProvider

    import tracedfutures
    from tracedfutures._cli import report_data, timeline_reader
    from tracedfutures.timeline import TimelineWriter

    trace = tmp_path / "trace.json"
    provider = TracerProvider()
    provider.add_span_processor(TimelineWriter(trace))
    tracer = provider.get_tracer("app")

    def work(i: int) -> int:
        with tracer.start_as_current_span("step"), tracer.start_as_current_span("inner"):
            return i

    with tracedfutures.TracedThreadPoolExecutor(2, name="steps", tracer_provider=provider) as pool:
        wait([pool.submit(work, i) for i in range(200)])
    provider.shutdown()
    timeline = timeline_reader.read(trace)
    assert (len(timeline.tasks), len(timeline.spans), timeline.spans_left_out) == (200, 400, 0)
    assert {task.key for task in timeline.tasks} == {span.task for span in timeline.spans}
    data = report_data.report_data(timeline, "steps")
    assert (data["summary"]["spans"], data["summary"]["spans_left_out"]) == (400, 0)
    drawn = data["timeline"]
    span_code = drawn["outcomes"].index("span")
    kinds = Counter((drawn["labels"][label], outcome == span_code, depth)
                    for label, outcome, depth in zip(drawn["label"], drawn["outcome"], drawn["depth"]))  # fmt: skip
    assert kinds == {(work.__qualname__, False, 0): 200, ("step", True, 1): 200, ("inner", True, 2): 200}
    [row] = [row for row in data["spans"] if row["span"] == "inner"]
    assert (row["function"], row["spans"], row["tasks"]) == (work.__qualname__, 200, 200)

    monkeypatch.setattr(report_data, "MAX_SLICES", 50)
    merged = report_data.report_data(timeline, "steps")["timeline"]
    assert merged["merged"] and sum(merged["count"]) == merged["slices"] == 600
    spans = [count for outcome, count in zip(merged["outcome"], merged["count"]) if outcome == span_code]
    assert sum(spans) == 400 and len(spans) < 400
    assert all((outcome == span_code) == (depth > 0) for outcome, depth in zip(merged["outcome"], merged["depth"]))


@needs_chromium
def test_a_run_killed_before_its_timeline_was_finished(recorded: Path, tmp_path: Path, page: Page) -> None:
    # A kill leaves the writer's events up to its last flush, maybe cut in the middle of one: the page holds every
    # whole event, and says the run was cut short.
    whole = recorded.read_text(encoding="utf-8")
    cut = whole[: whole.rindex('"cat":"task"') + 30]  # in the middle of the last task slice
    unfinished = tmp_path / "killed.json"
    unfinished.write_text(cut, encoding="utf-8")
    done = tracedfutures("report", unfinished, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cut short" in done.stdout
    tasks = cut.count('"cat":"task"') - 1 + cut.count('"ran":false')  # the last slice is cut short
    page.open(tmp_path / "killed.html")
    assert page.errors == []
    assert page.evaluate("document.getElementById('summary-tasks').textContent") == str(tasks)
    note = page.evaluate("document.getElementById('cut-short').textContent")
    assert note.startswith("The run was cut short") and note.endswith(f": {tasks} tasks."), note
    whole_page = tmp_path / "whole.html"
    assert tracedfutures("report", recorded, "-o", whole_page, cwd=tmp_path).returncode == 0
    page.open(whole_page)
    assert page.evaluate("document.getElementById('cut-short').textContent") == ""
