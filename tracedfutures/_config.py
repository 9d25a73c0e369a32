"""The process-wide defaults that ``configure()`` sets, the checks of every option, and the tracer and metrics
backend that executors, ``wait`` / ``as_completed`` and the instrumentor resolve their options to.

Executors given their own ``tracer_provider=`` / ``meter_provider=`` / ``registry=`` use those; everything else (and
every ``wait`` / ``as_completed`` call) uses the defaults, else the global tracer provider, the global meter
provider (when one is set) and prometheus_client's ``REGISTRY``.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Tracer, TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures._state import state
from tracedfutures.metrics import DEFAULT_BUCKETS, MetricsBackend, backend_for, validate_buckets
from tracedfutures.spans import get_tracer


@dataclass(frozen=True)
class Defaults:
    """The process-wide defaults: each option ``configure()`` takes, with its built-in value where not set."""

    tracer_provider: TracerProvider | None
    registry: CollectorRegistry | None
    buckets: tuple[float, ...]
    record_exception_messages: bool = True
    meter_provider: MeterProvider | None = None


@dataclass(frozen=True)
class Options:
    """Options given to ``configure()`` or to the instrumentor, checked: None where one was not given."""

    tracer_provider: TracerProvider | None = None
    registry: CollectorRegistry | None = None
    buckets: tuple[float, ...] | None = None
    record_exception_messages: bool | None = None
    meter_provider: MeterProvider | None = None


class Unchanged(enum.Enum):
    """The default of ``configure()``'s ``record_exception_messages``: the setting stays as it is (``None`` is
    refused, as every value that is not a bool)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
_BUILT_IN = Defaults(None, None, DEFAULT_BUCKETS)
_defaults = _BUILT_IN


def update(given: Options) -> None:
    """Change the defaults that ``given`` has (the others stay as they are)."""
    with state.config_lock:
        current = _defaults
        _replace(
            Defaults(
                current.tracer_provider if given.tracer_provider is None else given.tracer_provider,
                current.registry if given.registry is None else given.registry,
                current.buckets if given.buckets is None else given.buckets,
                current.record_exception_messages
                if given.record_exception_messages is None
                else given.record_exception_messages,
                current.meter_provider if given.meter_provider is None else given.meter_provider,
            )
        )


def reset() -> None:
    """Every default back to its built-in value."""
    with state.config_lock:
        _replace(_BUILT_IN)


def _replace(defaults: Defaults) -> None:
    """Make ``defaults`` the current ones (under ``state.config_lock``)."""
    global _defaults
    _defaults = defaults
    state.record_exception_messages = defaults.record_exception_messages  # what the span side reads


def checked_options(
    tracer_provider: object = None,
    registry: object = None,
    buckets: Iterable[float] | None = None,
    record_exception_messages: object = UNCHANGED,
    meter_provider: object = None,
) -> Options:
    """The options of ``configure()`` or of the instrumentor, refused (``TypeError``, ``ValueError``) where
    they could only fail later."""
    check_options(tracer_provider, registry, meter_provider)
    if not isinstance(record_exception_messages, (bool, Unchanged)):
        raise TypeError(f"record_exception_messages must be True or False, got {record_exception_messages!r}")
    return Options(
        tracer_provider,  # type: ignore[arg-type]  # checked above
        registry,  # type: ignore[arg-type]
        None if buckets is None else validate_buckets(buckets),
        None if isinstance(record_exception_messages, Unchanged) else record_exception_messages,
        meter_provider,  # type: ignore[arg-type]
    )


def check_options(tracer_provider: object, registry: object, meter_provider: object = None) -> None:
    """Refuse, where they are given, a tracer provider, a meter provider or a registry that could only fail
    later."""
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {type(registry).__qualname__}")
    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
        raise TypeError(
            f"tracer_provider must be an OpenTelemetry TracerProvider, got {type(tracer_provider).__qualname__}"
        )
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(
            f"meter_provider must be an OpenTelemetry MeterProvider, got {type(meter_provider).__qualname__}"
        )


def defaults() -> Defaults:
    """The current defaults."""
    return _defaults


class Resolver:
    """The tracer and metrics backend to record with for some options, each option from the defaults where it
    was not given; resolved again only once ``configure()`` has changed the defaults."""

    __slots__ = ("_resolved", "options")

    def __init__(self, options: Options) -> None:
        self.options = options
        self._resolved: tuple[Defaults, tuple[Tracer, MetricsBackend | None]] | None = None

    def __call__(self) -> tuple[Tracer, MetricsBackend | None]:
        current = _defaults
        resolved = self._resolved
        if resolved is None or resolved[0] is not current:  # one read of one tuple: no lock
            resolved = self._resolved = (current, _resolve(self.options, current))
        return resolved[1]


def _resolve(options: Options, defaults: Defaults) -> tuple[Tracer, MetricsBackend | None]:
    """The tracer and backend of ``options``, each option from ``defaults`` where not given."""
    tracer_provider = options.tracer_provider if options.tracer_provider is not None else defaults.tracer_provider
    registry = options.registry if options.registry is not None else defaults.registry
    buckets = options.buckets if options.buckets is not None else defaults.buckets
    backend = backend_for(registry, buckets)
    if backend is not None:
        meter_provider = options.meter_provider if options.meter_provider is not None else defaults.meter_provider
        _export_metrics(meter_provider if meter_provider is not None else otel_metrics.get_meter_provider(), backend)
    return get_tracer(tracer_provider), backend


def _export_metrics(meter_provider: MeterProvider, backend: MetricsBackend) -> None:
    """Export ``backend``'s metrics through ``meter_provider`` too: only an SDK provider can (the global one is a
    proxy until a program or ``opentelemetry-instrument`` sets one), and only once the SDK has been imported."""
    if "opentelemetry.sdk.metrics" in sys.modules:
        from tracedfutures._otel_metrics import export

        export(meter_provider, backend)


_DEFAULTS = Resolver(Options())


def tracer_and_backend(options: Options | None = None) -> tuple[Tracer, MetricsBackend | None]:
    """The tracer and metrics backend to record with: each option from ``options`` where given, else from the
    defaults."""
    if options is None or (
        options.tracer_provider is None
        and options.registry is None
        and options.buckets is None
        and options.meter_provider is None
    ):
        return _DEFAULTS()
    return _resolve(options, _defaults)
