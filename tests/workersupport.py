"""Task functions that start spans where they run (a worker process, loky, a Dask worker), and the helpers the
worker-span, OTLP-receiver and context tests share. Importable by worker processes: no pytest here."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace

#: The instrumentation scope of the spans task functions start.
SCOPE = ("workersupport", "1.0")


class WorkError(Exception):
    """Raised by ``failing_work`` inside its span."""


def traced_work(n: int) -> tuple[int, int]:
    """Start ``outer`` (attribute n, an event) and ``inner`` under it with the global tracer, where this runs;
    returns (pid, the time the function started)."""
    start = time.time_ns()
    tracer = trace.get_tracer(*SCOPE)
    with tracer.start_as_current_span("outer", attributes={"n": n}) as span:
        span.add_event("step", {"i": 1})
        with tracer.start_as_current_span("inner", kind=trace.SpanKind.CLIENT):
            pass
    flush()
    return os.getpid(), start


def failing_work() -> None:
    """Fail inside a span of its own: the span records the exception, the task fails."""
    try:
        with trace.get_tracer(*SCOPE).start_as_current_span("failing"):
            raise WorkError("failed on purpose")
    finally:
        flush()


def flush() -> None:
    """Export what the worker's own tracer provider holds (one set up there: ``opentelemetry-instrument``), before
    the outcome goes home: joblib kills its workers when a call fails, and a worker exits with its pool, either way
    before its batch processor's next export. (Spans that travel home with the outcome are not held there.)"""
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(10_000)


def many_spans(count: int) -> int:
    """Start and end ``count`` spans, children of the task span."""
    tracer = trace.get_tracer(*SCOPE)
    for i in range(count):
        tracer.start_span(f"s{i}").end()
    return count


def provider_kind() -> str:
    """The class name of this process's global tracer provider."""
    return type(trace.get_tracer_provider()).__name__


def own_provider(path: str) -> None:
    """A pool initializer: the worker sets up a tracer provider of its own, exporting to a JSON-lines file."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class FileExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            with open(path, "a") as out:
                for span in spans:
                    parent = span.parent.span_id if span.parent else 0
                    out.write(json.dumps([span.name, span.context.trace_id, parent, os.getpid()]) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)


def tree(spans: Iterable[Any]) -> list[tuple[str, str | None]]:
    """Each finished SDK span as (name, its parent's name), sorted; a parent not among ``spans`` is '?'."""
    spans = list(spans)
    names = {s.context.span_id: s.name for s in spans}
    return sorted((s.name, None if s.parent is None else names.get(s.parent.span_id, "?")) for s in spans)
