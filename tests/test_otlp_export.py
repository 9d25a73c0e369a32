"""Proof with a real receiver: the REAL OTLP exporters (HTTP/protobuf and gRPC), configured only by OTEL_*
environment variables through ``setup_tracing()`` or ``opentelemetry-instrument``, deliver one trace for a
program that uses a thread pool, a process pool with each start method, loky and a Dask LocalCluster: the exact
span tree, one trace id, the parents, the resource and the statuses. An unreachable or killed collector loses
no task result, raises nothing into the program and holds up its exit by at most the exporter's timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
RECEIVER = HERE / "otlp_receiver.py"
WORKLOAD = HERE / "otlp_workload.py"
#: The workload's parts, in its order (a part's index is the ``n`` its task passes on); the last, joblib, runs only
#: under opentelemetry-instrument (nothing but the instrumentor traces joblib.Parallel), the others in both set-ups.
PARTS = ("thread", "fork", "forkserver", "spawn", "loky", "dask", "joblib")
ALL_PARTS = PARTS[:-1]
SERVICE = "tracedfutures-otlp-test"
TIMEOUT = 120
#: OTEL_EXPORTER_OTLP_TIMEOUT of the runs against a dead collector, and what their exit may take beyond it.
#: The slack is the interpreter's own teardown on a loaded 2-core machine (seen up to 1.8 s there); a program
#: that waited for the exporter's default 10 s timeout, or retried past it, still fails.
EXPORT_TIMEOUT = 1.0
EXIT_SLACK = 3.0
RESULTS = [True, "WorkError"]  # what each part of the workload returns: its task ran, its failing task failed


class Receiver:
    """An OTLP receiver process on 127.0.0.1 (tests/otlp_receiver.py) and the spans it has received."""

    def __init__(self, protocol: str, path: Path) -> None:
        self.path = path
        self.process = subprocess.Popen(
            [sys.executable, str(RECEIVER), "--protocol", protocol, "--out", str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def spans(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # and nothing more arrives
        return self.spans()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(TIMEOUT)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Any]:
    started: list[Receiver] = []

    def start(protocol: str) -> Receiver:
        receiver = Receiver(protocol, tmp_path / f"spans-{len(started)}.jsonl")
        started.append(receiver)
        return receiver

    try:
        yield start
    finally:
        for receiver in started:
            receiver.kill()


def otel_env(endpoint: str, protocol: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a run: this one without any OTEL_* variable, plus the standard ones for the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=ci,team=observability",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_TRACES_SAMPLER="parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **extra,
    )
    if protocol is not None:
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    return env


class Run:
    """The workload as its own program; ``finish()`` returns its results and how long its exit took."""

    def __init__(self, setup: str, parts: tuple[str, ...], env: dict[str, str], pause_after: int = 0) -> None:
        command = [sys.executable, str(WORKLOAD), "--setup", setup, "--parts", ",".join(parts)]
        if pause_after:
            command += ["--pause-after", str(pause_after)]
        if setup == "instrument":
            command = [str(Path(sys.executable).with_name("opentelemetry-instrument")), *command]
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_paused(self) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "PAUSED\n"

    def resume(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self) -> tuple[dict[str, Any], str, float]:
        """(results, stderr, seconds from the end of the program's work to its exit)."""
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()
        if not line:  # the program ended without its results: what it said is the failure
            self.process.wait(TIMEOUT)
            pytest.fail(f"exit status {self.process.returncode}, no results; stderr:\n{self.process.stderr.read()}")
        results = json.loads(line)
        end_line = self.process.stdout.readline().split()
        assert end_line[0] == "END", end_line
        self.process.wait(TIMEOUT)
        exited = time.time()
        stderr = self.process.stderr.read()
        assert self.process.returncode == 0, stderr
        return results, stderr, exited - float(end_line[1])


def paths(spans: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Each span as the names from the root down to it (``outer`` with its n), sorted: the span tree."""
    by_id = {s["span_id"]: s for s in spans}

    def label(span: dict[str, Any]) -> str:
        return f"outer[{span['attributes']['n']}]" if span["name"] == "outer" else span["name"]

    found = []
    for span in spans:
        path = [label(span)]
        parent = span["parent_span_id"]
        while parent:
            assert parent in by_id, f"{span['name']}: parent {parent} was not received"
            path.append(label(by_id[parent]))
            parent = by_id[parent]["parent_span_id"]
        found.append(tuple(reversed(path)))
    return sorted(found)


def expected_paths(parts: tuple[str, ...], names: dict[str, str]) -> list[tuple[str, ...]]:
    expected = [("workload",)]
    for part in parts:
        name, n = names.get(part, part), PARTS.index(part)
        work, failing = f"{name} traced_work", f"{name} failing_work"
        expected += [
            ("workload", work),
            ("workload", work, f"outer[{n}]"),
            ("workload", work, f"outer[{n}]", "inner"),
            ("workload", failing),
            ("workload", failing, "failing"),
        ]
    return sorted(expected)


def check_trace(spans: list[dict[str, Any]], parts: tuple[str, ...], names: dict[str, str]) -> None:
    assert paths(spans) == expected_paths(parts, names)
    assert len({s["span_id"] for s in spans}) == len(spans)  # each span exported once
    assert len({s["trace_id"] for s in spans}) == 1
    assert {s["resource"]["service.name"] for s in spans} == {SERVICE}
    assert {s["resource"]["deployment.environment"] for s in spans} == {"ci"}
    assert {s["resource"]["team"] for s in spans} == {"observability"}
    statuses = Counter((s["name"].split()[-1], s["status"]) for s in spans)
    assert statuses == Counter(
        {
            ("workload", 0): 1,
            ("traced_work", 0): len(parts),
            ("outer", 0): len(parts),
            ("inner", 0): len(parts),
            ("failing_work", 2): len(parts),  # STATUS_CODE_ERROR
            ("failing", 2): len(parts),
        }
    )
    for span in spans:
        if span["name"].endswith(("traced_work", "failing_work")):
            assert span["scope"] == "tracedfutures"
            assert span["events"][0] == "running"
            assert span["attributes"]["code.function.name"] == span["name"].split()[-1]
        elif span["name"] != "workload":
            assert span["scope"] == "workersupport"
            assert span["kind"] == (3 if span["name"] == "inner" else 1)  # SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_setup_tracing_exports_one_trace_across_processes(receivers: Any, protocol: str) -> None:
    receiver = receivers(protocol)
    run = Run("helper", ALL_PARTS, otel_env(f"http://127.0.0.1:{receiver.port}", protocol))
    results, _, _ = run.finish()
    assert results == {part: RESULTS for part in ALL_PARTS}
    check_trace(receiver.wait_for(1 + 5 * len(ALL_PARTS)), ALL_PARTS, {})


def test_opentelemetry_instrument_exports_one_trace_across_processes(receivers: Any) -> None:
    """No code change: opentelemetry-instrument (the SDK's auto-configuration through opentelemetry-distro,
    whose default protocol is grpc) loads our entry point; the stock pools and loky's reusable executor are traced.
    Spawned workers are auto-instrumented too (its sitecustomize), so they have a provider of their own and export
    their spans."""
    parts = ("thread", "fork", "forkserver", "spawn", "loky")
    receiver = receivers("grpc")
    run = Run("instrument", parts, otel_env(f"http://127.0.0.1:{receiver.port}"))
    results, _, _ = run.finish()
    assert results == {part: RESULTS for part in parts}
    names = {"fork": "ProcessPoolExecutor", "forkserver": "ProcessPoolExecutor", "spawn": "ProcessPoolExecutor"}
    check_trace(receiver.wait_for(1 + 5 * len(parts)), parts, names)


def test_opentelemetry_instrument_traces_joblib_loky_and_dask(receivers: Any) -> None:
    """No code change for the executors of loky, joblib (``Parallel`` on its default backend) and Dask
    (``Client.get_executor()`` of a LocalCluster of worker processes) either: one trace under the program's span,
    the spans their tasks start in the workers under each task's span, and their metrics over OTLP, exact. Dask's
    client and workers run stdlib thread pools of their own (``Dask-Offload``, and asyncio's default executor at a
    worker's close), traced like every stock pool: those tasks, which are not the program's, are named and left
    out of its span tree here."""
    parts = ("loky", "dask", "joblib")
    receiver = receivers("grpc")
    env = otel_env(f"http://127.0.0.1:{receiver.port}")
    env["OTEL_METRICS_EXPORTER"] = "otlp"
    results, _, _ = Run("instrument", parts, env).finish()
    assert results == {part: RESULTS for part in parts}
    dask_own = ("Dask-Offload", "asyncio")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the program's spans, whatever Dask's own pools sent besides
        spans = receiver.wait_for(0, timeout=0)
        if sum(s["attributes"].get("executor.name") not in dask_own for s in spans) >= 1 + 5 * len(parts):
            break
    spans = receiver.wait_for(0)  # and nothing more arrives
    dasks = [s for s in spans if s["attributes"].get("executor.name") in dask_own]
    assert {s["name"] for s in dasks} == {
        "Dask-Offload run_in_executor_with_context.<locals>.<lambda>",  # the client's, in the workload's trace
        "asyncio Worker.close.<locals>._close",  # the workers' (auto-instrumented too), each a trace of its own
    }
    program = [s for s in spans if s not in dasks]
    check_trace(program, parts, {})
    tasks = [s for s in program if s["name"].endswith("_work")]
    kinds = {s["attributes"]["executor.name"]: s["attributes"]["executor.kind"] for s in tasks}
    assert kinds == {"loky": "process", "dask": "other", "joblib": "process"}

    import test_otel_metrics_export  # the receiver's metrics, read as that test reads them

    points = [p for p in test_otel_metrics_export.received(receiver) if p["attributes"].get("executor.name") in parts]
    submitted = {p["attributes"]["executor.name"]: p["value"] for p in points if p["name"] == "executor.task.submitted"}
    assert submitted == {"loky": 2, "dask": 2, "joblib": 2}
    completed = {
        (p["attributes"]["executor.name"], p["attributes"]["code.function.name"], p["attributes"].get("error.type", ""))
        for p in points
        if p["name"] == "executor.task.completed" and p["value"] == 1
    }
    assert completed == {
        (name, function, error)
        for name in parts
        for function, error in (("traced_work", ""), ("failing_work", "workersupport.WorkError"))
    }


@pytest.fixture
def dead_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """A collector address where nothing answers: a closed port (connections refused), or a "blackhole" that
    accepts connections into its backlog and never reads them (every export waits its whole timeout)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if request.param == "blackhole":
            sock.listen(64)
            yield f"http://127.0.0.1:{port}"
            return
    yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("dead_endpoint", ["refused", "blackhole"], indirect=True)
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_unreachable_collector_loses_no_result_and_does_not_hold_up_exit(dead_endpoint: str, protocol: str) -> None:
    """With the batch processor's default schedule (5 s) the spans of this short program are exported once, at
    exit: that export gives up after the exporter's timeout and the program exits."""
    parts = ("thread", "fork", "spawn")
    env = otel_env(dead_endpoint, protocol, OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT))
    del env["OTEL_BSP_SCHEDULE_DELAY"]
    results, stderr, exit_seconds = Run("helper", parts, env).finish()
    assert results == {part: RESULTS for part in parts}
    assert "Traceback" not in stderr
    assert "Failed to export" in stderr  # the exporter's own log line: it tried, and said so
    assert exit_seconds < EXPORT_TIMEOUT + EXIT_SLACK, exit_seconds


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_killed_collector_loses_no_result_and_does_not_hold_up_exit(receivers: Any, protocol: str) -> None:
    parts = ("thread", "fork", "spawn")
    receiver = receivers(protocol)
    env = otel_env(f"http://127.0.0.1:{receiver.port}", protocol, OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT))
    run = Run("helper", parts, env, pause_after=1)
    run.wait_paused()  # the thread part ran and its spans were flushed to the collector
    received = receiver.wait_for(4)
    assert sorted(s["name"] for s in received) == sorted(
        ["thread traced_work", "outer", "inner", "thread failing_work", "failing"]
    )
    receiver.kill()
    run.resume()
    results, stderr, exit_seconds = run.finish()
    assert results == {part: RESULTS for part in parts}
    assert "Traceback" not in stderr
    assert exit_seconds < EXPORT_TIMEOUT + EXIT_SLACK, exit_seconds
    assert len(receiver.spans()) == 5  # nothing arrived after the kill


def test_demo_sends_its_trace_when_an_endpoint_is_set(receivers: Any) -> None:
    receiver = receivers("http/protobuf")
    env = otel_env(f"http://127.0.0.1:{receiver.port}", "http/protobuf")
    del env["OTEL_SERVICE_NAME"]  # the demo names itself
    demo = subprocess.run(
        [sys.executable, str(HERE.parent / "examples" / "demo.py"), "--port", "0", "--tasks", "20"],
        env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    spans = receiver.wait_for(41)
    (root,) = [s for s in spans if not s["parent_span_id"]]
    assert root["name"] == "demo workload"
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    assert {s["resource"]["service.name"] for s in spans} == {"tracedfutures-demo"}
    assert Counter(s["name"] for s in spans) == Counter(
        {"io fetch": 30, "cpu resize": 5, "io Event.wait": 4, "futures.wait": 3, "futures.as_completed": 2,
         "io sleep": 1, "demo workload": 1}
    )  # fmt: skip
    assert f"sending traces over OTLP http/protobuf to http://127.0.0.1:{receiver.port}\n" in demo.stdout
    assert f"the demo's trace in Jaeger: http://127.0.0.1:16686/trace/{root['trace_id']}\n" in demo.stdout
