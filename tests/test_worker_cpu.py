"""``executor_workers_cpu_seconds_total``: one program, traced pools in turn (threads of pure-Python loops,
processes of the same loops, threads that sleep, and on 3.14 an interpreter pool), each phase's counter against
what the OS charged (``os.times()``: this process's own CPU for a pool of threads, its reaped children's for a
process pool), and the CPU share of busy worker-seconds that tells the pools apart.

On an idle machine with 2 cores a GIL-bound pool of 4 busy threads gets one CPU (1/4 of its busy time) and 2
processes one CPU each; the suite runs two stages at once on such a machine, so the shares are taken against the
share of their runnable time the workers were on a CPU (``cpusupport.on_cpu_share``, 1.0 on an idle machine)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading

import cpusupport
import pytest
from prometheus_client import CollectorRegistry

import tracedfutures

TESTS = os.path.dirname(cpusupport.__file__)
LOOPS = 4_000_000  # about 0.2 s of one CPU per task on 3.11
HAS_INTERPRETERS = "InterpreterPoolExecutor" in concurrent.futures.__all__
CPU = "executor_workers_cpu_seconds_total"
BUSY = "executor_workers_busy_seconds_total"


def _value(registry: CollectorRegistry, family: str, name: str) -> float:
    found = registry.get_sample_value(family, {"executor": name})
    assert found is not None, f"no {family} for {name}"
    return found


def _near(measured: float, charged: float) -> None:
    assert abs(measured - charged) <= 0.25 * charged, (measured, charged)


def test_cpu_seconds_of_thread_process_and_sleeping_pools() -> None:
    registry = CollectorRegistry()
    # 4 threads of pure-Python loops: one CPU at a time under the GIL. Nothing reads the counter before the pool
    # shuts down: each worker thread hands its final CPU time over as it ends.
    pool = tracedfutures.TracedThreadPoolExecutor(4, name="threads", registry=registry)
    charged, got = cpusupport.cpu_phase(pool, cpusupport.spin, [LOOPS] * 8, cpusupport.own_cpu)
    cpu, busy = _value(registry, CPU, "threads"), _value(registry, BUSY, "threads")
    _near(cpu, charged)
    cpusupport.assert_gil_bound(cpu / busy, got)
    # 2 processes of the same loops, each its own CPU. A worker process's CPU is read while it lives (it is reaped
    # as the pool shuts down): a read after the last task holds it, the shutdown adds what idle workers use.
    fork = multiprocessing.get_context("fork")
    pool = tracedfutures.TracedProcessPoolExecutor(2, mp_context=fork, name="processes", registry=registry)
    reads: list[float] = []
    charged, got = cpusupport.cpu_phase(
        pool, cpusupport.spin, [LOOPS] * 4, cpusupport.children_cpu,
        lambda: reads.append(_value(registry, CPU, "processes")),
    )
    cpu, busy = _value(registry, CPU, "processes"), _value(registry, BUSY, "processes")
    assert cpu >= reads[0]
    _near(cpu, charged)
    cpusupport.assert_parallel(cpu / busy, got)
    # 4 threads that sleep: busy, and next to no CPU.
    pool = tracedfutures.TracedThreadPoolExecutor(4, name="sleepers", registry=registry)
    charged, _ = cpusupport.cpu_phase(pool, cpusupport.nap, [0.5] * 8, cpusupport.own_cpu)
    cpu, busy = _value(registry, CPU, "sleepers"), _value(registry, BUSY, "sleepers")
    assert busy >= 3.5
    assert cpu <= charged + 0.01
    assert cpu / busy <= 0.05, (cpu, busy)


@pytest.mark.skipif(not HAS_INTERPRETERS, reason="no InterpreterPoolExecutor here")
def test_cpu_seconds_of_an_interpreter_pool() -> None:
    """Each worker thread runs its own interpreter, with its own GIL: the pool's CPU is its threads' clocks,
    near one CPU per busy worker when the machine has the cores."""
    registry = CollectorRegistry()
    pool = tracedfutures.TracedInterpreterPoolExecutor(  # type: ignore[attr-defined]
        2, None, cpusupport.importable, (TESTS,), name="interpreters", registry=registry
    )
    charged, got = cpusupport.cpu_phase(pool, cpusupport.spin, [LOOPS] * 4, cpusupport.own_cpu)
    cpu, busy = _value(registry, CPU, "interpreters"), _value(registry, BUSY, "interpreters")
    _near(cpu, charged)
    cpusupport.assert_parallel(cpu / busy, got)


def test_a_pool_with_no_workers_yet_reads_zero_and_never_goes_down() -> None:
    registry = CollectorRegistry()
    pool = tracedfutures.TracedThreadPoolExecutor(2, name="lazy", registry=registry)
    assert _value(registry, CPU, "lazy") == 0.0
    pool.submit(cpusupport.spin, LOOPS // 4).result(60)
    first = _value(registry, CPU, "lazy")
    assert first > 0
    pool.shutdown()
    del pool  # the executor and its threads are gone: their CPU stays counted
    assert _value(registry, CPU, "lazy") >= first


def test_a_thread_that_is_not_a_worker_hands_over_nothing() -> None:
    """A submitting thread's end is not a worker's: the CPU it used is not the pool's."""
    registry = CollectorRegistry()
    pool = tracedfutures.TracedThreadPoolExecutor(1, name="idle", registry=registry)
    submitter = threading.Thread(target=lambda: [cpusupport.spin(LOOPS // 4), pool.submit(int).result(60)])
    submitter.start()
    submitter.join()
    with pool:
        pass
    assert _value(registry, CPU, "idle") < 0.02


def test_no_series_for_an_executor_whose_workers_cannot_be_read() -> None:
    """An executor that is neither a thread, interpreter nor process pool (Dask's, a user's own) has none."""
    from support import UserExecutor

    registry = CollectorRegistry()
    with tracedfutures.traced(UserExecutor(), name="custom", registry=registry) as executor:
        assert executor.submit(int, "3").result(60) == 3
    assert registry.get_sample_value(CPU, {"executor": "custom"}) is None
    assert registry.get_sample_value(BUSY, {"executor": "custom"}) is not None


def test_the_opentelemetry_twin() -> None:
    """``executor.worker.cpu.time`` (unit ``s``, a monotonic sum) through an SDK MeterProvider's reader: the same
    value as the Prometheus series, read at collection time."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider([reader])
    registry = CollectorRegistry()
    try:
        pool = tracedfutures.TracedThreadPoolExecutor(2, name="twin", registry=registry, meter_provider=provider)
        charged, _ = cpusupport.cpu_phase(pool, cpusupport.spin, [LOOPS] * 2, cpusupport.own_cpu)
        data = reader.get_metrics_data()
        assert data is not None
        [metric] = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
                    if m.name == "executor.worker.cpu.time"]  # fmt: skip
        assert metric.unit == "s" and metric.data.is_monotonic
        [point] = metric.data.data_points
        assert dict(point.attributes) == {"executor.name": "twin", "executor.kind": "thread"}
        assert point.value == _value(registry, CPU, "twin")
        _near(point.value, charged)
    finally:
        provider.shutdown()
