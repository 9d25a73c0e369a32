"""Soak: traced tasks (default 1,000,000; the test command runs 500,000) through thread pools and a user's
executor, with failures (some never read), cancellations, wait / as_completed, and executors made and dropped all along.

Prints RSS, gc object counts and the size of every internal table at each tenth of the run, and exits non-zero
if memory or objects grow past small bounds after warm-up, if any table grows, if any executor the program
dropped is still alive, or if the counts are off. Usage: python tests/stress/soak.py [TASKS]
"""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry
from support import UserExecutor

import tracedfutures
from tracedfutures import metrics
from tracedfutures._state import state

BATCH = 1000
#: Growth allowed from the first checkpoint after warm-up to the last.
RSS_GROWTH_MB = 16.0
OBJECT_GROWTH = 5_000


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class SoakError(Exception):
    pass


def task(i: int) -> int:
    if i % 50 == 7:
        raise SoakError("failed")
    return i


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tables(registry: CollectorRegistry) -> dict[str, int]:
    """The size of every table tracedfutures keeps."""
    collector = state.collectors[registry]
    assert isinstance(collector, metrics.MetricsCollector)
    sizes = {
        "collectors": len(state.collectors),
        "executor series": len(collector.executors),
        "capacities": len(state.capacities),
        "failures logged": len(state.failures_logged),
        "finalizers": len(weakref.finalize._registry),  # type: ignore[attr-defined]
    }
    for name, stats in collector.executors.items():
        sizes[f"{name}: error labels"] = len(stats.error_label._names)
        sizes[f"{name}: completed series"] = len(stats.totals().completed)
        sizes[f"{name}: per-thread counts"] = len(stats._threads)
        sizes[f"{name}: unretrieved series"] = len(stats.unretrieved_count)
    return sizes


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16, schedule_delay_millis=50))
    registry = CollectorRegistry()
    tracedfutures.configure(tracer_provider=provider, registry=registry)
    options: dict[str, Any] = {"tracer_provider": provider, "registry": registry}
    kept = [
        tracedfutures.TracedThreadPoolExecutor(4, name="main", **options),
        tracedfutures.traced(UserExecutor(2), "user", **options),
    ]
    dropped: list[weakref.ref[Any]] = []
    submitted = cancelled = failed = 0
    checkpoints: list[tuple[int, float, int, dict[str, int]]] = []
    start = time.perf_counter()
    done = 0
    round_ = 0
    print(f"soak: {total} tasks, batches of {BATCH}")
    print(f"{'tasks':>9} {'s':>7} {'RSS MB':>8} {'gc objs':>9}  tables")
    while done < total:
        round_ += 1
        # Every round, a short-lived executor the program drops without shutdown (half of them) or after it.
        temporary: Any = (
            tracedfutures.TracedThreadPoolExecutor(2, name="temp", **options)
            if round_ % 2
            else tracedfutures.traced(ThreadPoolExecutor(2), "temp", **options)
        )
        pools = [*kept, temporary]
        futures = []
        for j in range(BATCH):
            future = pools[j % len(pools)].submit(task, done + j)
            if j % 97 == 3 and future.cancel():
                cancelled += 1
            futures.append(future)
        submitted += BATCH
        if round_ % 2:
            tracedfutures.wait(futures)
        else:
            for _ in tracedfutures.as_completed(futures):
                pass
        for j, future in enumerate(futures):
            if not future.cancelled() and j % 3 and future.exception() is not None:  # a third never read
                failed += 1
        failed += sum(1 for j, f in enumerate(futures) if not f.cancelled() and not j % 3 and f._exception)
        if round_ % 4 == 0:
            temporary.shutdown()
        dropped.append(weakref.ref(temporary))
        del temporary, pools, futures, future
        done += BATCH
        if done % (total // 10) == 0 or done >= total:
            provider.force_flush()  # spans waiting for export are not growth
            gc.collect()
            objects = len(gc.get_objects()) - len(dropped)  # less this script's own list of weak references
            checkpoints.append((done, rss_mb(), objects, tables(registry)))
            at, rss, objects, sizes = checkpoints[-1]
            print(f"{at:>9} {time.perf_counter() - start:>7.1f} {rss:>8.1f} {objects:>9}  {sizes}", flush=True)
    for pool in kept:
        pool.shutdown()
    provider.shutdown()
    elapsed = time.perf_counter() - start

    problems = []
    # Flat after warm-up: from the second checkpoint to the last.
    first, last = checkpoints[1], checkpoints[-1]
    if last[1] - first[1] > RSS_GROWTH_MB:
        problems.append(f"RSS grew {last[1] - first[1]:.1f} MB after warm-up")
    if last[2] - first[2] > OBJECT_GROWTH:
        problems.append(f"gc objects grew by {last[2] - first[2]} after warm-up")
    for key in last[3]:
        if last[3][key] > first[3].get(key, 0) and key != "failures logged":
            problems.append(f"table {key!r} grew from {first[3].get(key, 0)} to {last[3][key]}")
    deadline = time.monotonic() + 30
    while any(ref() is not None for ref in dropped) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    alive = sum(ref() is not None for ref in dropped)
    if alive:
        problems.append(f"{alive} of {len(dropped)} dropped executors still alive")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in registry.collect() for s in f.samples}
    counted = sum(v for (name, _), v in samples.items() if name == "executor_tasks_submitted_total")
    finished = sum(v for (name, _), v in samples.items() if name == "executor_tasks_completed_total")
    was_cancelled = sum(
        v for (name, labels), v in samples.items()
        if name == "executor_tasks_completed_total" and ("outcome", "cancelled") in labels
    )  # fmt: skip
    errors = sum(
        v for (name, labels), v in samples.items()
        if name == "executor_tasks_completed_total" and ("outcome", "error") in labels
    )  # fmt: skip
    gauges = [v for (name, _), v in samples.items() if name in ("executor_tasks_queued", "executor_tasks_running")]
    if (counted, finished, was_cancelled, errors) != (submitted, submitted, cancelled, failed) or any(gauges):
        seen, truth = (counted, finished, was_cancelled, errors), (submitted, submitted, cancelled, failed)
        problems.append(f"counts off: {seen} vs {truth}, gauges {gauges}")
    print(
        f"soak: {submitted} tasks in {elapsed:.1f} s ({submitted / elapsed:.0f} tasks/s), {cancelled} cancelled, "
        f"{failed} failed, {exporter.spans} spans exported, {len(dropped)} executors made and dropped; "
        f"RSS {checkpoints[0][1]:.1f} -> {first[1]:.1f} -> {last[1]:.1f} MB, "
        f"gc objects {checkpoints[0][2]} -> {first[2]} -> {last[2]}"
    )
    for problem in problems:
        print("soak: PROBLEM:", problem)
    print("soak:", "FAILED" if problems else "ok: flat memory and tables, every dropped executor collected")
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
