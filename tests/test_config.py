"""configure() changes only the options it is given; reset_defaults() puts every default back."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracedfutures
from tracedfutures import _config, spans
from tracedfutures.metrics import DEFAULT_BUCKETS


def test_configure_keeps_the_options_it_is_not_given() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    try:
        tracedfutures.configure(tracer_provider=provider, record_exception_messages=False)
        tracedfutures.configure(registry=registry)
        tracedfutures.configure(buckets=[0.5, 2])
        assert _config.defaults() == _config.Defaults(provider, registry, (0.5, 2.0), False)
        assert spans.record_exception_messages is False
        tracedfutures.wait([])  # recorded with both: the span to the provider, the sample to the registry
        assert [span.name for span in exporter.get_finished_spans()] == ["futures.wait"]
        labels = {"return_when": "ALL_COMPLETED", "timed_out": "false"}
        assert registry.get_sample_value("futures_wait_seconds_count", labels) == 1
        assert registry.get_sample_value("futures_wait_seconds_bucket", {**labels, "le": "0.5"}) == 1
    finally:
        tracedfutures.reset_defaults()
    assert _config.defaults() == _config.Defaults(None, None, DEFAULT_BUCKETS, True)
    assert spans.record_exception_messages is True
    tracedfutures.wait([])
    assert len(exporter.get_finished_spans()) == 1  # the provider is no longer the default
    assert registry.get_sample_value("futures_wait_seconds_count", labels) == 1
