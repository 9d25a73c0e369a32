"""The program that tests/test_cli_report.py records for the report's CPU sentences: three pools in turn.

``resize``: 4 threads of pure-Python loops (one CPU at a time under the GIL); ``ProcessPoolExecutor``: 2 processes
of the same loops, 4 tasks (a CPU each); ``io``: 4 threads that sleep (next to no CPU).
"""

from __future__ import annotations

import concurrent.futures as cf

from cpusupport import nap, spin

LOOPS = 6_000_000  # about 0.3 s of one CPU per task on 3.11


def main() -> None:
    with cf.ThreadPoolExecutor(4, thread_name_prefix="resize") as resize:
        list(resize.map(spin, [LOOPS] * 4))
    with cf.ProcessPoolExecutor(2) as processes:
        list(processes.map(spin, [LOOPS] * 4))
    with cf.ThreadPoolExecutor(4, thread_name_prefix="io") as io:
        list(io.map(nap, [0.5] * 4))


if __name__ == "__main__":
    main()
