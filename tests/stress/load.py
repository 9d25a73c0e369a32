"""Stress: the load workload of tests/test_load.py with 200,000 tasks (default) from 16 threads; prints its
measurements and exits non-zero if any count is off. Usage: python tests/stress/load.py [TASKS]"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadsupport import check_load, run_load
from support import UserExecutor


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    start = time.perf_counter()
    result = run_load(total, threads=16, user_executor=UserExecutor(2))
    check_load(result, total)
    truth = result["truth"]
    print(f"load: {total} tasks from 16 threads in {result['seconds']:.1f} s "
          f"({total / result['seconds']:.0f} tasks/s), {result['waits']} waits, "
          f"total {time.perf_counter() - start:.1f} s")
    for name, counts in sorted(truth.items()):
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print("load: every counter exact, gauges 0, histogram counts and spans match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
