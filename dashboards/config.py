"""Everything the dashboards and alert rules are made of that is not a query: names, uids, selectors,
thresholds.

``generate.py`` and ``alerts.py`` read their settings only from here; ``check.py`` and the tests read it too,
so a threshold or a uid changes in one place. After a change run ``python dashboards/generate.py`` and commit
the regenerated files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

# --- Grafana data sources -----------------------------------------------------------------------------------
#: Dashboard variables that pick the data sources. Every panel and every Prometheus query uses
#: ``${DATASOURCE_VARIABLE}``; the exemplar links use ``${JAEGER_VARIABLE}``.
DATASOURCE_VARIABLE = "datasource"
JAEGER_VARIABLE = "jaeger"
#: The uids and names the provisioning in examples/grafana/ gives the data sources; they are the variables'
#: initial selection (any other Prometheus / Jaeger data source can be picked in the dashboard).
PROMETHEUS_DATASOURCE_UID = "prometheus"
PROMETHEUS_DATASOURCE_NAME = "Prometheus"
JAEGER_DATASOURCE_UID = "jaeger"
JAEGER_DATASOURCE_NAME = "Jaeger"
#: The exemplar label that carries the OpenTelemetry trace id (what the exemplar link opens in Jaeger).
EXEMPLAR_TRACE_ID_LABEL = "trace_id"


# --- Dashboards ---------------------------------------------------------------------------------------------
#: Fixed uids (so links and bookmarks survive re-imports) and the checked-in file of each dashboard.
@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    file: Path


EXECUTORS_DASHBOARD = Dashboard(
    uid="tracedfutures-executors",
    title="tracedfutures / executors",
    file=HERE / "tracedfutures-executors.json",
)
WAITS_DASHBOARD = Dashboard(
    uid="tracedfutures-waits",
    title="tracedfutures / wait and as_completed",
    file=HERE / "tracedfutures-waits.json",
)
DASHBOARDS = (EXECUTORS_DASHBOARD, WAITS_DASHBOARD)
#: The README section on dashboards, alerts and the compose set-up (generated, for the README).
README_SECTION_FILE = HERE / "README-section.md"
DASHBOARD_TAG = "tracedfutures"
DEFAULT_TIME_FROM = "now-1h"
DEFAULT_REFRESH = "30s"

# --- Selectors ----------------------------------------------------------------------------------------------
#: Label matchers for the dashboard variables. Both variables are multi-value with "All" = ``.*``, so they are
#: always regex matchers.
JOB_MATCHER = 'job=~"$job"'
EXECUTOR_MATCHER = 'executor=~"$executor"'
#: The series the variables' values come from (present as soon as an executor of that name exists).
JOB_VALUES_METRIC = "executor_tasks_submitted_total"
EXECUTOR_VALUES_METRIC = "executor_tasks_submitted_total"
WAITS_JOB_VALUES_METRIC = "futures_wait_seconds_count"
#: The value of "All" for the job and executor variables.
ALL_VALUE = ".*"

# --- The metrics the dashboards and alerts read: name -> (type, labels) -------------------------------------
#: What tracedfutures exposes (README "Metrics"). The dashboard lint uses the labels to demand the executor
#: selector wherever a metric has that label; the real-Prometheus test compares this with the exposition.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "executor_tasks_submitted_total": ("counter", ("executor",)),
    "executor_tasks_completed_total": ("counter", ("executor", "outcome", "error_type")),
    "executor_task_queue_seconds": ("histogram", ("executor",)),
    "executor_task_run_seconds": ("histogram", ("executor", "outcome")),
    "executor_tasks_queued": ("gauge", ("executor",)),
    "executor_tasks_running": ("gauge", ("executor",)),
    "executor_max_workers": ("gauge", ("executor",)),
    "executor_invalid_transitions_total": ("counter", ("executor", "method")),
    "executor_exceptions_unretrieved_total": ("counter", ("executor", "error_type")),
    "futures_result_lag_seconds": ("histogram", ("executor",)),
    "futures_wait_seconds": ("histogram", ("return_when", "timed_out")),
    "futures_as_completed_seconds": ("histogram", ("timed_out",)),
    "futures_as_completed_next_seconds": ("histogram", ()),
}

# --- Thresholds (dashboard colours and alert rules) ---------------------------------------------------------
#: Share of ended tasks that raised: amber from WARNING, red (and the alert) from CRITICAL.
ERROR_RATIO_WARNING = 0.01
ERROR_RATIO_CRITICAL = 0.05
#: p95 of submit-to-start, seconds.
QUEUE_WAIT_P95_WARNING_SECONDS = 0.25
QUEUE_WAIT_P95_CRITICAL_SECONDS = 1.0
#: Share of max_workers busy.
SATURATION_WARNING = 0.75
SATURATION_CRITICAL = 0.9
#: Quantiles of the latency panels.
QUANTILES = (0.5, 0.95, 0.99)

# --- Alert rules --------------------------------------------------------------------------------------------
ALERTS_FILE = HERE / "alerts.yaml"
ALERTS_TEST_FILE = HERE / "alerts_test.yaml"
ALERT_GROUP = "tracedfutures"
#: The window of the rates and increases in the rules.
ALERT_WINDOW = "5m"
ERROR_RATIO_FOR = "10m"
QUEUE_WAIT_FOR = "10m"
SATURATION_FOR = "15m"
#: Unretrieved exceptions and invalid transitions are bugs in the calling code: they alert at once.
BUG_FOR = "0m"
