"""Exemplars: a sampled task span's trace and span ids ride on its queue and run observations, in the
OpenMetrics exposition only; an unsampled task leaves none."""

from __future__ import annotations

import re

from conftest import Telemetry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from support import square

import tracedfutures

EXEMPLAR = re.compile(
    r"^(executor_task_(?:queue|run)_seconds)_bucket\{([^}]*)\} \S+ "
    r'# \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\} (\S+) \S+$'
)


def exemplars(registry: CollectorRegistry) -> list[tuple[str, str, int, int, float]]:
    found = []
    for line in generate_openmetrics(registry).decode().splitlines():
        match = EXEMPLAR.match(line)
        if match:
            name, labels, span_id, trace_id, value = match.groups()
            found.append((name, labels, int(span_id, 16), int(trace_id, 16), float(value)))
    return found


def test_sampled_task_spans_become_exemplars(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread")
    assert executor.submit(square, 4).result(5) == 16
    executor.shutdown()
    (span,) = telemetry.spans()
    context = span.get_span_context()
    found = exemplars(telemetry.registry)
    assert {(name, span_id, trace_id) for name, _, span_id, trace_id, _ in found} == {
        ("executor_task_queue_seconds", context.span_id, context.trace_id),
        ("executor_task_run_seconds", context.span_id, context.trace_id),
    }
    queue = next(value for name, _, _, _, value in found if name == "executor_task_queue_seconds")
    assert queue == span.attributes["executor.task.queue_duration"]  # type: ignore[index]
    # The Prometheus text format has no exemplars.
    assert "trace_id" not in generate_latest(telemetry.registry).decode()


def test_unsampled_task_spans_leave_no_exemplar() -> None:
    registry = CollectorRegistry()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    with tracedfutures.TracedThreadPoolExecutor(1, name="quiet", tracer_provider=provider, registry=registry) as pool:
        assert pool.submit(square, 3).result(5) == 9
    assert exemplars(registry) == []
    labels = {"executor": "quiet", "function": "square", "outcome": "success"}
    run_count = registry.get_sample_value("executor_task_run_seconds_count", labels)
    assert run_count == 1
