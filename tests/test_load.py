"""Load: 16 threads submitting to one executor and to several (thread pools, a wrapped pool sharing a series, a
user's executor), with mixed outcomes and cancellations, while a scraper reads: every counter equals the true
count, gauges end at 0, histogram counts match, one span per task. This is the scaled-down run of the regular
suite; tests/stress/load.py runs the same workload with 200,000 tasks."""

from __future__ import annotations

from loadsupport import check_load, run_load
from support import UserExecutor

TASKS = 20_000


def test_sixteen_submitters_counts_are_exact() -> None:
    result = run_load(TASKS, threads=16, user_executor=UserExecutor(2))
    check_load(result, TASKS)
    cancelled = sum(t["cancelled"] for t in result["truth"].values())
    assert cancelled > 0  # the cancellations really raced the workers
