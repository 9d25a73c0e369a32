"""dashboards/check.py as tests: generated files up to date, dashboard lint (and that it catches what it
should), every dashboard query parses, and promtool check/test rules on the alert rules."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboards import alerts, check, config  # noqa: E402


def problems_text(problems: list[str]) -> str:
    return "\n".join(problems)


def test_generated_files_are_up_to_date() -> None:
    problems = check.check_generated()
    assert not problems, problems_text(problems)


def test_dashboards_lint_clean() -> None:
    problems = check.check_lint()
    assert not problems, problems_text(problems)


def test_dashboard_queries_parse() -> None:
    problems = check.check_queries_parse()
    assert not problems, problems_text(problems)


def test_promtool_check_and_test_rules() -> None:
    problems = check.check_rules()
    assert not problems, problems_text(problems)


def test_check_script_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(f"{len(check.CHECKS)} passed, 0 failed")


def test_every_panel_of_the_brief_is_there() -> None:
    """The panels the dashboards promise, by the metric each must read."""
    reads: dict[str, set[str]] = {}
    for _, board in check.load_dashboards():
        for panel, target in check.queries(board):
            reads.setdefault(panel["title"], set()).update(
                name for name, _ in check.METRIC.findall(target["expr"])
            )
    wanted = {
        "Task throughput by outcome": "executor_tasks_ended_total",
        "Error ratio": "executor_tasks_ended_total",
        "Top error types": "executor_tasks_completed_total",
        "Top functions by time": "executor_task_run_seconds_sum",
        "Top functions by errors": "executor_tasks_completed_total",
        "Oldest running task": "executor_oldest_running_task_age_seconds",
        "Queue wait p50 / p95 / p99": "executor_task_queue_seconds_bucket",
        "Queue wait distribution": "executor_task_queue_seconds_bucket",
        "Run time p50 / p95 / p99": "executor_task_run_seconds_bucket",
        "Run time distribution": "executor_task_run_seconds_bucket",
        "Queued and running now": "executor_tasks_running",
        "Saturation (busy / available worker-seconds)": "executor_workers_available_seconds_total",
        "Utilization": "executor_workers_busy_seconds_total",
        "wait() p95 by return_when": "futures_wait_seconds_bucket",
        "as_completed() iteration p95": "futures_as_completed_seconds_bucket",
        "as_completed() wait per future p50 / p95 / p99": "futures_as_completed_next_seconds_bucket",
        "Timeout ratio": "futures_as_completed_seconds_count",
        "Result lag p50 / p95 / p99": "futures_result_lag_seconds_bucket",
        "Unretrieved exceptions": "executor_exceptions_unretrieved_total",
        "Invalid transitions": "executor_invalid_transitions_total",
    }
    for title, metric in wanted.items():
        assert metric in reads.get(title, set()), (title, reads.get(title))


def test_alert_rules_cover_the_brief() -> None:
    names = {a.name for a in alerts.alerts()}
    assert names == {
        "TracedFuturesHighErrorRatio",
        "TracedFuturesQueueWaitHigh",
        "TracedFuturesExecutorSaturated",
        "TracedFuturesUnretrievedExceptions",
        "TracedFuturesInvalidTransitions",
        "TracedFuturesTaskStuck",
    }
    # Each alert has a case where it fires and one where it stays silent.
    for name in names:
        expects = [e for case in alerts.cases() for e in case.expect if e.alert == name]
        assert any(e.firing for e in expects) and any(not e.firing for e in expects), name


# --- the lint catches what it should ------------------------------------------------------------------------


def executors_board() -> tuple[config.Dashboard, dict[str, Any]]:
    settings = config.EXECUTORS_DASHBOARD
    return settings, json.loads(settings.file.read_text(encoding="utf-8"))


def first_panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in check.panels(board) if p.get("title") == title)


def mutate_and_lint(mutation: Any) -> str:
    settings, board = executors_board()
    board = copy.deepcopy(board)
    mutation(board)
    return problems_text(check.lint_dashboard(settings, board))


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (
            lambda b: first_panel(b, "Error ratio").update(datasource={"type": "prometheus", "uid": "prom1"}),
            "datasource",
        ),
        (lambda b: first_panel(b, "Error ratio").pop("datasource"), "datasource"),
        (lambda b: first_panel(b, "Error ratio")["targets"][0].update(expr=""), "empty expr"),
        (lambda b: first_panel(b, "Error ratio").update(targets=[]), "no queries"),
        (
            lambda b: first_panel(b, "Errors by type")["targets"][0].update(
                expr='sum(rate(executor_tasks_completed_total{job=~"$job", executor=~"$executor"}[5m]))'
            ),
            "use $__rate_interval",
        ),
        (
            lambda b: first_panel(b, "Errors by type")["targets"][0].update(
                expr='sum(rate(executor_tasks_completed_total{executor=~"$executor"}[$__rate_interval]))'
            ),
            'without job=~"$job"',
        ),
        (
            lambda b: first_panel(b, "Errors by type")["targets"][0].update(
                expr='sum(rate(executor_tasks_completed_total{job=~"$job"}[$__rate_interval]))'
            ),
            "has an executor label",
        ),
        (
            lambda b: first_panel(b, "Errors by type")["targets"][0].update(
                expr='sum(rate(executor_task_finished_total{job=~"$job"}[$__rate_interval]))'
            ),
            "not a metric of config.METRICS",
        ),
        (
            lambda b: first_panel(b, "Errors by type")["targets"][0].update(
                expr='sum(rate(executor_tasks_completed_total{job=~"$job", executor=~"$pool"}[1m]))'
            ),
            "unknown variable $pool",
        ),
        (
            lambda b: first_panel(b, "Queue wait p50 / p95 / p99")["targets"][1].pop("exemplar"),
            "without exemplars",
        ),
        (
            lambda b: first_panel(b, "Run time p50 / p95 / p99")["fieldConfig"].update(overrides=[]),
            "link to Jaeger",
        ),
        (lambda b: first_panel(b, "Queue wait distribution")["targets"][0].pop("format"), "heatmap format"),
        (lambda b: b["templating"]["list"].reverse(), "in that order"),
        (lambda b: b["templating"]["list"][2].update(multi=False), "multi-value"),
        (lambda b: b.update(uid="abc123"), "fixed"),
        (lambda b: first_panel(b, "Invalid transitions").update(id=2), "not fixed and unique"),
    ],
)
def test_lint_catches(mutation: Any, message: str) -> None:
    assert message in mutate_and_lint(mutation)


def test_queries_parse_check_catches_bad_promql(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, board = executors_board()
    board = copy.deepcopy(board)
    first_panel(board, "Error ratio")["targets"][0]["expr"] = "sum by (executor (rate(x[1m]))"
    monkeypatch.setattr(check, "load_dashboards", lambda: [(settings, board)])
    problems = check.check_queries_parse()
    assert problems and "do not parse" in problems[0]


# --- examples/compose.yaml and the Grafana provisioning agree with the dashboards ---------------------------

EXAMPLES = ROOT / "examples"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (resolved against examples/ as Compose does) of a service's bind mounts."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = str((EXAMPLES / source).resolve())
    return result


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    compose = load_yaml(EXAMPLES / "compose.yaml")
    assert set(compose["services"]) == {"prometheus", "grafana", "jaeger"}
    prometheus = compose["services"]["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    # Prometheus 3, storing a 0 at each series' created time: the per-type and per-function panels need it.
    assert prometheus["image"].startswith("prom/prometheus:v3.")
    assert "--enable-feature=created-timestamp-zero-ingestion" in prometheus["command"]
    settings = yaml.safe_load(compose["configs"]["prometheus_config"]["content"])
    # The rule files are the repository's alert rules, mounted into the container.
    rules_dir = Path(settings["rule_files"][0]).parent
    mounted = mounts(prometheus)
    assert mounted[str(rules_dir / "tracedfutures.yaml")] == str(config.ALERTS_FILE)
    # promtool checks the same configuration, with the rule file at its path here.
    settings["rule_files"] = [str(config.ALERTS_FILE)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    code, output = check.run_promtool("check", "config", str(path))
    assert code == 0, output


def test_compose_jaeger_takes_otlp() -> None:
    jaeger = load_yaml(EXAMPLES / "compose.yaml")["services"]["jaeger"]
    ports = {int(p.rsplit(":", 1)[1]) for p in jaeger["ports"]}
    assert {4317, 4318, 16686} <= ports
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_grafana_provisioning_matches_the_dashboards() -> None:
    compose = load_yaml(EXAMPLES / "compose.yaml")
    grafana_mounts = mounts(compose["services"]["grafana"])
    datasources = load_yaml(EXAMPLES / "grafana/provisioning/datasources/tracedfutures.yaml")["datasources"]
    by_type = {d["type"]: d for d in datasources}
    prometheus, jaeger = by_type["prometheus"], by_type["jaeger"]
    assert (prometheus["uid"], prometheus["name"]) == (
        config.PROMETHEUS_DATASOURCE_UID,
        config.PROMETHEUS_DATASOURCE_NAME,
    )
    assert (jaeger["uid"], jaeger["name"]) == (config.JAEGER_DATASOURCE_UID, config.JAEGER_DATASOURCE_NAME)
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [
        {
            "name": config.EXEMPLAR_TRACE_ID_LABEL,
            "datasourceUid": config.JAEGER_DATASOURCE_UID,
            "urlDisplayLabel": "Trace in Jaeger",
        }
    ]
    assert prometheus["url"] == "http://prometheus:9090" and jaeger["url"] == "http://jaeger:16686"
    # $__rate_interval needs the real scrape interval.
    scrape = load_yaml(EXAMPLES / "compose.yaml")["configs"]["prometheus_config"]["content"]
    assert yaml.safe_load(scrape)["global"]["scrape_interval"] == prometheus["jsonData"]["timeInterval"]
    providers = load_yaml(EXAMPLES / "grafana/provisioning/dashboards/tracedfutures.yaml")["providers"]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    assert grafana_mounts[providers[0]["options"]["path"]] == str(config.HERE)
    for settings in config.DASHBOARDS:
        assert settings.file.parent == config.HERE
    for sub in ("datasources", "dashboards"):
        assert grafana_mounts[f"/etc/grafana/provisioning/{sub}"] == str(
            EXAMPLES / "grafana/provisioning" / sub
        )


def test_promtool_3_checks_and_tests_the_rules() -> None:
    """Prometheus 3.5's promtool (Debian sid's, beside TF_PROMETHEUS3) agrees with 2.42's: the rules parse, the
    dashboards' queries parse, and every promtool test case passes."""
    promtool = Path(os.environ.get("TF_PROMETHEUS3", "/var/cache/tracedfutures/sid/usr/bin/prometheus"))
    promtool = promtool.with_name("promtool")
    if not os.access(promtool, os.X_OK):
        pytest.fail(f"no Prometheus 3 promtool at {promtool}: set TF_PROMETHEUS3 (tests/run.sh does)", pytrace=False)
    for args in (("check", "rules", config.ALERTS_FILE.name), ("test", "rules", config.ALERTS_TEST_FILE.name)):
        proc = subprocess.run([str(promtool), *args], cwd=config.HERE, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
