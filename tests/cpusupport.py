"""Tasks for the worker CPU tests, importable in a worker process or a subinterpreter: nothing but the standard
library (a subinterpreter imports this by name, see ``importable``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


def importable(path: str) -> None:
    """A pool initializer that uses no globals (so an interpreter pool shares it without pickling): this module
    becomes importable in each new interpreter."""
    import sys

    sys.path.insert(0, path)


def spin(loops: int) -> int:
    """Pure-Python work: holds the GIL of its interpreter the whole time."""
    total = 0
    for i in range(loops):
        total += i
    return total


def nap(seconds: float) -> float:
    """A task that waits: it uses next to no CPU."""
    time.sleep(seconds)
    return seconds


# -- what the tests measure against -------------------------------------------------------------------------------
def own_cpu() -> float:
    """CPU seconds the OS charged this process (every thread of it), user plus system."""
    times = os.times()
    return times.user + times.system


def children_cpu() -> float:
    """CPU seconds the OS charged this process's children that have ended and been reaped (a process pool's
    workers once it is shut down)."""
    times = os.times()
    return times.children_user + times.children_system


def one_thread_gets() -> float:
    """The share of a CPU that one CPU-bound thread gets on this machine now (1.0 on an idle one): the pools' CPU
    shares are compared with it, since the test suite shares the machine's cores with its other stage."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < 0.3:
        spin(10_000)
    return (time.thread_time() - cpu) / (time.perf_counter() - wall)


def cpu_phase(
    pool: Executor, task: Callable[[Any], Any], args: list[Any], charged: Callable[[], float],
    before_shutdown: Callable[[], object] = lambda: None,
) -> float:  # fmt: skip
    """Run ``task`` over ``args`` in ``pool``, call ``before_shutdown`` once they all ended, shut the pool down;
    the CPU seconds ``charged`` says the OS charged meanwhile."""
    before = charged()
    with pool:
        for future in [pool.submit(task, arg) for arg in args]:
            future.result(120)
        before_shutdown()
    return charged() - before
