"""``configure()`` and ``reset_defaults()``: the process-wide defaults of tracedfutures.

Executors given their own ``tracer_provider=`` / ``meter_provider=`` / ``registry=`` use those; everything else (and
every ``wait`` / ``as_completed`` call) uses what ``configure()`` set, else the global tracer provider, the global
meter provider (once one is set) and prometheus_client's ``REGISTRY``. Each ``configure()`` changes only the options
it is given; ``reset_defaults()`` puts all back.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures import _config
from tracedfutures._config import UNCHANGED, Unchanged

__all__ = ["configure", "reset_defaults"]


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    buckets: Iterable[float] | None = None,
    record_exception_messages: bool | Unchanged = UNCHANGED,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Change the process-wide defaults that are given; those left out stay as they are (``reset_defaults()``
    puts every one back). Bad values raise ``TypeError`` / ``ValueError`` here, not when a task runs, and change
    nothing.

    Buckets apply to metrics first created after this call: configure before creating executors.
    ``record_exception_messages=False`` keeps exception messages (which may carry task data) out of the
    ``exception`` event of failed task spans, from now on: the event keeps the exception's type and frames.
    ``meter_provider`` (an OpenTelemetry SDK ``MeterProvider``) also exports the metrics under OpenTelemetry names
    through its readers (see docs/opentelemetry-metrics.md), for executors created afterwards.
    """
    options = _config.checked_options(tracer_provider, registry, buckets, record_exception_messages, meter_provider)
    _config.update(options)


def reset_defaults() -> None:
    """Put every process-wide default back: the global tracer and meter providers, prometheus_client's ``REGISTRY``,
    ``DEFAULT_BUCKETS``, and exception messages recorded."""
    _config.reset()
