"""Real pre-fork servers in prometheus_client's multiprocess mode, serving examples/prefork/app.py: gunicorn (sync,
gthread, gthread with --preload) and ``uvicorn --workers 2`` with FastAPI, two workers each, driven from a
loopback client. No server hook is configured: a worker SIGKILLed mid-task is noticed at the next scrape."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
THREADS = 4  # the pool of the example app (POOL_WORKERS)

SERVERS = {
    "gunicorn-sync": ["-m", "gunicorn", "-w", "2", "examples.prefork.app:wsgi_app"],
    "gunicorn-gthread": ["-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4",
                         "examples.prefork.app:wsgi_app"],
    "gunicorn-gthread-preload": ["-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4", "--preload",
                                 "examples.prefork.app:wsgi_app"],
    "uvicorn": ["-m", "uvicorn", "--workers", "2", "--log-level", "warning", "examples.prefork.app:asgi_app"],
}  # fmt: skip
PID_FILE = re.compile(r"_(\d+)\.(?:db|tf)$")  # a process's file: counter_<pid>.db, tracedfutures_live_<pid>.tf
#: Workers that each serve 3 requests (scrapes included) and are replaced: hundreds of processes over a run.
RECYCLED = ["-m", "gunicorn", "-w", "2", "--max-requests", "3", "--preload", "examples.prefork.app:wsgi_app"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``, but for multiprocessing's resource tracker."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                tracker = b"resource_tracker" in Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z" and not tracker:
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped, before or while reading
        return False


class Server:
    def __init__(self, kind: str, directory: Path, pool_workers: int = THREADS) -> None:
        self.kind = kind
        self.directory = directory
        self.port = _free_port()
        bind = ["--host", "127.0.0.1", "--port", str(self.port)] if kind == "uvicorn" else [
            "-b", f"127.0.0.1:{self.port}"]  # fmt: skip
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "POOL_WORKERS": str(pool_workers),
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        command = RECYCLED if kind == "gunicorn-recycled" else SERVERS[kind]
        self.process = subprocess.Popen([sys.executable, *command, *bind], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)  # fmt: skip
        self.metrics_path = "/metrics/" if kind == "uvicorn" else "/metrics"

    def get(self, path: str, timeout: float = 30) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
            return str(response.read().decode())

    def workers(self) -> set[int]:
        """The worker processes (uvicorn's supervisor and gunicorn's master are their parent)."""
        return _children(self.process.pid)

    def wait_ready(self, workers: int = 2) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len(self.workers()) == workers:
                    self.get("/pid", timeout=5)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.kind} did not start: {self.process.stderr}")

    def scrape(self) -> dict[tuple[str, str], float]:
        """Every sample of executor ``web``: (sample name, extra label values) -> value."""
        samples = {}
        for family in text_string_to_metric_families(self.get(self.metrics_path)):
            for sample in family.samples:
                if sample.labels.get("executor") == "web":
                    rest = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "executor")
                    samples[sample.name, rest] = sample.value
        return samples

    def stop(self) -> None:
        """Stop the server and every worker (its process group): gracefully, else at once after 5 s."""
        os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):  # the group is empty
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    running = Server(request.param, tmp_path)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _running_in(directory: Path, pid: int) -> float:
    """How many tasks worker ``pid`` says it runs, in its live file (which worker to kill)."""
    path = directory / f"tracedfutures_live_{pid}.tf"
    if not path.exists():
        return 0
    return sum(value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
               if key.endswith("\0running"))  # fmt: skip


def test_server_workers(server: Server) -> None:
    # Exact counters: tasks from as many requests as it takes to reach both workers (each returns its pid).
    pids: set[int] = set()
    requests = 0
    # The loopback client's concurrent requests: more than one worker's threads (gthread: 4), so that a worker the
    # kernel favours (on a loaded machine one may take 400 requests in fours) cannot take them all.
    client = ThreadPoolExecutor(16)
    while len(pids) < 2:
        pids.update(int(pid) for pid in client.map(server.get, ["/work"] * 16))
        requests += 16
        assert requests <= 800
    assert pids == server.workers()
    samples = server.scrape()
    assert samples["executor_tasks_submitted_total", ""] == requests
    assert samples["executor_tasks_ended_total", "outcome=success"] == requests
    assert samples["executor_task_run_seconds_count", "function=work,outcome=success"] == requests
    assert samples["executor_invalid_transitions_total", "method=set_result"] == 0
    # Each worker's own pool, once, and not the master's (--preload made it there).
    assert samples["executor_max_workers", ""] == 2 * THREADS
    assert samples["executor_tasks_running", ""] == 0

    # A task hung 3 s is the oldest running task while it runs.
    began = time.time()
    hung = client.submit(server.get, "/work?seconds=3")
    deadline = time.monotonic() + 10
    while not [pid for pid in pids if _running_in(server.directory, pid)]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.5)
    before = time.time()
    samples = server.scrape()
    assert samples["executor_tasks_running", ""] == 1
    assert before - began - 1.5 <= samples["executor_oldest_running_task_age_seconds", ""] <= time.time() - began
    hung.result()
    samples = server.scrape()
    assert samples["executor_tasks_running", ""] == 0
    assert samples["executor_oldest_running_task_age_seconds", ""] == 0

    # A worker SIGKILLed mid-task, with no hook: its task and its workers are gone at the next scrape.
    busy = samples["executor_workers_busy_seconds_total", ""]
    killed = client.submit(server.get, "/work?seconds=30")
    deadline = time.monotonic() + 10
    while not (busy_pids := [pid for pid in pids if _running_in(server.directory, pid)]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(busy_pids[0], signal.SIGKILL)
    while _alive(busy_pids[0]):  # the kernel ended it (the server may not have reaped it yet)
        time.sleep(0.001)
    samples = server.scrape()
    with pytest.raises(OSError):  # the connection was reset: no answer
        killed.result()
    assert samples["executor_tasks_running", ""] == 0
    assert samples["executor_oldest_running_task_age_seconds", ""] == 0
    assert samples["executor_tasks_submitted_total", ""] == requests + 2
    assert samples["executor_workers_busy_seconds_total", ""] >= busy
    # Once the server replaced it and the new worker ran a task: two pools again (the dead one's would make 3).
    survivor = (pids - {busy_pids[0]}).pop()
    deadline = time.monotonic() + 60
    while not server.workers() - {survivor} or int(server.get("/work")) == survivor:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.scrape()["executor_max_workers", ""] == 2 * THREADS
    client.shutdown()


def test_recycled_workers_leave_no_files_and_no_counts_behind(tmp_path: Path) -> None:
    """gunicorn --max-requests 3 --preload: a new worker every few requests. After every scrape the directory holds the
    files of the workers alive then, and the archives; every counter is exact and never lower than before."""
    server = Server("gunicorn-recycled", tmp_path)
    try:
        server.wait_ready()
        pids: set[int] = set()
        last = {"busy": 0.0, "available": 0.0}
        for requests in range(1, 101):
            pids.add(int(server.get("/work")))
            if requests % 4:
                continue
            samples = server.scrape()
            assert samples["executor_tasks_submitted_total", ""] == requests
            assert samples["executor_tasks_ended_total", "outcome=success"] == requests
            for counter in last:
                value = samples[f"executor_workers_{counter}_seconds_total", ""]
                assert value >= last[counter]
                last[counter] = value
            in_files = {int(found[1]) for name in os.listdir(tmp_path) if (found := PID_FILE.search(name))}
            # The master's (it made the pool, which counts in the workers only), two workers, and at most two
            # replaced since the scrape; not the dozens of workers that came before.
            assert len(in_files - {server.process.pid}) <= 4
            assert samples["executor_max_workers", ""] <= 2 * THREADS
        assert len(pids) >= 30  # workers started over the run
        assert sorted(name for name in os.listdir(tmp_path) if "archive" in name) == [
            "counter_archive.db", "histogram_archive.db", "tracedfutures_archive.tf"]  # fmt: skip
    finally:
        server.stop()
