"""OpenTelemetry metrics over the wire, with the REAL OTLP exporters (HTTP/protobuf and gRPC) into the receiver on
loopback (tests/otlp_receiver.py, decoding with opentelemetry-proto): an unchanged program under
``opentelemetry-instrument`` with OTEL_METRICS_EXPORTER=otlp, and one with its own MeterProvider in delta
temporality. Every series the program's Prometheus registry holds arrives once, with the same counts and the same
histogram buckets."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import otelsupport
import pytest
import test_otlp_export
from test_otlp_export import SERVICE, TIMEOUT, Receiver, otel_env

HERE = Path(__file__).parent
WORKLOAD = HERE / "otel_metrics_workload.py"
KINDS = {"threads": "thread", "ProcessPoolExecutor": "process"}
receivers = test_otlp_export.receivers  # the fixture: receiver processes, killed at teardown


def run(setup: str, env: dict[str, str]) -> list[otelsupport.Sample]:
    """Run the workload to its end; the Prometheus samples it printed."""
    command = [sys.executable, str(WORKLOAD), "--setup", setup]
    if setup == "instrument":
        command = [str(Path(sys.executable).with_name("opentelemetry-instrument")), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return [tuple(sample) for sample in json.loads(done.stdout)]  # type: ignore[misc]


def received(receiver: Receiver, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The data points of tracedfutures' scope the receiver got (the program's last export arrives at its exit)."""
    path = Path(f"{receiver.path}.metrics")
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # and nothing more arrives
    points = [json.loads(line) for line in path.read_text().splitlines()]
    return [p for p in points if p["scope"] == "tracedfutures"]


def as_expected(points: list[dict[str, Any]]) -> otelsupport.Expected:
    """Received points in ``otelsupport.expected``'s form: cumulative ones from the last export, delta ones added
    up over every export; those computed from the clock left out."""
    clocked = {otelsupport.BY_FAMILY[family].name for family in otelsupport.CLOCKED}
    got: otelsupport.Expected = {}
    for point in sorted(points, key=lambda p: p["export"]):
        if point["name"] in clocked:
            continue
        series = (point["name"], frozenset(point["attributes"].items()))
        delta = point["temporality"] == 1  # AGGREGATION_TEMPORALITY_DELTA
        was = got.get(series) if delta else None
        if point["kind"] == "histogram":
            counts = point["bucket_counts"]
            if was is not None:
                counts = [a + b for a, b in zip(counts, was["counts"])]
            total = point["sum"] + (was["sum"] if was is not None else 0.0)
            got[series] = {"count": sum(counts), "sum": total, "counts": counts}
        else:
            got[series] = {"value": point["value"] + (was["value"] if was is not None else 0)}
    for point in got.values():
        if "counts" in point:
            point["cumulative"] = otelsupport.cumulative(point.pop("counts"))
    return got


def check(points: list[dict[str, Any]], samples: list[otelsupport.Sample], temporality: int) -> None:
    assert points, "no data point of tracedfutures arrived"
    otelsupport.assert_same(otelsupport.expected(samples, KINDS), as_expected(points))
    assert {p["resource"]["service.name"] for p in points} == {SERVICE}
    assert {(p["scope_version"], p["schema_url"]) for p in points} == {("0.1.0", otelsupport.SCHEMA_URL)}
    assert {p["temporality"] for p in points if p["kind"] == "histogram" or p["monotonic"]} == {temporality}
    by_name = {p["name"]: p for p in points}
    assert by_name["executor.task.submitted"]["unit"] == "{task}"
    assert by_name["executor.task.run.duration"]["unit"] == "s"
    assert by_name["executor.task.run.duration"]["explicit_bounds"] == list(otelsupport.DEFAULT_BUCKETS)
    assert not by_name["executor.task.run.duration"]["has_min"]  # not kept: left unset, never a made-up 0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_opentelemetry_instrument_exports_the_metrics_over_otlp(receivers: Any, protocol: str) -> None:
    """No code change: OTEL_METRICS_EXPORTER=otlp (the distro's default) and the exporter of the protocol."""
    receiver = receivers(protocol)
    env = otel_env(f"http://127.0.0.1:{receiver.port}", protocol, OTEL_TRACES_EXPORTER="none")
    env["OTEL_METRICS_EXPORTER"] = "otlp"
    samples = run("instrument", env)
    points = received(receiver)
    assert {p["export"] for p in points} == {1}  # the default 60 s interval: one export, at exit
    check(points, samples, temporality=2)  # AGGREGATION_TEMPORALITY_CUMULATIVE
    submitted = {p["attributes"]["executor.name"]: p["value"] for p in points if p["name"] == "executor.task.submitted"}
    assert submitted == {"threads": 8, "ProcessPoolExecutor": 6}


def test_delta_temporality_over_otlp(receivers: Any) -> None:
    """A program's own MeterProvider with the HTTP exporter preferring delta, exporting every 50 ms: the deltas
    of every export add up to the totals, each interval starting where the previous one ended."""
    receiver = receivers("http/protobuf")
    env = otel_env(
        f"http://127.0.0.1:{receiver.port}",
        "http/protobuf",
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="delta",
        OTEL_METRIC_EXPORT_INTERVAL="50",
    )
    samples = run("provider", env)
    points = received(receiver)
    assert len({p["export"] for p in points}) > 2
    check(points, samples, temporality=1)
    submitted = sorted((p for p in points if p["name"] == "executor.task.submitted"
                        and p["attributes"]["executor.name"] == "threads"), key=lambda p: p["export"])  # fmt: skip
    assert all(a["time"] == b["start"] for a, b in itertools.pairwise(submitted))
