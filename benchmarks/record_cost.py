#!/usr/bin/env python
"""What ``tracedfutures record`` costs a program: the same program run plain and under ``record``, in the same
invocation, interleaved (plain, recorded, plain, recorded, ...).

Usage::

    python benchmarks/record_cost.py [--tasks 10000,100000] [--repeat 3] [--workers 4]

The program (this file run with ``--program N WORKERS``) submits N no-op tasks to a thread pool of WORKERS workers
and waits for them: the worst case for a per-task cost. Each run is timed from outside, start-up included (a
Python start-up costs the same plain and recorded but for what the recording sets up). Printed per task count: the
median wall time of each side, the ratio recorded / plain (the target is at most 2), the bytes of timeline per
task (the target is under 400) and the recording's cost per task in microseconds. ``--instrumented`` also times,
interleaved, the program instrumented as ``record`` instruments it (``ConcurrentFuturesInstrumentor``, metrics
on) with no timeline and no ``record`` process: what is the instrumentation's, not the timeline's.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The targets of issue 20: recording costs at most twice the plain run, and under 400 bytes of file a task.
MAX_RATIO, MAX_BYTES = 2.0, 400


def noop() -> None:
    return None


def program(tasks: int, workers: int, instrumented: bool = False) -> None:
    if instrumented:
        from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor

        ConcurrentFuturesInstrumentor().instrument()
    with cf.ThreadPoolExecutor(workers) as pool:
        cf.wait([pool.submit(noop) for _ in range(tasks)])


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def measure(tasks: int, workers: int, repeat: int, directory: Path, instrumented: bool) -> dict[str, float]:
    # Bytecode cached, as an installed package has it (pip compiles it): a PYTHONDONTWRITEBYTECODE in the
    # environment would have every recorded run compile tracedfutures' modules again, which no user's run does.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    plain_command = [sys.executable, __file__, "--program", str(tasks), str(workers)]
    trace = directory / f"trace-{tasks}.json"
    recorded_command = [sys.executable, "-m", "tracedfutures", "record", "-o", str(trace), "--", *plain_command]
    instrumented_command = [sys.executable, __file__, "--instrumented-program", str(tasks), str(workers)]
    plain, recorded, alone = [], [], []
    for _ in range(repeat):
        plain.append(timed(plain_command, env))
        recorded.append(timed(recorded_command, env))
        if instrumented:
            alone.append(timed(instrumented_command, env))
    plain_s, recorded_s = statistics.median(plain), statistics.median(recorded)
    size = trace.stat().st_size
    return {
        "tasks": tasks,
        "plain_s": plain_s,
        "recorded_s": recorded_s,
        "ratio": recorded_s / plain_s,
        "bytes_per_task": size / tasks,
        "us_per_task": (recorded_s - plain_s) / tasks * 1e6,
        "instrumented_ratio": statistics.median(alone) / plain_s if alone else 0.0,
    }


def main(argv: list[str]) -> int:
    if argv[:1] in (["--program"], ["--instrumented-program"]):
        program(int(argv[1]), int(argv[2]), argv[0] == "--instrumented-program")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="10000,100000", help="task counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side per task count (median)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--instrumented", action="store_true", help="also time the instrumentation alone")
    args = parser.parse_args(argv)
    print(f"{'tasks':>8} {'plain s':>8} {'recorded s':>10} {'ratio':>6} {'B/task':>7} {'µs/task':>8}  target")
    failed = False
    with tempfile.TemporaryDirectory(prefix="tracedfutures-record-cost-") as directory:
        for tasks in (int(n) for n in args.tasks.split(",")):
            row = measure(tasks, args.workers, args.repeat, Path(directory), args.instrumented)
            ok = row["ratio"] <= MAX_RATIO and row["bytes_per_task"] < MAX_BYTES
            failed |= not ok
            print(
                f"{tasks:>8} {row['plain_s']:>8.2f} {row['recorded_s']:>10.2f} {row['ratio']:>6.2f}"
                f" {row['bytes_per_task']:>7.0f} {row['us_per_task']:>8.1f}  {'ok' if ok else 'MISSED'}"
                f" (ratio <= {MAX_RATIO}, < {MAX_BYTES} B/task)"
                + (f"; instrumented alone: {row['instrumented_ratio']:.2f}x" if args.instrumented else "")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
