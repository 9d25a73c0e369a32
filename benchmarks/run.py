#!/usr/bin/env python
"""Overhead benchmarks of tracedfutures against the bare standard library executors.

Usage::

    python benchmarks/run.py [--quick] [--json out.json] [--cases a,b] [--check]

Every ratio case times the bare stdlib executor and its tracedfutures counterpart in the same process,
interleaved (bare, traced, bare, traced, ...), and reports the medians of the repetitions as microseconds per
task (or per call) and the ratio traced / bare against the project's target. Executors are created and warmed
up (threads or processes started) outside the timed region; span export is flushed inside it, so the work of
the batch span processor is charged to the traced side. ``--quick`` uses smaller counts and fewer repetitions
(CI-sized); ``--check`` makes the exit status 1 when a case fails its target.

Spans go through a ``BatchSpanProcessor`` with ``RECOMMENDED_BSP`` (a queue large enough for the largest burst
of task spans; see the ``thread_sampled`` rows for the spans the SDK defaults drop) to an exporter that only
counts them. The cases with every span sampled also time, interleaved with the other two, the stdlib executor
with one bare SDK span per task and nothing else (``SpanPerTask``): the ``.sdk_span_floor`` rows show what any
span-per-task instrumentation costs here, whatever it does besides. ``benchmarks/profile_case.py`` runs one
thread-pool case under a profiler.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from typing import Any, TypedDict

import prometheus_client
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import tracedfutures

THREAD_WORKERS = 4
PROCESS_WORKERS = 2


class BspSettings(TypedDict, total=False):
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_millis: float


#: Batch span processor settings of every traced case: a queue that holds the largest burst of task spans (a
#: whole batch ending while the exporter is busy); the SDK's default queue of 2048 drops them (slow exporter).
RECOMMENDED_BSP = BspSettings(max_queue_size=65_536, max_export_batch_size=512, schedule_delay_millis=1_000)
#: Seconds per export call of the "slow exporter" rows: 512-span batches at ~10k spans/s, a remote collector.
SLOW_EXPORT = 0.05
RSS_BATCH = 10_000
RSS_TOLERANCE = 0.05


# -- tasks (module level so that process pools can pickle them) ----------------------------------------------
def noop(*args: Any) -> None:
    """The task of every thread-pool case: all of its cost is the executor's."""


def small_task(n: int) -> int:
    """CPU-bound work for process pools: about 12 us per 1,000 of ``n`` on this class of machine."""
    return sum(range(n))


ERROR_TYPES: tuple[type[Exception], ...] = tuple(type(f"BenchError{i:02d}", (Exception,), {}) for i in range(20))


def fail(cls: type[Exception]) -> None:
    raise cls()


# -- sizes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How much work each case does; ``QUICK`` keeps the whole run near a minute on two cores."""

    reps: int
    batch: int
    round_trips: int
    map_items: int
    process_tasks: int
    wait_futures: int
    wait_calls: int
    scrapes: int
    leak_tasks: int
    rss_checkpoints: tuple[int, ...]


FULL = Sizes(
    reps=7,
    batch=50_000,
    round_trips=20_000,
    map_items=50_000,
    process_tasks=2_000,
    wait_futures=10_000,
    wait_calls=80,
    scrapes=20,
    leak_tasks=20_000,
    rss_checkpoints=(100_000, 1_000_000),
)
QUICK = Sizes(
    reps=5,
    batch=20_000,
    round_trips=10_000,
    map_items=20_000,
    process_tasks=1_000,
    wait_futures=10_000,
    wait_calls=20,
    scrapes=5,
    leak_tasks=10_000,
    rss_checkpoints=(100_000,),
)


# -- telemetry set-ups ---------------------------------------------------------------------------------------
class CountingExporter(SpanExporter):
    """Discards spans, counting them (the batch processor calls it from one thread at a time).

    ``latency`` seconds of sleep per export call stand in for a network exporter (the GIL is released).
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.count = 0
        self.latency = latency

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.latency:
            time.sleep(self.latency)
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Telemetry:
    """A tracer provider (with its exporter, if spans are exported) and the context current at submit."""

    provider: trace.TracerProvider
    exporter: CountingExporter | None = None
    parent: otel_context.Context | None = None

    @property
    def exported(self) -> int:
        return self.exporter.count if self.exporter is not None else 0

    def flush(self) -> None:
        if isinstance(self.provider, SdkTracerProvider):
            self.provider.force_flush()

    def thread_pool(self, max_workers: int = THREAD_WORKERS) -> tracedfutures.TracedThreadPoolExecutor:
        return tracedfutures.TracedThreadPoolExecutor(
            max_workers, tracer_provider=self.provider, registry=CollectorRegistry()
        )

    def process_pool(self, max_workers: int = PROCESS_WORKERS) -> tracedfutures.TracedProcessPoolExecutor:
        return tracedfutures.TracedProcessPoolExecutor(
            max_workers, tracer_provider=self.provider, registry=CollectorRegistry()
        )


def _parent(sampled: bool) -> otel_context.Context:
    """A context whose current span is a (non-recording) parent, sampled or not, as in a traced request."""
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    span_context = trace.SpanContext(0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0, 0x1234_5678_9ABC_DEF0, False, flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


@contextmanager
def telemetry(mode: str, bsp: BspSettings | None = None, export_latency: float = 0.0) -> Iterator[Telemetry]:
    """``metrics``: no-op tracer; ``unsampled`` / ``sampled``: SDK provider, batch processor, such a parent.

    ``bsp`` overrides ``RECOMMENDED_BSP`` (empty: the SDK defaults); ``export_latency`` is per export call.
    """
    if mode == "metrics":
        yield Telemetry(trace.NoOpTracerProvider())
        return
    if mode not in ("unsampled", "sampled"):
        raise ValueError(mode)
    exporter = CountingExporter(export_latency)
    provider = SdkTracerProvider()  # default sampler: ParentBased(ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(exporter, **(RECOMMENDED_BSP if bsp is None else bsp)))
    try:
        yield Telemetry(provider, exporter, _parent(mode == "sampled"))
    finally:
        provider.shutdown()


@contextmanager
def attached(ctx: otel_context.Context | None) -> Iterator[None]:
    token = otel_context.attach(ctx) if ctx is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


@contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings (the batch processor's "Queue full, dropping Span." when we count drops)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- timing --------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One timed repetition: its wall time, the items it did and the spans exported for it."""

    seconds: float
    items: int
    spans: int = 0

    @property
    def us_per_item(self) -> float:
        return self.seconds / self.items * 1e6


def timed(body: Callable[[], int], tel: Telemetry) -> Sample:
    """Time ``body`` (which returns its item count) plus the span flush, with ``tel.parent`` current."""
    gc.collect()
    with attached(tel.parent):
        start = time.perf_counter()
        items = body()
        tel.flush()
        seconds = time.perf_counter() - start
    return Sample(seconds, items)


def warm_up(executor: Executor) -> None:
    """Start the executor's workers outside the timed region."""
    for future in [executor.submit(noop) for _ in range(4 * THREAD_WORKERS)]:
        future.result()


def on_executor(make: Callable[[], Executor], body: Callable[[Executor], int], tel: Telemetry) -> Sample:
    """A fresh, warmed-up executor; ``body`` timed on it; spans counted once its workers are done."""
    with make() as executor:
        warm_up(executor)
        tel.flush()
        before = tel.exported
        sample = timed(partial(body, executor), tel)
    tel.flush()  # the last spans may end after result() returned: they belong to this repetition
    sample.spans = tel.exported - before
    return sample


def interleaved(*runs: Callable[[], Sample], reps: int) -> list[list[Sample]]:
    """Run each of ``runs`` in turn (bare, traced, bare, traced, ...), ``reps`` times each."""
    samples: list[list[Sample]] = [[] for _ in runs]
    for _ in range(reps):
        for run, out in zip(runs, samples):
            out.append(run())
    return samples


def median_us(samples: Sequence[Sample]) -> float:
    return statistics.median(s.us_per_item for s in samples)


def dropped_spans(samples: Sequence[Sample]) -> int:
    """Spans missing from the exporter for samples whose every item makes exactly one span."""
    return sum(max(s.items - s.spans, 0) for s in samples)


# -- results -------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the result table; ``status`` is PASS, FAIL or INFO (reported, no target)."""

    case: str
    unit: str
    bare: float | None
    traced: float
    ratio: float | None
    target: str
    status: str
    note: str = ""


def ratio_row(case: str, unit: str, bare: Sequence[Sample], traced: Sequence[Sample], max_ratio: float | None) -> Row:
    """Medians of both sides, their ratio against ``max_ratio``, and the spread of the per-rep ratios."""
    bare_us, traced_us = median_us(bare), median_us(traced)
    ratio = traced_us / bare_us
    paired = sorted(t.us_per_item / b.us_per_item for b, t in zip(bare, traced))
    note = f"paired ratios {paired[0]:.2f}..{paired[-1]:.2f}"
    if max_ratio is None:
        return Row(case, unit, bare_us, traced_us, ratio, "report", "INFO", note)
    status = "PASS" if ratio <= max_ratio else "FAIL"
    return Row(case, unit, bare_us, traced_us, ratio, f"<= {max_ratio:.2f}", status, note)


class SpanPerTask(Executor):
    """The floor of any span-per-task instrumentation, for the sampled cases: the stdlib executor with one SDK span
    per task (same provider and batch processor), started at submit and ended by a done callback; no attribute,
    no event, no context carried to the task, no metrics."""

    def __init__(self, executor: Executor, tracer: trace.Tracer) -> None:
        self.executor = executor
        self.tracer = tracer

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        span = self.tracer.start_span("task")
        future = self.executor.submit(fn, *args, **kwargs)
        future.add_done_callback(lambda _: span.end())
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait, cancel_futures=cancel_futures)


def compare(
    case: str,
    mode: str,
    make_bare: Callable[[], Executor],
    body: Callable[[Executor], int],
    max_ratio: float | None,
    sizes: Sizes,
    traced_pool: Callable[[Telemetry], Executor] = Telemetry.thread_pool,
) -> tuple[list[Row], list[Sample]]:
    """The shared shape of the executor cases: bare vs traced pool, interleaved, under telemetry ``mode``.

    With every span sampled, ``SpanPerTask`` runs interleaved too, and a ``<case>.sdk_span_floor`` row reports
    what one bare SDK span per task costs in the same run.
    """
    with telemetry(mode) as tel:
        runs = [
            partial(on_executor, make_bare, body, tel),
            partial(on_executor, partial(traced_pool, tel), body, tel),
        ]
        if mode == "sampled":
            tracer = tel.provider.get_tracer("benchmarks.floor")
            runs.append(partial(on_executor, lambda: SpanPerTask(make_bare(), tracer), body, tel))
        bare, traced, *floor = interleaved(*runs, reps=sizes.reps)
    rows = [ratio_row(case, "us/task", bare, traced, max_ratio)]
    if floor:
        row = ratio_row(f"{case}.sdk_span_floor", "us/task", bare, floor[0], None)
        rows[0].note += f"; {median_us(traced) / median_us(floor[0]):.2f}x the SDK-span floor"
        row.note += "; stdlib pool + one bare SDK span per task, submit to done callback"
        rows.append(row)
    return rows, traced


# -- task bodies ---------------------------------------------------------------------------------------------
def batch(n: int, executor: Executor) -> int:
    """Submit ``n`` no-op tasks, then wait for all of them."""
    submit = executor.submit
    futures = [submit(noop) for _ in range(n)]
    for future in futures:
        future.result()
    return n


def round_trips(n: int, executor: Executor) -> int:
    """``n`` sequential ``submit(noop).result()``."""
    submit = executor.submit
    for _ in range(n):
        submit(noop).result()
    return n


def mapped(n: int, executor: Executor) -> int:
    """Consume ``executor.map(noop, range(n))``."""
    for _ in executor.map(noop, range(n)):
        pass
    return n


def small_batch(n: int, work: int, executor: Executor) -> int:
    """Submit ``n`` tasks of ``small_task(work)``, then wait for all of them."""
    futures = [executor.submit(small_task, work) for _ in range(n)]
    for future in futures:
        future.result()
    return n


# -- cases ---------------------------------------------------------------------------------------------------
def thread_pool() -> Executor:
    return cf.ThreadPoolExecutor(THREAD_WORKERS)


def case_thread_metrics(sizes: Sizes) -> list[Row]:
    """Thread pool batch, metrics only (NoOpTracerProvider)."""
    rows, _ = compare("thread_metrics", "metrics", thread_pool, partial(batch, sizes.batch), 1.3, sizes)
    return rows


#: How much slower than Prometheus-only "both exports on" may be (same run, per-task medians).
BOTH_EXPORTS_MAX = 1.05


def case_thread_metrics_both(sizes: Sizes) -> list[Row]:
    """Thread pool batch, metrics only, exported both ways: Prometheus and an OpenTelemetry MeterProvider reading
    the same tables. Interleaved in one run: bare, Prometheus only, both; each traced repetition ends with what its
    exports read (a scrape; a scrape and an OpenTelemetry collection), charged to it."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider([reader])
    registries = {"prometheus": CollectorRegistry(), "both": CollectorRegistry()}

    def pool(side: str) -> Executor:
        return tracedfutures.TracedThreadPoolExecutor(
            THREAD_WORKERS, tracer_provider=trace.NoOpTracerProvider(), registry=registries[side],
            meter_provider=meters if side == "both" else None,
        )  # fmt: skip

    def exported(side: str, executor: Executor) -> int:
        n = batch(sizes.batch, executor)
        prometheus_client.generate_latest(registries[side])
        if side == "both":
            reader.get_metrics_data()
        return n

    tel = Telemetry(trace.NoOpTracerProvider())
    try:
        bare, prometheus, both = interleaved(
            partial(on_executor, thread_pool, partial(batch, sizes.batch), tel),
            partial(on_executor, partial(pool, "prometheus"), partial(exported, "prometheus"), tel),
            partial(on_executor, partial(pool, "both"), partial(exported, "both"), tel),
            reps=sizes.reps,
        )
    finally:
        meters.shutdown()
    over = median_us(both) / median_us(prometheus)
    row = ratio_row("thread_metrics_both", "us/task", bare, both, None)
    row.target, row.status = (
        f"<= {BOTH_EXPORTS_MAX:.2f}x Prometheus only",
        "PASS" if over <= BOTH_EXPORTS_MAX else "FAIL",
    )
    row.note += f"; {over:.3f}x Prometheus only (same run)"
    alone = ratio_row("thread_metrics_both.prometheus_only", "us/task", bare, prometheus, None)
    alone.note += "; the same pool and scrape without a MeterProvider"
    return [row, alone]


def case_thread_unsampled(sizes: Sizes) -> list[Row]:
    """Thread pool batch, metrics + spans sampled out (a non-sampled parent is current at submit)."""
    rows, _ = compare("thread_unsampled", "unsampled", thread_pool, partial(batch, sizes.batch), 1.5, sizes)
    return rows


def dropped_row(case: str, samples: Sequence[Sample], target: bool, note: str) -> Row:
    """Spans the batch processor dropped over ``samples`` (one span per item); target 0 if ``target``."""
    dropped = dropped_spans(samples)
    status = ("PASS" if dropped == 0 else "FAIL") if target else "INFO"
    return Row(
        case,
        "spans",
        None,
        dropped,
        None,
        "0" if target else "report",
        status,
        f"of {sum(s.items for s in samples)} task spans; {note}",
    )


def case_thread_sampled(sizes: Sizes) -> list[Row]:
    """Thread pool batch, metrics + every span sampled and exported; spans dropped with ours and SDK settings.

    The dropped rows also run one batch against an exporter that takes ``SLOW_EXPORT`` s per call, with the
    recommended settings and with the SDK defaults (queue of 2048).
    """
    rows, traced = compare("thread_sampled", "sampled", thread_pool, partial(batch, sizes.batch), 3.5, sizes)
    rows.append(dropped_row("thread_sampled.dropped", traced, True, "discarding exporter, recommended BSP"))
    slow = f"exporter sleeping {SLOW_EXPORT * 1e3:.0f} ms per export"
    for suffix, bsp, target in (("recommended", None, True), ("sdk_defaults", BspSettings(), False)):
        with quiet("opentelemetry.sdk._shared_internal"), telemetry("sampled", bsp, SLOW_EXPORT) as tel:
            sample = on_executor(tel.thread_pool, partial(batch, sizes.batch), tel)
        rows.append(dropped_row(f"thread_sampled.dropped_slow_{suffix}", [sample], target, slow))
    return rows


def case_round_trip(sizes: Sizes) -> list[Row]:
    """Sequential submit().result() round trips, metrics + every span sampled."""
    rows, traced = compare(
        "round_trip_sampled", "sampled", thread_pool, partial(round_trips, sizes.round_trips), 1.8, sizes
    )
    rows[0].note += f"; spans dropped: {dropped_spans(traced)}"
    return rows


def case_map(sizes: Sizes) -> list[Row]:
    """executor.map over no-op items on a thread pool, metrics only."""
    rows, _ = compare("map_metrics", "metrics", thread_pool, partial(mapped, sizes.map_items), 1.3, sizes)
    return rows


def case_process(sizes: Sizes) -> list[Row]:
    """Process pool batch of ~10 us tasks, metrics + all spans sampled; and of ~1 ms tasks, for scale."""
    rows = []
    for case, work, tasks, max_ratio in (
        ("process_sampled", 1_000, sizes.process_tasks, 1.05),
        ("process_sampled_1ms", 60_000, sizes.process_tasks // 2, None),
    ):
        case_rows, traced = compare(
            case,
            "sampled",
            partial(cf.ProcessPoolExecutor, PROCESS_WORKERS),
            partial(small_batch, tasks, work),
            max_ratio,
            sizes,
            traced_pool=Telemetry.process_pool,
        )
        case_rows[0].note += f"; sum(range({work})) per task; spans dropped: {dropped_spans(traced)}"
        rows += case_rows
    return rows


@contextmanager
def finished_futures(n: int) -> Iterator[tuple[list[cf.Future[Any]], Telemetry]]:
    """``n`` finished traced futures (sampled task spans) and the sampled telemetry set as the defaults."""
    with telemetry("sampled") as tel:
        with attached(tel.parent), tel.thread_pool() as executor:
            futures = [executor.submit(noop) for _ in range(n)]
            cf.wait(futures)
        tel.flush()
        tracedfutures.configure(tracer_provider=tel.provider, registry=CollectorRegistry())
        try:
            yield futures, tel
        finally:
            tracedfutures.reset_defaults()


Waiter = Callable[[list[cf.Future[Any]]], object]


#: The waiting cases split their calls into this many times more, shorter repetitions: a few milliseconds of
#: bare calls then of traced ones, so that both sides meet the same moments of a shared machine.
WAIT_INTERLEAVING = 5


def _compare_waiting(case: str, bare_call: Waiter, traced_call: Waiter, sizes: Sizes, calls: int) -> list[Row]:
    """Bare vs traced waiting function over the same finished futures: ``calls`` calls per ``sizes.reps``,
    interleaved in ``WAIT_INTERLEAVING`` times as many repetitions."""
    per_rep = max(calls // WAIT_INTERLEAVING, 1)

    def repeat(fn: Waiter, futures: list[cf.Future[Any]]) -> int:
        for _ in range(per_rep):
            fn(futures)
        return per_rep

    with finished_futures(sizes.wait_futures) as (futures, tel):
        bare, traced = interleaved(
            partial(timed, partial(repeat, bare_call, futures), tel),
            partial(timed, partial(repeat, traced_call, futures), tel),
            reps=sizes.reps * WAIT_INTERLEAVING,
        )
    row = ratio_row(case, "us/call", bare, traced, 1.1)
    row.note += f"; {sizes.wait_futures} finished futures, sampled wait spans"
    return [row]


def case_wait(sizes: Sizes) -> list[Row]:
    """wait(FIRST_COMPLETED) over already-finished futures: tracedfutures.wait vs concurrent.futures.wait."""
    return _compare_waiting(
        "wait_first_completed",
        partial(cf.wait, return_when=cf.FIRST_COMPLETED),
        partial(tracedfutures.wait, return_when=cf.FIRST_COMPLETED),
        sizes,
        sizes.wait_calls,
    )


def _consume(as_completed: Callable[[list[cf.Future[Any]]], Iterator[Any]], futures: list[cf.Future[Any]]) -> None:
    for _ in as_completed(futures):
        pass


def case_as_completed(sizes: Sizes) -> list[Row]:
    """as_completed over already-finished futures, fully consumed."""
    return _compare_waiting(
        "as_completed",
        partial(_consume, cf.as_completed),
        partial(_consume, tracedfutures.as_completed),
        sizes,
        sizes.wait_calls // 4,  # an as_completed call costs about four wait calls
    )


def case_scrape(sizes: Sizes) -> list[Row]:
    """generate_latest() of a registry holding 50 executors with 20 error types each (absolute, no bare)."""
    registry = CollectorRegistry()
    for i in range(50):
        with tracedfutures.TracedThreadPoolExecutor(
            1, name=f"pool_{i:02d}", tracer_provider=trace.NoOpTracerProvider(), registry=registry
        ) as executor:
            futures = [executor.submit(fail, cls) for cls in ERROR_TYPES] + [executor.submit(noop)]
            cf.wait(futures)
    del futures
    times = []
    for _ in range(sizes.reps):
        gc.collect()
        start = time.perf_counter()
        for _ in range(sizes.scrapes):
            text = prometheus_client.generate_latest(registry)
        times.append((time.perf_counter() - start) / sizes.scrapes * 1e3)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return [
        Row(
            "scrape_50x20",
            "ms/scrape",
            None,
            statistics.median(times),
            None,
            "report",
            "INFO",
            f"{len(text) // 1024} KiB, {series} samples",
        )
    ]


def _settle(tel: Telemetry) -> None:
    """Let the workers finish the hooks that run after result() returned, then export what they ended."""
    time.sleep(0.05)
    tel.flush()


def _retained(make: Callable[[], Executor], tel: Telemetry, n: int) -> tuple[float, float]:
    """Bytes per future still allocated after a batch is dropped, and cyclic garbage objects per future.

    Measured as the growth between the end of one batch and the end of the next (after warm-up), so that
    one-time allocations do not count.
    """
    with make() as executor, attached(tel.parent):
        batch(n, executor)
        _settle(tel)
        gc.collect()
        tracemalloc.start()
        try:
            batch(n, executor)
            _settle(tel)
            gc.collect()
            first = tracemalloc.get_traced_memory()[0]
            gc.disable()
            try:
                batch(n, executor)
                _settle(tel)
                cycles = gc.collect()
            finally:
                gc.enable()
            second = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    return (second - first) / n, cycles / n


def _queued(make: Callable[[int], Executor], tel: Telemetry, n: int) -> float:
    """Bytes allocated per task while ``n`` tasks wait in the queue of a one-worker pool kept busy."""
    gate = threading.Event()
    with make(1) as executor, attached(tel.parent):
        warm_up(executor)
        executor.submit(gate.wait)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            futures = [executor.submit(noop) for _ in range(n)]
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gate.set()
        for future in futures:
            future.result()
    return held / n


def case_memory(sizes: Sizes) -> list[Row]:
    """Retained bytes and cyclic garbage per finished future, and bytes per queued task, metrics + every span
    sampled."""
    with telemetry("sampled") as tel:
        bare_bytes, bare_cycles = _retained(thread_pool, tel, sizes.leak_tasks)
        traced_bytes, traced_cycles = _retained(tel.thread_pool, tel, sizes.leak_tasks)
        bare_queued = _queued(cf.ThreadPoolExecutor, tel, sizes.leak_tasks)
        traced_queued = _queued(tel.thread_pool, tel, sizes.leak_tasks)
    ok = traced_bytes < 1.0
    return [
        Row(
            "memory_queued",
            "B/task",
            bare_queued,
            traced_queued,
            traced_queued / bare_queued,
            "report",
            "INFO",
            f"tracemalloc, {sizes.leak_tasks} tasks queued behind a busy worker",
        ),
        Row(
            "memory_retained",
            "B/future",
            bare_bytes,
            traced_bytes,
            None,
            "< 1 (0)",
            "PASS" if ok else "FAIL",
            f"tracemalloc, {sizes.leak_tasks} futures dropped",
        ),
        Row(
            "memory_gc_cycles",
            "objs/future",
            bare_cycles,
            traced_cycles,
            None,
            "report",
            "INFO",
            "objects only freed by the cyclic GC",
        ),
    ]


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def case_rss(sizes: Sizes) -> list[Row]:
    """RSS after 100k (and 1M) tasks, in batches of 10k, vs the RSS after a 20k warm-up; everything on."""
    rows = []
    with telemetry("sampled") as tel, tel.thread_pool() as executor, attached(tel.parent):

        def measure() -> int:
            _settle(tel)
            gc.collect()
            return rss_bytes()

        done = 0
        for _ in range(2):
            done += batch(RSS_BATCH, executor)
        baseline = measure()
        for checkpoint in sizes.rss_checkpoints:
            while done < checkpoint:
                done += batch(RSS_BATCH, executor)
            rss = measure()
            ratio = rss / baseline
            status = "PASS" if abs(ratio - 1) <= RSS_TOLERANCE else "FAIL"
            rows.append(
                Row(
                    f"rss_{checkpoint // 1000}k",
                    "MiB",
                    None,
                    rss / 2**20,
                    ratio,
                    "1 +/- 0.05",
                    status,
                    f"ratio to {baseline / 2**20:.1f} MiB after {2 * RSS_BATCH} tasks",
                )
            )
    return rows


CASES: dict[str, Callable[[Sizes], list[Row]]] = {
    "thread_metrics": case_thread_metrics,
    "thread_metrics_both": case_thread_metrics_both,
    "thread_unsampled": case_thread_unsampled,
    "thread_sampled": case_thread_sampled,
    "round_trip": case_round_trip,
    "map": case_map,
    "process": case_process,
    "wait": case_wait,
    "as_completed": case_as_completed,
    "scrape": case_scrape,
    "memory": case_memory,
    "rss": case_rss,
}


def source_state() -> str:
    """The library's git commit, with a digest of its sources when they differ from it (results follow code)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(tracedfutures.__file__)))

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "no git"
    if not git("status", "--porcelain", "--", "tracedfutures"):
        return commit
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(tracedfutures.__file__))
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return f"{commit}+dirty (tracedfutures/*.py sha256 {digest.hexdigest()[:12]})"


# -- output --------------------------------------------------------------------------------------------------
def environment(sizes: Sizes, quick: bool) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "tracedfutures": tracedfutures.__version__,
        "source": source_state(),
        "opentelemetry-sdk": version("opentelemetry-sdk"),
        "prometheus-client": version("prometheus-client"),
        "mode": "quick" if quick else "full",
        "sizes": asdict(sizes),
        "batch_span_processor": RECOMMENDED_BSP,
    }


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    header = ("case", "unit", "bare", "traced", "ratio", "target", "result", "note")
    lines = [(r.case, r.unit, _fmt(r.bare), _fmt(r.traced), _fmt(r.ratio), r.target, r.status, r.note) for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out.extend(fmt.format(*line) for line in lines)
    return "\n".join(out)


@dataclass
class Args:
    quick: bool
    json: str | None
    cases: list[str] = field(default_factory=list)
    check: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts and fewer repetitions (CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the environment and rows as JSON")
    parser.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when a case fails its target")
    ns = parser.parse_args(argv)
    cases = [c.strip() for c in ns.cases.split(",") if c.strip()] or list(CASES)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return Args(ns.quick, ns.json, cases, ns.check)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    env = environment(sizes, args.quick)
    print(f"python {env['python']} ({env['implementation']}), nproc {env['nproc']}, {env['platform']}")
    print(f"load average at start {env['loadavg_at_start']} (other processes skew the timings)")
    print(
        f"tracedfutures {env['tracedfutures']} ({env['source']}), opentelemetry-sdk {env['opentelemetry-sdk']}, "
        f"prometheus-client {env['prometheus-client']}; "
        f"{env['mode']} run, {sizes.reps} interleaved reps (medians)",
        flush=True,
    )
    rows: list[Row] = []
    started = time.perf_counter()
    for name in args.cases:
        t0 = time.perf_counter()
        new = CASES[name](sizes)
        rows.extend(new)
        summary = "; ".join(
            f"{r.case} {r.status} ({_fmt(r.ratio) if r.ratio is not None else _fmt(r.traced)})" for r in new
        )
        print(f"  [{time.perf_counter() - t0:6.1f}s] {summary}", file=sys.stderr, flush=True)
    print()
    print(format_table(rows))
    failed = [r.case for r in rows if r.status == "FAIL"]
    env["loadavg_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    elapsed = time.perf_counter() - started
    print(f"\n{len(rows)} rows, {len(failed)} FAIL, {elapsed:.0f}s, load average at end {env['loadavg_at_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
