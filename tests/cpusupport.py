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


def on_cpu_share(pool: Executor) -> float:
    """Of the time ``pool``'s workers were runnable, the share they were on a CPU (Linux's ``schedstat``: time on a
    CPU, time waiting on a run queue), now: 1.0 on an idle machine, less when its cores are busy (the suite runs
    two stages at once on 2 cores). What the pools' CPU shares are taken against."""
    processes = getattr(pool, "_processes", None)
    if processes is not None:
        tasks = [f"/proc/{pid}" for pid in processes]
    else:
        tasks = [f"/proc/self/task/{thread.native_id}" for thread in getattr(pool, "_threads", ())]
    ran = waited = 0
    for task in tasks:
        with open(f"{task}/schedstat", encoding="ascii") as file:
            on_cpu, on_queue, _ = file.read().split()
        ran, waited = ran + int(on_cpu), waited + int(on_queue)
    return ran / (ran + waited)


def cpu_phase(
    pool: Executor, task: Callable[[Any], Any], args: list[Any], charged: Callable[[], float],
    before_shutdown: Callable[[], object] = lambda: None,
) -> tuple[float, float]:  # fmt: skip
    """Run ``task`` over ``args`` in ``pool``, call ``before_shutdown`` once they all ended, shut the pool down;
    the CPU seconds ``charged`` says the OS charged meanwhile, and the workers' ``on_cpu_share`` at the end."""
    before = charged()
    with pool:
        for future in [pool.submit(task, arg) for arg in args]:
            future.result(120)
        on_cpu = on_cpu_share(pool)
        before_shutdown()
    return charged() - before, on_cpu


def assert_gil_bound(share: float, got: float) -> None:
    """The CPU share of busy time of a pool of 4 busy threads under the GIL: one CPU at most (1/4 of its busy
    time), of which its runnable thread was on a CPU ``got`` of the time (``on_cpu_share``)."""
    assert got / 8 <= share <= 0.3, (share, got)


def assert_parallel(share: float, got: float) -> None:
    """The CPU share of busy time of a pool whose busy workers each run on a CPU of their own (processes,
    interpreters): near the share ``got`` of their runnable time they were on one."""
    assert share >= 0.6 * got, (share, got)
