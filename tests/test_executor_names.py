"""Executor names stay bounded: capped per registry (``MAX_EXECUTORS``, then ``other`` with one warning), and the
series of a name whose executors are all gone are dropped once scrapes have exposed their final counts for
``DROP_AFTER_SECONDS`` (0 here: dropped at the second scrape that exposes them unchanged)."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support import pools_named_per_job, square

import tracedfutures
import tracedfutures.metrics
from tracedfutures.metrics import MAX_EXECUTORS, OTHER_EXECUTOR

#: Pools with distinct names in the cap test: enough to show that nothing grows after the first MAX_EXECUTORS.
POOLS = 2_500


def scrape(registry: CollectorRegistry) -> list[Any]:
    """Every sample one scrape exposes."""
    return [sample for metric in registry.collect() for sample in metric.samples]


def submitted(registry: CollectorRegistry, samples: list[Any] | None = None) -> dict[str, float]:
    """``executor_tasks_submitted_total`` by executor name, in ``samples`` or as a new scrape exposes it."""
    return {
        sample.labels["executor"]: sample.value
        for sample in (scrape(registry) if samples is None else samples)
        if sample.name == "executor_tasks_submitted_total"
    }  # fmt: skip


def allocated() -> int:
    """Memory blocks the interpreter holds, after a full collection."""
    gc.collect()
    return sys.getallocatedblocks()


def one_task_pools(count: int, start: int, make: Any) -> None:
    """``count`` short-lived pools, one distinct name each (``job-<n>``), each running one task."""
    for n in range(start, start + count):
        with make(n) as pool:
            assert pool.submit(square, n).result() == n * n


@pytest.mark.parametrize("setup", ["traced", "instrumentor"])
@pytest.mark.usefixtures("drop_at_once")
def test_thousands_of_pool_names_are_capped(setup: str, caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of pools named per job, no scrape in between: the first MAX_EXECUTORS names keep their series, every
    later task counts under ``other``; the exposition and the memory stop growing at the cap."""
    registry = CollectorRegistry()
    with pools_named_per_job(setup, registry) as make, caplog.at_level(logging.WARNING, logger="tracedfutures"):
        one_task_pools(1_000, 0, make)
        blocks = allocated()
        one_task_pools(POOLS - 1_000, 1_000, make)
        grown = allocated() - blocks
        samples = scrape(registry)
        one_task_pools(1_000, POOLS, make)  # and as many again: the one scrape, no longer
        again = scrape(registry)
    counts = submitted(registry, samples)
    assert set(counts) == {f"job-{n}" for n in range(MAX_EXECUTORS)} | {OTHER_EXECUTOR}
    assert all(counts[f"job-{n}"] == 1 for n in range(MAX_EXECUTORS))
    assert counts[OTHER_EXECUTOR] == POOLS - MAX_EXECUTORS
    assert len(again) == len(samples)
    assert submitted(registry, again)[OTHER_EXECUTOR] == POOLS + 1_000 - MAX_EXECUTORS
    assert grown < 300, grown  # nothing kept per pool: 1,500 pools
    warnings = [r.getMessage() for r in caplog.records if "executor names" in r.getMessage()]
    assert warnings == [
        f"more than {MAX_EXECUTORS} executor names: executor 'job-{MAX_EXECUTORS}' and later new names are "
        f"counted as '{OTHER_EXECUTOR}' (name pools by role, not by job)"
    ]


@pytest.fixture
def drop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracedfutures.metrics, "DROP_AFTER_SECONDS", 0.0)


@pytest.mark.usefixtures("drop_at_once")
def test_names_of_gone_pools_are_dropped_after_a_scrape_saw_them(caplog: pytest.LogCaptureFixture) -> None:
    """Scraped between pools, every name counts under its own name, is exposed with its final count, then
    dropped: the cap is never reached and the exposition holds the live names only."""
    registry = CollectorRegistry()
    seen: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger="tracedfutures"):
        for n in range(3 * MAX_EXECUTORS):
            one_task_pools(1, n, lambda n: tracedfutures.TracedThreadPoolExecutor(1, name=f"job-{n}",
                                                                                     registry=registry))  # fmt: skip
            for name, value in submitted(registry).items():
                assert seen.setdefault(name, value) == value  # never exposed with another count
        live = tracedfutures.TracedThreadPoolExecutor(1, name="live", registry=registry)
        live.submit(square, 2).result()
        last = submitted(registry)
    assert seen == {f"job-{n}": 1 for n in range(3 * MAX_EXECUTORS)}
    # The last pool's name was exposed with its count once; it goes at the next scrape, as the others did.
    assert last == {f"job-{3 * MAX_EXECUTORS - 1}": 1, "live": 1}
    assert submitted(registry) == {"live": 1}
    assert not [r for r in caplog.records if "executor names" in r.getMessage()]
    live.shutdown()


@pytest.mark.usefixtures("drop_at_once")
def test_a_late_event_brings_a_dropped_name_back() -> None:
    """A future read after its pool's name was dropped: the name comes back with all its counts, then goes."""
    registry = CollectorRegistry()
    with tracedfutures.TracedThreadPoolExecutor(1, name="late", registry=registry) as pool:
        future = pool.submit(square, 3)
        tracedfutures.wait([future])
    assert submitted(registry) == {"late": 1}
    assert submitted(registry) == {"late": 1}  # unchanged since the scrape before: dropped after this one
    assert submitted(registry) == {}
    assert future.result() == 9  # the result lag is observed now
    lag = {
        sample.labels["executor"]: sample.value
        for metric in registry.collect() if metric.name == "futures_result_lag_seconds"
        for sample in metric.samples if sample.name.endswith("_count")
    }  # fmt: skip
    assert lag == {"late": 1}
    assert submitted(registry) == {"late": 1}
    assert submitted(registry) == {}
    with tracedfutures.TracedThreadPoolExecutor(1, name="late", registry=registry) as pool:  # the same name again
        pool.submit(square, 4).result()
    assert submitted(registry) == {"late": 2}


def test_by_default_a_gone_name_stays_for_minutes() -> None:
    """``DROP_AFTER_SECONDS`` (ten minutes) after its last change: a few scrapes in a row keep exposing it."""
    registry = CollectorRegistry()
    with tracedfutures.TracedThreadPoolExecutor(1, name="gone", registry=registry) as pool:
        pool.submit(square, 3).result()
    assert [submitted(registry) for _ in range(3)] == [{"gone": 1}] * 3
