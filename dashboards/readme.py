"""The docs page on the dashboards and alert rules (docs/dashboards.md), between its dashboards markers.

Generated with the dashboards so every query shown is the query the panel runs; the prose is below.
``python dashboards/generate.py`` rewrites the page; ``python dashboards/check.py`` fails when it is not what the
code makes. (The module kept its name from when this section lived in README.md; the compose set-up it also
held is hand-written prose in docs/setup.md now.)
"""

from __future__ import annotations

import json
import re
from typing import Any

from dashboards import alerts, config

INTRO = """\
# Dashboards and alerts

`dashboards/` holds two Grafana dashboards and a Prometheus rule file for the [metrics](metrics.md), generated
from code (`dashboards/generate.py`, [grafana-foundation-sdk](https://github.com/grafana/grafana-foundation-sdk);
settings such as thresholds and uids in `dashboards/config.py`):

- `tracedfutures-executors.json` (uid `{executors_uid}`): throughput, errors, queue wait, run time,
  capacity and misuse of futures, per executor;
- `tracedfutures-waits.json` (uid `{waits_uid}`): time blocked in `wait()` / `as_completed()` and their
  timeouts;
- `alerts.yaml`: alert rules, unit-tested by `alerts_test.yaml` (`promtool test rules`).

Variables: `datasource` (a Prometheus data source), `job` and `executor` (multi-value, "All" = `.*`, from
`label_values`), and `jaeger` (a Jaeger data source). Rates use `$__rate_interval`. The latency panels query
exemplars: a point's `{trace_label}` label links to that task's trace in Jaeger (set the Prometheus data
source's exemplar link too, as `examples/grafana/` does). `python dashboards/generate.py` rewrites the
files and this page; `python dashboards/check.py` fails if they differ from the code, lints the dashboards and
runs promtool on the rules; `tests/prometheus/` evaluates every panel query and alert rule against real
Prometheus servers (2.42 and 3.5) scraping a real workload. [Jaeger, Prometheus and Grafana](setup.md) says how
to run all three next to your application with `examples/compose.yaml`. The package carries the dashboards, the
alert rules and the Grafana provisioning too: `tracedfutures dashboards -o DIR` writes them out
([below](#without-a-clone-tracedfutures-dashboards)).

What each Prometheus version needs ([first events](metrics.md#first-events-and-prometheus-versions)): every
ratio, utilization and alert rule reads series that exist at 0 from an executor's start, so they count the first
errors of a new type on Prometheus 2.x and 3.x alike. The breakdowns by exception class and by function ("Top
error types", "Errors by type", "Top functions by time", "Top functions by errors") read series born with their
first count: they count it on Prometheus 3 started with `--enable-feature=created-timestamp-zero-ingestion`
(as `examples/compose.yaml` runs it), and miss what happened before such a series' first scrape on 2.x.
Utilization and saturation divide busy by available worker-seconds, so pools that lived only part of a window
(a `with` block, many short-lived pools) count for the time they lived.

Pre-fork servers (gunicorn, `uvicorn --workers`: prometheus_client's
[multiprocess mode](metrics.md#pre-fork-servers)): every panel and alert works, the running tasks, capacity and
oldest running task summed over the live workers (a worker killed without a word stops counting at the next
scrape). What differs: the latency panels show no exemplars, and the breakdowns by exception class and by
function miss a series' first count on Prometheus 3 too (that mode exposes no created timestamps), as on 2.x.
"""


def _panel_text(panel: dict[str, Any]) -> str:
    lines = [f"**{panel['title']}** ({panel['type']}). {panel.get('description', '')}", "", "```promql"]
    for target in panel.get("targets", []):
        legend = target.get("legendFormat", "")
        lines.append(f"# {legend}" if legend else "#")
        lines.extend(target["expr"].splitlines())
    lines.append("```")
    return "\n".join(lines)


def _dashboard_text(board: dict[str, Any]) -> str:
    lines = [f"## {board['title']}", ""]
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            lines += [f"### {panel['title']}", ""]
        else:
            lines += [_panel_text(panel), ""]
    return "\n".join(lines)


def _alerts_text() -> str:
    lines = [
        "## Alert rules (`dashboards/alerts.yaml`)",
        "",
        "| alert | fires when | for | severity |",
        "|---|---|---|---|",
    ]
    for alert in alerts.alerts():
        signal = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", " ".join(alert.signal.split())))
        condition = f"`{signal}` {alert.op} {alert.threshold:g}"
        lines.append(f"| `{alert.name}` | {condition} | {alert.for_} | {alert.severity} |")
    lines += [
        "",
        "Each alert is tested firing and not firing in `dashboards/alerts_test.yaml`. Unretrieved exceptions "
        "and invalid transitions also count a series that appeared within the window "
        "(`x unless x offset 5m`): `increase()` alone would miss the first event of a new `error_type` or "
        "`method`. (So a Prometheus with no history yet reports counts that are already above zero once.)",
        "",
    ]
    return "\n".join(lines)


def page_section(boards: list[str]) -> str:
    """The markdown, from the dashboards' JSON texts (in config.DASHBOARDS order)."""
    parts = [
        INTRO.format(
            executors_uid=config.EXECUTORS_DASHBOARD.uid,
            waits_uid=config.WAITS_DASHBOARD.uid,
            trace_label=config.EXEMPLAR_TRACE_ID_LABEL,
        ),
    ]
    parts += [_dashboard_text(json.loads(text)) for text in boards]
    parts.append(_alerts_text())
    return "\n".join(parts).rstrip("\n") + "\n"


def page_with_section(page: str, section: str) -> str:
    """``page`` with the text between its dashboards markers replaced by ``section``."""
    head, found, rest = page.partition(config.DOCS_BEGIN)
    _, found_end, tail = rest.partition(config.DOCS_END)
    if not found or not found_end:
        where = config.DOCS_FILE.relative_to(config.HERE.parent)
        raise ValueError(f"{where} lacks the markers {config.DOCS_BEGIN!r} ... {config.DOCS_END!r}")
    return f"{head}{config.DOCS_BEGIN}\n{section.rstrip()}\n{config.DOCS_END}{tail}"
