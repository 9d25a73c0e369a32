"""The layering of the package: which tracedfutures modules each module imports, with no cycles.

``IMPORTS`` is the allowed-import table: each module and the tracedfutures modules it imports directly, at the
top level, in functions (lazy imports) or for type checking only. It must match the sources (read with ``ast``)
exactly, so a new import is a decision made here, and it must sort topologically (no cycle, lazy imports
included). ``LAYERS`` says where each module sits: a module imports only from its own layer or those below. No
module imports another module's underscored names (its private helpers): what modules share has a name without
one, in a module of its own where users should not import it (``_submit``, ``_metric_definitions``).

Each module is also imported alone in a fresh interpreter: it may pull in only what the table allows it (and its
parent packages) to reach, the telemetry vendors it pulls in are those of ``VENDORS``, and the bottom of the
package (the lifecycle, the stdlib copies and what they stand on) pulls in none.
"""

from __future__ import annotations

import ast
import concurrent.futures
import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import tracedfutures

PACKAGE = Path(tracedfutures.__file__).resolve().parent
VENDOR_PACKAGES = ("opentelemetry", "prometheus_client", "wrapt")

#: Each module and the tracedfutures modules it may import directly (``tracedfutures``: the package, whose public
#: names are imported on first use; its other imports are for type checking).
IMPORTS: dict[str, set[str]] = {
    # the bottom: vendor-free
    "tracedfutures._shutdown_deadlock": set(),
    "tracedfutures._state": set(),
    "tracedfutures._stdlib": {"tracedfutures._shutdown_deadlock", "tracedfutures._state"},
    "tracedfutures._naming": {"tracedfutures._stdlib", "tracedfutures.package"},
    "tracedfutures._wire": set(),
    "tracedfutures._worker_cpu": set(),
    "tracedfutures._telemetry": {"tracedfutures._state"},
    "tracedfutures.version": set(),
    "tracedfutures.package": set(),
    # the lifecycle
    "tracedfutures._lifecycle": {"tracedfutures._state", "tracedfutures._stdlib", "tracedfutures._wire"},
    # the hooks (spans, metrics) and what travels to workers
    "tracedfutures._worker_spans": {"tracedfutures._state", "tracedfutures._telemetry"},
    "tracedfutures._running": {"tracedfutures._lifecycle", "tracedfutures._naming", "tracedfutures._state"},
    "tracedfutures._start_board": {"tracedfutures._lifecycle"},
    "tracedfutures._calls": {
        "tracedfutures._running",
        "tracedfutures._start_board",
        "tracedfutures._state",
        "tracedfutures._wire",
        "tracedfutures._worker_spans",
    },
    "tracedfutures.spans": {
        "tracedfutures._lifecycle",
        "tracedfutures._naming",
        "tracedfutures._running",
        "tracedfutures._start_board",
        "tracedfutures._state",
        "tracedfutures._telemetry",
        "tracedfutures._worker_spans",
        "tracedfutures.version",
    },
    "tracedfutures._metric_definitions": {
        "tracedfutures._lifecycle", "tracedfutures._naming", "tracedfutures._telemetry",
    },
    "tracedfutures._multiprocess": {
        "tracedfutures._lifecycle",
        "tracedfutures._metric_definitions",
        "tracedfutures._state",
        "tracedfutures._telemetry",
        "tracedfutures._worker_cpu",
    },
    "tracedfutures.metrics": {
        "tracedfutures._lifecycle",
        "tracedfutures._metric_definitions",
        "tracedfutures._state",
        "tracedfutures._telemetry",
        "tracedfutures._multiprocess",
        "tracedfutures._worker_cpu",
    },
    "tracedfutures._otel_names": {"tracedfutures._metric_definitions", "tracedfutures._naming"},
    "tracedfutures._otel_metrics": {
        "tracedfutures._metric_definitions",
        "tracedfutures._otel_names",
        "tracedfutures._state",
        "tracedfutures._telemetry",
        "tracedfutures.metrics",
        "tracedfutures.version",
    },
    # defaults and set-up
    "tracedfutures._config": {
        "tracedfutures._otel_metrics",
        "tracedfutures._state",
        "tracedfutures.metrics",
        "tracedfutures.spans",
    },
    "tracedfutures.config": {"tracedfutures._config"},
    "tracedfutures.tracing": set(),
    "tracedfutures.exposition": {
        "tracedfutures._config", "tracedfutures._multiprocess", "tracedfutures._running", "tracedfutures.metrics",
    },
    "tracedfutures.timeline": {
        "tracedfutures._lifecycle",
        "tracedfutures._start_board",
        "tracedfutures._naming",
        "tracedfutures._running",
        "tracedfutures._state",
        "tracedfutures._telemetry",
        "tracedfutures._worker_cpu",
        "tracedfutures._worker_spans",
        "tracedfutures.spans",
        "tracedfutures.version",
    },
    # executors and waiting
    "tracedfutures._submit": {
        "tracedfutures._calls",
        "tracedfutures._config",
        "tracedfutures._lifecycle",
        "tracedfutures._naming",
        "tracedfutures._running",
        "tracedfutures._start_board",
        "tracedfutures._state",
        "tracedfutures._stdlib",
        "tracedfutures._telemetry",
        "tracedfutures._worker_spans",
        "tracedfutures.metrics",
        "tracedfutures.package",
        "tracedfutures.spans",
    },
    "tracedfutures.executor": {
        "tracedfutures._config",
        "tracedfutures._lifecycle",
        "tracedfutures._naming",
        "tracedfutures._stdlib",
        "tracedfutures._submit",
    },
    "tracedfutures.interpreter": {"tracedfutures._lifecycle", "tracedfutures.executor"},
    "tracedfutures.waiting": {
        "tracedfutures._config",
        "tracedfutures._state",
        "tracedfutures._stdlib",
        "tracedfutures._telemetry",
        "tracedfutures.metrics",
        "tracedfutures.spans",
    },
    # the top: the instrumentor, the package's public names, the command line
    "tracedfutures.instrumentor": {
        "tracedfutures._calls",
        "tracedfutures._config",
        "tracedfutures._lifecycle",
        "tracedfutures._state",
        "tracedfutures._submit",
        "tracedfutures._telemetry",
        "tracedfutures.package",
        "tracedfutures.waiting",
    },
    "tracedfutures": {
        "tracedfutures._lifecycle",
        "tracedfutures.config",
        "tracedfutures.executor",
        "tracedfutures.exposition",
        "tracedfutures.instrumentor",
        "tracedfutures.interpreter",
        "tracedfutures.metrics",
        "tracedfutures.tracing",
        "tracedfutures.version",
        "tracedfutures.waiting",
    },
    "tracedfutures._recording": {"tracedfutures._state", "tracedfutures.instrumentor", "tracedfutures.timeline"},
    "tracedfutures._cli.dashboards": set(),
    "tracedfutures._cli.arguments": set(),
    "tracedfutures._cli.timeline_reader": {"tracedfutures._naming"},
    "tracedfutures._cli.record": {
        "tracedfutures._cli.arguments", "tracedfutures._recording", "tracedfutures._cli.timeline_reader",
    },
    "tracedfutures._cli.report_data": {"tracedfutures._cli.timeline_reader"},
    "tracedfutures._cli.report_page": {"tracedfutures.version"},
    "tracedfutures._cli.report": {
        "tracedfutures._cli.report_data",
        "tracedfutures._cli.report_page",
        "tracedfutures._cli.timeline_reader",
    },
    "tracedfutures._cli.scrape": set(),
    "tracedfutures._cli.top_interval": {"tracedfutures._cli.scrape", "tracedfutures._metric_definitions"},
    "tracedfutures._cli.top_view": {"tracedfutures._cli.top_interval"},
    "tracedfutures._cli.keyboard": set(),
    "tracedfutures._cli.top": {
        "tracedfutures._cli.arguments",
        "tracedfutures._cli.keyboard",
        "tracedfutures._cli.scrape",
        "tracedfutures._cli.top_interval",
        "tracedfutures._cli.top_view",
    },
    "tracedfutures._cli": {
        "tracedfutures._cli.dashboards",
        "tracedfutures._cli.record",
        "tracedfutures._cli.report",
        "tracedfutures._cli.top",
        "tracedfutures.version",
    },
    "tracedfutures.__main__": {"tracedfutures._cli"},
}

#: The layers, bottom first.
LAYERS: tuple[set[str], ...] = (
    {
        "tracedfutures._shutdown_deadlock",
        "tracedfutures._state",
        "tracedfutures._stdlib",
        "tracedfutures._naming",
        "tracedfutures._wire",
        "tracedfutures._worker_cpu",
        "tracedfutures._telemetry",
        "tracedfutures.version",
        "tracedfutures.package",
    },
    {"tracedfutures._lifecycle"},
    {
        "tracedfutures._running",
        "tracedfutures._start_board",
        "tracedfutures._worker_spans",
        "tracedfutures._calls",
        "tracedfutures.spans",
        "tracedfutures._metric_definitions",
        "tracedfutures._multiprocess",
        "tracedfutures.metrics",
        "tracedfutures._otel_names",
        "tracedfutures._otel_metrics",
    },
    {
        "tracedfutures._config",
        "tracedfutures.config",
        "tracedfutures.tracing",
        "tracedfutures.exposition",
        "tracedfutures.timeline",
    },
    {"tracedfutures._submit", "tracedfutures.executor", "tracedfutures.interpreter", "tracedfutures.waiting"},
    {
        "tracedfutures.instrumentor",
        "tracedfutures",
        "tracedfutures._recording",
        "tracedfutures._cli.dashboards",
        "tracedfutures._cli.arguments",
        "tracedfutures._cli.timeline_reader",
        "tracedfutures._cli.record",
        "tracedfutures._cli.report_data",
        "tracedfutures._cli.report_page",
        "tracedfutures._cli.report",
        "tracedfutures._cli.scrape",
        "tracedfutures._cli.top_interval",
        "tracedfutures._cli.top_view",
        "tracedfutures._cli.keyboard",
        "tracedfutures._cli.top",
        "tracedfutures._cli",
        "tracedfutures.__main__",
    },
)

#: The modules whose import alone pulls in no telemetry vendor.
VENDOR_FREE = LAYERS[0] | LAYERS[1]

#: The telemetry vendors each module pulls in when imported alone in a fresh interpreter.
VENDORS: dict[str, set[str]] = {
    **{module: set() for module in VENDOR_FREE},
    "tracedfutures._running": set(),
    "tracedfutures._start_board": set(),
    "tracedfutures._worker_spans": {"opentelemetry"},
    "tracedfutures._calls": {"opentelemetry"},
    "tracedfutures.spans": {"opentelemetry"},
    "tracedfutures._metric_definitions": {"prometheus_client"},
    "tracedfutures._multiprocess": {"prometheus_client"},
    "tracedfutures.metrics": {"prometheus_client"},
    "tracedfutures._otel_names": {"prometheus_client"},
    "tracedfutures._otel_metrics": {"opentelemetry", "prometheus_client"},
    "tracedfutures._config": {"opentelemetry", "prometheus_client"},
    "tracedfutures.config": {"opentelemetry", "prometheus_client"},
    "tracedfutures.tracing": {"opentelemetry"},
    "tracedfutures.exposition": {"opentelemetry", "prometheus_client"},
    "tracedfutures.timeline": {"opentelemetry"},
    "tracedfutures._submit": {"opentelemetry", "prometheus_client"},
    "tracedfutures.executor": {"opentelemetry", "prometheus_client"},
    "tracedfutures.interpreter": {"opentelemetry", "prometheus_client"},
    "tracedfutures.waiting": {"opentelemetry", "prometheus_client"},
    "tracedfutures.instrumentor": {"opentelemetry", "prometheus_client", "wrapt"},
    "tracedfutures": set(),
    "tracedfutures._recording": set(),
    "tracedfutures._cli.dashboards": set(),
    "tracedfutures._cli.arguments": set(),
    "tracedfutures._cli.record": set(),
    "tracedfutures._cli.timeline_reader": set(),
    "tracedfutures._cli.report_data": set(),
    "tracedfutures._cli.report_page": set(),
    "tracedfutures._cli.report": set(),
    "tracedfutures._cli.scrape": {"prometheus_client"},
    "tracedfutures._cli.top_interval": {"prometheus_client"},
    "tracedfutures._cli.top_view": {"prometheus_client"},
    "tracedfutures._cli.keyboard": set(),
    "tracedfutures._cli.top": set(),
    "tracedfutures._cli": set(),
    "tracedfutures.__main__": set(),
}


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["tracedfutures", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def source_path(module: str) -> Path:
    base = PACKAGE.joinpath(*module.split(".")[1:])
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def is_module(name: str) -> bool:
    return name.startswith("tracedfutures") and source_path(name).exists()


def imported(module: str, *, runtime_only: bool = False) -> set[str]:
    """The tracedfutures modules ``module``'s source imports, anywhere in it (with ``runtime_only``: not under
    ``if TYPE_CHECKING:``). ``from tracedfutures import x`` imports the module ``x`` when there is one."""
    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "tracedfutures")
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: relative import"
            if node.module is None or node.module.split(".")[0] != "tracedfutures":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    found.discard(module)
    return found


def reachable(modules: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(IMPORTS[module])
    return seen


def importable(module: str) -> bool:
    return module != "tracedfutures.interpreter" or "InterpreterPoolExecutor" in concurrent.futures.__all__


def test_the_table_lists_every_module() -> None:
    assert sorted(IMPORTS) == sorted(module_names())
    assert sorted(set().union(*LAYERS)) == sorted(IMPORTS)
    assert sum(len(layer) for layer in LAYERS) == len(IMPORTS)
    assert sorted(VENDORS) == sorted(IMPORTS)


#: The underscored names a module may import from another: OpenTelemetry contrib's convention for the instrumented
#: packages (``package._instruments``, which ``BaseInstrumentor`` reads).
SHARED_PRIVATE_NAMES = {"_instruments", "_instruments_optional"}


def test_no_module_imports_another_modules_underscored_names() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tracedfutures"):
                found += [
                    f"{path.relative_to(PACKAGE.parent)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                    and f"{node.module}.{alias.name}" not in IMPORTS  # a private module itself
                    and alias.name not in SHARED_PRIVATE_NAMES
                ]  # fmt: skip
    assert found == []


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_imports_match_the_table(module: str) -> None:
    assert imported(module) == IMPORTS[module]


def test_no_cycles() -> None:
    try:
        order = list(TopologicalSorter(IMPORTS).static_order())
    except CycleError as exc:  # pragma: no cover - the failure
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert sorted(order) == sorted(IMPORTS)


def test_imports_go_down_the_layers() -> None:
    layer = {module: rank for rank, members in enumerate(LAYERS) for module in members}
    upward = [
        f"{module} (layer {layer[module]}) imports {target} (layer {layer[target]})"
        for module, targets in IMPORTS.items()
        for target in targets
        if layer[target] > layer[module]
    ]
    assert upward == []


PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_fresh_import(module: str) -> None:
    """Imported alone, ``module`` pulls in what the table lets it and its parent packages reach, and the
    vendors of ``VENDORS``."""
    if not importable(module):
        pytest.skip(f"{module} needs concurrent.futures.interpreter (Python 3.14 and later)")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    ours = {name for name in loaded if name.split(".")[0] == "tracedfutures"}
    parents = {".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)}
    allowed = reachable({module}) | parents
    for parent in parents:  # a parent package runs its own imports, not those it makes for type checking only
        allowed |= reachable(imported(parent, runtime_only=True))
    assert ours <= allowed, f"{module} pulled in {sorted(ours - allowed)}"
    vendors = {name.split(".")[0] for name in loaded if name.split(".")[0] in VENDOR_PACKAGES}
    assert vendors == VENDORS[module]


@pytest.mark.parametrize("module", ["tracedfutures._lifecycle", "tracedfutures._stdlib"])
def test_the_lifecycle_and_the_stdlib_copies_import_no_vendor(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    vendors = [name for name in json.loads(proc.stdout) if name.split(".")[0] in VENDOR_PACKAGES]
    assert vendors == []
    assert module in VENDOR_FREE
