"""Process-wide defaults: the tracer provider, the Prometheus registry and the histogram buckets.

Executors given their own ``tracer_provider=`` / ``registry=`` use those; everything else (and every ``wait`` /
``as_completed`` call) uses what ``configure()`` or ``ConcurrentFuturesInstrumentor().instrument()`` set, else
the global tracer provider and prometheus_client's ``REGISTRY``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.trace import Tracer, TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures.metrics import DEFAULT_BUCKETS, MetricsBackend, collector_for, validate_buckets
from tracedfutures.spans import get_tracer


@dataclass(frozen=True)
class Defaults:
    tracer_provider: TracerProvider | None
    registry: CollectorRegistry | None
    buckets: tuple[float, ...]


_lock = threading.Lock()
_defaults = Defaults(None, None, DEFAULT_BUCKETS)
_resolved: tuple[Tracer, MetricsBackend | None] | None = None


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    buckets: Iterable[float] | None = None,
) -> None:
    """Set the process-wide defaults; arguments left out go back to the global tracer provider, ``REGISTRY``
    and ``DEFAULT_BUCKETS``. Bad buckets raise ``ValueError`` here, not when a task runs.

    Buckets apply to metrics first created after this call: configure before creating executors.
    """
    global _defaults, _resolved
    bounds = DEFAULT_BUCKETS if buckets is None else validate_buckets(buckets)
    with _lock:
        _defaults = Defaults(tracer_provider, registry, bounds)
        _resolved = None


def defaults() -> Defaults:
    return _defaults


def tracer_and_collector(
    tracer_provider: TracerProvider | None = None, registry: CollectorRegistry | None = None
) -> tuple[Tracer, MetricsBackend | None]:
    """The tracer and metrics collector to record with, each from its argument if given, else the defaults."""
    global _resolved
    if tracer_provider is None and registry is None:
        resolved = _resolved
        if resolved is None:
            with _lock:
                d = _defaults
                resolved = _resolved = (
                    get_tracer(d.tracer_provider),
                    collector_for(d.registry, d.buckets),
                )
        return resolved
    d = _defaults
    return (
        get_tracer(tracer_provider if tracer_provider is not None else d.tracer_provider),
        collector_for(registry if registry is not None else d.registry, d.buckets),
    )
