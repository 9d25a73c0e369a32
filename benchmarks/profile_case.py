#!/usr/bin/env python
"""Run one traced thread-pool case in a loop, for a profiler to watch (py-spy, pyinstrument, cProfile).

Usage::

    py-spy record --gil -r 2000 -f raw -o out.txt -- python benchmarks/profile_case.py sampled --tasks 200000
    python benchmarks/profile_case.py metrics --cprofile out.pstats   # main and worker threads, merged

Modes are those of ``run.py``'s ``telemetry()``: ``metrics``, ``unsampled``, ``sampled``; ``--bare`` runs the
stdlib executor instead, for a baseline profile.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import cProfile
import gc
import pstats
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import run
from prometheus_client import CollectorRegistry

import tracedfutures


class GcTimer:
    """Time spent in the cyclic garbage collector, per generation, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self.collected = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._start
            self.runs[info["generation"]] += 1
            self.collected += info["collected"]

    def report(self, tasks: int) -> str:
        per_gen = ", ".join(f"gen{g} {self.runs[g]}x {self.seconds[g] / tasks * 1e6:.2f}" for g in range(3))
        total = sum(self.seconds) / tasks * 1e6
        return f"cyclic GC: {total:.1f} us/task ({per_gen}); {self.collected} collected"


_profiles: list[cProfile.Profile] = []
_profiles_lock = threading.Lock()


def _profile_this_thread() -> None:
    """Thread-pool initializer: profile the worker thread it runs in (cProfile is per thread)."""
    profile = cProfile.Profile()
    with _profiles_lock:
        _profiles.append(profile)
    profile.enable()


def make_executor(tel: run.Telemetry, bare: bool, cprofile: bool) -> Executor:
    initializer: Callable[[], None] | None = _profile_this_thread if cprofile else None
    if bare:
        return cf.ThreadPoolExecutor(run.THREAD_WORKERS, initializer=initializer)
    return tracedfutures.TracedThreadPoolExecutor(
        run.THREAD_WORKERS,
        initializer=initializer,
        tracer_provider=tel.provider,
        registry=CollectorRegistry(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("metrics", "unsampled", "sampled"))
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--bare", action="store_true", help="profile the stdlib ThreadPoolExecutor instead")
    parser.add_argument("--cprofile", metavar="PATH", help="write merged cProfile stats of all threads here")
    parser.add_argument("--no-gc", action="store_true", help="disable the cyclic garbage collector while timing")
    args = parser.parse_args(argv)
    gc_timer = GcTimer()
    main_profile = cProfile.Profile() if args.cprofile else None
    with run.telemetry(args.mode) as tel:
        executor = make_executor(tel, args.bare, main_profile is not None)
        run.warm_up(executor)
        gc.collect()
        if args.no_gc:
            gc.disable()
        gc.callbacks.append(gc_timer)
        start = time.perf_counter()
        if main_profile is not None:
            main_profile.enable()
        with run.attached(tel.parent):
            done = 0
            while done < args.tasks:
                done += run.batch(args.batch, executor)
            tel.flush()
        if main_profile is not None:
            main_profile.disable()
        elapsed = time.perf_counter() - start
        gc.callbacks.remove(gc_timer)
        gc.enable()
        executor.shutdown(wait=True)
    print(f"{args.mode}{' (bare)' if args.bare else ''}: {elapsed / done * 1e6:.1f} us/task over {done} tasks")
    print(f"  batches of {args.batch}; {gc_timer.report(done)}")
    if main_profile is not None and args.cprofile:
        stats = pstats.Stats(main_profile)
        for profile in _profiles:  # worker threads have exited: their profiles hold everything they ran
            stats.add(profile)
        stats.dump_stats(args.cprofile)
        stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
