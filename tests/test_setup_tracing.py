"""setup_tracing(): configured by the standard OTEL_* variables through the SDK's own pieces (Resource.create, the
samplers and exporters of its entry points), arguments winning over the environment, and every
misconfiguration an exception at call time with a message that says what to fix."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, StaticSampler
from opentelemetry.test.globals_test import reset_trace_globals

import tracedfutures
from tracedfutures import tracing
from tracedfutures.tracing import ExportSettings, export_settings, setup_tracing

SAMPLERS = (
    "always_off, always_on, parentbased_always_off, parentbased_always_on, parentbased_traceidratio, traceidratio"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TracerProvider]]:
    """No OTEL_* variable from outside; every provider made here is shut down; the global one is reset."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    made: list[TracerProvider] = []
    real = tracing.setup_tracing

    def recording(*args: Any, **kwargs: Any) -> Any:
        provider = real(*args, **kwargs)
        made.append(provider)
        return provider

    monkeypatch.setattr(tracing, "setup_tracing", recording)
    reset_trace_globals()
    try:
        yield made
    finally:
        for provider in made:
            provider.shutdown()
        reset_trace_globals()


def exporter_of(provider: TracerProvider) -> Any:
    (processor,) = provider._active_span_processor._span_processors
    assert isinstance(processor, BatchSpanProcessor)
    return processor._batch_processor._exporter


def make(**kwargs: Any) -> TracerProvider:
    provider = tracing.setup_tracing(**{"set_global": False, **kwargs})
    assert isinstance(provider, TracerProvider)
    return provider


def test_exported_from_the_package() -> None:
    assert tracedfutures.setup_tracing is setup_tracing
    assert "setup_tracing" in tracedfutures.__all__


def test_defaults_follow_the_specification() -> None:
    assert export_settings() == ExportSettings("http/protobuf", "http://localhost:4318", 10.0)
    provider = make()
    exporter = exporter_of(provider)
    assert type(exporter) is HttpExporter and exporter._endpoint == "http://localhost:4318/v1/traces"
    assert provider.resource.attributes["service.name"] == "unknown_service:python"  # the SDK's default
    assert provider.sampler.get_description() == (
        "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:"
        "AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
    )


def test_configured_by_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=payments")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2.5")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert export_settings() == ExportSettings("grpc", "http://collector:4317", 2.5)
    provider = make()
    exporter = exporter_of(provider)
    assert type(exporter) is GrpcExporter
    assert (exporter._endpoint, exporter._timeout, exporter._insecure) == ("collector:4317", 2.5, True)
    attributes = provider.resource.attributes
    assert (attributes["service.name"], attributes["deployment.environment"], attributes["team"]) == (
        "billing",
        "prod",
        "payments",
    )
    assert isinstance(provider.sampler, ParentBasedTraceIdRatio)
    assert provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.25}")


def test_traces_specific_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces")
    assert export_settings() == ExportSettings("http/protobuf", "http://traces:4318/v1/traces", 10.0)
    assert exporter_of(make())._endpoint == "http://traces:4318/v1/traces"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = make(
        service_name="from-arg",
        endpoint="http://127.0.0.1:4318/",
        protocol="http/protobuf",
        sampler="always_on",
        resource_attributes={"team": "arg"},
        timeout=3,
    )
    exporter = exporter_of(provider)
    assert type(exporter) is HttpExporter and exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    assert exporter._client._timeout == 3.0
    assert provider.resource.attributes["service.name"] == "from-arg"
    assert provider.resource.attributes["team"] == "arg"
    assert isinstance(provider.sampler, StaticSampler) and provider.sampler.get_description() == "AlwaysOnSampler"


def test_sets_the_global_provider_once() -> None:
    provider = tracing.setup_tracing("svc")
    assert trace.get_tracer_provider() is provider
    with pytest.raises(RuntimeError, match=r"^a global tracer provider is already set: setup_tracing\(\) is for"):
        tracing.setup_tracing("svc")
    assert trace.get_tracer_provider() is provider


@pytest.mark.parametrize(
    ("env", "kwargs", "error", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, {}, ValueError,
         "unsupported OTLP protocol OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL='http/json': "
         "use one of 'http/protobuf', 'grpc'"),
        ({}, {"protocol": "grpcs"}, ValueError,
         "unsupported OTLP protocol protocol='grpcs': use one of 'http/protobuf', 'grpc'"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, {}, ValueError,
         f"unknown sampler OTEL_TRACES_SAMPLER='sometimes': use one of {SAMPLERS}"),
        ({}, {"sampler": "alwayson"}, ValueError, f"unknown sampler sampler='alwayson': use one of {SAMPLERS}"),
        ({}, {"sampler": 0.5}, TypeError, "sampler must be a sampler name or an SDK Sampler, got float"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, {}, ValueError,
         "OTEL_TRACES_SAMPLER_ARG='half' is not a ratio for traceidratio"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, {}, ValueError,
         "OTEL_TRACES_SAMPLER_ARG=2.0 is not a ratio between 0 and 1 for traceidratio"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, {}, ValueError,
         "OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT='10s' is not a number of seconds"),
        ({}, {"timeout": 0}, ValueError, "the exporter timeout must be a positive number of seconds, got 0"),
        ({}, {"endpoint": "localhost:4317"}, ValueError,
         "endpoint='localhost:4317' is not an http:// or https:// URL such as 'http://localhost:4318'"),
        ({}, {"service_name": ""}, ValueError, "service_name must be a non-empty string, got ''"),
    ],
)  # fmt: skip
def test_misconfiguration_raises_at_call_time(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, Any], error: type, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error) as raised:
        tracing.setup_tracing(**kwargs)
    assert str(raised.value) == message
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing was set up


def test_missing_exporter_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_entry_point", lambda group, name: None)
    message = r"^no OTLP exporter for protocol 'grpc': pip install opentelemetry-exporter-otlp-proto-grpc$"
    with pytest.raises(RuntimeError, match=message):
        tracing.setup_tracing(protocol="grpc")


def test_without_the_sdk_it_says_which_extra_to_install() -> None:
    """A program without the OpenTelemetry SDK (``pip install tracedfutures``, no ``[sdk]``) is told what to
    install, not left with a bare ModuleNotFoundError."""
    program = """
import sys

sys.modules["opentelemetry.sdk"] = None  # as if not installed: importing it raises ModuleNotFoundError
import tracedfutures
try:
    tracedfutures.setup_tracing("app")
except RuntimeError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "setup_tracing() needs the OpenTelemetry SDK: pip install 'tracedfutures[sdk]'\n",
        "",
    )
