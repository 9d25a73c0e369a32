"""The tracedfutures demo: a mixed workload on a thread pool and a process pool, served on /metrics.

It runs tasks that succeed, fail and get cancelled, waits that time out and an as_completed loop, then prints
what tracedfutures recorded (from the Prometheus registry and the finished spans), writes the run's timeline
(``--timeline``, the Chrome Trace Event Format: open it in ui.perfetto.dev) and its self-contained HTML report
(``--report``, made by ``tracedfutures report``), says where they are, and serves ``/metrics`` and ``/tasks`` on
127.0.0.1 until ``--serve`` seconds have passed. No external server is needed; with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (Jaeger: ``http://localhost:4318``) the traces also go there over OTLP.

    python examples/demo.py [--port 9464] [--serve 0] [--tasks 200] [--timeline demo-output/timeline.json]
        [--report demo-output/report.html]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracedfutures
from tracedfutures.timeline import TimelineWriter


class PaymentDeclined(Exception):
    """A business error some tasks raise."""


def resize(size: int) -> int:
    """A short CPU-bound task; every 10th one fails."""
    if size % 10 == 7:
        raise PaymentDeclined(f"declined {size}")
    return sum(i * i for i in range(size * 100))


def fetch(delay: float) -> float:
    """An I/O-like task that sleeps; a few raise a built-in error."""
    time.sleep(delay)
    if delay > 0.045:
        raise TimeoutError("upstream too slow")
    return delay


def run_workload(tasks: int, registry: CollectorRegistry, provider: TracerProvider) -> None:
    tracer = provider.get_tracer("demo")
    rng = random.Random(7)
    with (
        tracer.start_as_current_span("demo workload"),
        tracedfutures.TracedThreadPoolExecutor(4, thread_name_prefix="io", registry=registry) as io,
        tracedfutures.TracedProcessPoolExecutor(2, name="cpu", registry=registry) as cpu,
    ):
        # A burst of I/O tasks, some failing; a wait that times out before they are all done.
        fetches = [io.submit(fetch, rng.uniform(0.001, 0.05)) for _ in range(tasks)]
        tracedfutures.wait(fetches, timeout=0.05)
        # Cancel what has not started yet of a second burst, behind a gate that blocks the workers.
        gate = threading.Event()
        blockers = [io.submit(gate.wait) for _ in range(4)]
        queued = [io.submit(fetch, 0.001) for _ in range(10)]
        cancelled = sum(f.cancel() for f in queued)
        gate.set()
        tracedfutures.wait(blockers + queued)
        # CPU work in worker processes, consumed as it completes; one as_completed times out on a slow task.
        resizes = [cpu.submit(resize, size) for size in range(tasks // 4)]
        for future in tracedfutures.as_completed(resizes):
            future.exception()
        slow = io.submit(time.sleep, 0.2)
        try:
            for _ in tracedfutures.as_completed([slow], timeout=0.01):
                pass
        except cf.TimeoutError:
            pass
        tracedfutures.wait([*fetches, slow], return_when=cf.ALL_COMPLETED)
        # A refused transition, counted rather than hidden.
        with contextlib.suppress(cf.InvalidStateError):
            resizes[0].set_result(0)
        print(f"cancelled {cancelled} queued tasks")


def summary(registry: CollectorRegistry, spans: tuple[ReadableSpan, ...]) -> str:
    lines = ["", "What tracedfutures recorded", "---------------------------"]
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.value and sample.name in (
                "executor_tasks_submitted_total",
                "executor_tasks_completed_total",
                "executor_invalid_transitions_total",
                "futures_wait_seconds_count",
                "futures_as_completed_seconds_count",
            ):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                lines.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    names = Counter(span.name for span in spans)
    lines.append("")
    lines.append(f"{len(spans)} spans: " + ", ".join(f"{n} x{c}" for n, c in names.most_common()))
    errors = sum(1 for s in spans if not s.status.is_ok)
    lines.append(f"{errors} spans with status ERROR")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9464, help="port of /metrics on 127.0.0.1 (0: don't serve)")
    parser.add_argument("--serve", type=float, default=0.0, help="seconds to keep serving /metrics afterwards")
    parser.add_argument("--tasks", type=int, default=200, help="I/O tasks in the workload")
    parser.add_argument(
        "--timeline", default="demo-output/timeline.json", help="where to write the run's timeline ('': nowhere)"
    )
    parser.add_argument(
        "--report", default="demo-output/report.html", help="where to write the timeline's HTML report ('': nowhere)"
    )
    args = parser.parse_args()

    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()  # what the summary at the end reads
    otlp = None
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        # Configured the standard way (OTEL_EXPORTER_OTLP_ENDPOINT / _PROTOCOL, OTEL_SERVICE_NAME, ...): to Jaeger.
        otlp = tracedfutures.tracing.export_settings()
        provider = tracedfutures.setup_tracing(os.environ.get("OTEL_SERVICE_NAME") or "tracedfutures-demo")
        print(f"sending traces over OTLP {otlp.protocol} to {otlp.endpoint}")
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": "tracedfutures-demo"}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    timeline = None
    if args.timeline:
        os.makedirs(os.path.dirname(os.path.abspath(args.timeline)), exist_ok=True)
        timeline = TimelineWriter(args.timeline)
        provider.add_span_processor(timeline)
    tracedfutures.configure(tracer_provider=provider, registry=registry)
    if args.port:
        tracedfutures.start_http_server(args.port, registry=registry)
        print(f"serving metrics on http://127.0.0.1:{args.port}/metrics")

    started = time.monotonic()
    run_workload(args.tasks, registry, provider)
    print(f"workload done in {time.monotonic() - started:.2f}s")
    print(summary(registry, exporter.get_finished_spans()))
    if timeline is not None:
        timeline.shutdown()  # the file is complete
        path = os.path.abspath(args.timeline)
        print(f"\ntimeline: {path} ({timeline.drawn} tasks and calls; open it in https://ui.perfetto.dev)")
        if args.report:  # the command a user runs: tracedfutures report TIMELINE -o REPORT
            command = [sys.executable, "-m", "tracedfutures", "report", path, "-o", os.path.abspath(args.report)]
            made = subprocess.run(command, capture_output=True, text=True, check=False)
            print(f"report: {os.path.abspath(args.report)} (open it in a browser)" if made.returncode == 0 else
                  f"report: not written: {made.stderr.strip()}")  # fmt: skip
    if otlp is not None:
        provider.force_flush()
        roots = [s for s in exporter.get_finished_spans() if s.parent is None and s.name == "demo workload"]
        service = provider.resource.attributes.get("service.name")
        host = urlparse(otlp.endpoint).hostname or "localhost"
        print(f"\ntraces: OTLP {otlp.protocol} to {otlp.endpoint}, service.name {service!r}", end="")
        print(" (failed exports are logged)")
        for root in roots:
            print(f"the demo's trace in Jaeger: http://{host}:16686/trace/{root.context.trace_id:032x}")
    if args.port and args.serve:
        print(f"\nserving /metrics for {args.serve:g}s more")
        time.sleep(args.serve)


if __name__ == "__main__":
    main()
