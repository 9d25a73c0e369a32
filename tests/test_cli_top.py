"""``tracedfutures top`` (tracedfutures/_cli/top.py and the modules it uses), as a user meets it.

A traced program serves ``/metrics`` and ``/tasks`` on a free port: three workers held by a gate with five tasks
queued behind them, and a second pool that keeps finishing short tasks, a tenth of them raising. ``top`` runs in
a tmux pane (a real terminal): what its screen says must match what ``/metrics`` and ``/tasks`` say; when the
program ends, top must say so and keep its last numbers; ``q`` must end it with status 0 and the terminal back in
its cooked mode; an unreachable URL must end it with one line that says so. The interval's rates and quantiles
are checked against two real scrapes of a program, with known tasks run between them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path

import clisupport
import pytest
from prometheus_client import CollectorRegistry

import tracedfutures
from tracedfutures._cli import scrape, top_interval

ROOT = Path(__file__).resolve().parent.parent
rich = pytest.importorskip("rich", reason="tracedfutures top needs the tracedfutures[cli] extra")

#: The program that top looks at: prints its port, runs until its stdin closes.
PROGRAM = """
import sys, threading, time
import tracedfutures

server, _ = tracedfutures.start_http_server(0)
gate = threading.Event()

def held():
    gate.wait()

def short(i):
    time.sleep(0.002)
    if i % 10 == 0:
        raise ValueError(i)

pool = tracedfutures.TracedThreadPoolExecutor(3, name="held")
futures = [pool.submit(held) for _ in range(8)]
busy = tracedfutures.TracedThreadPoolExecutor(2, name="busy")
stop = threading.Event()

def feed():
    i = 0
    while not stop.is_set():
        busy.submit(short, i).exception()
        i += 1

threading.Thread(target=feed, daemon=True).start()

def spin():  # pure Python about half the time: about half a CPU, where the machine has it
    while not stop.is_set():
        total = 0
        for i in range(200_000):
            total += i
        time.sleep(0.01)

spinning = tracedfutures.TracedThreadPoolExecutor(1, name="spinning")
spinning.submit(spin)
print(server.server_port, flush=True)
sys.stdin.read()
stop.set()
gate.set()
"""


class Program:
    """The running program: its base URL, and ``stop()``."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process, self.url = process, url

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # it ends when its stdin does
        self.process.wait(timeout=30)


@pytest.fixture
def program() -> Iterator[Program]:
    """The program, running, its held tasks started."""
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    port = process.stdout.readline().strip()
    try:
        assert port.isdigit(), f"the program did not start (printed {port!r})"
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while not _held_running(scrape.scrape(url)):  # the three held tasks running, the five others queued
            assert time.monotonic() < deadline, "the held tasks did not start"
            time.sleep(0.05)
        yield Program(process, url)
    finally:
        Program(process, "").stop()


def _held_running(look: scrape.Scrape) -> bool:
    running = dict((labels["executor"], value) for labels, value in look.values("executor_tasks_running"))
    return running.get("held") == 3


class Pane:
    """A tmux server of its own (its own socket) with one window of a given size running a command."""

    def __init__(self, command: str, width: int = 160, height: int = 40) -> None:
        self.socket = f"tf-top-test-{os.getpid()}"
        # The pane's terminal may start at tmux's default size and take the given one a moment later: the command
        # starts once it has it, without the COLUMNS and LINES the shell may have exported at its start (rich
        # prefers them to the terminal's own size: top would draw for 80 columns).
        ready = f'until [ "$(stty size)" = "{height} {width}" ]; do sleep 0.05; done; unset COLUMNS LINES; '
        self.tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), ready + command)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text):
                return text
            assert time.monotonic() < deadline, f"no {pattern!r} on the screen:\n{text}"
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _rows(screen: str) -> dict[str, list[str]]:
    """The table rows on the screen (``|a | b |``), by their first cell."""
    rows = {}
    for line in screen.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and len(cells) > 1:
            rows.setdefault(cells[0], cells[1:])
    return rows


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian: apt-get install tmux)")
def test_top_in_a_terminal_shows_what_the_program_serves_and_quits_on_q(program: Program) -> None:
    top = shlex.join([sys.executable, "-m", "tracedfutures", "top", program.url, "--interval", "0.5"])
    # After top: its exit status, and whether the terminal is back in canonical mode with echo.
    pane = Pane(f"stty sane; {top}; echo EXITED $?; stty -a | tr ' ' '\\n' | grep -x -e -icanon -e -echo; sleep 60")
    try:
        screen = pane.wait_for(r"\|\s*busy\s*\|\s*[0-9.,]+\s*\|")  # the busy pool's rate: after one interval
        truth = scrape.scrape(program.url)
        rows = _rows(screen)
        header = rows["executor"]
        held, busy = dict(zip(header, rows["held"])), dict(zip(header, rows["busy"]))
        gauges = {
            name: {labels["executor"]: value for labels, value in truth.values(name)}
            for name in ("executor_tasks_queued", "executor_tasks_running", "executor_max_workers")
        }
        assert held["queued"] == f"{gauges['executor_tasks_queued']['held']:.0f}" == "5"
        assert held["running"] == f"{gauges['executor_tasks_running']['held']:.0f}" == "3"
        assert held["max workers"] == f"{gauges['executor_max_workers']['held']:.0f}" == "3"
        assert held["busy"] == "100 %"
        assert held["tasks/s"] == "0.0"  # none of the held tasks ended
        # CPUs used: the held workers wait (0.00 of a CPU), the spinning one uses some (at most one: one thread).
        assert held["CPUs"] == "0.00"
        assert 0.05 <= float(dict(zip(header, rows["spinning"]))["CPUs"]) <= 1.1
        assert busy["max workers"] == f"{gauges['executor_max_workers']['busy']:.0f}" == "2"
        assert float(busy["tasks/s"].replace(",", "")) > 10
        assert busy["errors"].endswith(" %") and 3 <= float(busy["errors"].split()[0]) <= 20  # a tenth raise
        assert busy["run p50"].endswith(" ms") and busy["queue p50"] != "-"
        # The running tasks: /tasks lists the three held ones, oldest first, on the pool's three threads.
        assert truth.tasks is not None
        listed = next(e for e in truth.tasks["executors"] if e["name"] == "held")["running"]
        assert len(listed) == 3
        running = [line for line in screen.splitlines() if re.search(r"\|\s*held\s*\|\s*held\s*\|", line)]
        assert len(running) == 3, screen
        assert {task["worker"]["thread_name"] for task in listed} == {
            re.search(r"(\S+) \(pid \d+\)", line).group(1)
            for line in running  # type: ignore[union-attr]
        }
        assert re.search(r"running now: [45], oldest first", screen)  # the spinning one, and the busy pool's if running
        # The program ends: top says so and keeps its last screen.
        program.stop()
        # Its first failed scrape may meet the server as it dies (a reset); the next ones find nothing listening.
        gone = pane.wait_for(r"cannot reach \S+: connection refused")
        assert f"cannot reach {program.url}/metrics: connection refused (showing the last answer; retrying)" in gone
        assert _rows(gone)["held"][1:4] == ["5", "3", "3"]  # queued, running, max workers as last seen
        pane.tmux("send-keys", "-t", "top", "q")
        after = pane.wait_for(r"EXITED \d+")
        assert "EXITED 0" in after
        assert "-icanon" not in after and "-echo" not in after, after
        assert "Traceback" not in after
    finally:
        pane.close()


#: Programs that serve their metrics from a server other than tracedfutures': a pool of two workers held by a
#: gate, a third task queued behind them; each prints its port and runs until its stdin closes.
HELD = """
import sys, threading
import tracedfutures

gate = threading.Event()
pool = tracedfutures.TracedThreadPoolExecutor(2, name="held", thread_name_prefix="holder")
futures = [pool.submit(gate.wait) for _ in range(3)]
"""
PROMETHEUS_SERVER = HELD + """
import prometheus_client

server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1")
print(server.server_port, flush=True)
sys.stdin.read()
gate.set()
"""
#: A FastAPI app run by uvicorn, with a /tasks route of its own, and an app serving the metrics mounted at /metrics.
FASTAPI_APP = HELD + """
import socket
import prometheus_client
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.get("/tasks")
def tasks():
    return {"tasks": ["the app's own"]}

app.mount("/metrics", MOUNTED())
listening = socket.socket()
listening.bind(("127.0.0.1", 0))
server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

def stop():
    sys.stdin.read()
    gate.set()
    server.should_exit = True

threading.Thread(target=stop, daemon=True).start()
print(listening.getsockname()[1], flush=True)
server.run(sockets=[listening])
"""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian: apt-get install tmux)")
@pytest.mark.parametrize(
    ("source", "path", "note"),
    [
        (PROMETHEUS_SERVER, "", "/tasks is not JSON (not tracedfutures' server): running tasks are not listed"),
        (FASTAPI_APP.replace("MOUNTED", "prometheus_client.make_asgi_app"), "/metrics",
         "/tasks is not tracedfutures' document: running tasks are not listed"),
        (FASTAPI_APP.replace("MOUNTED", "tracedfutures.make_asgi_app"), "/metrics", None),
    ],
    ids=["prometheus_client.start_http_server", "FastAPI + prometheus_client.make_asgi_app",
         "FastAPI + tracedfutures.make_asgi_app"],
)  # fmt: skip
def test_top_reads_any_server_that_serves_the_metrics(
    tmp_path: Path, source: str, path: str, note: str | None
) -> None:
    """The executors and their numbers from any server of the metrics; the running tasks where tracedfutures'
    app serves them (mounted at /metrics in a web app whose own /tasks is something else: top finds them under
    /metrics), else the one-line note that says why there are none to read; q quits with status 0."""
    (tmp_path / "served.py").write_text(source, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "served.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    pane: Pane | None = None
    try:
        assert port.isdigit(), f"the program did not start (printed {port!r})"
        url = f"http://127.0.0.1:{port}{path}"
        top = shlex.join([sys.executable, "-m", "tracedfutures", "top", url, "--interval", "0.5"])
        pane = Pane(f"{top}; echo EXITED $?; sleep 60")
        screen = pane.wait_for(r"\|\s*held\s*\|\s*0\.0\s*\|")  # the rates: after one interval
        rows = _rows(screen)
        assert "executor" in rows, screen
        held = dict(zip(rows["executor"], rows["held"]))
        assert (held["queued"], held["running"], held["max workers"], held["busy"]) == ("1", "2", "2", "100 %")
        running = [line for line in screen.splitlines() if re.search(r"\|\s*held\s*\|\s*Event\.wait\s*\|", line)]
        if note is None:
            assert "running now: 2, oldest first" in screen
            assert sorted(re.search(r"(holder_\d) \(pid \d+\)", line).group(1) for line in running) == [  # type: ignore[union-attr]
                "holder_0", "holder_1"
            ]
            assert "running tasks are not listed" not in screen
        else:
            assert [line.strip() for line in screen.splitlines() if "running tasks" in line] == [note]
            assert running == [] and "running now" not in screen
        assert "Traceback" not in screen
        pane.tmux("send-keys", "-t", "top", "q")
        assert "EXITED 0" in pane.wait_for(r"EXITED \d+")
    finally:
        if pane is not None:
            pane.close()
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


MULTIPROCESS_SERVER = HELD + """
import prometheus_client
from prometheus_client import multiprocess

if sys.argv[1] == "prometheus_client":
    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
else:
    from tracedfutures.exposition import multiprocess_registry

    registry = multiprocess_registry()
server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
print(server.server_port, flush=True)
sys.stdin.read()
gate.set()
"""


@pytest.mark.parametrize(
    ("collector", "gauges"),
    [("prometheus_client", (None, None, None)), ("tracedfutures", (1.0, 2.0, 2.0))],
    ids=["prometheus_client.multiprocess.MultiProcessCollector", "tracedfutures.exposition.multiprocess_registry"],
)
def test_top_reads_a_program_in_multiprocess_mode(
    tmp_path: Path, collector: str, gauges: tuple[float | None, ...]
) -> None:
    """prometheus_client's own server in multiprocess mode: with prometheus_client's collector the counters and
    histograms (the gauges are tracedfutures' files: not known, rather than 0), with tracedfutures' registry the
    gauges too; the note says there are no running tasks to read."""
    (tmp_path / "served.py").write_text(MULTIPROCESS_SERVER, encoding="utf-8")
    (tmp_path / "multiproc").mkdir()
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "served.py"), collector], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")},
    )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    try:
        port = process.stdout.readline().strip()
        assert port.isdigit(), f"the program did not start (printed {port!r})"
        reader = scrape.Reader(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:  # the three tasks submitted and, where the gauges are served, two of them running
            look = reader.scrape()
            [row] = top_interval.interval(None, look).executors
            if row.running == gauges[1] and top_interval._by_executor(look, "executor_tasks_submitted_total") == {
                "held": 3.0
            }:
                break
            assert time.monotonic() < deadline, f"the held tasks did not start: {row}"
            time.sleep(0.05)
        assert (row.name, (row.queued, row.running, row.max_workers)) == ("held", gauges)
        assert look.tasks is None
        assert look.tasks_note == "/tasks is not JSON (not tracedfutures' server): running tasks are not listed"
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def test_an_unreachable_program_is_one_clear_line(tmp_path: Path) -> None:
    done = clisupport.tracedfutures("top", "http://127.0.0.1:9", cwd=tmp_path)  # the discard port: nothing listens
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("tracedfutures top: cannot reach http://127.0.0.1:9/metrics: connection refused")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be a number of seconds more than 0, not '0'"),
        ("-1", "must be a number of seconds more than 0, not '-1'"),
        ("nan", "must be a number of seconds more than 0, not 'nan'"),
        ("soon", "not a number of seconds: 'soon'"),
    ],
)
def test_a_bad_interval_is_a_usage_error(tmp_path: Path, value: str, message: str) -> None:
    done = clisupport.tracedfutures("top", "http://127.0.0.1:9", f"--interval={value}", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "usage: tracedfutures top [-h] [-n SECONDS] [URL]\n"
        f"tracedfutures top: error: argument -n/--interval: {message}\n"
    )


def test_help_shows_examples_and_the_default_numbers(tmp_path: Path) -> None:
    done = clisupport.tracedfutures("top", "--help", cwd=tmp_path, env={"COLUMNS": "120"})
    assert done.returncode == 0 and done.stderr == ""
    assert "seconds between refreshes, more than 0 (default: 2)\n" in done.stdout
    assert "where the program serves /metrics and /tasks (default: http://127.0.0.1:9464)\n" in done.stdout
    assert done.stdout.endswith(
        "examples:\n"
        "  tracedfutures top                                  http://127.0.0.1:9464, every 2 s\n"
        "  tracedfutures top 127.0.0.1:8000/metrics -n 0.5    an app's /metrics, twice a second\n"
    )


def test_without_rich_top_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "rich").mkdir()  # a rich that cannot be imported, first on the path
    (tmp_path / "rich" / "__init__.py").write_text("raise ImportError('no rich here')\n", encoding="utf-8")
    done = clisupport.tracedfutures("top", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "tracedfutures top: needs rich: pip install 'tracedfutures[cli]'\n"


def test_an_interval_from_two_real_scrapes() -> None:
    registry = CollectorRegistry()
    server, _ = tracedfutures.start_http_server(0, registry=registry)
    url = scrape.base_url(f"127.0.0.1:{server.server_port}/metrics")

    def work(i: int) -> None:
        time.sleep(0.03)
        if i < 4:
            raise KeyError(i)

    try:
        with tracedfutures.TracedThreadPoolExecutor(4, name="timed", registry=registry) as pool:
            wait([pool.submit(work, 99)])
            before = scrape.scrape(url)
            wait([pool.submit(work, i) for i in range(20)])
            time.sleep(0.5)  # an interval long enough that when each side reads its clock matters little
            now = scrape.scrape(url)
        shown = top_interval.interval(before, now)
    finally:
        server.shutdown()
    [row] = shown.executors
    assert row.name == "timed" and row.max_workers == 4 and row.queued == 0 and row.running == 0
    assert shown.seconds is not None
    assert row.throughput == pytest.approx(20 / shown.seconds)
    assert row.submitted == pytest.approx(20 / shown.seconds)
    assert row.error_rate == pytest.approx(4 / 20)
    # Busy over offered worker-seconds: the 20 tasks' run time (nothing ran at either scrape) over what the server
    # says its 4 workers offered between the two scrapes (its clock, not the client's: under load they differ).
    ran = sum(v for labels, v in now.values("executor_task_run_seconds_sum")) - sum(
        v for labels, v in before.values("executor_task_run_seconds_sum")
    )
    offered = [sum(v for _, v in look.values("executor_workers_available_seconds_total")) for look in (before, now)]
    assert offered[1] > offered[0] and row.utilization == pytest.approx(ran / (offered[1] - offered[0]), rel=1e-6)
    # The workers' CPU seconds over the interval: the tasks sleep, so next to none of a CPU.
    cpu = [sum(v for labels, v in look.values("executor_workers_cpu_seconds_total")) for look in (before, now)]
    assert row.cpus == pytest.approx((cpu[1] - cpu[0]) / shown.seconds) and row.cpus < 0.2
    # 20 runs of 30 ms (more on a loaded machine): the default buckets put them in (0.025, 0.05] or above.
    assert row.run_p50 is not None and 0.025 < row.run_p50 <= 0.25
    assert row.run_p95 is not None and row.run_p50 <= row.run_p95
    # 4 workers, 20 tasks at once: 16 of them queued behind 30 ms and more.
    assert row.queue_p95 is not None and row.queue_p95 > 0.025
    assert shown.running == []  # all ended
    first = top_interval.interval(None, before)
    assert first.seconds is None and first.executors[0].throughput is None and first.executors[0].utilization is None
    assert first.executors[0].cpus is None


#: ``/metrics`` of a program in prometheus_client's multiprocess mode served by its own ``MultiProcessCollector``:
#: the counters and histograms, none of tracedfutures' gauges.
COUNTERS_ONLY = """\
# TYPE executor_tasks_submitted_total counter
executor_tasks_submitted_total{executor="pool"} 7.0
# TYPE executor_tasks_ended_total counter
executor_tasks_ended_total{executor="pool",outcome="success"} 6.0
"""


@pytest.mark.parametrize(
    ("answers", "note", "asked"),
    [
        ({}, "the program serves no /tasks: running tasks are not listed", ["/tasks", "/metrics/tasks"]),
        ({"/tasks": (200, COUNTERS_ONLY)},
         "/tasks is not JSON (not tracedfutures' server): running tasks are not listed", ["/tasks", "/metrics/tasks"]),
        ({"/tasks": (200, '{"tasks": []}')}, "/tasks is not tracedfutures' document: running tasks are not listed",
         ["/tasks", "/metrics/tasks"]),
        ({"/tasks": (200, '{"schema": "tracedfutures.tasks/2"}')},
         "/tasks is schema 'tracedfutures.tasks/2', which this top does not read: running tasks are not listed",
         ["/tasks", "/metrics/tasks"]),
        ({"/tasks": (500, "")}, "/tasks answered HTTP 500 Internal Server Error: running tasks are not listed",
         ["/tasks", "/metrics/tasks"]),
        ({"/metrics/tasks": (200, '{"schema": "tracedfutures.tasks/1", "executors": []}')}, None,
         ["/tasks", "/metrics/tasks", "/metrics/tasks"]),
    ],
    ids=["404", "not JSON", "another document", "a later schema", "HTTP 500", "under /metrics"],
)  # fmt: skip
def test_where_there_are_no_running_tasks_to_read_a_note_says_why(
    answers: dict[str, tuple[int, str]], note: str | None, asked: list[str]
) -> None:
    """Two scrapes of a server that serves the metrics and, at /tasks, one of the things servers serve there: the
    metrics read all the same, the note's exact words; the second scrape asks only where the first found the
    document, and nowhere when it found none."""
    import http.server
    import threading

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            status, body = (200, COUNTERS_ONLY) if self.path == "/metrics" else answers.get(self.path, (404, ""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reader = scrape.Reader(f"http://127.0.0.1:{server.server_port}")
        first, second = reader.scrape(), reader.scrape()
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path in requests if path != "/metrics"] == asked
    assert requests.count("/metrics") == 2
    for look in (first, second):
        assert look.tasks_note == note
        assert (look.tasks is None) == (note is not None)
        shown = top_interval.interval(None, look)
        assert shown.notes == ([] if note is None else [note])
        [row] = shown.executors
        # No gauge served at all: not known, rather than 0.
        assert (row.name, row.queued, row.running, row.max_workers) == ("pool", None, None, None)
    assert top_interval.interval(first, second).executors[0].throughput == 0.0


def test_bucket_quantile_interpolates_as_prometheus_does() -> None:
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 above 2.
    cumulative = {1.0: 4.0, 2.0: 8.0, float("inf"): 10.0}
    assert top_interval.bucket_quantile(0.2, cumulative) == pytest.approx(0.5)  # rank 2 of 4 in (0, 1]
    assert top_interval.bucket_quantile(0.5, cumulative) == pytest.approx(1.25)  # rank 5: 1 of 4 in (1, 2]
    assert top_interval.bucket_quantile(0.95, cumulative) == 2.0  # in +Inf: the highest finite bound
    assert top_interval.bucket_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None
