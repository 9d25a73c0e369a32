"""The Prometheus alert rules (dashboards/alerts.yaml) and their ``promtool test rules`` cases
(dashboards/alerts_test.yaml).

Thresholds, windows and ``for`` durations come from dashboards/config.py. Each rule is a ``signal`` compared
with a threshold: the real-Prometheus test evaluates the signal alone (it returns series whether or not the
alert fires). The test cases below are written by hand: input series, and for each alert when it must fire
(with which labels and rendered summary) and when it must not; only the static annotation text is copied from
the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from dashboards import config

ENDED = config.ENDED


@dataclass(frozen=True)
class Alert:
    name: str
    signal: str
    op: str
    threshold: float
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def expr(self) -> str:
        body = "\n".join("  " + line for line in self.signal.splitlines())
        return f"(\n{body}\n) {self.op} {self.threshold:g}\n"

    @property
    def annotations(self) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description,
            "dashboard_uid": config.EXECUTORS_DASHBOARD.uid,
        }


def new_or_increased(metric: str, by: str, window: str) -> str:
    """How much ``metric`` grew over ``window``, counting series that appeared inside the window too.

    ``increase`` misses the first count of a series that appears with that count (as a labelled series does on
    its first event). So a series that did not exist ``window`` ago counts with its whole value (first operand
    of ``or``), and an older one with its increase."""
    return (
        f"(\n"
        f"  sum by ({by}) ({metric})\n"
        f"  unless\n"
        f"  sum by ({by}) ({metric} offset {window})\n"
        f")\n"
        f"or\n"
        f"sum by ({by}) (increase({metric}[{window}]))"
    )


def alerts() -> list[Alert]:
    w = config.ALERT_WINDOW
    return [
        Alert(
            name="TracedFuturesHighErrorRatio",
            signal=(
                f'sum by (job, executor) (rate({ENDED}{{outcome="error"}}[{w}]))\n'
                f"/\n"
                f"sum by (job, executor) (rate({ENDED}[{w}]))"
            ),
            op=">",
            threshold=config.ERROR_RATIO_CRITICAL,
            for_=config.ERROR_RATIO_FOR,
            severity="critical",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): {{ $value | humanizePercentage }} of "
                "tasks fail"
            ),
            description=(
                f"More than {config.ERROR_RATIO_CRITICAL:.0%} of the tasks that ended in the last {w} "
                "raised an "
                "exception. The dashboard's 'Top error types' panel names them; the task spans carry the "
                "tracebacks."
            ),
        ),
        Alert(
            name="TracedFuturesQueueWaitHigh",
            signal=(
                "histogram_quantile(\n"
                "  0.95,\n"
                f"  sum by (job, executor, le) (rate({config.QUEUE}_bucket[{w}]))\n"
                ")"
            ),
            op=">",
            threshold=config.QUEUE_WAIT_P95_CRITICAL_SECONDS,
            for_=config.QUEUE_WAIT_FOR,
            severity="warning",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): p95 queue wait {{ $value | "
                "humanizeDuration }}"
            ),
            description=(
                "The 95th percentile of the time tasks waited between submit and start is above "
                f"{config.QUEUE_WAIT_P95_CRITICAL_SECONDS:g}s: the pool is too small for its load, or its "
                "workers "
                "are blocked."
            ),
        ),
        Alert(
            name="TracedFuturesExecutorSaturated",
            signal=(
                f"sum by (job, executor) (rate({config.BUSY}[{w}]))\n"
                "/\n"
                f"(sum by (job, executor) (rate({config.AVAILABLE}[{w}])) > 0)"
            ),
            op=">=",
            threshold=config.SATURATION_CRITICAL,
            for_=config.SATURATION_FOR,
            severity="warning",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): {{ $value | humanizePercentage }} of "
                "workers busy"
            ),
            description=(
                f"At least {config.SATURATION_CRITICAL:.0%} of the worker-seconds the executor offered in every "
                f"{w} window for {config.SATURATION_FOR} were spent running tasks: new tasks queue up (see the "
                "queue wait panel)."
            ),
        ),
        Alert(
            name="TracedFuturesTaskStuck",
            signal=f"max by (job, executor) ({config.OLDEST_RUNNING})",
            op=">",
            threshold=config.STUCK_TASK_SECONDS,
            for_=config.STUCK_TASK_FOR,
            severity="warning",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): a task has been running for "
                "{{ $value | humanizeDuration }}"
            ),
            description=(
                f"The oldest task running in this executor started more than {config.STUCK_TASK_SECONDS:g}s "
                "ago: it may hang (a lock, a network call without a timeout) and holds a worker. /tasks on the "
                "metrics port names its function."
            ),
        ),
        Alert(
            name="TracedFuturesUnretrievedExceptions",
            signal=new_or_increased(config.UNRETRIEVED, "job, executor, error_type", w),
            op=">",
            threshold=0,
            for_=config.BUG_FOR,
            severity="warning",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): {{ $labels.error_type }} raised in "
                "tasks and "
                "never retrieved"
            ),
            description=(
                "Tasks raised and their futures were dropped without result() or exception() being called: "
                "the "
                "failure went unnoticed by the program."
            ),
        ),
        Alert(
            name="TracedFuturesInvalidTransitions",
            signal=new_or_increased(config.INVALID, "job, executor, method", w),
            op=">",
            threshold=0,
            for_=config.BUG_FOR,
            severity="warning",
            summary=(
                "Executor {{ $labels.executor }} ({{ $labels.job }}): {{ $labels.method }} refused by futures"
            ),
            description=(
                "Code called set_result / set_exception / set_running_or_notify_cancel on a future in a "
                "state that "
                "refuses it: something completes futures it does not own."
            ),
        ),
    ]


# --- YAML output --------------------------------------------------------------------------------------------


class _Block(str):
    """A string dumped as a YAML literal block."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Block, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")
)

HEADER = (
    "# Generated by dashboards/generate.py ({source}): edit that, then run python dashboards/generate.py.\n"
)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def rules_yaml(rules_of: list[Alert] | None = None) -> str:
    """The rule file of ``rules_of`` (default: ``alerts()``; the real-Prometheus test lowers a threshold)."""
    rules = [
        {
            "alert": alert.name,
            "expr": _Block(alert.expr),
            "for": alert.for_,
            "labels": {"severity": alert.severity},
            "annotations": alert.annotations,
        }
        for alert in (alerts() if rules_of is None else rules_of)
    ]
    document = {"groups": [{"name": config.ALERT_GROUP, "rules": rules}]}
    return HEADER.format(source="dashboards/alerts.py, settings in dashboards/config.py") + dump(document)


# --- promtool test cases ------------------------------------------------------------------------------------


@dataclass
class Expect:
    """At ``at``, ``alert`` fires exactly for ``firing``: (labels, rendered summary) pairs; none = silent."""

    at: str
    alert: str
    firing: list[tuple[dict[str, str], str]] = field(default_factory=list)


@dataclass
class Case:
    name: str
    series: dict[str, str]
    expect: list[Expect]


def values(*points: float | None) -> str:
    """promtool's value notation for one sample per interval, ``None`` = no sample."""
    return " ".join("_" if p is None else f"{p:g}" for p in points)


def cases() -> list[Case]:
    error_ratio = "TracedFuturesHighErrorRatio"
    queue = "TracedFuturesQueueWaitHigh"
    saturated = "TracedFuturesExecutorSaturated"
    unretrieved = "TracedFuturesUnretrievedExceptions"
    invalid = "TracedFuturesInvalidTransitions"
    stuck = "TracedFuturesTaskStuck"
    q = f"{config.QUEUE}_bucket"
    stuck_after = int(config.STUCK_TASK_SECONDS // 60)  # minutes
    return [
        Case(
            "error ratio: 10% errors fire after 10m, 1% errors never",
            {
                f'{ENDED}{{job="app",executor="io",outcome="success"}}': "0+90x40",
                f'{ENDED}{{job="app",executor="io",outcome="error"}}': "0+10x40",
                f'{ENDED}{{job="app",executor="io",outcome="cancelled"}}': "0x40",
                f'{ENDED}{{job="app",executor="cpu",outcome="success"}}': "0+99x40",
                f'{ENDED}{{job="app",executor="cpu",outcome="error"}}': "0+1x40",
                # No task ends at all: 0/0 is no alert.
                f'{ENDED}{{job="app",executor="idle",outcome="success"}}': "0x40",
                f'{ENDED}{{job="app",executor="idle",outcome="error"}}': "0x40",
            },
            [
                Expect("5m", error_ratio),  # above the threshold, but pending for less than 10m
                Expect(
                    "20m",
                    error_ratio,
                    [({"job": "app", "executor": "io"}, "Executor io (app): 10% of tasks fail")],
                ),
            ],
        ),
        Case(
            "error ratio: a burst of errors that stops resolves",
            {
                f'{ENDED}{{job="app",executor="io",outcome="success"}}': "0+10x60",
                # At 0 from the executor's start (as every outcome is), so the first errors count.
                f'{ENDED}{{job="app",executor="io",outcome="error"}}': "0+10x20 200x40",
            },
            [
                Expect(
                    "18m",
                    error_ratio,
                    [({"job": "app", "executor": "io"}, "Executor io (app): 50% of tasks fail")],
                ),
                Expect("30m", error_ratio),
            ],
        ),
        Case(
            "queue wait: p95 of 2.425s fires after 10m, p95 of 0.475s never",
            {
                f'{q}{{job="app",executor="slow",le="0.5"}}': "0x40",
                f'{q}{{job="app",executor="slow",le="1"}}': "0x40",
                f'{q}{{job="app",executor="slow",le="2.5"}}': "0+10x40",
                f'{q}{{job="app",executor="slow",le="+Inf"}}': "0+10x40",
                f'{q}{{job="app",executor="fast",le="0.5"}}': "0+10x40",
                f'{q}{{job="app",executor="fast",le="1"}}': "0+10x40",
                f'{q}{{job="app",executor="fast",le="2.5"}}': "0+10x40",
                f'{q}{{job="app",executor="fast",le="+Inf"}}': "0+10x40",
            },
            [
                Expect("5m", queue),
                Expect(
                    "20m",
                    queue,
                    [({"job": "app", "executor": "slow"}, "Executor slow (app): p95 queue wait 2.425s")],
                ),
            ],
        ),
        Case(
            "saturation: all worker-seconds busy for 15m fires; a quarter, idle gaps or a closed pool never",
            {
                # 4 workers: 240 worker-seconds a minute, all busy.
                f'{config.BUSY}{{job="app",executor="busy"}}': "0+240x40",
                f'{config.AVAILABLE}{{job="app",executor="busy"}}': "0+240x40",
                f'{config.BUSY}{{job="app",executor="quarter"}}': "0+60x40",
                f'{config.AVAILABLE}{{job="app",executor="quarter"}}': "0+240x40",
                # Busy but idle for 5 minutes every 15: not sustained.
                f'{config.BUSY}{{job="app",executor="gaps"}}': values(
                    *[240 * min(m % 15, 10) + 2400 * (m // 15) for m in range(40)]
                ),
                f'{config.AVAILABLE}{{job="app",executor="gaps"}}': "0+240x40",
                # A pool that lived 3 minutes, fully busy, then was shut down: its window has no more
                # capacity, so no ratio (no +Inf or NaN alert) once it is out of the window.
                f'{config.BUSY}{{job="app",executor="gone"}}': "0+240x3 720x36",
                f'{config.AVAILABLE}{{job="app",executor="gone"}}': "0+240x3 720x36",
            },
            [
                Expect("10m", saturated),
                Expect(
                    "20m",
                    saturated,
                    [({"job": "app", "executor": "busy"}, "Executor busy (app): 100% of workers busy")],
                ),
                Expect(
                    "39m",
                    saturated,
                    [({"job": "app", "executor": "busy"}, "Executor busy (app): 100% of workers busy")],
                ),
            ],
        ),
        Case(
            f"stuck task: a task running for more than {config.STUCK_TASK_SECONDS:g}s fires at once, "
            "resolves when it ends",
            {
                # A task starts at 5m and hangs until 40m; its age climbs by 60s a minute.
                f'{config.OLDEST_RUNNING}{{job="app",executor="io"}}': values(
                    *[0] * 5, *[60 * m for m in range(35)], *[0] * 5
                ),
                # Short tasks all the time: never old.
                f'{config.OLDEST_RUNNING}{{job="app",executor="cpu"}}': "0.5x45",
            },
            [
                Expect(f"{5 + stuck_after}m", stuck),
                Expect(
                    f"{5 + stuck_after + 1}m",
                    stuck,
                    [
                        (
                            {"job": "app", "executor": "io"},
                            f"Executor io (app): a task has been running for {stuck_after + 1}m 0s",
                        )
                    ],
                ),
                Expect("42m", stuck),
            ],
        ),
        Case(
            "unretrieved exceptions: the first one of a new series fires at once, a later increase too, "
            "then resolve",
            {
                # The series appears with its first count at 10m (rate/increase alone would miss it) ...
                f'{config.UNRETRIEVED}{{job="app",executor="io",error_type="ValueError"}}': (
                    values(*[None] * 10, *[1] * 30)
                ),
                # ... this one existed at 0 and grows at 20m.
                f'{config.UNRETRIEVED}{{job="app",executor="io",error_type="KeyError"}}': (
                    values(*[0] * 20, *[2] * 20)
                ),
                # Counted long ago, nothing new: silent.
                f'{config.UNRETRIEVED}{{job="app",executor="cpu",error_type="ValueError"}}': (
                    "3x40"
                ),
            },
            [
                Expect("8m", unretrieved),
                Expect(
                    "11m",
                    unretrieved,
                    [
                        (
                            {"job": "app", "executor": "io", "error_type": "ValueError"},
                            "Executor io (app): ValueError raised in tasks and never retrieved",
                        )
                    ],
                ),
                Expect("17m", unretrieved),
                Expect(
                    "21m",
                    unretrieved,
                    [
                        (
                            {"job": "app", "executor": "io", "error_type": "KeyError"},
                            "Executor io (app): KeyError raised in tasks and never retrieved",
                        )
                    ],
                ),
                Expect("30m", unretrieved),
            ],
        ),
        Case(
            "invalid transitions: a refused set_result fires at once and resolves after the window",
            {
                f'{config.INVALID}{{job="app",executor="io",method="set_result"}}': (
                    values(*[0] * 10, *[1] * 30)
                ),
                f'{config.INVALID}{{job="app",executor="io",method="set_exception"}}': "0x40",
                f'{config.INVALID}{{job="app",executor="io",method="set_running_or_notify_cancel"}}': "0x40",
            },
            [
                Expect("8m", invalid),
                Expect(
                    "12m",
                    invalid,
                    [
                        (
                            {"job": "app", "executor": "io", "method": "set_result"},
                            "Executor io (app): set_result refused by futures",
                        )
                    ],
                ),
                Expect("20m", invalid),
            ],
        ),
    ]


def tests_yaml() -> str:
    by_name = {alert.name: alert for alert in alerts()}
    tests = []
    for case in cases():
        checks = []
        for expect in case.expect:
            alert = by_name[expect.alert]
            checks.append(
                {
                    "eval_time": expect.at,
                    "alertname": expect.alert,
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": alert.severity, **labels},
                            "exp_annotations": {**alert.annotations, "summary": summary},
                        }
                        for labels, summary in expect.firing
                    ],
                }
            )
        tests.append(
            {
                "name": case.name,
                "interval": "1m",
                "input_series": [{"series": series, "values": v} for series, v in case.series.items()],
                "alert_rule_test": checks,
            }
        )
    document = {"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests}
    return HEADER.format(source="the cases in dashboards/alerts.py") + dump(document)
