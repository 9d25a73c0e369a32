"""Process-wide defaults: the tracer provider, the Prometheus registry and the histogram buckets.

Executors given their own ``tracer_provider=`` / ``registry=`` use those; everything else (and every ``wait`` /
``as_completed`` call) uses what ``configure()`` set, else the global tracer provider and prometheus_client's
``REGISTRY``. Each ``configure()`` changes only the options it is given; ``reset_defaults()`` puts all back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.trace import Tracer, TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures._state import state
from tracedfutures.metrics import DEFAULT_BUCKETS, MetricsBackend, backend_for, validate_buckets
from tracedfutures.spans import get_tracer


@dataclass(frozen=True)
class Defaults:
    tracer_provider: TracerProvider | None
    registry: CollectorRegistry | None
    buckets: tuple[float, ...]
    record_exception_messages: bool = True


class Unchanged(enum.Enum):
    """The default of ``configure()``'s ``record_exception_messages``: the setting stays as it is (``None`` is
    refused, as every value that is not a bool)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
_BUILT_IN = Defaults(None, None, DEFAULT_BUCKETS)
_defaults = _BUILT_IN
_resolved: tuple[Tracer, MetricsBackend | None] | None = None


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    buckets: Iterable[float] | None = None,
    record_exception_messages: bool | Unchanged = UNCHANGED,
) -> None:
    """Change the process-wide defaults that are given; those left out stay as they are (``reset_defaults()``
    puts every one back). Bad values raise ``TypeError`` / ``ValueError`` here, not when a task runs, and change
    nothing.

    Buckets apply to metrics first created after this call: configure before creating executors.
    ``record_exception_messages=False`` keeps exception messages (which may carry task data) out of the
    ``exception`` event of failed task spans, from now on: the event keeps the exception's type and frames.
    """
    check_options(tracer_provider, registry)
    if not isinstance(record_exception_messages, (bool, Unchanged)):
        raise TypeError(f"record_exception_messages must be True or False, got {record_exception_messages!r}")
    bounds = None if buckets is None else validate_buckets(buckets)
    with state.config_lock:
        current = _defaults
        _replace(
            Defaults(
                current.tracer_provider if tracer_provider is None else tracer_provider,
                current.registry if registry is None else registry,
                current.buckets if bounds is None else bounds,
                current.record_exception_messages
                if isinstance(record_exception_messages, Unchanged)
                else record_exception_messages,
            )
        )


def reset_defaults() -> None:
    """Put every process-wide default back: the global tracer provider, prometheus_client's ``REGISTRY``,
    ``DEFAULT_BUCKETS``, and exception messages recorded."""
    with state.config_lock:
        _replace(_BUILT_IN)


def _replace(defaults: Defaults) -> None:
    """Make ``defaults`` the current ones (under ``state.config_lock``)."""
    global _defaults, _resolved
    _defaults = defaults
    _resolved = None
    state.record_exception_messages = defaults.record_exception_messages  # what the span side reads


def check_options(tracer_provider: object, registry: object) -> None:
    """Refuse, where they are given, a tracer provider or a registry that could only fail later."""
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {type(registry).__qualname__}")
    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
        raise TypeError(
            f"tracer_provider must be an OpenTelemetry TracerProvider, got {type(tracer_provider).__qualname__}"
        )


def defaults() -> Defaults:
    return _defaults


def tracer_and_backend(
    tracer_provider: TracerProvider | None = None, registry: CollectorRegistry | None = None
) -> tuple[Tracer, MetricsBackend | None]:
    """The tracer and metrics backend to record with, each from its argument if given, else the defaults."""
    global _resolved
    if tracer_provider is None and registry is None:
        resolved = _resolved
        if resolved is None:
            with state.config_lock:
                d = _defaults
                resolved = _resolved = (
                    get_tracer(d.tracer_provider),
                    backend_for(d.registry, d.buckets),
                )
        return resolved
    check_options(tracer_provider, registry)
    d = _defaults
    return (
        get_tracer(tracer_provider if tracer_provider is not None else d.tracer_provider),
        backend_for(registry if registry is not None else d.registry, d.buckets),
    )

