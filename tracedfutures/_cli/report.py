"""``tracedfutures report TRACE.json -o report.html``: a self-contained HTML report of a recorded timeline.

The timeline is read by ``timeline_reader``, aggregated by ``report_data`` (bounded, whatever the trace's size)
and written as one page by ``report_page``: the per-worker timeline, queued and running over time, utilization
per executor, queue-wait and run-time distributions per executor and per function, the slowest tasks and the
errors with their trace ids, and the time callers blocked in ``wait`` / ``as_completed``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

#: The exit status when the timeline cannot be read or the report cannot be written.
EXIT_FAILED = 1

DESCRIPTION = """\
Write a self-contained HTML report of a timeline that `tracedfutures record` wrote (the Chrome Trace Event
Format): per-worker timeline, queued and running over time, utilization, queue-wait and run-time distributions
per executor and per function, the slowest tasks and the errors with their trace ids, and the time callers blocked
in wait / as_completed. The page needs no network: open it in any browser.
"""


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` verb to the ``tracedfutures`` command line."""
    parser = verbs.add_parser(
        "report", help="write a self-contained HTML report of a timeline", description=DESCRIPTION
    )
    parser.add_argument("trace", type=Path, metavar="TRACE.json", help="the timeline `tracedfutures record` wrote")
    parser.add_argument(
        "-o", "--output", type=Path, metavar="REPORT.html", help="where to write the report (default: TRACE.html)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The ``report`` verb: write the report of ``args.trace``; return the exit status."""
    trace: Path = args.trace
    output: Path = args.output or trace.with_suffix(".html")
    return write(trace, output)


def write(trace: Path, output: Path, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write the report of the timeline ``trace`` to ``output``, saying where on ``out``; the exit status."""
    from tracedfutures._cli import report_data, report_page, timeline_reader

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    began = time.perf_counter()
    try:
        timeline = timeline_reader.read(trace)
    except timeline_reader.TimelineError as exc:
        print(f"tracedfutures report: {exc}", file=err)
        return EXIT_FAILED
    data = report_data.report_data(timeline, trace.name)
    page = report_page.render(data)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"tracedfutures report: cannot write {output}: {exc.strerror or exc}", file=err)
        return EXIT_FAILED
    took = time.perf_counter() - began
    cut = "" if timeline.complete else ", cut short: the program was killed or ended abruptly"
    tasks = data["summary"]["tasks"]
    print(f"wrote {output} ({tasks:,} tasks, {len(page) / 1e6:.1f} MB, {took:.1f} s{cut})", file=out)
    if not timeline.tasks and not timeline.blocked:
        print(
            f"tracedfutures report: {trace} holds no task and no wait / as_completed call of a tracedfutures timeline"
            " (tracedfutures record or tracedfutures.timeline.TimelineWriter writes them)",
            file=err,
        )
    return 0
