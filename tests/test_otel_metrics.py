"""OpenTelemetry metrics through an SDK MeterProvider, read with InMemoryMetricReader: exact values for a known
workload (a thread pool with errors and a cancel, a process pool of each start method, wait and as_completed),
every series equal to its Prometheus twin, delta temporality, a forked child's own numbers, Prometheus readers left
out, and the meter_provider= option everywhere a tracer_provider= is taken."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import otelsupport
import pytest
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from support import CustomError, fail, square

import tracedfutures
from tracedfutures import ConcurrentFuturesInstrumentor
from tracedfutures._metric_definitions import EXECUTOR_METRICS, WAIT_METRICS
from tracedfutures._otel_names import BY_FAMILY, OTEL_METRICS, SCHEMA_URL
from tracedfutures._state import state
from tracedfutures.metrics import DEFAULT_BUCKETS

#: OTel name -> {frozenset(attributes): data point}
Points = dict[str, dict[frozenset[tuple[str, Any]], Any]]
START_METHODS = ("fork", "forkserver", "spawn")


def points(reader: InMemoryMetricReader) -> Points:
    """Every data point of tracedfutures' scope, by metric name and attributes."""
    data = reader.get_metrics_data()
    found: Points = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "tracedfutures":
                continue
            assert scope_metrics.scope.schema_url == SCHEMA_URL
            assert scope_metrics.scope.version == tracedfutures.__version__
            for metric in scope_metrics.metrics:
                assert metric.name not in found, f"{metric.name} exported twice"
                found[metric.name] = {frozenset(p.attributes.items()): p for p in metric.data.data_points}
    return found


def key(*attributes: dict[str, Any], **more: Any) -> frozenset[tuple[str, Any]]:
    """The attributes of a data point: ``executor.name`` / ``executor.kind`` from ``name=`` / ``kind=``."""
    names = {"name": "executor.name", "kind": "executor.kind"}
    merged = {k: v for given in attributes for k, v in given.items()}
    return frozenset({**merged, **{names[k]: v for k, v in more.items()}}.items())


@pytest.fixture
def meters() -> Iterator[tuple[MeterProvider, InMemoryMetricReader, CollectorRegistry]]:
    """A MeterProvider with an in-memory reader and a fresh registry, both the defaults for the test (waits)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader])
    registry = CollectorRegistry()
    tracedfutures.configure(registry=registry, meter_provider=provider)
    try:
        yield provider, reader, registry
    finally:
        tracedfutures.reset_defaults()
        provider.shutdown()


def thread_workload() -> None:
    """6 tasks of square, 1 ValueError, 2 CustomError, 1 cancelled while both workers are held; one wait, one
    as_completed."""
    hold = threading.Event()
    with tracedfutures.TracedThreadPoolExecutor(2, name="pool") as pool:
        held = [pool.submit(hold.wait, 30) for _ in range(2)]
        cancelled = pool.submit(square, 0)
        assert cancelled.cancel()
        hold.set()
        futures = [pool.submit(square, n) for n in range(4)]
        futures += [pool.submit(int, "x"), pool.submit(fail, "a"), pool.submit(fail, "b")]
        done, _ = tracedfutures.wait(futures + held, return_when="ALL_COMPLETED")
        assert len(done) == 9
        assert len(list(tracedfutures.as_completed(futures))) == 7
        for future in futures:
            future.exception()


def test_exact_values_of_a_thread_pool(meters: Any) -> None:
    _, reader, _ = meters
    thread_workload()
    found = points(reader)
    pool = {"executor.name": "pool", "executor.kind": "thread"}
    assert found["executor.task.submitted"][key(pool)].value == 10
    ended = {dict(k)["executor.task.outcome"]: p.value for k, p in found["executor.task.ended"].items()}
    assert ended == {"success": 6, "error": 3, "cancelled": 1}
    completed = {tuple(sorted(k)): p.value for k, p in found["executor.task.completed"].items()}

    def series(function: str, outcome: str, error: str | None = None) -> tuple[tuple[str, Any], ...]:
        attributes = {**pool, "code.function.name": function, "executor.task.outcome": outcome}
        if error is not None:
            attributes["error.type"] = error
        return tuple(sorted(attributes.items()))

    assert completed == {
        series("Event.wait", "success"): 2,
        series("square", "success"): 4,
        series("square", "cancelled"): 1,
        series("int", "error", "ValueError"): 1,
        series("fail", "error", "support.CustomError"): 2,
    }
    run = found["executor.task.run.duration"]
    counts = [(dict(k), p.count) for k, p in run.items()]
    errors = {a["code.function.name"]: n for a, n in counts if a["executor.task.outcome"] == "error"}
    assert errors == {"int": 1, "fail": 2}
    queue = found["executor.task.queue.duration"][key(pool)]
    assert queue.count == 9 and sum(queue.bucket_counts) == 9  # the cancelled task never started
    assert list(queue.explicit_bounds) == list(DEFAULT_BUCKETS)
    assert len(queue.bucket_counts) == len(DEFAULT_BUCKETS) + 1
    assert found["executor.task.queued"][key(pool)].value == 0
    assert found["executor.task.running"][key(pool)].value == 0
    assert found["executor.worker.limit"][key(pool)].value == 0  # shut down
    assert found["executor.future.result.lag"][key(pool)].count == 7  # each read once, by exception()
    wait = found["futures.wait.duration"]
    assert wait[key({"futures.return_when": "ALL_COMPLETED", "futures.timed_out": False})].count == 1
    assert sum(p.count for p in wait.values()) == 1
    assert found["futures.as_completed.duration"][key({"futures.timed_out": False})].count == 1
    assert found["futures.as_completed.next.duration"][frozenset()].count == 7
    metric = {m.name: m for s in reader.get_metrics_data().resource_metrics[0].scope_metrics for m in s.metrics}
    assert metric["executor.task.submitted"].unit == "{task}"
    assert metric["executor.task.submitted"].data.is_monotonic
    assert metric["executor.task.queued"].data.is_monotonic is False
    assert metric["executor.task.run.duration"].unit == "s"


@pytest.mark.parametrize("method", START_METHODS)
def test_exact_values_of_a_process_pool(meters: Any, method: str) -> None:
    _, reader, registry = meters
    context = multiprocessing.get_context(method)
    with tracedfutures.TracedProcessPoolExecutor(1, mp_context=context, name=method) as pool:
        assert pool.submit(square, 3).result() == 9
        with pytest.raises(CustomError):
            pool.submit(fail, "x").result()
    found = points(reader)
    pool_attributes = {"executor.name": method, "executor.kind": "process"}
    assert found["executor.task.submitted"][key(pool_attributes)].value == 2
    run = {dict(k)["executor.task.outcome"]: p.count for k, p in found["executor.task.run.duration"].items()
           if dict(k)["executor.name"] == method}  # fmt: skip
    assert run == {"success": 1, "error": 1}
    failed = {"code.function.name": "fail", "executor.task.outcome": "error", "error.type": "support.CustomError"}
    assert found["executor.task.completed"][key(pool_attributes, failed)].value == 1
    busy = found["executor.worker.busy.time"][key(pool_attributes)].value
    run_sum = sum(p.sum for k, p in found["executor.task.run.duration"].items() if dict(k)["executor.name"] == method)
    assert busy == pytest.approx(run_sum)  # busy is the run time of ended tasks (none runs now)
    assert registry.get_sample_value("executor_tasks_submitted_total", {"executor": method}) == 2


def as_expected(found: Points) -> otelsupport.Expected:
    """SDK data points in the form ``otelsupport.expected`` gives, those computed from the clock left out."""
    clocked = {BY_FAMILY[family].name for family in otelsupport.CLOCKED}
    got: otelsupport.Expected = {}
    for name, series in found.items():
        for attributes, point in series.items():
            if name in clocked:
                continue
            if hasattr(point, "bucket_counts"):
                got[name, attributes] = {"count": point.count, "sum": point.sum,
                                         "cumulative": otelsupport.cumulative(point.bucket_counts)}  # fmt: skip
            else:
                got[name, attributes] = {"value": point.value}
    return got


def test_every_series_is_its_prometheus_twin(meters: Any) -> None:
    """Mapped one to one: each Prometheus series is one OTel data point of the same value (histograms: the same
    buckets, count and sum), and the other way round."""
    _, reader, registry = meters
    thread_workload()
    assert {m.definition for m in OTEL_METRICS} == {*EXECUTOR_METRICS, *WAIT_METRICS}
    assert len({m.name for m in OTEL_METRICS}) == len(OTEL_METRICS)
    found = points(reader)
    samples = [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]
    want = otelsupport.expected(samples, {"pool": "thread"})
    assert len(want) == 30  # every series of the workload but the three clocked ones
    otelsupport.assert_same(want, as_expected(found))


def test_exemplars_point_at_the_sampled_task_spans(meters: Any) -> None:
    _, reader, registry = meters
    tracer_provider = TracerProvider()
    with tracedfutures.traced(ThreadPoolExecutor(1), "traced", tracer_provider=tracer_provider) as pool:
        future = pool.submit(square, 2)
        future.result()
    (point,) = points(reader)["executor.task.run.duration"].values()
    (exemplar,) = point.exemplars
    span_context = future._tf_context  # type: ignore[attr-defined]
    assert (exemplar.trace_id, exemplar.span_id) == (span_context.trace_id, span_context.span_id)
    run = {"executor": "traced", "function": "square", "outcome": "success"}
    assert exemplar.value == pytest.approx(registry.get_sample_value("executor_task_run_seconds_sum", run))


def test_no_exemplars_when_the_provider_keeps_none() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], exemplar_filter=AlwaysOffExemplarFilter())
    registry = CollectorRegistry()
    try:
        with tracedfutures.traced(ThreadPoolExecutor(1), "quiet", tracer_provider=TracerProvider(),
                                  registry=registry, meter_provider=provider) as pool:  # fmt: skip
            pool.submit(square, 2).result()
        (point,) = points(reader)["executor.task.run.duration"].values()
        assert point.count == 1 and not point.exemplars
    finally:
        provider.shutdown()


def test_delta_temporality_counts_each_interval() -> None:
    reader = InMemoryMetricReader(
        preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    )
    cumulative = InMemoryMetricReader()
    provider = MeterProvider([reader, cumulative])
    registry = CollectorRegistry()
    pool = tracedfutures.traced(ThreadPoolExecutor(2), "delta", registry=registry, meter_provider=provider)
    attributes = key(name="delta", kind="thread")
    try:
        for n in range(5):
            pool.submit(square, n).result()
        first = points(reader)
        for n in range(3):
            pool.submit(square, n).result()
        second, third = points(reader), points(reader)
        assert [p["executor.task.submitted"][attributes].value for p in (first, second, third)] == [5, 3, 0]
        assert [p["executor.task.queue.duration"][attributes].count for p in (first, second, third)] == [5, 3, 0]
        assert sum(second["executor.task.queue.duration"][attributes].bucket_counts) == 3
        assert second["executor.task.submitted"][attributes].start_time_unix_nano \
            == first["executor.task.submitted"][attributes].time_unix_nano  # fmt: skip
        assert points(cumulative)["executor.task.submitted"][attributes].value == 8
        # An UpDownCounter stays cumulative (the delta reader asked only for counters and histograms).
        assert second["executor.worker.limit"][attributes].value == 2
    finally:
        pool.shutdown()
        provider.shutdown()


def _child_numbers(reader: InMemoryMetricReader, delta: InMemoryMetricReader, registry: CollectorRegistry) -> str:
    with tracedfutures.traced(ThreadPoolExecutor(1), "forked", registry=registry) as pool:
        pool.submit(square, 1).result()
        pool.submit(square, 2).result()
    attributes = key(name="forked", kind="thread")
    found, found_delta = points(reader), points(delta)
    exported = {dict(k)["executor.name"] for series in found.values() for k in series if "executor.name" in dict(k)}
    submitted = [p["executor.task.submitted"][attributes].value for p in (found, found_delta)]
    return json.dumps([*submitted, sorted(exported)])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exports_its_own_numbers() -> None:
    reader = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider([reader, delta])
    registry = CollectorRegistry()
    try:
        with tracedfutures.traced(ThreadPoolExecutor(1), "forked", registry=registry, meter_provider=provider) as pool:
            for n in range(5):
                pool.submit(square, n).result()
        inherited = tracedfutures.traced(ThreadPoolExecutor(1), "inherited", registry=registry)
        inherited.submit(square, 1).result()  # the parent's: in the child it is a live pool the child never uses
        attributes = key(name="forked", kind="thread")
        assert points(reader)["executor.task.submitted"][attributes].value == 5
        assert points(delta)["executor.task.submitted"][attributes].value == 5
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its two tasks only, in both temporalities
            try:
                os.write(write, _child_numbers(reader, delta, registry).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = json.loads(pipe.read())
        os.waitpid(pid, 0)
        assert child == [2, 2, ["forked"]]  # and no zeros of the executor it inherited and never used
        assert points(reader)["executor.task.submitted"][attributes].value == 5  # the parent's own, unchanged
        inherited.shutdown()
    finally:
        provider.shutdown()


def test_a_prometheus_reader_gets_none_of_them() -> None:
    """The rule against double export: a Prometheus reader's registry gets the Prometheus names from tracedfutures'
    own collector (when it is the registry executors record into), never the OTel ones."""
    prometheus = pytest.importorskip("opentelemetry.exporter.prometheus")
    served = CollectorRegistry()
    in_memory = InMemoryMetricReader()
    provider = MeterProvider([prometheus.PrometheusMetricReader(registry=served), in_memory])
    try:
        with tracedfutures.traced(ThreadPoolExecutor(1), "both", registry=served, meter_provider=provider) as pool:
            pool.submit(square, 3).result()
        names = {family.name for family in served.collect()}
        assert names - {"target_info"} == {d.name for d in (*EXECUTOR_METRICS, *WAIT_METRICS)}
        assert points(in_memory)["executor.task.submitted"][key(name="both", kind="thread")].value == 1
    finally:
        provider.shutdown()


def test_meter_provider_option_everywhere(meters: Any) -> None:
    """traced(), both drop-in pools and the instrumentor take meter_provider=; a bad one is refused at the call."""
    own_reader = InMemoryMetricReader()
    own = MeterProvider([own_reader])
    registry = CollectorRegistry()
    try:
        with tracedfutures.TracedThreadPoolExecutor(1, name="dropin", registry=registry, meter_provider=own) as pool:
            pool.submit(square, 1).result()
        instrumentor = ConcurrentFuturesInstrumentor()
        instrumentor.instrument(meter_provider=own, registry=registry)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="stock") as stock:
                stock.submit(square, 1).result()
        finally:
            instrumentor.uninstrument()
        submitted = points(own_reader)["executor.task.submitted"]
        assert submitted[key(name="dropin", kind="thread")].value == 1
        assert submitted[key(name="stock", kind="thread")].value == 1
        for bad in (lambda: tracedfutures.traced(ThreadPoolExecutor(1), meter_provider=object()),  # type: ignore[arg-type]
                    lambda: tracedfutures.TracedProcessPoolExecutor(1, meter_provider=1),  # type: ignore[arg-type]
                    lambda: tracedfutures.configure(meter_provider="x")):  # type: ignore[arg-type]  # fmt: skip
            with pytest.raises(TypeError, match="meter_provider must be an OpenTelemetry MeterProvider"):
                bad()
    finally:
        own.shutdown()


def test_no_meter_provider_no_export() -> None:
    """A no-op provider, or none set (the API's proxy), gets nothing, and the Prometheus metrics are unchanged."""
    from opentelemetry.metrics import NoOpMeterProvider

    registry = CollectorRegistry()
    with tracedfutures.traced(
        ThreadPoolExecutor(1), "noop", registry=registry, meter_provider=NoOpMeterProvider()
    ) as pool:
        pool.submit(square, 1).result()
    assert registry.get_sample_value("executor_tasks_submitted_total", {"executor": "noop"}) == 1
    assert not [provider for provider in state.meter_exports if isinstance(provider, NoOpMeterProvider)]


def test_the_docs_table_is_the_mapping() -> None:
    """docs/opentelemetry-metrics.md's name table, row for row, is ``_otel_names.OTEL_METRICS``."""
    page = Path(__file__).parent.parent / "docs" / "opentelemetry-metrics.md"
    rows = [
        line
        for line in page.read_text().splitlines()
        if line.startswith("| `executor_") or line.startswith("| `futures_")
    ]
    want = []
    for otel in OTEL_METRICS:
        prometheus = otel.definition.name + ("_total" if otel.definition.type == "counter" else "")
        attributes = ", ".join(f"`{a}`" for a in otel.attributes)
        want.append(f"| `{prometheus}` | `{otel.name}` | {otel.instrument} | `{otel.unit}` | {attributes} |")
    assert [row.replace("|  |", "| |") for row in rows] == [row.replace("|  |", "| |") for row in want]
