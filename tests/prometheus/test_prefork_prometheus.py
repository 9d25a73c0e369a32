"""The stuck-task, saturation and misuse alerts fire for pre-fork servers: gunicorn (gthread) and
``uvicorn --workers 2`` serving examples/prefork/app.py in prometheus_client's multiprocess mode, scraped every
second by Prometheus 2.42 and 3.5, which load dashboards/alerts.yaml with the two rules' times shortened (the
stuck task at 3 s, the saturation window 15 s and ``for`` 3 s). Each worker's pool has one worker; tasks of 30 s,
sent in the background until both pools run one, saturate the executor and hang; ``/misuse`` makes the first
refused transition and the first unread failure."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_real_prometheus import JOB, VERSIONS, Prometheus, _until
from test_servers import Server

from dashboards import alerts

STUCK_AFTER = 3.0
FIRING = (
    "TracedFuturesExecutorSaturated", "TracedFuturesTaskStuck", "TracedFuturesInvalidTransitions",
    "TracedFuturesUnretrievedExceptions",
)


def shortened_rules(workdir: Path) -> Path:
    """dashboards/alerts.yaml as generated, with the stuck task and saturation rules shortened to seconds."""
    rules = []
    for rule in alerts.alerts():
        if rule.name == "TracedFuturesTaskStuck":
            rule = dataclasses.replace(rule, threshold=STUCK_AFTER)
        elif rule.name == "TracedFuturesExecutorSaturated":
            rule = dataclasses.replace(rule, signal=rule.signal.replace("[5m]", "[15s]"), for_="3s")
        rules.append(rule)
    path = workdir / "rules.yaml"
    path.write_text(alerts.rules_yaml(rules), encoding="utf-8")
    return path


@pytest.fixture(params=["gunicorn-gthread", "uvicorn"])
def scraped(request: pytest.FixtureRequest) -> Iterator[tuple[Server, dict[str, Prometheus]]]:
    workdir = Path(tempfile.mkdtemp(prefix="tracedfutures-prefork-"))
    (workdir / "metrics").mkdir()
    server = Server(request.param, workdir / "metrics", pool_workers=1)
    servers: dict[str, Prometheus] = {}
    try:
        server.wait_ready()
        rules = shortened_rules(workdir)
        for version in VERSIONS:
            servers[version] = Prometheus(workdir, f"127.0.0.1:{server.port}", version, rules,
                                          metrics_path=server.metrics_path)  # fmt: skip
        for prom in servers.values():
            prom.ready()
        yield server, servers
    finally:
        for prom in servers.values():
            prom.stop()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_alerts_fire_across_workers(scraped: tuple[Server, dict[str, Prometheus]]) -> None:
    server, servers = scraped
    client = ThreadPoolExecutor(8)
    try:
        quick = list(client.map(server.get, ["/work"] * 10))
        assert len(quick) == 10
        w = f'job="{JOB}",executor="web"'
        for prom in servers.values():
            _until(lambda p=prom: p.vector(f"executor_tasks_submitted_total{{{w}}} == 10"), "the quick tasks")
            assert prom.value(f"executor_tasks_ended_total{{{w},outcome=\"success\"}}") == 10
            assert prom.value(f"executor_invalid_transitions_total{{{w},method=\"set_result\"}}") == 0
            # What the workers' threads used, written by each gunicorn or uvicorn worker as its tasks ended.
            assert prom.value(f"executor_workers_cpu_seconds_total{{{w}}}") > 0
            prom.wait_scrapes(2)
        # The first refused transition and the first failure dropped unread: the series of the one existed at 0,
        # so increase() counts it on both versions; the other is born with its error type, as the rule expects.
        server.get("/misuse")
        for prom in servers.values():
            invalid = f"increase(executor_invalid_transitions_total{{{w},method=\"set_result\"}}[1m])"
            _until(lambda p=prom, q=invalid: p.vector(f"{q} >= 1"), f"the refused transition on {prom.version}")
            unretrieved = f"executor_exceptions_unretrieved_total{{{w},error_type=\"ValueError\"}}"
            _until(lambda p=prom, q=unretrieved: p.vector(f"{q} == 1"), f"the unread failure on {prom.version}")
        # Tasks of 30 s in the background, one more at a time until each worker's pool of one runs one (whichever
        # worker accepts a connection takes it: the workers stay free to answer the scrapes).
        hung = 0
        while server.scrape()["executor_tasks_running", ""] < 2:
            server.get("/work?seconds=30&background=1")
            hung += 1
            assert hung <= 40
        firing = 'ALERTS{alertstate="firing"}'
        for prom in servers.values():
            _until(lambda p=prom: len(p.vector(firing)) == len(FIRING), f"the alerts on Prometheus {prom.version}", 60)
            assert {s["metric"]["alertname"]: s["metric"]["executor"] for s in prom.vector(firing)} == dict.fromkeys(
                FIRING, "web")
            assert prom.value(f"executor_max_workers{{{w}}}") == 2
            assert prom.value(f"executor_tasks_running{{{w}}}") == 2
            assert prom.value(f"executor_oldest_running_task_age_seconds{{{w}}}") > STUCK_AFTER
    finally:
        client.shutdown(wait=False, cancel_futures=True)
