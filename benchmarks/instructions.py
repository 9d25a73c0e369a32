#!/usr/bin/env python
"""Instructions per task and per call, counted by valgrind: the cost of tracedfutures without the machine's noise.

Usage::

    python benchmarks/instructions.py [--cases a,b] [--json out.json]

Wall-clock ratios (``run.py``) move by 10% and more from run to run on a shared machine; instruction counts do
not. Each case runs one thread that does everything: it submits tasks to a thread pool whose worker threads are
never started, runs the queued work items itself, then reads every result (the stdlib's own ``submit``,
``_WorkItem.run`` and ``result``, without the thread hand-offs); the span processor is a ``SimpleSpanProcessor``,
so no export thread runs either. ``valgrind --tool=callgrind`` counts the instructions of a child process at two
sizes (address randomisation off, a fixed hash seed) and the difference, divided by the difference in size, is
the cost of one task (or call), whatever the interpreter's start-up costs. Ratios are against the bare stdlib
(``bare``), counted the same way.

What the counts leave out is what the wall-clock benchmarks are for: the threads' contention for the GIL, the
cyclic garbage collector's passes over a deep queue, and cache misses.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402  (benchmarks/run.py: tasks and telemetry set-ups)
from opentelemetry import trace  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

import tracedfutures  # noqa: E402

WAIT_FUTURES = 10_000


def _exporting_provider() -> Any:
    """An SDK provider that exports each span in the ending thread (no export thread to count)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(run.CountingExporter()))
    return provider


def _inline(executor: cf.ThreadPoolExecutor) -> cf.ThreadPoolExecutor:
    """``executor`` with no worker thread: its work items wait in its queue for ``_run_queued``."""
    executor._adjust_thread_count = lambda: None  # type: ignore[method-assign]
    return executor


def _run_queued(executor: cf.ThreadPoolExecutor) -> None:
    queue = executor._work_queue
    make_context = getattr(executor, "_create_worker_context", None)  # 3.14: work items run in a worker context
    if make_context is None:
        while not queue.empty():
            queue.get_nowait().run()
        return
    context = make_context()
    context.initialize()
    try:
        while not queue.empty():
            queue.get_nowait().run(context)
    finally:
        context.finalize()


def _meters() -> tuple[Any, Callable[[], object]]:
    """An SDK MeterProvider with an in-memory reader, and its collection."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return MeterProvider([reader]), reader.get_metrics_data


def tasks(mode: str, n: int) -> None:
    """Submit ``n`` no-op tasks, run them, read their results: ``bare`` (stdlib), ``metrics`` (no tracer),
    ``metrics_both`` (no tracer, an OpenTelemetry MeterProvider too), ``instrumented`` (no tracer, the stock pool
    under the instrumentor), ``unsampled`` / ``sampled`` (SDK provider, such a parent), ``floor`` (stdlib + one
    bare SDK span per task). The metrics cases end with one scrape (and
    one OpenTelemetry collection): a cost per collection, not per task, so the two sizes' difference drops it."""
    tracer_provider = _exporting_provider() if mode in ("unsampled", "sampled", "floor") else None
    meter_provider, collect = _meters() if mode == "metrics_both" else (None, None)
    registry = CollectorRegistry()
    parent = run._parent(mode != "unsampled")
    with run.attached(parent):
        if mode == "bare":
            pool = _inline(cf.ThreadPoolExecutor(1))
            executor: cf.Executor = pool
        elif mode == "floor":
            pool = _inline(cf.ThreadPoolExecutor(1))
            executor = run.SpanPerTask(pool, tracer_provider.get_tracer("benchmarks.floor"))
        elif mode == "instrumented":
            tracedfutures.ConcurrentFuturesInstrumentor().instrument(
                tracer_provider=trace.NoOpTracerProvider(), registry=registry
            )
            pool = executor = _inline(cf.ThreadPoolExecutor(1))
        else:
            provider = tracer_provider if tracer_provider is not None else trace.NoOpTracerProvider()
            pool = executor = _inline(
                tracedfutures.TracedThreadPoolExecutor(
                    1, tracer_provider=provider, registry=registry, meter_provider=meter_provider
                )
            )
        futures = [executor.submit(run.noop) for _ in range(n)]
        _run_queued(pool)
        for future in futures:
            future.result()
    if mode in ("metrics", "metrics_both", "instrumented"):
        generate_latest(registry)
    if collect is not None:
        collect()


def waits(mode: str, n: int) -> None:
    """``n`` calls of ``wait(FIRST_COMPLETED)`` or of a whole ``as_completed`` over 10,000 finished traced futures
    (sampled task spans, sampled wait spans): ``wait_bare``, ``wait``, ``as_completed_bare``, ``as_completed``."""
    provider = _exporting_provider()
    with run.attached(run._parent(True)):
        pool = _inline(
            tracedfutures.TracedThreadPoolExecutor(1, tracer_provider=provider, registry=CollectorRegistry())
        )
        futures = [pool.submit(run.noop) for _ in range(WAIT_FUTURES)]
        _run_queued(pool)
        tracedfutures.configure(tracer_provider=provider, registry=CollectorRegistry())
        calls: dict[str, Callable[[], object]] = {
            "wait_bare": lambda: cf.wait(futures, return_when=cf.FIRST_COMPLETED),
            "wait": lambda: tracedfutures.wait(futures, return_when=cf.FIRST_COMPLETED),
            "as_completed_bare": lambda: list(cf.as_completed(futures)),
            "as_completed": lambda: list(tracedfutures.as_completed(futures)),
        }
        call = calls[mode]
        for _ in range(n):
            call()


#: case -> (child function, the bare mode it is compared with, small size, large size, unit)
CASES: dict[str, tuple[Callable[[str, int], None], str, int, int, str]] = {
    "bare": (tasks, "bare", 2_000, 6_000, "task"),
    "metrics": (tasks, "bare", 2_000, 6_000, "task"),
    "metrics_both": (tasks, "bare", 2_000, 6_000, "task"),
    "instrumented": (tasks, "bare", 2_000, 6_000, "task"),
    "unsampled": (tasks, "bare", 2_000, 6_000, "task"),
    "sampled": (tasks, "bare", 2_000, 6_000, "task"),
    "floor": (tasks, "bare", 2_000, 6_000, "task"),
    "wait_bare": (waits, "wait_bare", 2, 6, "call"),
    "wait": (waits, "wait_bare", 2, 6, "call"),
    "as_completed_bare": (waits, "as_completed_bare", 1, 3, "call"),
    "as_completed": (waits, "as_completed_bare", 1, 3, "call"),
}
NOTES = {
    "metrics": "no tracer provider",
    "metrics_both": "no tracer provider, Prometheus and an OpenTelemetry MeterProvider",
    "instrumented": "no tracer provider, the stock pool under the instrumentor",
    "unsampled": "SDK provider, unsampled parent",
    "sampled": "SDK provider, every span sampled and exported",
    "floor": "stdlib + one bare SDK span per task, submit to done callback",
    "wait": "wait(FIRST_COMPLETED), 10,000 finished futures",
    "as_completed": "as_completed, 10,000 finished futures",
}


def count(case: str, size: int) -> int:
    """Instructions callgrind counts for a child process running ``case`` at ``size``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, os.path.abspath(__file__), "--child", case, str(size)]
    if shutil.which("setarch"):
        command = ["setarch", platform.machine(), "-R", *command]  # same addresses, same set orders, every run
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"{case} at {size} failed:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_item(cases: Sequence[str]) -> dict[str, float]:
    """Instructions per task (or call) of each case: its two child processes run side by side, one per core."""
    sizes = [(case, size) for case in cases for size in CASES[case][2:4]]
    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(zip(sizes, pool.map(lambda job: count(*job), sizes)))
    return {
        case: (counts[case, large] - counts[case, small]) / (large - small)
        for case in cases
        for small, large in [CASES[case][2:4]]
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, size = args.child
        CASES[case][0](case, int(size))
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()] or list(CASES)
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(f"python {platform.python_version()}, instructions per task or call (callgrind)", flush=True)
    counted = per_item(list(dict.fromkeys(name for case in chosen for name in (CASES[case][1], case))))
    rows = []
    for case in chosen:
        baseline = CASES[case][1]
        ratio = counted[case] / counted[baseline]
        rows.append({"case": case, "unit": CASES[case][4], "instructions": round(counted[case]), "ratio": ratio})
        print(
            f"  {case:18s} {counted[case]:>14,.0f} per {CASES[case][4]:4s}  {ratio:5.2f}x {baseline}"
            f"  {NOTES.get(case, '')}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
