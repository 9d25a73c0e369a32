"""The program the OpenTelemetry metrics export tests run. It has no metrics code of its own:

    opentelemetry-instrument python tests/otel_metrics_workload.py --setup instrument
    python tests/otel_metrics_workload.py --setup provider

``--setup instrument`` relies on ``opentelemetry-instrument`` (the SDK's auto-configuration sets the global meter
provider from OTEL_METRICS_EXPORTER; our entry point traces the stock pools); ``--setup provider`` makes a
MeterProvider with the real OTLP exporter of OTEL_EXPORTER_OTLP_PROTOCOL and gives it to ``configure()``.

A pool of 2 threads named ``threads``: 2 tasks that hold both workers, one task cancelled behind them, 4 squares and
one failure, a ``wait`` and an ``as_completed``; a pool of 1 process named ``ProcessPoolExecutor`` for each start method
(fork, forkserver, spawn): a square and a failure. Then it prints tracedfutures' Prometheus samples (from
prometheus_client's ``REGISTRY``, where they are recorded) as one JSON line: what an OpenTelemetry export of the
same numbers must carry. With ``--hold`` it then waits for a line on stdin (to be scraped) before exiting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from prometheus_client import REGISTRY
from support import CustomError, fail, square

import tracedfutures

THREADS, PROCESSES = "threads", "ProcessPoolExecutor"  # the stock process pool's name under the instrumentor


def provider() -> Any:
    """A MeterProvider exporting with the OTLP exporter of OTEL_EXPORTER_OTLP_PROTOCOL (grpc by default)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter  # type: ignore[assignment]
    return MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())])


def pool(executor: Executor, name: str, stock: bool) -> Executor:
    return executor if stock else tracedfutures.traced(executor, name)


def work(stock: bool) -> None:
    hold = threading.Event()
    with pool(ThreadPoolExecutor(2, thread_name_prefix=THREADS), THREADS, stock) as threads:
        held = [threads.submit(hold.wait, 30) for _ in range(2)]
        cancelled = threads.submit(square, 0)
        assert cancelled.cancel()
        hold.set()
        futures = [threads.submit(square, n) for n in range(4)] + [threads.submit(fail, "x")]
        tracedfutures.wait(futures + held)
        assert len(list(tracedfutures.as_completed(futures))) == 5
        assert isinstance(futures[-1].exception(), CustomError)
    for method in ("fork", "forkserver", "spawn"):
        context = multiprocessing.get_context(method)
        with pool(ProcessPoolExecutor(1, mp_context=context), PROCESSES, stock) as processes:
            assert processes.submit(square, 3).result() == 9
            assert isinstance(processes.submit(fail, "y").exception(), CustomError)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", choices=["instrument", "provider"], required=True)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    meters = None
    if args.setup == "provider":
        meters = provider()
        tracedfutures.configure(meter_provider=meters)
    work(stock=args.setup == "instrument")
    samples = [(s.name, s.labels, s.value) for family in REGISTRY.collect() for s in family.samples
               if s.name.startswith(("executor_", "futures_"))]  # fmt: skip
    print(json.dumps(samples), flush=True)
    if args.hold:
        sys.stdin.readline()
    if meters is not None:
        meters.shutdown()  # its last export: every count of the run


if __name__ == "__main__":
    main()
