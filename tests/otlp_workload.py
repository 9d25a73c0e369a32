"""The program the OTLP receiver tests run and export, configured only by OTEL_* environment variables.

    python tests/otlp_workload.py --setup helper --parts thread,fork,forkserver,spawn,loky,dask
    opentelemetry-instrument python tests/otlp_workload.py --setup instrument --parts thread,fork,loky,dask,joblib

One ``workload`` span over, for each part, a task that starts spans where it runs (``traced_work(n)``, n the
part's index) and one that fails inside a span of its own (``failing_work``). ``--setup helper`` calls
``tracedfutures.setup_tracing()`` and wraps each executor with ``traced()``; ``--setup instrument`` relies on
``opentelemetry-instrument`` (the SDK's auto-configuration and our entry point), with the executors as they come:
stock pools, loky's reusable executor, Dask's ``Client.get_executor()``, and ``joblib.Parallel`` on its default
backend (``joblib``, instrument only: one ``Parallel`` call a task, each a batch of one call). Prints the results as one
JSON line, then ``END <time>`` when the program is done and only the exit (the exporter's flush) is left.
With ``--pause-after N`` it also prints ``PAUSED`` after N parts (their spans flushed) and waits for a line on
stdin before going on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from opentelemetry import trace
from workersupport import WorkError, failing_work, traced_work

import tracedfutures

PARTS = ("thread", "fork", "forkserver", "spawn", "loky", "dask", "joblib")


def run_part(executor: Executor, n: int) -> list[Any]:
    work = executor.submit(traced_work, n)
    failing = executor.submit(failing_work)
    error = failing.exception(60)
    return [work.result(60)[0] > 0, type(error).__name__ if isinstance(error, WorkError) else repr(error)]


def part(name: str, n: int, setup: str) -> list[Any]:
    stock = setup == "instrument"  # the stdlib pools are traced by the instrumentor, with no code change
    if name == "thread":
        with ThreadPoolExecutor(2, thread_name_prefix="thread") as pool:
            return run_part(pool if stock else tracedfutures.traced(pool), n)
    if name in ("fork", "forkserver", "spawn"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(name)) as pool:
            return run_part(pool if stock else tracedfutures.traced(pool, name), n)
    if name == "loky":
        import loky

        executor: Executor = loky.get_reusable_executor(max_workers=1)
        return run_part(executor if stock else tracedfutures.traced(executor, "loky"), n)
    if name == "dask":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            executor = client.get_executor()
            return run_part(executor if stock else tracedfutures.traced(executor, "dask"), n)
    if name == "joblib" and stock:
        return run_joblib(n)
    raise SystemExit(f"unknown part {name!r}")


def run_joblib(n: int) -> list[Any]:
    """``run_part``'s two tasks, each a ``joblib.Parallel`` call of one call (a batch of one)."""
    import joblib

    (work,) = joblib.Parallel(n_jobs=2)([joblib.delayed(traced_work)(n)])
    try:
        joblib.Parallel(n_jobs=2)([joblib.delayed(failing_work)()])
        error: BaseException | None = None
    except WorkError as exc:
        error = exc
    return [work[0] > 0, type(error).__name__ if isinstance(error, WorkError) else repr(error)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", choices=["helper", "instrument"], required=True)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--pause-after", type=int, default=0)
    args = parser.parse_args()
    if args.setup == "helper":
        tracedfutures.setup_tracing()
    names = args.parts.split(",")
    results = {}
    with trace.get_tracer("workload").start_as_current_span("workload"):
        for index, name in enumerate(names):
            if args.pause_after and index == args.pause_after:
                trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
                print("PAUSED", flush=True)
                sys.stdin.readline()
            results[name] = part(name, PARTS.index(name), args.setup)
    print(json.dumps(results), flush=True)
    print("END", time.time(), flush=True)


if __name__ == "__main__":
    main()
