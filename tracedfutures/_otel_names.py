"""The OpenTelemetry name, instrument, unit and attributes of every Prometheus metric of tracedfutures, one to one.

Dotted names and UCUM units as the semantic conventions write them, modelled on the JVM executor proposal
(``jvm.executor.*``) and .NET's ``dotnet.thread_pool.*`` where they overlap; attribute names are those the spans
carry (``executor.name``, ``executor.kind``, ``code.function.name``, ``error.type``, ``futures.*``). Pure data: the
export (``_otel_metrics``) reads it, and so do the docs' table and its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tracedfutures._metric_definitions import (
    AS_COMPLETED,
    AS_COMPLETED_NEXT,
    AVAILABLE,
    BUSY,
    COMPLETED,
    CPU,
    ENDED,
    INVALID,
    MAX_WORKERS,
    OLDEST_RUNNING,
    QUEUE,
    QUEUED,
    RESULT_LAG,
    RUN,
    RUNNING_GAUGE,
    SUBMITTED,
    UNRETRIEVED,
    WAIT,
    Definition,
)
from tracedfutures._naming import CODE_FUNCTION

#: The meter's name, and the schema of the conventions its names and attributes follow.
METER_NAME = "tracedfutures"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"

EXECUTOR_NAME = "executor.name"
EXECUTOR_KIND = "executor.kind"
OUTCOME = "executor.task.outcome"
ERROR_TYPE = "error.type"

#: Each Prometheus label's attribute. ``error_type`` is left out where it is empty (a task that did not fail),
#: ``timed_out`` is a boolean, and every series with ``executor`` also gets ``executor.kind``.
ATTRIBUTES = {
    "executor": EXECUTOR_NAME,
    "outcome": OUTCOME,
    "function": CODE_FUNCTION,
    "error_type": ERROR_TYPE,
    "method": "executor.future.method",
    "return_when": "futures.return_when",
    "timed_out": "futures.timed_out",
}

Instrument = Literal["Counter", "UpDownCounter", "Gauge", "Histogram"]


@dataclass(frozen=True)
class OtelMetric:
    """One Prometheus metric (``definition``) as OpenTelemetry names it."""

    definition: Definition
    name: str
    instrument: Instrument
    unit: str

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute names of its data points, in the order of the Prometheus labels."""
        names = tuple(ATTRIBUTES[label] for label in self.definition.labels)
        return (EXECUTOR_NAME, EXECUTOR_KIND, *names[1:]) if names[:1] == (EXECUTOR_NAME,) else names


OTEL_METRICS: tuple[OtelMetric, ...] = (
    OtelMetric(SUBMITTED, "executor.task.submitted", "Counter", "{task}"),
    OtelMetric(ENDED, "executor.task.ended", "Counter", "{task}"),
    OtelMetric(COMPLETED, "executor.task.completed", "Counter", "{task}"),
    OtelMetric(QUEUE, "executor.task.queue.duration", "Histogram", "s"),
    OtelMetric(RUN, "executor.task.run.duration", "Histogram", "s"),
    OtelMetric(QUEUED, "executor.task.queued", "UpDownCounter", "{task}"),
    OtelMetric(RUNNING_GAUGE, "executor.task.running", "UpDownCounter", "{task}"),
    OtelMetric(MAX_WORKERS, "executor.worker.limit", "UpDownCounter", "{worker}"),
    OtelMetric(BUSY, "executor.worker.busy.time", "Counter", "s"),
    OtelMetric(AVAILABLE, "executor.worker.available.time", "Counter", "s"),
    OtelMetric(CPU, "executor.worker.cpu.time", "Counter", "s"),
    OtelMetric(OLDEST_RUNNING, "executor.task.oldest_running.age", "Gauge", "s"),
    OtelMetric(INVALID, "executor.future.transition.refused", "Counter", "{call}"),
    OtelMetric(RESULT_LAG, "executor.future.result.lag", "Histogram", "s"),
    OtelMetric(UNRETRIEVED, "executor.future.exception.unretrieved", "Counter", "{future}"),
    OtelMetric(WAIT, "futures.wait.duration", "Histogram", "s"),
    OtelMetric(AS_COMPLETED, "futures.as_completed.duration", "Histogram", "s"),
    OtelMetric(AS_COMPLETED_NEXT, "futures.as_completed.next.duration", "Histogram", "s"),
)

#: The OpenTelemetry side of each Prometheus metric's family name.
BY_FAMILY = {m.definition.name: m for m in OTEL_METRICS}
