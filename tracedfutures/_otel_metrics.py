"""OpenTelemetry metrics: the numbers of the Prometheus metrics, exported through an SDK ``MeterProvider``'s readers
under OpenTelemetry names (``_otel_names``), read at collection time from the very tables a scrape adds up.

A task costs nothing more: nothing is recorded through the SDK per task. When a reader collects, the SDK's own
collection runs first, then this module adds tracedfutures' scope to its result: each bound ``MetricsCollector``
is collected exactly as for a scrape and every series becomes a data point; histograms keep their exact bucket
counts, the Prometheus bucket bounds and the trace exemplars of the buckets.

Why not instruments: the metrics API has no observable histogram, and the Python SDK (1.45) has no
``MetricProducer`` (the specification's way to bring outside data into a reader). So each reader's collect
callback (``MetricReader._set_collect_callback``, which ``MeterProvider`` itself uses) is wrapped: the SDK's
collection, then ours. That one hook also carries the counters and gauges, so one collection reads one snapshot
(a histogram's count equals its counter's), a series' start time is its Prometheus ``_created``, and the reader is
known: its preferred temporality is honoured (delta from the cumulative tables with the last values this reader
exported) and a Prometheus reader is skipped. Where the SDK lacks that callback, tracedfutures says so once and
exports nothing through OpenTelemetry (the Prometheus metrics are unchanged).

The rule against double export: a Prometheus reader (``opentelemetry-exporter-prometheus``, which serves
prometheus_client's registry) never gets tracedfutures' metrics from here; that registry already holds them under
their Prometheus names (tracedfutures' own collector). Every other reader (OTLP, in-memory, console) gets them.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Exemplar, MeterProvider
from opentelemetry.sdk.metrics._internal.instrument import _Counter, _Histogram, _UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.samples import Exemplar as PromExemplar

from tracedfutures._metric_definitions import SUBMITTED
from tracedfutures._otel_names import ATTRIBUTES, BY_FAMILY, EXECUTOR_KIND, METER_NAME, SCHEMA_URL, OtelMetric
from tracedfutures._state import state
from tracedfutures._telemetry import telemetry_failed
from tracedfutures.metrics import MetricsBackend, MetricsCollector
from tracedfutures.version import __version__

_WHERE = "OpenTelemetry metrics"
#: The SDK's instrument class whose temporality a reader prefers, for each of ours (a gauge has none).
_TEMPORALITY_OF = {"Counter": _Counter, "UpDownCounter": _UpDownCounter, "Histogram": _Histogram}
_DELTA = AggregationTemporality.DELTA
_CUMULATIVE = AggregationTemporality.CUMULATIVE

_Key = tuple[str, tuple[tuple[str, str], ...]]  # an OTel metric's name and a series' Prometheus labels


def export(provider: object, backend: MetricsBackend) -> None:
    """Export ``backend``'s metrics through ``provider``'s readers, from now on (once per provider and backend).

    Nothing for a no-op provider or a disabled one (its meter is a no-op); said once, and nothing exported, for a
    provider that is not the SDK's, for the multiprocess backend (its numbers live in files, per process) and for
    an SDK whose readers lack the collect callback this relies on.
    """
    if isinstance(provider, NoOpMeterProvider) or type(provider).__name__ == "_ProxyMeterProvider":
        return  # the API's no-op, or its placeholder until a program sets a provider
    if not isinstance(provider, MeterProvider):
        telemetry_failed(_WHERE, TypeError(f"needs the OpenTelemetry SDK's MeterProvider, got {type(provider)}"))
        return
    if not isinstance(backend, MetricsCollector):
        telemetry_failed(_WHERE, RuntimeError("not recorded in prometheus_client's multiprocess mode"))
        return
    try:
        with state.meter_exports_lock:
            found = state.meter_exports.get(provider)
            if found is None:
                meter = provider.get_meter(METER_NAME, __version__, schema_url=SCHEMA_URL)
                scope = getattr(meter, "_instrumentation_scope", None)
                if not isinstance(scope, InstrumentationScope):  # a no-op meter: disabled or shut down
                    return
                found = state.meter_exports[provider] = ProviderExport(provider, scope)
            found.add(backend)
    except Exception as exc:
        telemetry_failed(_WHERE, exc)


class ProviderExport:
    """tracedfutures' metrics in one SDK ``MeterProvider``: the collectors it reads and the readers it feeds."""

    def __init__(self, provider: MeterProvider, scope: InstrumentationScope) -> None:
        self.provider = weakref.ref(provider)
        self.scope = scope
        #: Exemplars (those of sampled task spans, as the SDK's default trace-based filter keeps) unless the
        #: provider's filter keeps none (``OTEL_METRICS_EXEMPLAR_FILTER=always_off``).
        self.exemplars = not isinstance(provider._sdk_config.exemplar_filter, AlwaysOffExemplarFilter)
        self.collectors: weakref.WeakSet[MetricsCollector] = weakref.WeakSet()
        self.hooks: list[ReaderHook] = []
        self.forked = False  # this process is a fork of the one that made the export
        for reader in provider._metric_readers:
            self._hook(reader)

    def _hook(self, reader: MetricReader) -> None:
        """Wrap ``reader``'s collect callback, unless it is a Prometheus reader (see the module's rule)."""
        if type(reader).__module__.startswith("opentelemetry.exporter.prometheus"):
            return
        sdk_collect = getattr(reader, "_collect", None)
        if sdk_collect is None or not callable(getattr(reader, "_set_collect_callback", None)):
            telemetry_failed(_WHERE, RuntimeError(f"{type(reader).__qualname__} has no collect callback to extend"))
            return
        hook = ReaderHook(self, sdk_collect, reader)
        reader._set_collect_callback(hook)  # type: ignore[arg-type]  # called as the SDK calls its own
        self.hooks.append(hook)

    def add(self, collector: MetricsCollector) -> None:
        self.collectors.add(collector)

    def after_fork(self) -> None:
        """In a forked child: its own numbers from 0, so nothing the parent exported is subtracted; and only what
        the child does (see ``_in_child``)."""
        self.forked = True
        for hook in self.hooks:
            hook.reset()


@dataclass
class _Parsed:
    """One Prometheus series, read back from its family's samples."""

    value: float = 0.0
    created: float = 0.0
    bounds: list[float] = field(default_factory=list)
    buckets: list[float] = field(default_factory=list)  # cumulative, +Inf last
    exemplars: list[PromExemplar | None] = field(default_factory=list)
    sum: float = 0.0


def _parse(family: Any) -> dict[tuple[tuple[str, str], ...], _Parsed]:
    """Every series of a Prometheus family by its labels (``le`` left out)."""
    series: dict[tuple[tuple[str, str], ...], _Parsed] = {}
    base = len(family.name)
    for sample in family.samples:
        labels = dict(sample.labels)
        le = labels.pop("le", None)
        parsed = series.setdefault(tuple(labels.items()), _Parsed())
        suffix = sample.name[base:]
        if suffix == "_bucket":
            if le != "+Inf":
                parsed.bounds.append(float(le or "nan"))
            parsed.buckets.append(sample.value)
            parsed.exemplars.append(sample.exemplar)
        elif suffix == "_sum":
            parsed.sum = sample.value
        elif suffix == "_created":
            parsed.created = sample.value
        elif suffix in ("", "_total"):
            parsed.value = sample.value
    return series


class ReaderHook:
    """One reader's collect callback: the SDK's collection, then tracedfutures' scope, in this reader's
    temporality. Keeps what it last exported of each series (for delta) and when it first saw it."""

    def __init__(self, export: ProviderExport, sdk_collect: Any, reader: MetricReader) -> None:
        self.export = export
        self.sdk_collect = sdk_collect
        preferred = getattr(reader, "_instrument_class_temporality", {})
        self.temporality = {name: preferred.get(cls, _CUMULATIVE) for name, cls in _TEMPORALITY_OF.items()}
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time_ns()
        self.last: dict[_Key, tuple[int, Any]] = {}

    def __call__(self, reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data: MetricsData | None = self.sdk_collect(reader, timeout_millis=timeout_millis)
        try:
            metrics = self.metrics()
            provider = self.export.provider()
            if not metrics or provider is None:
                return data
            scope = ScopeMetrics(self.export.scope, metrics, SCHEMA_URL)
            resource = provider._sdk_config.resource
            if data is None or not data.resource_metrics:
                return MetricsData([ResourceMetrics(resource, [scope], resource.schema_url)])
            first, *rest = data.resource_metrics
            ours = ResourceMetrics(first.resource, [*first.scope_metrics, scope], first.schema_url)
            return MetricsData([ours, *rest])
        except Exception as exc:  # lose our metrics, never the SDK's
            telemetry_failed(_WHERE, exc)
            return data

    def metrics(self) -> list[Metric]:
        """Every metric of the bound collectors, as this reader wants them now."""
        families: list[Any] = []
        kinds: dict[str, str] = {}
        for collector in list(self.export.collectors):
            families += collector.collect()
            with collector.lock:
                kinds.update(
                    (name, next(iter(stats.kinds.copy()), "other")) for name, stats in collector.executors.items()
                )
        series = [(BY_FAMILY[f.name], labels, parsed) for f in families if f.name in BY_FAMILY
                  for labels, parsed in _parse(f).items()]  # fmt: skip
        if self.export.forked:
            series = _in_child(series)
        now = time.time_ns()
        by_name: dict[OtelMetric, list[Any]] = {}
        with self.lock:
            for otel, labels, parsed in series:
                by_name.setdefault(otel, []).append(self._point(otel, labels, parsed, kinds, now))
        return [_metric(otel, points, self.temporality.get(otel.instrument, _CUMULATIVE))
                for otel, points in by_name.items()]  # fmt: skip

    def _point(
        self, otel: OtelMetric, labels: tuple[tuple[str, str], ...], parsed: _Parsed, kinds: dict[str, str], now: int
    ) -> Any:
        """The data point of one series (under ``lock``): delta from what this reader last exported of it."""
        attributes = _attributes(labels, kinds)
        key = (otel.name, labels)
        start = int(parsed.created * 1e9) if parsed.created else self.started
        delta = self.temporality.get(otel.instrument) is _DELTA
        if otel.instrument == "Histogram":
            counts = [int(b - a) for a, b in pairwise([0.0, *parsed.buckets])]
            total = (counts, parsed.sum)
            exemplars = [_exemplar(e) for e in parsed.exemplars if e is not None] if self.export.exemplars else []
            if delta:
                previous = self.last.get(key)
                self.last[key] = (now, total)
                if previous is not None:
                    start, (was, was_sum) = previous
                    counts = [a - b for a, b in zip(counts, was)]
                    total = (counts, parsed.sum - was_sum)
                    exemplars = [e for e in exemplars if e.time_unix_nano > start]
            return HistogramDataPoint(
                attributes, start, now, sum(counts), total[1], counts, parsed.bounds,
                None, None, exemplars,  # type: ignore[arg-type]  # min and max are not kept: left unset in OTLP
            )  # fmt: skip
        value: float = parsed.value
        if delta:
            previous = self.last.get(key)
            self.last[key] = (now, value)
            if previous is not None:
                start, value = previous[0], value - previous[1]
        return NumberDataPoint(attributes, start, now, value if otel.unit == "s" else round(value))


_Series = tuple[OtelMetric, tuple[tuple[str, str], ...], _Parsed]


def _in_child(series: list[_Series]) -> list[_Series]:
    """In a forked child, the series of what the child itself did: executors it submitted to, waits it made. The
    executors and waits it inherited count from 0 there; exported as zeros (a process pool's forked workers live
    for hours) they would be a second, empty copy of the parent's series, under the same resource unless that
    names the process."""
    used = {dict(labels)["executor"] for otel, labels, parsed in series
            if otel.definition is SUBMITTED and parsed.value > 0}  # fmt: skip
    kept = []
    for otel, labels, parsed in series:
        executor = dict(labels).get("executor")
        if executor in used or (executor is None and parsed.buckets and parsed.buckets[-1] > 0):
            kept.append((otel, labels, parsed))
    return kept


def _attributes(labels: tuple[tuple[str, str], ...], kinds: dict[str, str]) -> dict[str, str | bool]:
    attributes: dict[str, str | bool] = {}
    for label, value in labels:
        if label == "timed_out":
            attributes[ATTRIBUTES[label]] = value == "true"
        elif value or label != "error_type":  # no error.type on a task that did not fail
            attributes[ATTRIBUTES[label]] = value
        if label == "executor":
            attributes[EXECUTOR_KIND] = kinds.get(value, "other")
    return attributes


def _exemplar(exemplar: PromExemplar) -> Exemplar:
    labels = exemplar.labels
    at = round(float(exemplar.timestamp) * 1e9) if exemplar.timestamp is not None else 0
    return Exemplar({}, exemplar.value, at, int(labels["span_id"], 16), int(labels["trace_id"], 16))


def _metric(otel: OtelMetric, points: list[Any], temporality: AggregationTemporality) -> Metric:
    documentation = otel.definition.documentation
    data: Sum | Gauge | Histogram
    if otel.instrument == "Histogram":
        data = Histogram(points, temporality)
    elif otel.instrument == "Gauge":
        data = Gauge(points)
    else:
        data = Sum(points, temporality, is_monotonic=otel.instrument == "Counter")
    return Metric(otel.name, documentation, otel.unit, data)
