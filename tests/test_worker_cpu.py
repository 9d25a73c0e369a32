"""``executor_workers_cpu_seconds_total``: one program, traced pools in turn (threads of pure-Python loops,
processes of the same loops, threads that sleep, and on 3.14 an interpreter pool), each phase's counter against
what the OS charged (``os.times()``: this process's own CPU for a pool of threads, its reaped children's for a
process pool), and the CPU share of busy worker-seconds that tells the pools apart."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import cpusupport
import pytest
from prometheus_client import CollectorRegistry

import tracedfutures

TESTS = os.path.dirname(cpusupport.__file__)
LOOPS = 4_000_000  # about 0.2 s of one CPU per task on 3.11
HAS_INTERPRETERS = "InterpreterPoolExecutor" in concurrent.futures.__all__


def _value(registry: CollectorRegistry, family: str, name: str) -> float:
    found = registry.get_sample_value(family, {"executor": name})
    assert found is not None, f"no {family} for {name}"
    return found


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _phase(
    registry: CollectorRegistry,
    name: str,
    pool: concurrent.futures.Executor,
    task: Callable[[Any], Any],
    args: list[Any],
    charged: Callable[[], float],
) -> tuple[float, float, float]:
    """Run ``task`` over ``args`` in ``pool`` (traced as ``name``) and shut it down; the pool's CPU seconds and
    busy worker-seconds as a scrape after the shutdown reads them, and the CPU the OS charged meanwhile."""
    before = charged()
    with pool:
        for future in [pool.submit(task, arg) for arg in args]:
            future.result(120)
        if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            # A worker process's CPU is read while it lives (it is reaped as the pool shuts down): this read
            # holds all of it, the shutdown adds what the idle workers use meanwhile.
            read_before_exit = _value(registry, "executor_workers_cpu_seconds_total", name)
    cpu = _value(registry, "executor_workers_cpu_seconds_total", name)
    if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
        assert cpu >= read_before_exit
    return cpu, _value(registry, "executor_workers_busy_seconds_total", name), charged() - before


def _one_thread_gets() -> float:
    """The share of a CPU that one CPU-bound thread gets on this machine now (1.0 on an idle one): the pools'
    shares are compared with it, since the suite shares the machine's 2 cores with its other stage."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < 0.3:
        cpusupport.spin(10_000)
    return (time.thread_time() - cpu) / (time.perf_counter() - wall)


def _near(measured: float, charged: float) -> None:
    assert abs(measured - charged) <= 0.25 * charged, (measured, charged)


def test_cpu_seconds_of_thread_process_and_sleeping_pools() -> None:
    """On an idle machine with 2 cores, a GIL-bound pool of 4 busy threads gets one CPU (1/4 of its busy time) and
    2 processes one CPU each; on a loaded one (the suite runs two stages at once) each share is measured against
    what one CPU-bound thread gets at the time."""
    registry = CollectorRegistry()
    gets = _one_thread_gets()
    spin = cpusupport.spin
    # 4 threads of pure-Python loops: one CPU at a time under the GIL. Nothing reads the counter before the pool
    # shuts down: each worker thread hands its final CPU time over as it ends.
    cpu, busy, charged = _phase(
        registry, "threads", tracedfutures.TracedThreadPoolExecutor(4, name="threads", registry=registry),
        spin, [LOOPS] * 8, _own_cpu,
    )  # fmt: skip
    _near(cpu, charged)
    assert 0.15 <= cpu / busy / gets <= 0.4, (cpu, busy, gets)
    # 2 processes of the same loops: each its own CPU.
    fork = multiprocessing.get_context("fork")
    gets = _one_thread_gets()
    cpu, busy, charged = _phase(
        registry, "processes",
        tracedfutures.TracedProcessPoolExecutor(2, mp_context=fork, name="processes", registry=registry),
        spin, [LOOPS] * 4, _children_cpu,
    )  # fmt: skip
    _near(cpu, charged)
    assert cpu / busy / gets >= 0.6, (cpu, busy, gets)
    # 4 threads that sleep: busy, and next to no CPU.
    cpu, busy, charged = _phase(
        registry, "sleepers", tracedfutures.TracedThreadPoolExecutor(4, name="sleepers", registry=registry),
        cpusupport.nap, [0.5] * 8, _own_cpu,
    )  # fmt: skip
    assert busy >= 3.5
    assert cpu <= charged + 0.01
    assert cpu / busy <= 0.05, (cpu, busy)


@pytest.mark.skipif(not HAS_INTERPRETERS, reason="no InterpreterPoolExecutor here")
def test_cpu_seconds_of_an_interpreter_pool() -> None:
    """Each worker thread runs its own interpreter, with its own GIL: the pool's CPU is its threads' clocks,
    near one CPU per busy worker when the machine has the cores (against what one thread gets now, as above)."""
    registry = CollectorRegistry()
    gets = _one_thread_gets()
    pool = tracedfutures.TracedInterpreterPoolExecutor(  # type: ignore[attr-defined]
        2, None, cpusupport.importable, (TESTS,), name="interpreters", registry=registry
    )
    cpu, busy, charged = _phase(registry, "interpreters", pool, cpusupport.spin, [LOOPS] * 4, _own_cpu)
    _near(cpu, charged)
    assert cpu / busy / gets >= 0.6, (cpu, busy, gets)


def test_a_pool_with_no_workers_yet_reads_zero_and_never_goes_down() -> None:
    registry = CollectorRegistry()
    pool = tracedfutures.TracedThreadPoolExecutor(2, name="lazy", registry=registry)
    assert _value(registry, "executor_workers_cpu_seconds_total", "lazy") == 0.0
    pool.submit(cpusupport.spin, LOOPS // 4).result(60)
    first = _value(registry, "executor_workers_cpu_seconds_total", "lazy")
    assert first > 0
    pool.shutdown()
    del pool  # the executor and its threads are gone: their CPU stays counted
    assert _value(registry, "executor_workers_cpu_seconds_total", "lazy") >= first


def test_a_thread_that_is_not_a_worker_hands_over_nothing() -> None:
    """A submitting thread's end is not a worker's: the CPU it used is not the pool's."""
    registry = CollectorRegistry()
    pool = tracedfutures.TracedThreadPoolExecutor(1, name="idle", registry=registry)
    submitter = threading.Thread(target=lambda: [cpusupport.spin(LOOPS // 4), pool.submit(int).result(60)])
    submitter.start()
    submitter.join()
    with pool:
        pass
    assert _value(registry, "executor_workers_cpu_seconds_total", "idle") < 0.02
