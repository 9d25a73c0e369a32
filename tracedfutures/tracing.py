"""``setup_tracing()``: OTLP export for a script that has no OpenTelemetry set-up yet, configured the standard way.

One call makes what the OpenTelemetry SDK's auto-configuration (``opentelemetry-instrument``) makes for traces:
a ``TracerProvider`` with the resource of ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, the sampler of
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, a ``BatchSpanProcessor`` (``OTEL_BSP_*``) and the OTLP
exporter of ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf``, the default, or ``grpc``), which reads
its endpoint, headers, compression and certificates from the ``OTEL_EXPORTER_OTLP_*`` variables itself.
Samplers and exporters are found through the SDK's own entry points (``opentelemetry_traces_sampler``,
``opentelemetry_traces_exporter``), the names ``OTEL_TRACES_SAMPLER`` takes. Arguments win over the environment.

A misconfiguration (an unknown protocol or sampler, a sampler argument or timeout that is not a number, an
endpoint that is not a URL, an exporter package that is not installed) raises here, when the program starts,
rather than being logged at the first export.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

__all__ = ["ExportSettings", "export_settings", "setup_tracing"]

#: What OTEL_EXPORTER_OTLP_PROTOCOL may say, and the SDK's entry point name of the exporter for it.
_PROTOCOLS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_DEFAULT_PROTOCOL = "http/protobuf"  # the OpenTelemetry specification's default
_PACKAGES = {
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
}
_DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
_DEFAULT_TIMEOUT = 10.0  # seconds, the OTLP exporters' own default
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


@dataclass(frozen=True)
class ExportSettings:
    """Where ``setup_tracing`` sends spans: the protocol, the endpoint (as configured, or the exporter's default)
    and the exporter's timeout in seconds (per export; it also bounds the flush at exit)."""

    protocol: str
    endpoint: str
    timeout: float


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def export_settings(
    *, endpoint: str | None = None, protocol: str | None = None, timeout: float | None = None
) -> ExportSettings:
    """The protocol, endpoint and timeout ``setup_tracing`` would use with these arguments and the environment;
    raises ``ValueError`` for a protocol, endpoint or timeout the exporters would not take."""
    source = "protocol="
    if protocol is None:
        protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        source = "OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL="
    protocol = _DEFAULT_PROTOCOL if protocol is None else protocol.strip()
    if protocol not in _PROTOCOLS:
        choices = ", ".join(map(repr, _PROTOCOLS))
        raise ValueError(f"unsupported OTLP protocol {source}{protocol!r}: use one of {choices}")
    if endpoint is not None:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"endpoint={endpoint!r} is not an http:// or https:// URL such as 'http://localhost:4318'")
    else:
        configured = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint = configured or _DEFAULT_ENDPOINTS[protocol]
    if timeout is None:
        raw = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        try:
            timeout = _DEFAULT_TIMEOUT if raw is None else float(raw)
        except ValueError:
            raise ValueError(f"OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT={raw!r} is not a number of seconds") from None
    number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not number or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"the exporter timeout must be a positive number of seconds, got {timeout!r}")
    return ExportSettings(protocol, endpoint, float(timeout))


def _entry_point(group: str, name: str) -> Any:
    found = entry_points(group=group, name=name)
    for entry_point in found:
        return entry_point.load()
    return None


def _sampler(sampler: Any) -> Any:
    """The SDK sampler named by ``sampler`` (or OTEL_TRACES_SAMPLER), None for the SDK's default."""
    from opentelemetry.sdk.trace.sampling import Sampler

    if isinstance(sampler, Sampler):
        return sampler
    source = "sampler="
    if sampler is None:
        sampler = _env("OTEL_TRACES_SAMPLER")
        source = "OTEL_TRACES_SAMPLER="
        if sampler is None:
            return None
    if not isinstance(sampler, str):
        raise TypeError(f"sampler must be a sampler name or an SDK Sampler, got {type(sampler).__qualname__}")
    name = sampler.strip().lower()
    factory = _entry_point("opentelemetry_traces_sampler", name)
    if factory is None:
        known = sorted(ep.name for ep in entry_points(group="opentelemetry_traces_sampler"))
        raise ValueError(f"unknown sampler {source}{sampler!r}: use one of {', '.join(known)}")
    arg: Any = _env("OTEL_TRACES_SAMPLER_ARG")
    if name in _RATIO_SAMPLERS:
        try:
            arg = 1.0 if arg is None else float(arg)
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio for {name}") from None
        if not 0.0 <= arg <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio between 0 and 1 for {name}")
    made = factory(arg)
    if not isinstance(made, Sampler):
        raise ValueError(f"sampler {name!r} made {made!r}, which is not a Sampler")
    return made


def setup_tracing(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    sampler: Any = None,
    resource_attributes: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    set_global: bool = True,
) -> SDKTracerProvider:
    """Export this program's spans over OTLP, configured by the standard OpenTelemetry environment variables;
    returns the SDK ``TracerProvider`` (the global one unless ``set_global=False``).

    - ``service_name``: the ``service.name`` resource attribute (else ``OTEL_SERVICE_NAME``, else the SDK's
      ``unknown_service:python``); ``resource_attributes`` are added to those of ``OTEL_RESOURCE_ATTRIBUTES``;
    - ``endpoint``: the collector's base URL, as in ``OTEL_EXPORTER_OTLP_ENDPOINT`` (for ``http/protobuf``
      ``/v1/traces`` is appended); ``protocol``: ``"http/protobuf"`` or ``"grpc"``;
    - ``sampler``: a name ``OTEL_TRACES_SAMPLER`` takes (``parentbased_traceidratio``...) or an SDK ``Sampler``;
    - ``timeout``: seconds the exporter gives one export (``OTEL_EXPORTER_OTLP_TIMEOUT``, default 10).

    Spans are batched and exported from a background thread; an unreachable collector loses spans (logged by the
    exporter), never a task or a result. At exit the provider is shut down and flushes what is pending.
    Raises ``ValueError`` / ``TypeError`` for a misconfiguration, ``RuntimeError`` if the exporter for the
    protocol or the SDK (the ``[sdk]`` extra) is not installed, or (with ``set_global``) a global tracer provider is
    already set.
    """
    try:
        import opentelemetry.sdk.trace  # noqa: F401  (the SDK is an optional dependency: the [sdk] extra)
    except ImportError:
        raise RuntimeError("setup_tracing() needs the OpenTelemetry SDK: pip install 'tracedfutures[sdk]'") from None
    settings = export_settings(endpoint=endpoint, protocol=protocol, timeout=timeout)
    chosen_sampler = _sampler(sampler)
    if set_global and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        raise RuntimeError(
            "a global tracer provider is already set: setup_tracing() is for programs with no OpenTelemetry "
            "set-up; pass yours to tracedfutures.configure(tracer_provider=...) instead, or use set_global=False"
        )
    exporter_class = _entry_point("opentelemetry_traces_exporter", _PROTOCOLS[settings.protocol])
    if exporter_class is None:
        raise RuntimeError(
            f"no OTLP exporter for protocol {settings.protocol!r}: pip install {_PACKAGES[settings.protocol]}"
        )

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = dict(resource_attributes or {})
    if service_name is not None:
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")
        attributes[SERVICE_NAME] = service_name
    exporter_args: dict[str, Any] = {"timeout": settings.timeout}
    if endpoint is not None:
        base = endpoint.rstrip("/")
        exporter_args["endpoint"] = f"{base}/v1/traces" if settings.protocol == "http/protobuf" else base
    provider = TracerProvider(resource=Resource.create(attributes), sampler=chosen_sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter_class(**exporter_args)))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
