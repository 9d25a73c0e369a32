#!/usr/bin/env python
"""Instructions per task and per call, counted by valgrind: the cost of tracedfutures without the machine's noise.

Usage::

    python benchmarks/instructions.py [--cases a,b] [--json out.json]
    python benchmarks/instructions.py --check        # the gate: every row of budgets.toml, exit 1 over budget

Wall-clock ratios (``run.py``) move by 10% and more from run to run on a shared machine; instruction counts do
not. Each thread-pool case runs one thread that does everything: it submits tasks to a thread pool whose worker
threads are never started, runs the queued work items itself, then reads every result (the stdlib's own
``submit``, ``_WorkItem.run`` and ``result``, without the thread hand-offs); the span processor is a
``SimpleSpanProcessor``, so no export thread runs either. The process-pool cases count the parent process only
(its submitting thread, the pool's manager and queue feeder threads), with the workers outside valgrind.

``valgrind --tool=callgrind`` runs a child process that sets each case up, runs a warm-up batch, then the
counted batch between two calls of ``os.getpgrp`` (callgrind dumps its counts before each: ``--dump-before``),
so the interpreter's start-up, the imports and each case's set-up are not counted; address randomisation is off
and the hash seed fixed. Cases that leave no process-wide state share a child (one start-up for several cases);
the children run side by side, one per core. Ratios are against the case's baseline (``bare``, or the plain
function's ``metrics`` for the other kinds of callable), counted the same way.

``--check`` counts the rows that ``benchmarks/budgets.toml`` gives for this Python and exits 1 when one exceeds
its budget, naming the row, its count and its budget.

What the counts leave out is what the wall-clock benchmarks are for: the threads' contention for the GIL, the
cyclic garbage collector's passes over a deep queue, and cache misses.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import functools
import gc
import glob
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402  (benchmarks/run.py: tasks and telemetry set-ups)
from opentelemetry import trace  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import tracedfutures  # noqa: E402
from tracedfutures._state import state  # noqa: E402

WAIT_FUTURES = 10_000
BUDGETS = os.path.join(HERE, "budgets.toml")
#: The C function whose calls delimit the counted batches (callgrind's --dump-before); nothing else here calls it.
MARK = "getpgrp"

Batch = Callable[[int], None]


def _exporting_provider(sampler: Any = None) -> Any:
    """An SDK provider that exports each span in the ending thread (no export thread to count)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
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


def _recording() -> Any:
    """A timeline writer to a temporary file, fed by every executor's lifecycle as ``tracedfutures record`` sets
    it up (``tracedfutures._recording.start_recording``), with its own thread stopped: the batch writes what it
    queued (``force_flush``), so that its whole cost is counted in the batch. What the writer does per step of
    time rather than per task (a counter sample a millisecond, a read of the workers' CPU every 50 ms) is done
    once a batch: under valgrind a task takes a thousand times as long, and the count would follow the clock."""
    from tracedfutures import timeline
    from tracedfutures.timeline import TimelineWriter

    timeline.COUNTER_EVERY_NS = timeline.CPU_EVERY_NS = 1 << 62
    writer = TimelineWriter(os.path.join(tempfile.mkdtemp(prefix="tf-recorded-"), "timeline.json"))
    writer._stop.set()
    state.timeline_hook = writer.lifecycle_hook
    state.timeline_call = writer.call_ended
    return writer


def _meters() -> Any:
    """An SDK MeterProvider with an in-memory reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    return MeterProvider([InMemoryMetricReader()])


class _Task:
    """A class whose bound method and instances are tasks (the ``method`` and ``callable`` cases)."""

    def run(self) -> None:
        """A no-op bound method."""

    def __call__(self) -> None:
        """A no-op callable object."""


#: The task each thread-pool case submits: a plain function unless the case is about another kind of callable.
TASKS: dict[str, Callable[[], None]] = {
    "partial": functools.partial(run.noop, 1),
    "method": _Task().run,
    "lambda": lambda: None,
    "callable": _Task(),
}


@contextmanager
def tasks(mode: str) -> Iterator[Batch]:
    """A batch of no-op tasks on a thread pool: submit them, run them, read their results. ``bare`` (stdlib),
    ``metrics`` (no tracer; ``partial``, ``method``, ``lambda``, ``callable`` the same with such a task),
    ``metrics_both`` (no tracer, an OpenTelemetry MeterProvider too), ``instrumented`` (no tracer, the stock pool
    under the instrumentor), ``recorded`` (the stock pool instrumented as ``tracedfutures record`` sets it up: a
    timeline writer fed by the lifecycle, its events written and flushed within the batch), ``unsampled`` (SDK
    provider, an unsampled parent), ``always_off`` (SDK provider whose sampler records nothing, a sampled parent),
    ``sampled`` (SDK provider, a sampled parent), ``floor`` (stdlib + one bare SDK span per task)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    tracer_provider = None
    if mode in ("unsampled", "sampled", "floor"):
        tracer_provider = _exporting_provider()
    elif mode == "always_off":
        tracer_provider = _exporting_provider(ALWAYS_OFF)
    meter_provider = _meters() if mode == "metrics_both" else None
    registry = CollectorRegistry()
    task = TASKS.get(mode, run.noop)
    flush: Callable[[], object] | None = None
    with run.attached(run._parent(mode != "unsampled")), contextlib.ExitStack() as stack:
        if mode == "bare":
            pool = _inline(cf.ThreadPoolExecutor(1))
            executor: cf.Executor = pool
        elif mode == "floor":
            pool = _inline(cf.ThreadPoolExecutor(1))
            executor = run.SpanPerTask(pool, tracer_provider.get_tracer("benchmarks.floor"))
        elif mode in ("instrumented", "recorded"):
            pool, flush = stack.enter_context(_instrumented(mode == "recorded", registry))
            executor = pool
        else:
            provider = tracer_provider if tracer_provider is not None else trace.NoOpTracerProvider()
            pool = executor = _inline(
                tracedfutures.TracedThreadPoolExecutor(
                    1, tracer_provider=provider, registry=registry, meter_provider=meter_provider
                )
            )

        def batch(n: int) -> None:
            futures = [executor.submit(task) for _ in range(n)]
            _run_queued(pool)
            for future in futures:
                future.result()
            if flush is not None:
                flush()

        yield batch


@contextmanager
def _instrumented(recorded: bool, registry: CollectorRegistry) -> Iterator[tuple[cf.ThreadPoolExecutor, Any]]:
    """The stock pool under the instrumentor, metrics only, and what ends a batch: nothing, or (``recorded``, set up
    as ``tracedfutures record`` sets it up: the global tracer provider, which no program set) the timeline's flush."""
    instrumentor = tracedfutures.ConcurrentFuturesInstrumentor()
    writer = None
    if recorded:
        writer = _recording()
        instrumentor.instrument(registry=registry)
    else:
        instrumentor.instrument(tracer_provider=trace.NoOpTracerProvider(), registry=registry)
    try:
        yield _inline(cf.ThreadPoolExecutor(1)), writer.force_flush if writer is not None else None
    finally:
        instrumentor.uninstrument()
        if writer is not None:
            writer.shutdown()
            state.timeline_hook = state.timeline_call = None


@contextmanager
def processes(mode: str) -> Iterator[Batch]:
    """A batch of no-op tasks on a process pool of 2 started workers, counted in the parent: ``process_bare``
    (stdlib), ``process`` (metrics and every span sampled and exported). The workers are started by a forkserver
    (an exec: valgrind does not follow them)."""
    context = multiprocessing.get_context("forkserver")
    if mode == "process_bare":
        pool: cf.ProcessPoolExecutor = cf.ProcessPoolExecutor(2, mp_context=context)
    else:
        pool = tracedfutures.TracedProcessPoolExecutor(
            2, mp_context=context, tracer_provider=_exporting_provider(), registry=CollectorRegistry()
        )

    def batch(n: int) -> None:
        for future in [pool.submit(run.noop) for _ in range(n)]:
            future.result()
        time.sleep(0.5)  # the manager thread done with the last result before the count ends

    with pool, run.attached(run._parent(True)):
        yield batch


@contextmanager
def waits(mode: str) -> Iterator[Batch]:
    """Calls of ``wait(FIRST_COMPLETED)`` or of a whole ``as_completed`` over 10,000 finished traced futures
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

        def batch(n: int) -> None:
            for _ in range(n):
                call()

        yield batch


@dataclass(frozen=True)
class Case:
    setup: Callable[[str], Any]  # mode -> a context manager yielding the batch
    baseline: str  # the case its ratio is against
    group: str  # cases of one group share a child process (in their order here); each group is one child
    warm_up: int
    size: int
    unit: str
    note: str = ""


#: Every case, in the order its group's child runs it.
CASES: dict[str, Case] = {
    "bare": Case(tasks, "bare", "tasks", 100, 1_000, "task"),
    "metrics": Case(tasks, "bare", "tasks", 100, 1_000, "task", "no tracer provider"),
    "metrics_both": Case(
        tasks, "bare", "instrumented", 100, 1_000, "task", "no tracer provider, Prometheus and a MeterProvider"
    ),
    "partial": Case(tasks, "metrics", "tasks", 100, 1_000, "task", "metrics only, a functools.partial task"),
    "method": Case(tasks, "metrics", "tasks", 100, 1_000, "task", "metrics only, a bound-method task"),
    "lambda": Case(tasks, "metrics", "tasks", 100, 1_000, "task", "metrics only, a lambda task"),
    "callable": Case(tasks, "metrics", "tasks", 100, 1_000, "task", "metrics only, a callable-object task"),
    "unsampled": Case(tasks, "bare", "spans", 100, 1_000, "task", "SDK provider, unsampled parent"),
    "always_off": Case(tasks, "bare", "spans", 100, 1_000, "task", "SDK provider, ALWAYS_OFF sampler"),
    "sampled": Case(tasks, "bare", "spans", 50, 500, "task", "SDK provider, every span sampled and exported"),
    "floor": Case(tasks, "bare", "spans", 50, 500, "task", "stdlib + one bare SDK span per task"),
    "instrumented": Case(
        tasks, "metrics", "instrumented", 100, 1_000, "task", "no tracer provider, the stock pool instrumented"
    ),
    "recorded": Case(
        tasks, "instrumented", "instrumented", 100, 1_000, "task", "the stock pool under tracedfutures record"
    ),
    "process_bare": Case(processes, "process_bare", "process", 50, 300, "task", "stdlib process pool, parent"),
    "process": Case(
        processes, "process_bare", "process", 50, 300, "task", "process pool, parent: metrics, every span sampled"
    ),
    "wait_bare": Case(waits, "wait_bare", "waits", 1, 4, "call"),
    "wait": Case(waits, "wait_bare", "waits", 1, 4, "call", "wait(FIRST_COMPLETED), 10,000 finished futures"),
    "as_completed_bare": Case(waits, "as_completed_bare", "waits", 1, 2, "call"),
    "as_completed": Case(waits, "as_completed_bare", "waits", 1, 2, "call", "as_completed, 10,000 finished futures"),
}


def child(cases: Sequence[str]) -> None:
    """Run ``cases`` in order, each's counted batch between two marks."""
    for case in cases:
        spec = CASES[case]
        with spec.setup(case) as batch:
            batch(spec.warm_up)
            # What the earlier cases and the set-up left is frozen out of the collector's passes: each batch's
            # collections are those of its own tasks, whatever ran before it.
            gc.collect()
            gc.freeze()
            os.getpgrp()
            batch(spec.size)
            os.getpgrp()


def count(cases: Sequence[str]) -> dict[str, int]:
    """Instructions callgrind counts in each case's counted batch, ``cases`` run in one child process."""
    with tempfile.TemporaryDirectory(prefix="tf-callgrind-") as tmp:
        out_file = os.path.join(tmp, "cg.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", f"--dump-before={MARK}"]
        command += [sys.executable, os.path.abspath(__file__), "--child", ",".join(cases)]
        if shutil.which("setarch"):
            command = ["setarch", platform.machine(), "-R", *command]  # same addresses, same set orders, every run
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        began = time.monotonic()
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if os.environ.get("TF_INSTRUCTIONS_TIMES"):
            print(f"  ({','.join(cases)}: {time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
        dumps = sorted(glob.glob(out_file + ".*"), key=lambda path: int(path.rsplit(".", 1)[1]))
        if out.returncode != 0 or len(dumps) != 2 * len(cases):
            raise RuntimeError(f"{','.join(cases)}: exit {out.returncode}, {len(dumps)} dumps:\n{out.stderr[-3000:]}")
        totals = []
        for path in dumps:
            with open(path) as f:
                found = re.search(r"^totals: (\d+)", f.read(), re.MULTILINE)
            if found is None:
                raise RuntimeError(f"no totals in {path}")
            totals.append(int(found.group(1)))
    return {case: totals[2 * i + 1] for i, case in enumerate(cases)}  # the dumps that end a counted batch


def per_item(cases: Sequence[str]) -> dict[str, float]:
    """Instructions per task (or call) of each case: one child process per group, side by side, one per core."""
    groups: dict[str, list[str]] = {}
    for case in CASES:  # CASES' order within a group, whatever the order asked
        if case in cases:
            groups.setdefault(CASES[case].group, []).append(case)
    ordered = sorted(groups.values(), key=lambda group: -sum(CASES[c].size for c in group))  # the longest first
    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts: dict[str, int] = {}
        for counted in pool.map(count, ordered):
            counts.update(counted)
    return {case: counts[case] / CASES[case].size for case in cases}


def python_key() -> str:
    return ".".join(platform.python_version_tuple()[:2])


def load_budgets() -> dict[str, dict[str, Any]]:
    """The budgets of this Python: row -> {"budget": instructions, "reason": why}."""
    import tomllib

    with open(BUDGETS, "rb") as f:
        return dict(tomllib.load(f).get(python_key(), {}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument(
        "--check", action="store_true", help=f"count the rows budgeted for this Python in {BUDGETS}; exit 1 over"
    )
    parser.add_argument("--child", metavar="CASES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child.split(","))
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")
    budgets = load_budgets() if args.check else {}
    if args.check and not budgets:
        print(f"no budgets for Python {python_key()} in {BUDGETS}", file=sys.stderr)
        return 1
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()] or list(budgets or CASES)
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(f"python {platform.python_version()}, instructions per task or call (callgrind)", flush=True)
    counted = per_item(list(dict.fromkeys(name for case in chosen for name in (CASES[case].baseline, case))))
    rows, over = report(chosen, counted, budgets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "rows": rows}, f, indent=2)
    if over:
        print(f"over budget ({BUDGETS}, Python {python_key()}):", file=sys.stderr)
        for line in over:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def report(
    chosen: Sequence[str], counted: dict[str, float], budgets: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Print a row per case; return the rows and a line for each row over its budget."""
    rows = []
    over = []
    for case in chosen:
        spec = CASES[case]
        ratio = counted[case] / counted[spec.baseline]
        budget = budgets.get(case, {}).get("budget")
        row = {"case": case, "unit": spec.unit, "instructions": round(counted[case]), "ratio": ratio}
        verdict = ""
        if budget is not None:
            row["budget"] = budget
            verdict = f"  budget {budget:>9,}" + ("  OVER" if counted[case] > budget else "")
            if counted[case] > budget:
                over.append(f"{case}: {counted[case]:,.0f} instructions per {spec.unit}, budget {budget:,}")
        rows.append(row)
        print(
            f"  {case:18s} {counted[case]:>14,.0f} per {spec.unit:4s}  {ratio:5.2f}x {spec.baseline:13s}"
            f"{verdict}  {spec.note}",
            flush=True,
        )
    return rows, over


if __name__ == "__main__":
    sys.exit(main())
