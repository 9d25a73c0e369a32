"""Stress for free-threaded builds (3.14t, 3.15t): every piece of state tracedfutures shares between threads,
used from many threads at once, with exact counts afterwards. It prints ``sys._is_gil_enabled()``, so a run says
whether it really ran without the GIL; on a build with the GIL the same invariants hold and it passes too.
Exits non-zero on any miscount. Usage: python tests/stress/free_threaded.py [TASKS]

What it covers (docs/python-versions.md lists the state and how each piece stays exact):
- the per-thread task counts, the ended-thread fold and scrapes running meanwhile (the load workload);
- the first read of a future's result from many threads at once: one result lag per future, no more;
- an executor shut down from several threads at once while it is dropped: its capacity leaves once;
- the capped error-type labels, filled from many threads at once: exactly the cap, then ``other``;
- the span-name cache of an executor, filled with many functions from many threads at once.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadsupport import check_load, run_load
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from support import square

import tracedfutures
from tracedfutures.metrics import MAX_ERROR_TYPES

THREADS = 16


def together(count: int, target: Any) -> None:
    """Run ``target(i)`` in ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def first_reads(registry: CollectorRegistry) -> int:
    with tracedfutures.TracedThreadPoolExecutor(4, name="reads", registry=registry) as pool:
        futures = [pool.submit(square, i) for i in range(2000)]
        tracedfutures.wait(futures)
        together(THREADS, lambda _: [f.result() for f in futures])
    count = registry.get_sample_value("futures_result_lag_seconds_count", {"executor": "reads"})
    assert count == len(futures), f"result lag counted {count} times for {len(futures)} futures"
    return len(futures)


def capacities(registry: CollectorRegistry) -> int:
    pools = [tracedfutures.traced(ThreadPoolExecutor(3), "capacity", registry=registry) for _ in range(200)]
    assert registry.get_sample_value("executor_max_workers", {"executor": "capacity"}) == 600

    def shut_down(_: int) -> None:
        for pool in pools:
            pool.shutdown()

    together(4, shut_down)
    pools.clear()
    gc.collect()
    workers = registry.get_sample_value("executor_max_workers", {"executor": "capacity"})
    assert workers == 0, f"capacity left after 200 pools shut down from 4 threads: {workers}"
    return 200


def error_labels(registry: CollectorRegistry) -> int:
    classes = [type(f"Error{i:02d}", (Exception,), {"__module__": "stress"}) for i in range(2 * MAX_ERROR_TYPES)]

    def raiser(cls: type[Exception]) -> None:
        raise cls()

    with tracedfutures.TracedThreadPoolExecutor(8, name="errors", registry=registry) as pool:
        futures: list[Future[Any]] = []
        lock = threading.Lock()

        def submit(index: int) -> None:
            mine = [pool.submit(raiser, classes[(index + i) % len(classes)]) for i in range(200)]
            with lock:
                futures.extend(mine)

        together(THREADS, submit)
        tracedfutures.wait(futures)
    labels: Counter[str] = Counter()
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "executor_tasks_completed_total" and sample.labels["outcome"] == "error":
                labels[sample.labels["error_type"]] += int(sample.value)
    named = [label for label in labels if label != "other"]
    assert len(named) == MAX_ERROR_TYPES, f"{len(named)} error types kept, the cap is {MAX_ERROR_TYPES}"
    assert sum(labels.values()) == len(futures) == THREADS * 200, labels
    return len(futures)


def span_names() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    functions = []
    for i in range(300):
        namespace: dict[str, Any] = {}
        exec(f"def task_{i}():\n    return {i}", namespace)  # distinct functions, names known
        functions.append(namespace[f"task_{i}"])
    with tracedfutures.TracedThreadPoolExecutor(4, name="names", tracer_provider=provider) as pool:
        together(THREADS, lambda index: [pool.submit(fn).result() for fn in functions[index % 2 :: 2]])
    names = Counter(span.name for span in exporter.get_finished_spans())
    expected = Counter({f"names task_{i}": THREADS // 2 for i in range(300)})  # each by half of the threads
    assert names == expected, (names - expected) + (expected - names)
    return sum(names.values())


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"free-threaded stress: Python {sys.version.split()[0]}, GIL enabled: {gil}, {THREADS} threads")
    start = time.perf_counter()
    result = run_load(total, threads=THREADS)
    check_load(result, total)
    print(f"  load: {total} tasks, every counter exact, gauges 0 ({result['seconds']:.1f} s)")
    registry = CollectorRegistry()
    print(f"  first reads: {first_reads(registry)} futures read by {THREADS} threads at once, one lag each")
    print(f"  capacity: {capacities(registry)} pools shut down from 4 threads at once, max_workers back to 0")
    print(f"  error types: {error_labels(registry)} failures of {2 * MAX_ERROR_TYPES} classes, {MAX_ERROR_TYPES} kept")
    print(f"  span names: {span_names()} spans of 300 functions named exactly")
    print(f"free-threaded stress: passed in {time.perf_counter() - start:.1f} s (GIL enabled: {gil})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
