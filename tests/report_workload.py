"""The program that tests/test_cli_report.py records with ``tracedfutures record``: known tasks on a thread pool
and a process pool, known errors and cancellations, a ``wait`` and an ``as_completed``.

Thread pool (3 workers): 3 tasks held by a gate, 2 queued behind them and cancelled, then 40 that succeed and 4
that raise ValueError, waited for with ``wait``; then one slow task (``slow``, 0.2 s): the slowest of the run.
Process pool (2 workers): 10 that succeed and 1 that raises ValueError, consumed with ``as_completed``.
Tasks run: 3 + 40 + 4 + 1 + 10 + 1 = 59; errors 5; cancelled 2.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time


def ok(i: int) -> int:
    time.sleep(0.002)
    return i


def fails(i: int) -> int:
    raise ValueError(i)


def slow() -> None:
    time.sleep(0.2)


def main() -> None:
    with cf.ThreadPoolExecutor(3, thread_name_prefix="io") as io, cf.ProcessPoolExecutor(2) as cpu:
        gate = threading.Event()
        held = [io.submit(gate.wait) for _ in range(3)]
        behind = [io.submit(ok, i) for i in range(2)]
        assert all(future.cancel() for future in behind)
        gate.set()
        cf.wait(held)
        futures = [io.submit(ok, i) for i in range(40)] + [io.submit(fails, i) for i in range(4)]
        cf.wait(futures)
        remote = [cpu.submit(ok, i) for i in range(10)] + [cpu.submit(fails, 99)]
        for future in cf.as_completed(remote):
            future.exception()
        io.submit(slow).result()


if __name__ == "__main__":
    main()
