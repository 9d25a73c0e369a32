"""Stress: 10,000 short-lived pools (default), each with its own name and one task, in one process, as the drop-in
class and under the instrumentor (``ThreadPoolExecutor(1, thread_name_prefix=f"job-{n}")``), scraped every 1,000
pools. After the cap (``MAX_EXECUTORS`` names, then ``other``) the series and the memory stay flat (checked), and
so does the scrape's time (printed: it follows the samples, which are checked), and every task is counted. Exits
non-zero if anything grew or a count is off.
Usage: python tests/stress/pool_names.py [POOLS]"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from support import pools_named_per_job, square

from tracedfutures.metrics import MAX_EXECUTORS, OTHER_EXECUTOR

EVERY = 1_000


def run(setup: str, pools: int) -> list[str]:
    """Run the pools under ``setup``; what went wrong (nothing: an empty list)."""
    registry = CollectorRegistry()
    rows = []  # (pools so far, samples, memory blocks, scrape seconds)
    last_samples: list[Any] = []
    with pools_named_per_job(setup, registry) as make:
        for n in range(pools):
            with make(n) as pool:
                assert pool.submit(square, n).result() == n * n
            if (n + 1) % EVERY == 0:
                last_samples = []  # the previous scrape's, freed before memory is counted
                gc.collect()
                blocks = sys.getallocatedblocks()
                start = time.perf_counter()
                last_samples = [s for metric in registry.collect() for s in metric.samples]
                seconds = time.perf_counter() - start
                rows.append((n + 1, len(last_samples), blocks, seconds))
    problems = []
    print(f"{setup}: pools  samples  memory blocks  scrape ms")
    for done, count, blocks, seconds in rows:
        print(f"{setup}: {done:>6} {count:>8} {blocks:>14} {seconds * 1e3:>10.1f}")
    # From the second scrape on (the cap was reached before the first), nothing grows.
    base = rows[1]
    last = rows[-1]
    if any(count != base[1] for _, count, *_ in rows[1:]):
        problems.append(f"{setup}: the number of samples changed after the cap")
    if last[2] - base[2] > 2_000:
        problems.append(f"{setup}: memory grew by {last[2] - base[2]} blocks over {last[0] - base[0]} pools")
    submitted = {
        s.labels["executor"]: s.value for s in last_samples if s.name == "executor_tasks_submitted_total"
    }  # fmt: skip
    if sum(submitted.values()) != pools or set(submitted) != {f"job-{n}" for n in range(MAX_EXECUTORS)} | {
        OTHER_EXECUTOR
    }:
        problems.append(f"{setup}: tasks counted {sum(submitted.values())} of {pools}, names {len(submitted)}")
    return problems


def main() -> int:
    pools = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    problems = [*run("traced", pools), *run("instrumentor", pools)]
    for problem in problems:
        print(problem)
    if not problems:
        print(f"pool names: {pools} pools a setup, series and memory flat after the cap, every task counted")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
