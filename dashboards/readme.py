"""The README's section on the dashboards, alert rules and compose set-up, between its dashboards markers.

Generated with the dashboards so every query shown is the query the panel runs; the prose is below.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dashboards import alerts, config

INTRO = """\
## Dashboards and alerts

`dashboards/` holds two Grafana dashboards and a Prometheus rule file for the metrics above, generated from
code (`dashboards/generate.py`, [grafana-foundation-sdk](https://github.com/grafana/grafana-foundation-sdk);
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
files; `python dashboards/check.py` fails if they differ from the code, lints the dashboards and runs promtool
on the rules; `tests/prometheus/` evaluates every panel query and alert rule against a real Prometheus
scraping a real workload.
"""

COMPOSE = """\
### Run Prometheus, Grafana and Jaeger next to your application

`examples/compose.yaml` starts Prometheus (with the alert rules and exemplar storage), Jaeger all-in-one
(OTLP on 4317 gRPC and 4318 HTTP) and Grafana with both data sources and the dashboards provisioned
(`examples/grafana/`). From the repository root (Docker Compose 2.23.1 or later):

```sh
docker compose -f examples/compose.yaml up -d
```

Your application, on the host, serves `/metrics` where the Prometheus container can reach it and sends its
spans to Jaeger:

```python
# 0.0.0.0: the default 127.0.0.1 is not reachable from a container (it also exposes /metrics to your network)
tracedfutures.start_http_server(9464, addr="0.0.0.0")
```

```sh
pip install opentelemetry-distro opentelemetry-exporter-otlp
OTEL_SERVICE_NAME=app OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_METRICS_EXPORTER=none \\
    OTEL_LOGS_EXPORTER=none opentelemetry-instrument python app.py
```

Prometheus scrapes `host.docker.internal:9464` every 15 s as job `app`. Grafana is on
http://localhost:3000 (folder "tracedfutures", no login), Prometheus on http://localhost:9090 (rules and
alerts under `/alerts`), Jaeger on http://localhost:16686; every port is published on 127.0.0.1 only.
`docker compose -f examples/compose.yaml down -v` removes it all, data included.
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
    lines = [f"### {board['title']}", ""]
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            lines += [f"#### {panel['title']}", ""]
        else:
            lines += [_panel_text(panel), ""]
    return "\n".join(lines)


def _alerts_text() -> str:
    lines = [
        "### Alert rules (`dashboards/alerts.yaml`)",
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


def readme_section(boards: list[str]) -> str:
    """The markdown, from the dashboards' JSON texts (in config.DASHBOARDS order)."""
    parts = [
        INTRO.format(
            executors_uid=config.EXECUTORS_DASHBOARD.uid,
            waits_uid=config.WAITS_DASHBOARD.uid,
            trace_label=config.EXEMPLAR_TRACE_ID_LABEL,
        ),
    ]
    parts += [_dashboard_text(json.loads(text)) for text in boards]
    parts += [_alerts_text(), COMPOSE]
    return "\n".join(parts).rstrip("\n") + "\n"


def readme_with_section(readme: str, section: str) -> str:
    """``readme`` with the text between its dashboards markers replaced by ``section``."""
    head, found, rest = readme.partition(config.README_BEGIN)
    _, found_end, tail = rest.partition(config.README_END)
    if not found or not found_end:
        raise ValueError(f"README.md lacks the markers {config.README_BEGIN!r} ... {config.README_END!r}")
    return f"{head}{config.README_BEGIN}\n{section.rstrip()}\n{config.README_END}{tail}"
