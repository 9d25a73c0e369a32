"""What the OpenTelemetry side must export, from the Prometheus samples of the same collection: each series as its
OTel data point's name, attributes and numbers, so that a test compares the two one to one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tracedfutures._otel_names import ATTRIBUTES, BY_FAMILY, EXECUTOR_KIND, SCHEMA_URL
from tracedfutures.metrics import DEFAULT_BUCKETS

__all__ = [
    "BY_FAMILY",
    "CLOCKED",
    "DEFAULT_BUCKETS",
    "SCHEMA_URL",
    "Expected",
    "Sample",
    "assert_same",
    "cumulative",
    "expected",
]

#: Computed from the clock at each collection: an OTel and a Prometheus reading a moment apart differ (the workers'
#: CPU too: a worker that wakes between them adds to it).
CLOCKED = ("executor_workers_busy_seconds", "executor_workers_available_seconds",
           "executor_oldest_running_task_age_seconds", "executor_workers_cpu_seconds")  # fmt: skip

#: (OTel name, attributes) -> {"value": v} or {"count": n, "sum": s, "cumulative": [bucket counts, +Inf last]}
Expected = dict[tuple[str, frozenset[tuple[str, Any]]], dict[str, Any]]

Sample = tuple[str, dict[str, str], float]  # a Prometheus sample: name, labels, value


def family_of(sample_name: str) -> tuple[str, str]:
    """A sample's family name and suffix (``_total``, ``_bucket``, ``_sum``, ``_count``, ``_created`` or '')."""
    for suffix in ("_total", "_bucket", "_sum", "_count", "_created"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in BY_FAMILY:
            return sample_name[: -len(suffix)], suffix
    return sample_name, ""


def expected(samples: Iterable[Sample], kinds: dict[str, str]) -> Expected:
    """The OTel data point of every Prometheus series of tracedfutures (``kinds``: each executor's kind), except
    those computed from the clock."""
    found: Expected = {}
    for name, sample_labels, value in samples:
        family, suffix = family_of(name)
        otel = BY_FAMILY.get(family)
        if otel is None or family in CLOCKED or suffix == "_created":
            continue
        labels = dict(sample_labels)
        labels.pop("le", None)
        attributes: dict[str, Any] = {ATTRIBUTES[k]: v for k, v in labels.items() if v or k != "error_type"}
        if "futures.timed_out" in attributes:
            attributes["futures.timed_out"] = attributes["futures.timed_out"] == "true"
        if "executor" in labels:
            attributes[EXECUTOR_KIND] = kinds[labels["executor"]]
        point = found.setdefault((otel.name, frozenset(attributes.items())), {})
        if suffix == "_bucket":
            point.setdefault("cumulative", []).append(value)
        elif suffix == "_sum":
            point["sum"] = value
        elif suffix == "_count":
            point["count"] = value
        else:
            point["value"] = value
    return found


def cumulative(bucket_counts: Iterable[int]) -> list[float]:
    """An OTel histogram's bucket counts as Prometheus' cumulative ``le`` buckets."""
    total, running = 0, []
    for count in bucket_counts:
        total += count
        running.append(float(total))
    return running


def assert_same(want: Expected, got: Expected) -> None:
    """Every expected series exported with the same numbers (sums to float precision), and nothing more."""
    assert set(got) == set(want), set(got) ^ set(want)
    for series, point in want.items():
        exported = got[series]
        if "sum" in point:
            assert abs(exported["sum"] - point["sum"]) < 1e-9, series
            assert {k: v for k, v in exported.items() if k != "sum"} == {k: v for k, v in point.items() if k != "sum"}
        else:
            assert exported == point, series
