"""The dashboards and alert rules against real Prometheus servers scraping a real tracedfutures program.

One program (this process) serves a fresh registry with ``tracedfutures.start_http_server``; two Prometheus servers
scrape it every second and load the alert rules: Debian 12's Prometheus 2.42 (``prometheus`` on PATH) and Debian
sid's Prometheus 3.5 (``TF_PROMETHEUS3``, else the sid root of tests/tools/sid.sh; tests/run.sh installs both),
the latter with ``--enable-feature=created-timestamp-zero-ingestion``. Nothing is created in advance to help: the
program starts, is scraped idle, then makes the errors of a type never seen before after several scrapes, runs and
shuts down a short-lived pool, runs slow tasks in a process pool, and leaves a task hanging. Then every panel query
and alert rule is evaluated over the run on both servers and compared with what happened: exact counts, ratios
within the extrapolation Prometheus applies, saturation never above 1, the stuck-task alert firing (its threshold
lowered to a few seconds in the rule file the servers load). The servers are stopped and their data removed
whatever happens.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import gc
import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import tracedfutures
from tracedfutures import _naming

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import cpusupport  # noqa: E402

from dashboards import alerts, check, config  # noqa: E402

JOB = "tracedfutures-test"
EXECUTOR = "work"
WORKERS = 2
#: Seconds a task runs before the stuck-task rule the servers load fires (config.STUCK_TASK_SECONDS is minutes).
STUCK_AFTER = 4.0
DEADLINE = 30.0  # seconds to wait for any one thing a server does
#: Loops of each task of the CPU phases: about 0.2 s of a CPU on 3.11, so that even on a loaded machine no task runs
#: for STUCK_AFTER seconds (the stuck-task alert would fire for it).
CPU_LOOPS = 4_000_000
#: What the template variables become: this job, every executor, short windows ($__range: the run, per scenario).
VARIABLES = {**check.SUBSTITUTIONS, "$job": JOB, "$executor": ".*"}
#: Prometheus 3 from Debian sid: TF_PROMETHEUS3, else where tests/tools/sid.sh's root has it.
PROMETHEUS3 = os.environ.get("TF_PROMETHEUS3", "/var/cache/tracedfutures/sid/usr/bin/prometheus")
VERSIONS = ("2", "3")


# --- the program --------------------------------------------------------------------------------------------


class FirstSeenError(Exception):
    """An exception class no task raised before the program had been scraped several times."""


def ok(value: int) -> int:
    time.sleep(0.002)
    return value


def fail_value(value: int) -> int:
    raise ValueError(value)


def fail_key(value: int) -> int:
    raise KeyError(value)


def fail_new(value: int) -> int:
    raise FirstSeenError(value)


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@dataclass
class Expected:
    """What the program did, as the metrics must count it."""

    submitted: int = 0
    completed: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (function, outcome, error_type)
    waits: dict[tuple[str, str], int] = field(default_factory=dict)
    as_completed: dict[str, int] = field(default_factory=dict)
    as_completed_yields: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    unretrieved: dict[str, int] = field(default_factory=dict)
    moments: dict[str, float] = field(default_factory=dict)  # when each phase began, unix seconds
    first_batch_busy: float = 0.0  # busy worker-seconds of the first short-lived pool
    #: Each CPU phase's pool: (start, end) unix seconds, the CPU seconds the OS charged, and the share of their
    #: runnable time its workers were on a CPU (``cpusupport.on_cpu_share``).
    cpu: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    def ended(self, function: str, outcome: str, error_type: str = "", count: int = 1) -> None:
        key = (function, outcome, error_type)
        self.completed[key] = self.completed.get(key, 0) + count

    def by_outcome(self) -> dict[str, int]:
        found = dict.fromkeys(("success", "error", "cancelled"), 0)
        for (_, outcome, _), n in self.completed.items():
            found[outcome] += n
        return found

    @property
    def ran(self) -> int:
        return sum(n for (_, outcome, _), n in self.completed.items() if outcome != "cancelled")

class Program:
    """The scraped program: the executor ``work`` from the start, and what it does in each phase."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.executor = tracedfutures.TracedThreadPoolExecutor(
            WORKERS, name=EXECUTOR, registry=registry, tracer_provider=self.provider
        )
        self.expected = Expected()
        self.hang = threading.Event()
        self.kept: list[cf.Future[Any]] = []

    def steady(self) -> None:
        """Successes only: no error series exists yet. And the first of a job's short-lived pools: it lives
        between two scrapes (Prometheus 2.42 never sees its series at 0, 3 does through their created time)."""
        with tracedfutures.TracedThreadPoolExecutor(4, name="batch", registry=self.registry) as batch:
            assert list(batch.map(slow, [0.05] * 4)) == [0.05] * 4
        busy = self.registry.get_sample_value("executor_workers_busy_seconds_total", {"executor": "batch"})
        self.expected.first_batch_busy = busy or 0.0
        futures = [self.executor.submit(ok, i) for i in range(10)]
        tracedfutures.wait(futures)
        self.expected.waits[("ALL_COMPLETED", "false")] = 1
        self.expected.submitted += 10
        self.expected.ended("ok", "success", count=10)
        self.kept += futures

    def first_errors(self) -> None:
        """The first errors of a type never seen before, after several scrapes: 10 among 40 tasks."""
        e, ex = self.expected, self.executor
        e.moments["first_errors"] = time.time()
        futures = [ex.submit(ok, i) for i in range(30)] + [ex.submit(fail_new, i) for i in range(10)]
        for f in futures:
            f.exception()
        e.submitted += 40
        e.ended("ok", "success", count=30)
        e.ended("fail_new", "error", _naming.error_type(FirstSeenError), 10)

    def misuse(self) -> None:
        """Cancellations, timed-out waits, errors of two more types, dropped failures and a refused transition."""
        e, ex = self.expected, self.executor
        gate = threading.Event()
        blockers = [ex.submit(gate.wait, DEADLINE) for _ in range(WORKERS)]
        e.submitted += WORKERS
        _until(lambda: all(f.running() for f in blockers), "both workers busy")
        queued = [ex.submit(ok, i) for i in range(3)]
        e.submitted += 3
        assert all(f.cancel() for f in queued)
        e.ended("ok", "cancelled", count=3)
        done, not_done = tracedfutures.wait(blockers, timeout=0.05)
        assert not done and len(not_done) == WORKERS
        e.waits[("ALL_COMPLETED", "true")] = 1
        with pytest.raises(cf.TimeoutError):
            for _ in tracedfutures.as_completed(blockers, timeout=0.05):
                pass
        e.as_completed["true"] = 1
        gate.set()
        more = [ex.submit(ok, i) for i in range(4)] + [ex.submit(fail_value, i) for i in range(2)]
        dropped = [ex.submit(fail_key, i) for i in range(2)]
        e.submitted += 8
        everything: list[cf.Future[Any]] = [*blockers, *more, *dropped]
        yielded = sum(1 for _ in tracedfutures.as_completed(everything))
        del everything
        assert yielded == WORKERS + 8
        e.as_completed["false"] = 1
        e.as_completed_yields = yielded
        e.ended("Event.wait", "success", count=WORKERS)
        e.ended("ok", "success", count=4)
        e.ended("fail_value", "error", "ValueError", 2)
        e.ended("fail_key", "error", "KeyError", 2)
        tracedfutures.wait(more, return_when=cf.FIRST_COMPLETED)
        e.waits[("FIRST_COMPLETED", "false")] = 1
        time.sleep(0.05)  # results read late: a result lag of at least this
        for f in blockers + more:
            f.exception()
        del dropped  # two failed futures nobody ever reads
        gc.collect()
        e.unretrieved["KeyError"] = 2
        with pytest.raises(cf.InvalidStateError):
            more[0].set_result(0)
        e.invalid["set_result"] = 1

    def short_lived_and_processes(self) -> None:
        """A pool of 2 processes running 3 slow tasks, and meanwhile a pool of 4 threads that runs a batch and
        is shut down (a ``with`` block), as a job made of short-lived pools does."""
        e = self.expected
        e.moments["pools"] = time.time()
        context = multiprocessing.get_context("fork")
        options: dict[str, Any] = {"registry": self.registry, "tracer_provider": self.provider}
        with tracedfutures.TracedProcessPoolExecutor(2, name="procs", mp_context=context, **options) as procs:
            slow_futures = [procs.submit(slow, 1.0) for _ in range(3)]
            with tracedfutures.TracedThreadPoolExecutor(4, name="batch", **options) as batch:
                assert list(batch.map(slow, [0.2] * 8)) == [0.2] * 8
                time.sleep(0.4)  # idle workers: capacity that was not used
            assert [f.result() for f in slow_futures] == [1.0] * 3
        e.moments["pools_done"] = time.time()

    def cpu_phases(self, settle: Callable[[], object]) -> None:
        """Three pools in turn, as many tasks as workers (none queues): 4 threads of pure-Python loops, 2
        processes of the same loops, 4 threads that sleep. Each pool is scraped idle first (its counter is seen at
        0) and again after its last task, before its shutdown (a worker process's CPU is read while it lives)."""
        fork = multiprocessing.get_context("fork")
        phases: list[tuple[str, cf.Executor, Callable[[Any], Any], Any, Callable[[], float]]] = [
            ("cpu_threads", tracedfutures.TracedThreadPoolExecutor(4, name="cpu_threads", registry=self.registry),
             cpusupport.spin, CPU_LOOPS, cpusupport.own_cpu),
            ("cpu_procs", tracedfutures.TracedProcessPoolExecutor(
                2, mp_context=fork, name="cpu_procs", registry=self.registry),
             cpusupport.spin, CPU_LOOPS, cpusupport.children_cpu),
            ("sleepers", tracedfutures.TracedThreadPoolExecutor(4, name="sleepers", registry=self.registry),
             cpusupport.nap, 1.5, cpusupport.own_cpu),
        ]  # fmt: skip
        for name, pool, task, arg, charged_by in phases:
            if isinstance(pool, cf.ProcessPoolExecutor):
                # Its workers forked now, not at the first submit: no task queues behind a slow fork (the
                # queue-wait alert would go pending for it).
                pool._start_executor_manager_thread()  # type: ignore[attr-defined]
            settle()
            start = time.time()
            workers = pool._max_workers  # type: ignore[attr-defined]
            charged, got = cpusupport.cpu_phase(pool, task, [arg] * workers, charged_by, settle)
            self.expected.cpu[name] = (start, time.time(), charged, got)

    def stuck(self) -> cf.Future[Any]:
        """A task that hangs (until the test ends)."""
        self.expected.moments["stuck"] = time.time()
        self.expected.submitted += 1
        return self.executor.submit(self.hang.wait, 10 * DEADLINE)

    def close(self) -> None:
        self.hang.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.provider.shutdown()


def _until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(0.05)


# --- the Prometheus server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: these tests need a real Prometheus. Install it (Debian: apt-get "
            "install "
            "prometheus, which tests/run.sh does as root) and run again.",
            pytrace=False,
        )
    return path


def prometheus_binary(version: str) -> str:
    """The ``prometheus`` of major ``version``: 2 from PATH (Debian 12), 3 from Debian sid (``PROMETHEUS3``)."""
    if version == "2":
        return binary("prometheus")
    if not os.access(PROMETHEUS3, os.X_OK):
        pytest.fail(
            f"no Prometheus 3 at {PROMETHEUS3}: set TF_PROMETHEUS3, or let tests/run.sh make the Debian sid root "
            "that holds it (tests/tools/sid.sh, as root)",
            pytrace=False,
        )
    return PROMETHEUS3


def rules_file(workdir: Path) -> Path:
    """dashboards/alerts.yaml as generated, with the stuck-task threshold lowered to ``STUCK_AFTER`` seconds."""
    lowered = [
        dataclasses.replace(a, threshold=STUCK_AFTER) if a.name == "TracedFuturesTaskStuck" else a
        for a in alerts.alerts()
    ]
    path = workdir / "rules.yaml"
    path.write_text(alerts.rules_yaml(lowered), encoding="utf-8")
    return path


class Prometheus:
    """A Prometheus server of our own (major ``version``) on a free loopback port, scraping ``target`` every
    second. Prometheus 3 ingests created timestamps (a series' first count is seen); 2.42 has no such feature."""

    def __init__(self, workdir: Path, target: str, version: str, rules: Path, metrics_path: str = "/metrics") -> None:
        self.version = version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir = workdir / f"prometheus{version}"
        workdir.mkdir()
        self.log = workdir / "prometheus.log"
        settings = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": JOB, "metrics_path": metrics_path, "static_configs": [{"targets": [target]}]}
            ],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
        features = "exemplar-storage" + (",created-timestamp-zero-ingestion" if version == "3" else "")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    prometheus_binary(version),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--enable-feature={features}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def get(self, path: str, **params: Any) -> Any:
        return self._call(path, params, post=False)

    def post(self, path: str, **params: Any) -> Any:
        return self._call(path, params, post=True)

    def _call(self, path: str, params: dict[str, Any], post: bool) -> Any:
        encoded = urllib.parse.urlencode(params, doseq=True)
        if post:
            request = urllib.request.Request(
                self.url + path,
                data=encoded.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            request = urllib.request.Request(self.url + path + ("?" + encoded if encoded else ""))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: a query that does not parse or evaluate
            return json.loads(exc.read() or b"{}") | {"http_status": exc.code}

    def query(self, expr: str) -> dict[str, Any]:
        return dict(self.post("/api/v1/query", query=expr))

    def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer.get("status") == "success", f"{expr}: {answer}"
        return list(answer["data"]["result"])

    def value(self, expr: str) -> float:
        result = self.vector(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def by(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(s["metric"].get(n, "") for n in labels): float(s["value"][1]) for s in self.vector(expr)
        }

    def ready(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _until(up, "prometheus to be ready")

    def scrapes(self) -> int:
        """How many scrapes of our target the server has stored."""
        result = self.vector(f'count_over_time(up{{job="{JOB}"}}[1h])')
        return int(float(result[0]["value"][1])) if result else 0

    def wait_scrapes(self, count: int) -> None:
        """Wait until ``count`` more scrapes than now are stored (the first may have started before this)."""
        start = self.scrapes()
        _until(lambda: self.scrapes() >= start + count, f"{count} scrapes")

    def wait_rules_after(self, moment: float) -> None:
        """Wait until every rule has been evaluated after the wall-clock ``moment``."""

        def evaluated() -> bool:
            groups = self.get("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return bool(rules) and all(_timestamp(r.get("lastEvaluation", "")) > moment for r in rules)

        _until(evaluated, "a rule evaluation after the last scrape")


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Prometheus writes it (nanoseconds, Z or an offset)."""
    match = _RFC3339.match(text)
    if match is None:
        return 0.0
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return moment + float(fraction or 0)


@dataclass
class Scenario:
    servers: dict[str, Prometheus]  # by major version
    registry: CollectorRegistry
    expected: Expected
    exposed: set[str]  # metric family names the library exposes
    range: str  # the dashboards' $__range: the whole run

    def substitute(self, expr: str) -> str:
        return substitute(expr, {**VARIABLES, "$__range": self.range})


def _each(servers: dict[str, Prometheus], check: Callable[[Prometheus], Any], what: str) -> None:
    for prom in servers.values():
        _until(lambda server=prom: check(server), f"{what} (Prometheus {prom.version})")


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    binary("prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="tracedfutures-prometheus-"))
    registry = CollectorRegistry()
    server = program = None
    servers: dict[str, Prometheus] = {}
    try:
        started = time.time()
        metrics_port = free_port()
        server, _thread = tracedfutures.start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
        program = Program(registry)
        # wait() and as_completed() record to the process-wide registry: this one, for this module's tests.
        tracedfutures.configure(tracer_provider=program.provider, registry=registry)
        rules = rules_file(workdir)
        for version in VERSIONS:
            servers[version] = Prometheus(workdir, f"127.0.0.1:{metrics_port}", version, rules)
        for prom in servers.values():
            prom.ready()
        submitted = f'executor_tasks_submitted_total{{job="{JOB}",executor="{EXECUTOR}"}}'
        _each(servers, lambda prom: prom.vector(f"{submitted} == 0"), "a scrape of the idle executor")
        program.steady()
        for prom in servers.values():
            prom.wait_scrapes(3)
        program.first_errors()
        for prom in servers.values():
            prom.wait_scrapes(3)
        program.misuse()
        program.short_lived_and_processes()
        program.cpu_phases(lambda: [prom.wait_scrapes(2) for prom in servers.values()])
        hung = program.stuck()
        stuck_firing = 'ALERTS{alertname="TracedFuturesTaskStuck", alertstate="firing"}'
        _each(servers, lambda prom: prom.vector(stuck_firing), "the stuck-task alert to fire")
        assert hung.running()
        for prom in servers.values():
            prom.wait_scrapes(1)
            # Every rule evaluated once more after the last scrape: alert states include all the work.
            prom.wait_rules_after(prom.value(f'timestamp(up{{job="{JOB}"}})') + 0.2)
        exposed = {metric.name for metric in registry.collect()}
        run = f"{int(time.time() - started) + 10}s"
        yield Scenario(servers, registry, program.expected, exposed, run)
    except BaseException:
        for prom in servers.values():
            print(f"prometheus {prom.version} log:\n{prom.log_tail()}", file=sys.stderr)
        raise
    finally:
        tracedfutures.reset_defaults()
        for prom in servers.values():
            prom.stop()
        if program is not None:
            program.close()
        if server is not None:
            server.shutdown()
            server.server_close()
        shutil.rmtree(workdir, ignore_errors=True)


# --- what the dashboards and rules ask ----------------------------------------------------------------------


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_queries() -> list[Any]:
    params = []
    for settings, board in check.load_dashboards():
        for panel, target in check.queries(board):
            for version in VERSIONS:
                params.append(
                    pytest.param(
                        version,
                        panel,
                        target,
                        id=f"{version}:{settings.uid}:{panel['title']}:{target['refId']}".replace(" ", "_"),
                    )
                )
    return params


def panel_expr(title: str, ref: str = "A") -> str:
    """The query ``ref`` of the executors dashboard's panel called ``title`` (the first one, for two titles)."""
    _, board = check.load_dashboards()[0]
    return next(t["expr"] for panel, t in check.queries(board) if panel["title"] == title and t["refId"] == ref)


@pytest.mark.parametrize(("version", "panel", "target"), dashboard_queries())
def test_dashboard_query_returns_series(
    scenario: Scenario, version: str, panel: dict[str, Any], target: dict[str, Any]
) -> None:
    """Every query parses and returns series on both servers, as instant, range and exemplar queries."""
    prom = scenario.servers[version]
    expr = scenario.substitute(target["expr"])
    answer = prom.query(expr)
    assert answer.get("status") == "success", f"instant query failed: {answer}\n{expr}"
    assert answer["data"]["result"], f"instant query returned no series:\n{expr}"
    now = time.time()
    if target.get("range", True) and not target.get("instant"):
        answer = prom.post("/api/v1/query_range", query=expr, start=now - 30, end=now, step=1)
        assert answer.get("status") == "success", f"range query failed: {answer}\n{expr}"
        assert answer["data"]["result"], f"range query returned no series:\n{expr}"
    if target.get("exemplar"):
        answer = prom.post("/api/v1/query_exemplars", query=expr, start=now - 300, end=now)
        assert answer.get("status") == "success", f"exemplar query failed: {answer}\n{expr}"
        for group in answer["data"]:
            for exemplar in group.get("exemplars", []):
                assert config.EXEMPLAR_TRACE_ID_LABEL in exemplar["labels"], exemplar


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("alert", alerts.alerts(), ids=lambda a: a.name)
def test_alert_rule_evaluates(scenario: Scenario, alert: alerts.Alert, version: str) -> None:
    prom = scenario.servers[version]
    answer = prom.query(alert.expr)
    assert answer.get("status") == "success", f"{alert.name}: {answer}"
    signal = prom.vector(alert.signal)
    assert signal, f"{alert.name} signal returned no series"
    for series in signal:
        assert series["metric"].get("job") == JOB and "executor" in series["metric"], series


@pytest.mark.parametrize("version", VERSIONS)
def test_rules_loaded_and_healthy(scenario: Scenario, version: str) -> None:
    groups = scenario.servers[version].get("/api/v1/rules")["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {a.name for a in alerts.alerts()}
    for name, rule in rules.items():
        assert rule["health"] == "ok" and not rule.get("lastError"), (name, rule)


@pytest.mark.parametrize("version", VERSIONS)
def test_expected_alerts_are_active(scenario: Scenario, version: str) -> None:
    """Errors above 5% (pending: the rule wants 10m), the third slow task of the 2 processes queued for a
    second (p95 above 1s, pending), the refused set_result, the dropped failures and the hung task (firing at
    once); no pool was saturated for 15m."""
    active = {
        (a["labels"]["alertname"], a["state"]): a["labels"]
        for a in scenario.servers[version].get("/api/v1/alerts")["data"]["alerts"]
    }
    assert set(active) == {
        ("TracedFuturesHighErrorRatio", "pending"),
        ("TracedFuturesQueueWaitHigh", "pending"),
        ("TracedFuturesInvalidTransitions", "firing"),
        ("TracedFuturesUnretrievedExceptions", "firing"),
        ("TracedFuturesTaskStuck", "firing"),
    }, active
    assert active[("TracedFuturesInvalidTransitions", "firing")]["method"] == "set_result"
    assert active.pop(("TracedFuturesQueueWaitHigh", "pending"))["executor"] == "procs"
    assert all(labels["executor"] == EXECUTOR and labels["job"] == JOB for labels in active.values())


@pytest.mark.parametrize("version", VERSIONS)
def test_counts_are_exact(scenario: Scenario, version: str) -> None:
    prom, e = scenario.servers[version], scenario.expected
    w = f'job="{JOB}",executor="{EXECUTOR}"'
    assert prom.value(f"executor_tasks_submitted_total{{{w}}}") == e.submitted == 64
    assert prom.by(f"executor_tasks_ended_total{{{w}}}", "outcome") == {
        (outcome,): float(n) for outcome, n in e.by_outcome().items()
    }
    completed = prom.by(f"executor_tasks_completed_total{{{w}}}", "function", "outcome", "error_type")
    assert completed == {k: float(v) for k, v in e.completed.items()}
    assert prom.value(f"sum(executor_task_queue_seconds_count{{{w}}})") == e.ran
    assert prom.by(f"executor_task_run_seconds_count{{{w}}}", "function", "outcome") == {
        (f, o): float(n) for (f, o, _), n in e.completed.items() if o != "cancelled"
    } | {("fail_new", "error"): 10.0}
    assert prom.value(f'sum(executor_task_queue_seconds_bucket{{{w},le="+Inf"}})') == e.ran
    assert prom.by(f"executor_invalid_transitions_total{{{w}}}", "method") == {
        ("set_result",): 1.0,
        ("set_exception",): 0.0,
        ("set_running_or_notify_cancel",): 0.0,
    }
    assert prom.by(f"executor_exceptions_unretrieved_total{{{w}}}", "error_type") == {
        (k,): float(v) for k, v in e.unretrieved.items()
    }
    assert prom.value(f"executor_tasks_queued{{{w}}}") == 0
    assert prom.value(f"executor_tasks_running{{{w}}}") == 1  # the hung task
    assert prom.value(f"executor_max_workers{{{w}}}") == WORKERS
    j = f'job="{JOB}"'
    assert prom.by(f"futures_wait_seconds_count{{{j}}} > 0", "return_when", "timed_out") == {
        k: float(v) for k, v in e.waits.items()
    }
    assert prom.by(f"futures_as_completed_seconds_count{{{j}}}", "timed_out") == {
        (k,): float(v) for k, v in e.as_completed.items()
    }
    assert prom.value(f"futures_as_completed_next_seconds_count{{{j}}}") == e.as_completed_yields
    assert prom.value(f"sum(futures_result_lag_seconds_count{{{w}}})") > 0
    assert prom.by(f"executor_tasks_ended_total{{{j},executor=~'batch|procs'}}", "executor", "outcome") == {
        ("batch", "success"): 12.0, ("batch", "error"): 0.0, ("batch", "cancelled"): 0.0,
        ("procs", "success"): 3.0, ("procs", "error"): 0.0, ("procs", "cancelled"): 0.0,
    }  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_first_errors_of_a_new_type_count_in_every_ratio(scenario: Scenario, version: str) -> None:
    """The error ratio (stat over the run, time series, alert signal) sees the first FirstSeenError burst on
    both servers: its totals existed at 0 from the executor's start, and every outcome's series is scraped at
    the same moments, so Prometheus extrapolates numerator and denominator alike and the ratio is exact."""
    prom, e = scenario.servers[version], scenario.expected
    ended = e.by_outcome()
    want = ended["error"] / sum(ended.values())
    stat_expr = scenario.substitute(panel_expr("Error ratio")).replace('executor=~".*"', f'executor="{EXECUTOR}"')
    stat = prom.value(stat_expr)
    assert stat == pytest.approx(want, rel=1e-9)
    signal = prom.by(next(a.signal for a in alerts.alerts() if a.name == "TracedFuturesHighErrorRatio"), "executor")
    assert signal[(EXECUTOR,)] == pytest.approx(want, rel=1e-9)
    # Counted from before the first errors to now: exactly their 10 among the 40 (+ what came after).
    first = e.moments["first_errors"]
    window = f"{int(time.time() - first) + 2}s"
    errors = prom.value(f'sum(increase(executor_tasks_ended_total{{job="{JOB}",outcome="error"}}[{window}] ))')
    assert errors >= 10 + 4  # FirstSeenError, then ValueError and KeyError: extrapolation only adds


@pytest.mark.parametrize("version", VERSIONS)
def test_breakdown_by_type_and_function_needs_prometheus_3(scenario: Scenario, version: str) -> None:
    """The per-type and per-function series are born with their first count. Prometheus 3 with created-
    timestamp ingestion sees it (a 0 at the ``_created`` time); 2.42 does not: the documented limit."""
    prom = scenario.servers[version]
    top = prom.by(scenario.substitute(panel_expr("Top error types")), "error_type")
    by_function = prom.by(scenario.substitute(panel_expr("Top functions by errors")), "function")
    new_type = _naming.error_type(FirstSeenError)
    if version == "3":
        assert 10 <= top[(new_type,)] <= 10 * 1.2  # extrapolated to the window's edges, never below the count
        assert 10 <= by_function[("fail_new",)] <= 10 * 1.2
    else:  # 0, or less than 10 if a scrape fell inside the burst: the count its series was born with is lost
        assert top.get((new_type,), 0.0) < 10 and by_function.get(("fail_new",), 0.0) < 10


@pytest.mark.parametrize("version", VERSIONS)
def test_saturation_is_never_above_one(scenario: Scenario, version: str) -> None:
    """Busy over available worker-seconds, at every step of the run, for the long-lived pool, the pool of
    processes and the short-lived pool (whose capacity stays counted after its shutdown)."""
    prom = scenario.servers[version]
    expr = scenario.substitute(panel_expr("Saturation (busy / available worker-seconds)"))
    now = time.time()
    answer = prom.post("/api/v1/query_range", query=expr, start=now - 60, end=now, step=1)
    assert answer.get("status") == "success", answer
    seen = {s["metric"]["executor"]: [float(v) for _, v in s["values"]] for s in answer["data"]["result"]}
    assert set(seen) == {EXECUTOR, "batch", "procs", "cpu_threads", "cpu_procs", "sleepers"}
    for executor, values in seen.items():
        assert all(0 <= v <= 1 + 1e-9 for v in values), (executor, values)
    # The short-lived pool: shut down, no max_workers now, but its worker-seconds are there to divide by.
    j = f'job="{JOB}"'
    assert prom.value(f'executor_max_workers{{{j},executor="batch"}}') == 0
    batch = prom.value(
        f'sum(increase(executor_workers_busy_seconds_total{{{j},executor="batch"}}[{scenario.range}]))'
        f' / sum(increase(executor_workers_available_seconds_total{{{j},executor="batch"}}[{scenario.range}]))'
    )
    # The second batch (8 tasks of 0.2 s on 4 workers, then idle until the pool closed), on 3 the first too.
    assert 0.2 < batch < 1
    # Busy worker-seconds of both pools: Prometheus 3 counts the first pool (which lived between two scrapes)
    # from its series' created time; 2.42 may count only the second.
    both = scenario.registry.get_sample_value("executor_workers_busy_seconds_total", {"executor": "batch"})
    assert both is not None
    seen = prom.value(f'increase(executor_workers_busy_seconds_total{{{j},executor="batch"}}[{scenario.range}])')
    least = both if version == "3" else both - scenario.expected.first_batch_busy
    # increase() extrapolates towards the window's edges (up to 1.1 scrape intervals past the first and last
    # samples): 1.051 of the real total was seen once.
    assert 0.99 * least <= seen <= 1.10 * both, (seen, both, scenario.expected.first_batch_busy)
    procs = prom.value(f'executor_workers_busy_seconds_total{{{j},executor="procs"}}')
    assert 3.0 <= procs < 3.5  # three tasks of 1 s, timed in the worker processes
    # Running means running in one of the 2 processes (the third task waited in the call queue, as queued).
    running = prom.value(f'max_over_time(executor_tasks_running{{{j},executor="procs"}}[{scenario.range}])')
    assert 1 <= running <= 2


@pytest.mark.parametrize("version", VERSIONS)
def test_cpus_used_against_busy_workers(scenario: Scenario, version: str) -> None:
    """The panel's two queries over each CPU phase: CPU seconds within 25% of what the OS charged, and the share
    of busy time that tells the pools apart (bounds as in tests/test_worker_cpu.py: at most one CPU for a
    GIL-bound pool of 4; near the share of their runnable time the processes were on a CPU; next to none for
    sleepers)."""
    prom = scenario.servers[version]
    for name, (start, end, charged, got) in scenario.expected.cpu.items():
        # The whole phase, from its idle scrapes to idle ones after it (its pool used nothing more then): a scrape that
        # a loaded machine delayed past the phase's end is in the window too.
        window = int(end - start) + 6
        at = end + 4

        def per_second(ref: str, name: str = name, window: int = window, at: float = at) -> float:
            expr = scenario.substitute(panel_expr("CPUs used against busy workers", ref).replace(
                "$__rate_interval", f"{window}s"))  # fmt: skip
            answer = prom.post("/api/v1/query", query=expr, time=at)
            assert answer.get("status") == "success", answer
            found = {s["metric"]["executor"]: float(s["value"][1]) for s in answer["data"]["result"]}
            return found[name]

        cpus, busy = per_second("A"), per_second("B")
        share = cpus / busy
        if name == "sleepers":
            assert cpus * window <= charged + 0.05 and share <= 0.05, (name, cpus, busy, charged)
            continue
        assert abs(cpus * window - charged) <= 0.25 * charged, (name, cpus * window, charged)
        if name == "cpu_threads":
            cpusupport.assert_gil_bound(share, got)
        else:
            cpusupport.assert_parallel(share, got)


@pytest.mark.parametrize("version", VERSIONS)
def test_stuck_task_is_seen(scenario: Scenario, version: str) -> None:
    prom = scenario.servers[version]
    age = prom.value(f'executor_oldest_running_task_age_seconds{{job="{JOB}",executor="{EXECUTOR}"}}')
    assert STUCK_AFTER < age < time.time() - scenario.expected.moments["stuck"] + 2
    firing = prom.vector('ALERTS{alertname="TracedFuturesTaskStuck", alertstate="firing"}')
    assert [s["metric"]["executor"] for s in firing] == [EXECUTOR]


def test_variable_values(scenario: Scenario) -> None:
    """The job and executor variables' label_values() queries, as Grafana runs them (series API)."""
    for prom in scenario.servers.values():
        for settings, board in check.load_dashboards():
            variables = {v["name"]: v for v in board["templating"]["list"]}
            for name, want in (("job", JOB), ("executor", EXECUTOR)):
                if name not in variables:
                    continue
                query = variables[name]["query"]
                inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
                match = scenario.substitute(inner)
                answer = prom.get(f"/api/v1/label/{name}/values", **{"match[]": match})
                assert answer["status"] == "success" and want in answer["data"], (settings.uid, query, answer)


def test_dashboard_metrics_match_the_library(scenario: Scenario) -> None:
    """config.METRICS (what the dashboards and lint assume) against what the library really exposes."""
    exposed = {}
    for family in scenario.registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        name = family.name + ("_total" if family.type == "counter" else "")
        exposed[name] = (family.type, labels)
    assert set(exposed) == set(config.METRICS)
    for name, (kind, labels) in exposed.items():
        assert config.METRICS[name][0] == kind, name
        assert set(config.METRICS[name][1]) == labels, (name, labels)


@pytest.mark.parametrize("version", VERSIONS)
def test_promtool_check_metrics(scenario: Scenario, version: str) -> None:
    """promtool's linter (2.42's and 3.5's) finds nothing to say about the exposition of the run."""
    text = generate_latest(scenario.registry).decode()
    assert "executor_tasks_submitted_total" in text
    promtool = binary("promtool") if version == "2" else str(Path(PROMETHEUS3).with_name("promtool"))
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
