"""OTEL_METRICS_EXPORTER=prometheus under ``opentelemetry-instrument``: the SDK's Prometheus reader serves
prometheus_client's REGISTRY on its port, and a real Prometheus (Debian 12's 2.42) scraping it stores every task
metric once, under tracedfutures' Prometheus names, with the counts the program printed; no OpenTelemetry-named
twin (``executor_task_submitted_total``...) and no second server on the port."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_real_prometheus import JOB, Prometheus, free_port

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))

import otelsupport  # noqa: E402
from test_otlp_export import otel_env  # noqa: E402

#: Families the OTel side exports (their OTel names as the Prometheus reader would translate them).
OTEL_AS_PROMETHEUS = {m.name.replace(".", "_") for m in otelsupport.BY_FAMILY.values()}


@pytest.fixture
def program(tmp_path: Path) -> Iterator[tuple[str, list[otelsupport.Sample], subprocess.Popen[str]]]:
    """The workload under opentelemetry-instrument with the Prometheus exporter, held once its work is done."""
    pytest.importorskip("opentelemetry.exporter.prometheus")
    port = free_port()
    env = otel_env("http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none")
    env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
               OTEL_EXPORTER_PROMETHEUS_PORT=str(port))  # fmt: skip
    instrument = str(Path(sys.executable).with_name("opentelemetry-instrument"))
    command = [instrument, sys.executable, str(TESTS / "otel_metrics_workload.py"), "--setup", "instrument", "--hold"]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=TESTS)  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.communicate(timeout=60)[1]
        yield f"127.0.0.1:{port}", [tuple(s) for s in json.loads(line)], process  # type: ignore[misc]
    finally:
        if process.poll() is None:
            process.communicate("go\n", timeout=60)


def test_one_series_per_metric_under_its_prometheus_name(program: Any, tmp_path: Path) -> None:
    target, samples, process = program
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups: []\n")
    server = Prometheus(tmp_path, target, "2", rules)
    try:
        server.ready()
        server.wait_scrapes(2)
        stored = server.vector(f'{{job="{JOB}", __name__=~"executor_.+|futures_.+"}}')
    finally:
        server.stop()
    series: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for found in stored:
        labels = {k: v for k, v in found["metric"].items() if k not in ("job", "instance")}
        key = (labels.pop("__name__"), frozenset(labels.items()))
        assert key not in series, key
        series[key] = float(found["value"][1])
    names = {name for name, _ in series}
    assert not names & {f"{n}{s}" for n in OTEL_AS_PROMETHEUS for s in ("", "_total", "_bucket", "_count", "_sum")}
    # Prometheus stores no empty label (error_type="" of a task that did not fail).
    printed = {(name, frozenset((k, v) for k, v in labels.items() if v)): value for name, labels, value in samples}
    clocked = tuple(otelsupport.CLOCKED)
    kept = {k: v for k, v in series.items() if not k[0].startswith(clocked) and not k[0].endswith("_created")}
    want = {k: v for k, v in printed.items() if not k[0].startswith(clocked) and not k[0].endswith("_created")}
    assert kept == want  # every task metric once, with the program's counts, and nothing else
    assert series["executor_tasks_submitted_total", frozenset({("executor", "threads")})] == 8
    assert series["executor_tasks_submitted_total", frozenset({("executor", "ProcessPoolExecutor")})] == 6
    assert process.poll() is None  # still serving: nothing collided on its port
