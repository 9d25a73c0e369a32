"""Dashboards and alert rules as code: writes the two Grafana dashboards (tracedfutures-*.json), the alert
rules and their promtool tests (alerts.py: alerts.yaml, alerts_test.yaml), the panel and alert listing of
docs/dashboards.md (readme.py), and the copies the package carries in tracedfutures/_dashboards/ of the
dashboards, the alert rules and examples/grafana/provisioning/ (config.PACKAGED; ``tracedfutures dashboards -o
DIR`` writes them out).

    python dashboards/generate.py          # rewrite the checked-in files
    python dashboards/check.py             # fail if they differ from what this script makes, lint, promtool

Built with grafana-foundation-sdk (pinned in dashboards/requirements.txt); every setting that is not a query
(uids, selectors, thresholds, data source names) comes from dashboards/config.py.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``dashboards`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from dashboards import alerts, config, readme
from tracedfutures import metrics

#: The queries of a panel (the SDK's builders are typed by the data query variant).
Targets = list[cogbuilder.Builder[cogvariants.Dataquery]]
PROMETHEUS = dashboard_models.DataSourceRef(type_val="prometheus", uid=f"${{{config.DATASOURCE_VARIABLE}}}")


# --- selectors and query pieces -----------------------------------------------------------------------------


def sel(*matchers: str, executor: bool = True) -> str:
    """A selector with the job matcher, the executor matcher (unless ``executor=False``) and ``matchers``."""
    parts = [config.JOB_MATCHER]
    if executor:
        parts.append(config.EXECUTOR_MATCHER)
    parts.extend(matchers)
    return "{" + ", ".join(parts) + "}"


def rate(metric: str, selector: str, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{selector}[{window}])"


def increase(metric: str, selector: str, window: str = "$__rate_interval") -> str:
    return f"increase({metric}{selector}[{window}])"


def quantile(q: float, histogram: str, selector: str, by: str) -> str:
    """``histogram_quantile`` of the rate of ``histogram``'s buckets, kept apart by the labels ``by``."""
    keep = f"{by}, le" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({keep}) ({rate(histogram + '_bucket', selector)}))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


def utilization(by: str, selector: str, window: str) -> str:
    """Busy worker-seconds over the worker-seconds available in ``window``: the share of the workers busy, for
    pools that lived through only part of the window too. Windows without capacity are left out (no +Inf)."""
    total = f"sum by ({by}) " if by else "sum"
    return ratio(
        f"{total}({increase(config.BUSY, selector, window)})",
        f"({total}({increase(config.AVAILABLE, selector, window)}) > 0)",
    )


# --- panel pieces -------------------------------------------------------------------------------------------


def target(
    expr: str,
    legend: str,
    ref: str,
    *,
    exemplar: bool = False,
    instant: bool = False,
    heatmap_format: bool = False,
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)
    query = query.editor_mode(prometheus_models.QueryEditorMode.CODE)
    query = query.instant() if instant else query.range()
    if heatmap_format:
        query = query.format(prometheus_models.PromQueryFormat.HEATMAP)
    if exemplar:
        query = query.exemplar(True)
    return query


def quantile_targets(histogram: str, selector: str, by: str, legend_prefix: str) -> Targets:
    """p50/p95/p99 (config.QUANTILES) of ``histogram``, each with exemplars."""
    return [
        target(
            quantile(q, histogram, selector, by),
            f"{legend_prefix}p{q * 100:g}".strip(),
            chr(ord("A") + i),
            exemplar=True,
        )
        for i, q in enumerate(config.QUANTILES)
    ]


def thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=color) for value, color in steps])
    )


def jaeger_link() -> dict[str, Any]:
    """A data link that opens the exemplar's trace (label EXEMPLAR_TRACE_ID_LABEL) in Explore with Jaeger."""
    jaeger = f"${{{config.JAEGER_VARIABLE}}}"
    panes = {
        "trace": {
            "datasource": jaeger,
            "queries": [
                {"refId": "A", "datasource": {"type": "jaeger", "uid": jaeger}, "query": "${__value.raw}"}
            ],
            "range": {"from": "${__from}", "to": "${__to}"},
        }
    }
    # Percent-encode the JSON but keep the ${...} placeholders that Grafana interpolates.
    encoded = urllib.parse.quote(json.dumps(panes, separators=(",", ":")), safe="${}_.")
    return {"title": "Trace in Jaeger", "url": f"/explore?schemaVersion=1&orgId=1&panes={encoded}"}


EXEMPLAR_LINK = [
    dashboard_models.DynamicConfigValue(id_val="links", value=[jaeger_link()]),
]


def latency_panel(title: str, description: str, targets: Targets) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .targets(targets)
        .unit("s")
        .min(0)
        .line_width(1)
        .fill_opacity(10)
        .legend(legend_table())
        .tooltip(tooltip())
        # Exemplars carry the trace id of the task that was measured: open it in Jaeger.
        .override_by_name(config.EXEMPLAR_TRACE_ID_LABEL, EXEMPLAR_LINK)
    )


def heatmap_panel(title: str, description: str, histogram: str, selector: str) -> heatmap.Panel:
    return (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(
            target(
                f"sum by (le) ({rate(histogram + '_bucket', selector)})",
                "{{le}}",
                "A",
                exemplar=True,
                heatmap_format=True,
            )
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .cell_gap(1)
        .show_value(common.VisibilityMode.NEVER)
        .override_by_name(config.EXEMPLAR_TRACE_ID_LABEL, EXEMPLAR_LINK)
    )


def legend_table() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
    )


def tooltip() -> common_builders.VizTooltipOptions:
    return (
        common_builders.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def graph(title: str, description: str, targets: Targets, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .targets(targets)
        .unit(unit)
        .min(0)
        .line_width(1)
        .fill_opacity(10)
        .legend(legend_table())
        .tooltip(tooltip())
    )


def ratio_graph(
    title: str, description: str, targets: Targets, warning: float, critical: float
) -> timeseries.Panel:
    return (
        graph(title, description, targets, "percentunit")
        .max(1)
        .thresholds(thresholds((None, "green"), (warning, "orange"), (critical, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    )


def counts_graph(title: str, description: str, targets: Targets) -> timeseries.Panel:
    return (
        graph(title, description, targets, "short")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .decimals(0)
    )


def stat_panel(
    title: str, description: str, expr: str, unit: str, steps: list[tuple[float | None, str]] | None = None
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target(expr, title, "A", instant=True))
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return panel.thresholds(thresholds(*(steps or [(None, "text")])))


# --- variables and links ------------------------------------------------------------------------------------


def datasource_variable(name: str, plugin: str, uid: str, text: str) -> dashboard_builders.DatasourceVariable:
    """A data source picker of type ``plugin``, first set to the provisioned data source ``uid``."""
    return (
        dashboard_builders.DatasourceVariable(name)
        .label(text)
        .type(plugin)
        .current(dashboard_models.VariableOption(selected=True, text=text, value=uid))
        .multi(False)
        .include_all(False)
    )


def query_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        .all_value(config.ALL_VALUE)
        .current(dashboard_models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def base_dashboard(settings: config.Dashboard, description: str) -> dashboard_builders.Dashboard:
    return (
        dashboard_builders.Dashboard(settings.title)
        .uid(settings.uid)
        .description(description)
        .tags([config.DASHBOARD_TAG])
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .time(config.DEFAULT_TIME_FROM, "now")
        .refresh(config.DEFAULT_REFRESH)
        .timezone("browser")
        .link(
            dashboard_builders.DashboardLink("tracedfutures")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags([config.DASHBOARD_TAG])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )


class Numbered:
    """Gives panels fixed ids in the order they are added (stable across regenerations)."""

    def __init__(self, board: dashboard_builders.Dashboard) -> None:
        self.board = board
        self.next_id = 1

    def row(self, title: str) -> None:
        self.board.with_row(dashboard_builders.Row(title).id(self.next_id))
        self.next_id += 1

    def panel(self, panel: Any, width: int = 12, height: int = 8) -> None:
        self.board.with_panel(panel.height(height).span(width).id(self.next_id))
        self.next_id += 1


#: Said by the panels that break counts down by a label whose series are born on their first event.
BREAKDOWN_NOTE = (
    "A function's or exception class's first tasks count from Prometheus 3 with "
    "--enable-feature=created-timestamp-zero-ingestion; older servers miss the tasks before its first scrape."
)


def top_panel(title: str, description: str, expr: str, legend: str, unit: str) -> bargauge.Panel:
    """The ``config.TOP`` largest series of ``expr`` at the end of the time range, as horizontal bars."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target(f"topk({config.TOP}, {expr})", legend, "A", instant=True))
        .unit(unit)
        .decimals(0 if unit == "short" else 2)
        .min(0)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds((None, "red")))
    )


# --- the executors dashboard --------------------------------------------------------------------------------


def executors_dashboard() -> dashboard_models.Dashboard:
    all_ = sel()
    errors = sel('outcome="error"')
    completed = config.COMPLETED
    ended = config.ENDED
    board = base_dashboard(
        config.EXECUTORS_DASHBOARD,
        "Tasks of the executors traced by tracedfutures: throughput, errors, queue wait, run time, "
        "saturation, "
        "result lag and misuse of futures.",
    ).variables(
        [
            datasource_variable(
                config.DATASOURCE_VARIABLE,
                "prometheus",
                config.PROMETHEUS_DATASOURCE_UID,
                config.PROMETHEUS_DATASOURCE_NAME,
            ),
            query_variable("job", "job", f"label_values({config.JOB_VALUES_METRIC}, job)"),
            query_variable(
                "executor",
                "executor",
                f"label_values({config.EXECUTOR_VALUES_METRIC}{{{config.JOB_MATCHER}}}, executor)",
            ),
            datasource_variable(
                config.JAEGER_VARIABLE, "jaeger", config.JAEGER_DATASOURCE_UID, config.JAEGER_DATASOURCE_NAME
            ),
        ]
    )
    p = Numbered(board)

    p.row("Now")
    p.panel(
        stat_panel(
            "Tasks completed",
            "Tasks that ended (success, error or cancelled) in the dashboard's time range.",
            f"sum({increase(ended, all_, '$__range')})",
            "short",
        ),
        4,
        4,
    )
    p.panel(
        stat_panel(
            "Error ratio",
            "Share of the tasks that ended in the time range that raised an exception.",
            ratio(
                f"sum({increase(ended, errors, '$__range')})",
                f"sum({increase(ended, all_, '$__range')})",
            ),
            "percentunit",
            [(None, "green"), (config.ERROR_RATIO_WARNING, "orange"), (config.ERROR_RATIO_CRITICAL, "red")],
        ),
        4,
        4,
    )
    p.panel(
        stat_panel(
            "Queued now", "Tasks submitted and not started yet.", f"sum({config.QUEUED}{all_})", "short"
        ),
        4,
        4,
    )
    p.panel(
        stat_panel("Running now", "Tasks running now.", f"sum({config.RUNNING}{all_})", "short"),
        4,
        4,
    )
    p.panel(
        stat_panel(
            "Max workers",
            "max_workers of the live executors of the selected names.",
            f"sum({config.MAX_WORKERS}{all_})",
            "short",
        ),
        4,
        4,
    )
    p.panel(
        stat_panel(
            "Utilization",
            "Busy worker-seconds over the worker-seconds the executors offered in the time range (pools that "
            "lived only part of it count for that part).",
            utilization("", all_, "$__range"),
            "percentunit",
            [(None, "green"), (config.SATURATION_WARNING, "orange"), (config.SATURATION_CRITICAL, "red")],
        ),
        4,
        4,
    )

    p.row("Throughput and errors")
    p.panel(
        graph(
            "Task throughput by outcome",
            "Tasks ending per second by outcome (success, error, cancelled), and tasks submitted per second.",
            [
                target(f"sum by (outcome) ({rate(ended, all_)})", "{{outcome}}", "A"),
                target(f"sum({rate(config.SUBMITTED, all_)})", "submitted", "B"),
            ],
            "ops",
        )
    )
    p.panel(
        ratio_graph(
            "Error ratio",
            "Share of the tasks ending that raised, per executor. The alert TracedFuturesHighErrorRatio "
            "fires "
            f"above {config.ERROR_RATIO_CRITICAL:.0%} for {config.ERROR_RATIO_FOR}.",
            [
                target(
                    ratio(
                        f"sum by (executor) ({rate(ended, errors)})",
                        f"sum by (executor) ({rate(ended, all_)})",
                    ),
                    "{{executor}}",
                    "A",
                )
            ],
            config.ERROR_RATIO_WARNING,
            config.ERROR_RATIO_CRITICAL,
        )
    )
    p.panel(
        top_panel(
            "Top error types",
            f"The {config.TOP} exception classes raised most often in the time range, per executor. "
            + BREAKDOWN_NOTE,
            f"sum by (executor, error_type) ({increase(completed, errors, '$__range')})",
            "{{executor}}: {{error_type}}",
            "short",
        )
    )
    p.panel(
        graph(
            "Errors by type",
            f"Exceptions raised per second, by executor and exception class (capped at {metrics.MAX_ERROR_TYPES} "
            "classes per executor, then 'other'). " + BREAKDOWN_NOTE,
            [
                target(
                    f"sum by (executor, error_type) ({rate(completed, errors)})",
                    "{{executor}}: {{error_type}}",
                    "A",
                )
            ],
            "ops",
        )
    )

    p.row("Latency")
    p.panel(
        latency_panel(
            "Queue wait p50 / p95 / p99",
            "Seconds from submit to the real start of the task's callable. Exemplars link to the task's "
            "trace. "
            "The alert TracedFuturesQueueWaitHigh fires when p95 is above "
            f"{config.QUEUE_WAIT_P95_CRITICAL_SECONDS:g}s "
            f"for {config.QUEUE_WAIT_FOR}.",
            quantile_targets(config.QUEUE, all_, "executor", "{{executor}} "),
        )
        .thresholds(
            thresholds(
                (None, "green"),
                (config.QUEUE_WAIT_P95_WARNING_SECONDS, "orange"),
                (config.QUEUE_WAIT_P95_CRITICAL_SECONDS, "red"),
            )
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    )
    p.panel(
        heatmap_panel(
            "Queue wait distribution",
            "How many tasks waited how long in the queue (histogram buckets per interval).",
            config.QUEUE,
            all_,
        )
    )
    p.panel(
        latency_panel(
            "Run time p50 / p95 / p99",
            "Seconds from the real start of the callable to its result or exception (cancelled tasks never "
            "run). "
            "Exemplars link to the task's trace.",
            quantile_targets(config.RUN, all_, "executor", "{{executor}} "),
        )
    )
    p.panel(
        heatmap_panel(
            "Run time distribution",
            "How many tasks ran how long (histogram buckets per interval).",
            config.RUN,
            all_,
        )
    )

    p.row("Capacity")
    p.panel(
        graph(
            "Queued and running now",
            "Tasks waiting for a worker and tasks running, per executor, and max_workers (process pools: a task "
            "runs from its start in a worker process; until then it is queued, in the pool's call queue too).",
            [
                target(f"sum by (executor) ({config.QUEUED}{all_})", "{{executor}} queued", "A"),
                target(f"sum by (executor) ({config.RUNNING}{all_})", "{{executor}} running", "B"),
                target(f"sum by (executor) ({config.MAX_WORKERS}{all_})", "{{executor}} max_workers", "C"),
            ],
            "short",
        ),
        8,
    )
    p.panel(
        ratio_graph(
            "Saturation (busy / available worker-seconds)",
            "Busy worker-seconds over the worker-seconds the executors offered, per interval: the share of "
            "the workers busy, tasks still running counted up to each scrape, short-lived pools for the time "
            "they lived. The alert TracedFuturesExecutorSaturated fires at "
            f"{config.SATURATION_CRITICAL:.0%} or more for {config.SATURATION_FOR}.",
            [target(utilization("executor", all_, "$__rate_interval"), "{{executor}}", "A")],
            config.SATURATION_WARNING,
            config.SATURATION_CRITICAL,
        ),
        8,
    )
    p.panel(
        graph(
            "Oldest running task",
            "How long the oldest task running now has been running, per executor: a stuck task keeps "
            f"climbing. The alert TracedFuturesTaskStuck fires above {config.STUCK_TASK_SECONDS:g}s.",
            [target(f"max by (executor) ({config.OLDEST_RUNNING}{all_})", "{{executor}}", "A")],
            "s",
        )
        .thresholds(
            thresholds(
                (None, "green"),
                (config.STUCK_TASK_WARNING_SECONDS, "orange"),
                (config.STUCK_TASK_SECONDS, "red"),
            )
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        ),
        8,
    )

    p.panel(
        graph(
            "CPUs used against busy workers",
            "Per executor, the CPUs its workers used (rate of executor_workers_cpu_seconds_total) beside how many "
            "of them were busy (rate of executor_workers_busy_seconds_total). CPUs used near the busy workers: "
            "the tasks compute. A thread pool whose busy workers far exceed the CPUs it gets (about one CPU "
            "for many busy threads) is bound by the GIL, or by the machine's cores: a process or interpreter pool "
            "would run pure-Python tasks in parallel. CPUs used near 0 while workers are busy: the tasks wait, on "
            "I/O, locks or other services, and more workers would help. Process pools: Linux only.",
            [
                target(f"sum by (executor) ({rate(config.CPU, all_)})", "{{executor}} CPUs used", "A"),
                target(f"sum by (executor) ({rate(config.BUSY, all_)})", "{{executor}} busy workers", "B"),
            ],
            "short",
        ),
        24,
    )

    p.row("Functions")
    p.panel(
        top_panel(
            "Top functions by time",
            f"The {config.TOP} task functions that kept workers busiest in the time range: seconds spent "
            f"running them (ended tasks), per executor (capped at {metrics.MAX_FUNCTIONS} functions per executor, "
            "then 'other'). " + BREAKDOWN_NOTE,
            f"sum by (executor, function) ({increase(config.RUN + '_sum', all_, '$__range')})",
            "{{executor}}: {{function}}",
            "s",
        )
    )
    p.panel(
        top_panel(
            "Top functions by errors",
            f"The {config.TOP} task functions that raised most often in the time range, per executor. "
            + BREAKDOWN_NOTE,
            f"sum by (executor, function) ({increase(completed, errors, '$__range')})",
            "{{executor}}: {{function}}",
            "short",
        )
    )

    p.row("Futures hygiene")
    p.panel(
        latency_panel(
            "Result lag p50 / p95 / p99",
            "Seconds from a task's end to the first retrieval of its result or exception (result(), "
            "exception(), "
            "or a done callback): how long finished work sits unread. Exemplars link to the task's trace.",
            quantile_targets(config.RESULT_LAG, all_, "executor", "{{executor}} "),
        ),
        8,
    )
    p.panel(
        counts_graph(
            "Unretrieved exceptions",
            "Tasks whose exception nobody ever retrieved (the future was dropped unread): failures that went "
            "unnoticed. The alert TracedFuturesUnretrievedExceptions fires on any.",
            [
                target(
                    "sum by (executor, error_type) "
                    f"({increase(config.UNRETRIEVED, all_)})",
                    "{{executor}}: {{error_type}}",
                    "A",
                )
            ],
        ),
        8,
    )
    p.panel(
        counts_graph(
            "Invalid transitions",
            "set_result / set_exception / set_running_or_notify_cancel refused by the future's state: code "
            "that completes futures it does not own. The alert TracedFuturesInvalidTransitions fires on any.",
            [
                target(
                    f"sum by (executor, method) ({increase(config.INVALID, all_)})",
                    "{{executor}}: {{method}}",
                    "A",
                )
            ],
        ),
        8,
    )
    return board.build()


# --- the wait / as_completed dashboard ----------------------------------------------------------------------


def waits_dashboard() -> dashboard_models.Dashboard:
    job = sel(executor=False)
    timed_out = sel('timed_out="true"', executor=False)
    waits = config.WAIT
    board = base_dashboard(
        config.WAITS_DASHBOARD,
        "Time callers spend blocked in tracedfutures.wait() and as_completed(), and how often those time "
        "out.",
    ).variables(
        [
            datasource_variable(
                config.DATASOURCE_VARIABLE,
                "prometheus",
                config.PROMETHEUS_DATASOURCE_UID,
                config.PROMETHEUS_DATASOURCE_NAME,
            ),
            query_variable("job", "job", f"label_values({config.WAITS_JOB_VALUES_METRIC}, job)"),
            datasource_variable(
                config.JAEGER_VARIABLE, "jaeger", config.JAEGER_DATASOURCE_UID, config.JAEGER_DATASOURCE_NAME
            ),
        ]
    )
    p = Numbered(board)

    p.row("wait()")
    p.panel(
        latency_panel(
            "wait() p95 by return_when",
            "95th percentile of the seconds callers blocked in wait(), by return_when; waits that timed "
            "out are "
            "left out (they last their timeout) and counted in the timeout panels. Exemplars link to the "
            "trace.",
            [
                target(
                    quantile(0.95, waits, sel('timed_out="false"', executor=False), "return_when"),
                    "{{return_when}}",
                    "A",
                    exemplar=True,
                )
            ],
        )
    )
    p.panel(
        graph(
            "wait() calls per second",
            "wait() calls ending per second, by return_when and whether the timeout ended them.",
            [
                target(
                    f"sum by (return_when, timed_out) ({rate(waits + '_count', job)})",
                    "{{return_when}} timed_out={{timed_out}}",
                    "A",
                )
            ],
            "ops",
        )
    )

    p.row("as_completed()")
    p.panel(
        latency_panel(
            "as_completed() iteration p95",
            "95th percentile of the seconds a whole as_completed() iteration took, by whether it timed out. "
            "Exemplars link to the trace.",
            [
                target(
                    quantile(0.95, config.AS_COMPLETED, job, "timed_out"),
                    "timed_out={{timed_out}}",
                    "A",
                    exemplar=True,
                )
            ],
        )
    )
    p.panel(
        latency_panel(
            "as_completed() wait per future p50 / p95 / p99",
            "Seconds an as_completed() iteration blocked before yielding each future.",
            quantile_targets(config.AS_COMPLETED_NEXT, job, "", ""),
        )
    )

    p.row("Timeouts")
    p.panel(
        ratio_graph(
            "Timeout ratio",
            "Share of wait() calls and as_completed() iterations that ended because their timeout expired.",
            [
                target(
                    ratio(
                        f"sum({rate(waits + '_count', timed_out)})",
                        f"sum({rate(waits + '_count', job)})",
                    ),
                    "wait()",
                    "A",
                ),
                target(
                    ratio(
                        f"sum({rate(config.AS_COMPLETED + '_count', timed_out)})",
                        f"sum({rate(config.AS_COMPLETED + '_count', job)})",
                    ),
                    "as_completed()",
                    "B",
                ),
            ],
            0.01,
            0.05,
        )
    )
    p.panel(
        graph(
            "Timeouts per second",
            "wait() calls and as_completed() iterations that timed out, per second.",
            [
                target(f"sum({rate(waits + '_count', timed_out)})", "wait()", "A"),
                target(
                    f"sum({rate(config.AS_COMPLETED + '_count', timed_out)})",
                    "as_completed()",
                    "B",
                ),
            ],
            "ops",
        )
    )
    return board.build()


DASHBOARDS: dict[str, tuple[config.Dashboard, Callable[[], dashboard_models.Dashboard]]] = {
    "executors": (config.EXECUTORS_DASHBOARD, executors_dashboard),
    "waits": (config.WAITS_DASHBOARD, waits_dashboard),
}


def dashboard_json(build: Callable[[], dashboard_models.Dashboard]) -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# --- files --------------------------------------------------------------------------------------------------


def outputs() -> Iterator[tuple[Path, str]]:
    """Every generated file and its content: the files of dashboards/ and docs/dashboards.md, then the package's
    copies (config.PACKAGED) of those and of the Grafana provisioning in examples/."""
    made: dict[Path, str] = {}
    boards = []
    for settings, build in DASHBOARDS.values():
        boards.append(dashboard_json(build))
        made[settings.file] = boards[-1]
    made[config.ALERTS_FILE] = alerts.rules_yaml()
    made[config.ALERTS_TEST_FILE] = alerts.tests_yaml()
    current = config.DOCS_FILE.read_text(encoding="utf-8")
    made[config.DOCS_FILE] = readme.page_with_section(current, readme.page_section(boards))
    yield from made.items()
    for relative, source in config.PACKAGED.items():
        text = made[source] if source in made else source.read_text(encoding="utf-8")
        yield config.PACKAGE_DATA_DIR / relative, text


def main() -> int:
    for path, text in outputs():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(config.HERE.parent)}")
        else:
            print(f"unchanged {path.relative_to(config.HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
