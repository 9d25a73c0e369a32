"""One screen of ``tracedfutures top``, drawn with rich: a header line, a row per executor, and the tasks running
now, oldest first, as many as the terminal has room for. Plain ASCII borders, so that it reads the same over SSH
in any terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tracedfutures._cli.top_interval import Interval

#: Lines the header, the executors' table and the running table's own lines take besides their rows.
CHROME_LINES = 9


def seconds(value: float | None) -> str:
    """A duration for a table cell: µs, ms or s with three significant digits; ``-`` when unknown."""
    if value is None:
        return "-"
    if value >= 1 or value == 0:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def _number(value: float | None, suffix: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def render(interval: Interval, url: str, every: float, height: int, problem: str | None = None) -> RenderableType:
    """The screen for ``interval`` in a terminal ``height`` lines tall; ``problem``: why this refresh failed."""
    header = Text.assemble(
        ("tracedfutures top", "bold"),
        f"  {url}",
        f"  pid {interval.pid}" if interval.pid is not None else "",
        f"  every {every:g} s",
        "  (q quits)",
    )
    executors = Table(box=box.ASCII2)
    for title in ("executor", "tasks/s", "queued", "running", "max workers", "busy", "CPUs", "queue p50", "queue p95",
                  "run p50", "run p95", "errors"):  # fmt: skip
        executors.add_column(title, justify="left" if title == "executor" else "right", no_wrap=True)
    for row in interval.executors:
        executors.add_row(
            row.name,
            _number(row.throughput),
            _number(row.queued, digits=0),
            _number(row.running, digits=0),
            _number(row.max_workers, digits=0),
            _number(None if row.utilization is None else row.utilization * 100, " %", 0),
            _number(row.cpus, digits=2),
            seconds(row.queue_p50),
            seconds(row.queue_p95),
            seconds(row.run_p50),
            seconds(row.run_p95),
            _number(None if row.error_rate is None else row.error_rate * 100, " %"),
        )
    parts: list[RenderableType] = [header]
    if interval.seconds is None:
        parts.append(Text("rates and quantiles after the first interval", style="dim"))
    parts.extend(Text(note, style="yellow", no_wrap=True, overflow="ellipsis") for note in interval.notes)
    if problem is not None:
        parts.append(Text(f"{problem} (showing the last answer; retrying)", style="bold red"))
    parts.append(executors if interval.executors else Text("no executor has reported yet"))
    if interval.running is not None:
        room = max(height - CHROME_LINES - len(interval.executors) - len(parts), 1)
        running = Table(box=box.ASCII2)
        for title in ("age", "executor", "function", "worker"):
            running.add_column(title, justify="right" if title == "age" else "left", no_wrap=True)
        for task in interval.running[:room]:
            running.add_row(seconds(task.age), task.executor, task.function, task.worker)
        hidden = len(interval.running) - room
        title = f"running now: {len(interval.running)}, oldest first"
        parts.append(Text(title + (f" ({hidden} more not shown)" if hidden > 0 else ""), style="bold"))
        parts.append(running)
    return Group(*parts)
