"""Checks the dashboards and alert rules; exits non-zero with the reasons if anything is off.

    python dashboards/check.py

1. Regenerates every file dashboards/generate.py makes (the dashboards, the alert rules and their tests, the
   panel and alert listing in docs/dashboards.md, and the package's copies in tracedfutures/_dashboards/) and
   fails on any difference from the checked-in one, or on a file in tracedfutures/_dashboards/ that it does not
   make (the wheel would ship it).
2. Lints the checked-in dashboards: fixed uids, variables (datasource first, then job, executor, jaeger),
   every panel on ``${datasource}``, every query non-empty and on the job/executor selectors, rates on
   ``$__rate_interval``, exemplars with a Jaeger link on the latency panels, and every query parses
   (``promtool check rules`` on a scratch rule file that records each one).
3. ``promtool check rules`` on alerts.yaml and ``promtool test rules`` on alerts_test.yaml.

Needs promtool (Debian: ``apt-get install prometheus``) and the packages of dashboards/requirements.txt.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``dashboards`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboards import config

ROOT = config.HERE.parent
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range", "__from", "__to", "__value", "__data"}
#: What the template variables become when a query is evaluated outside Grafana (lint and real-server test).
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".*",
    "$executor": ".*",
}
WINDOW = re.compile(r"\[([^\]]*)\]")
METRIC = re.compile(r"\b((?:executor|futures)_[a-z_]+)\b(\{[^}]*\})?")
VARIABLE = re.compile(r"\$\{?(\w+)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- 1. generated files up to date --------------------------------------------------------------------------


def check_generated() -> list[str]:
    from dashboards import generate

    problems = []
    made = dict(generate.outputs())
    for path in sorted(config.PACKAGE_DATA_DIR.rglob("*")):
        if path.is_file() and path not in made:
            problems.append(
                f"{rel(path)} is not made by dashboards/generate.py (config.PACKAGED), but the wheel would ship "
                f"it: delete it"
            )
    for path, text in made.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        f"{rel(path)} (checked in)",
                        f"{rel(path)} (generated)",
                    )
                )[:60]
            )
            problems.append(
                f"{rel(path)} differs from what dashboards/generate.py makes "
                f"(run: python dashboards/generate.py):\n{diff}"
            )
    return problems


# --- 2. dashboard lint --------------------------------------------------------------------------------------


def load_dashboards() -> list[tuple[config.Dashboard, dict[str, Any]]]:
    """(settings from config, checked-in dashboard JSON) for every dashboard."""
    return [
        (settings, json.loads(settings.file.read_text(encoding="utf-8"))) for settings in config.DASHBOARDS
    ]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every non-row panel."""
    for panel in panels(board):
        if panel.get("type") != "row":
            for target in panel.get("targets", []):
                yield panel, target


def substitute(expr: str) -> str:
    """``expr`` with the dashboard and Grafana variables replaced by the values of SUBSTITUTIONS."""
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
    return expr


def metric_labels(name: str) -> tuple[str, ...] | None:
    """The labels of a series name (histogram suffixes resolved), None if it is not a tracedfutures metric."""
    if name in config.METRICS:
        return config.METRICS[name][1]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and config.METRICS.get(base, ("", ()))[0] == "histogram":
            labels = config.METRICS[base][1]
            return (*labels, "le") if suffix == "_bucket" else labels
    return None


def lint_variables(where: str, board: dict[str, Any], uses_executor: bool) -> list[str]:
    problems = []
    variables = board.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    expected = [
        config.DATASOURCE_VARIABLE,
        "job",
        *(["executor"] if uses_executor else []),
        config.JAEGER_VARIABLE,
    ]
    if names != expected:
        problems.append(f"{where}: variables are {names}, expected {expected} in that order")
    by_name = {v.get("name"): v for v in variables}
    for name, plugin in ((config.DATASOURCE_VARIABLE, "prometheus"), (config.JAEGER_VARIABLE, "jaeger")):
        v = by_name.get(name, {})
        if v and (v.get("type") != "datasource" or v.get("query") != plugin):
            problems.append(f"{where}: variable {name} must be type datasource, query {plugin}")
    for name in ("job", "executor"):
        v = by_name.get(name)
        if v is None:
            continue
        if v.get("type") != "query" or not str(v.get("query", "")).startswith("label_values("):
            problems.append(f"{where}: variable {name} must be a label_values() query")
        if not (v.get("multi") and v.get("includeAll")):
            problems.append(f"{where}: variable {name} must be multi-value with All")
        if v.get("datasource", {}).get("uid") != f"${{{config.DATASOURCE_VARIABLE}}}":
            problems.append(f"{where}: variable {name} must query ${{{config.DATASOURCE_VARIABLE}}}")
        if not str(v.get("query", "")).endswith(f", {name})"):
            problems.append(f"{where}: variable {name} must take the values of the label {name}")
    return problems


def lint_expr(where: str, expr: str, known: set[str]) -> list[str]:
    problems = []
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: empty expr"]
    for name in VARIABLE.findall(expr):
        if name not in known and name not in GRAFANA_GLOBALS:
            problems.append(f"{where}: unknown variable ${name}")
    for window in WINDOW.findall(expr):
        if window not in ("$__rate_interval", "$__range"):
            problems.append(f"{where}: range [{window}]: use $__rate_interval (or $__range in stat panels)")
    for name, selector in METRIC.findall(expr):
        labels = metric_labels(name)
        if labels is None:
            problems.append(f"{where}: {name} is not a metric of config.METRICS")
            continue
        selector = selector or ""
        if config.JOB_MATCHER not in selector:
            problems.append(f"{where}: {name} without {config.JOB_MATCHER}")
        if "executor" in labels and config.EXECUTOR_MATCHER not in selector:
            problems.append(f"{where}: {name} has an executor label but no {config.EXECUTOR_MATCHER}")
    return problems


def lint_dashboard(settings: config.Dashboard, board: dict[str, Any]) -> list[str]:
    where = rel(settings.file)
    problems = []
    if board.get("uid") != settings.uid:
        problems.append(f"{where}: uid {board.get('uid')!r}, expected the fixed {settings.uid!r}")
    if board.get("title") != settings.title:
        problems.append(f"{where}: title {board.get('title')!r}, expected {settings.title!r}")
    if "id" in board and board["id"] is not None:
        problems.append(f"{where}: a numeric dashboard id is instance-specific: leave it out")
    known = {v.get("name") for v in board.get("templating", {}).get("list", [])}
    datasource = {"type": "prometheus", "uid": f"${{{config.DATASOURCE_VARIABLE}}}"}
    ids = []
    uses_executor = False
    for panel in panels(board):
        ids.append(panel.get("id"))
        title = panel.get("title") or "?"
        pos = panel.get("gridPos", {})
        if pos.get("x", 0) + pos.get("w", 0) > 24:
            problems.append(f"{where}: panel {title!r} is wider than the grid")
        if panel.get("type") == "row":
            continue
        pwhere = f"{where}: panel {title!r}"
        if panel.get("datasource") != datasource:
            problems.append(f"{pwhere}: datasource {panel.get('datasource')}, expected {datasource}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{pwhere}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{pwhere}: refIds {refs} not unique")
        latency = False
        for t in targets:
            twhere = f"{pwhere} query {t.get('refId')}"
            if t.get("datasource", datasource) != datasource:
                problems.append(f"{twhere}: datasource {t.get('datasource')}, expected {datasource}")
            expr = t.get("expr", "")
            problems += lint_expr(twhere, expr, known)
            uses_executor |= "$executor" in str(expr)
            if "histogram_quantile" in str(expr) or panel.get("type") == "heatmap":
                latency = True
                if t.get("exemplar") is not True:
                    problems.append(f"{twhere}: latency query without exemplars")
            if panel.get("type") == "heatmap" and t.get("format") != "heatmap":
                problems.append(f"{twhere}: heatmap query not in heatmap format")
        if latency and not has_trace_link(panel):
            problems.append(
                f"{pwhere}: latency panel without the {config.EXEMPLAR_TRACE_ID_LABEL} link to Jaeger"
            )
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"{where}: panel ids {ids} not fixed and unique")
    problems += lint_variables(where, board, uses_executor)
    return problems


def has_trace_link(panel: dict[str, Any]) -> bool:
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override.get("matcher") != {"id": "byName", "options": config.EXEMPLAR_TRACE_ID_LABEL}:
            continue
        for prop in override.get("properties", []):
            links = (prop.get("value") or []) if prop.get("id") == "links" else []
            for link in links:
                url = link.get("url", "")
                if f"${{{config.JAEGER_VARIABLE}}}" in url and "${__value.raw}" in url:
                    return True
    return False


def check_lint() -> list[str]:
    problems = []
    uids = set()
    for settings, board in load_dashboards():
        problems += lint_dashboard(settings, board)
        uids.add(board.get("uid"))
    if len(uids) != len(load_dashboards()):
        problems.append("dashboard uids are not distinct")
    return problems


# --- 3. promtool --------------------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise FileNotFoundError(
            "promtool not found on PATH: install Prometheus (Debian: apt-get install prometheus; "
            "tests/run.sh does)"
        )
    return path


def run_promtool(*args: str, cwd: Path | None = None, stdin: str | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [promtool(), *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_queries_parse() -> list[str]:
    """Every dashboard query, variables substituted, is valid PromQL (as a recording rule for promtool)."""
    rules: list[dict[str, Any]] = []
    for settings, board in load_dashboards():
        for panel, target in queries(board):
            rules.append(
                {
                    "record": f"dashboard:query:{len(rules)}",
                    "expr": substitute(target["expr"]),
                    "labels": {"source": f"{settings.uid} {panel.get('title')} {target.get('refId')}"},
                }
            )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-queries.yaml"
        path.write_text(
            json.dumps({"groups": [{"name": "dashboard-queries", "rules": rules}]}), encoding="utf-8"
        )
        code, output = run_promtool("check", "rules", str(path))
    if code != 0:
        return [f"dashboard queries do not parse (promtool check rules):\n{output}"]
    return []


def check_rules() -> list[str]:
    problems = []
    code, output = run_promtool("check", "rules", config.ALERTS_FILE.name, cwd=config.HERE)
    if code != 0:
        problems.append(f"promtool check rules {rel(config.ALERTS_FILE)} failed:\n{output}")
    code, output = run_promtool("test", "rules", config.ALERTS_TEST_FILE.name, cwd=config.HERE)
    if code != 0:
        problems.append(f"promtool test rules {rel(config.ALERTS_TEST_FILE)} failed:\n{output}")
    return problems


CHECKS = {
    "generated files up to date": check_generated,
    "dashboard lint": check_lint,
    "dashboard queries parse": check_queries_parse,
    "alert rules (promtool check/test rules)": check_rules,
}


def main() -> int:
    failed = 0
    for name, check in CHECKS.items():
        try:
            problems = check()
        except Exception as exc:  # a check that cannot run fails, with its reason
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print("  " + problem.replace("\n", "\n  "))
        else:
            print(f"ok   {name}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
