"""Telemetry that fails never reaches a task: broken span processors, exporters and tracer providers, or no
SDK at all, leave results and exceptions exactly as the stock executor gives them, metrics exact, and at most
one warning for the first failure in the process."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import PROCESS_KINDS, THREAD_KINDS, Telemetry, labels, outcome_of, stock_executor
from faultsupport import BrokenProcessor
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from support import CustomError, fail, square

import tracedfutures

TIMEOUT = 30
TASKS = 38  # submitted by workload()


class BrokenExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        raise RuntimeError("export is broken")


class BrokenTracerProvider:
    """Not an SDK provider: its get_tracer raises."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("get_tracer is broken")


def provider(scenario: str, telemetry: Telemetry) -> Any:
    if scenario in ("on_start", "on_end"):
        telemetry.provider.add_span_processor(BrokenProcessor(scenario))
        return telemetry.provider
    if scenario == "exporter":
        broken = TracerProvider()
        broken.add_span_processor(SimpleSpanProcessor(BrokenExporter()))
        return broken
    if scenario == "get_tracer":
        return BrokenTracerProvider()
    return trace.NoOpTracerProvider()  # the API alone, no SDK


def workload(executor: Any) -> list[tuple[str, Any]]:
    """What a caller sees of successes, an exception, a non-callable and map."""
    outcomes = [
        outcome_of(lambda: executor.submit(square, 3).result(TIMEOUT)),
        outcome_of(lambda: executor.submit(fail, "boom").result(TIMEOUT)),
        outcome_of(lambda: executor.submit(5).result(TIMEOUT)),
        outcome_of(lambda: list(executor.map(square, range(5), timeout=TIMEOUT))),
    ]
    return outcomes + [outcome_of(lambda i=i: executor.submit(square, i).result(TIMEOUT)) for i in range(30)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Where telemetry failed, from each warning tracedfutures logged."""
    return [r.args[0] for r in caplog.records if r.name == "tracedfutures" and r.levelno >= logging.WARNING]  # type: ignore[index]


#: (task spans exported, tracedfutures warnings) of each scenario.
EXPECTED = {
    "on_start": (0, ["SpanHook"]),
    "on_end": (TASKS, ["SpanHook"]),
    "exporter": (0, []),
    "get_tracer": (0, ["get_tracer"]),
    "noop": (0, []),
}


@pytest.mark.parametrize("scenario", list(EXPECTED))
@pytest.mark.parametrize("kind", [*THREAD_KINDS, PROCESS_KINDS[0]])
def test_tasks_unaffected_by_broken_telemetry(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, scenario: str, kind: str
) -> None:
    stock = stock_executor(kind)
    expected = workload(stock)
    stock.shutdown()
    assert expected[:3] == [
        ("ok", 9),
        ("raised", (CustomError, ("boom",))),
        ("raised", (TypeError, ("'int' object is not callable",))),
    ]

    telemetry.provider = provider(scenario, telemetry)
    with caplog.at_level(logging.WARNING):
        executor = telemetry.executor(kind)
        assert workload(executor) == expected
        executor.shutdown()

    spans, logged = EXPECTED[scenario]
    assert len(telemetry.spans()) == spans
    assert warnings(caplog) == logged
    assert telemetry.series("executor_tasks_completed_total") == {  # metrics do not depend on spans
        labels(executor="pool", function="square", outcome="success", error_type=""): TASKS - 2,
        labels(executor="pool", function="fail", outcome="error", error_type="support.CustomError"): 1,
        labels(executor="pool", function="int", outcome="error", error_type="TypeError"): 1,
    }


#: tracedfutures warnings of wait + as_completed calls in each scenario.
EXPECTED_WAITING = {
    "on_start": ["futures.wait"],  # one warning per process: as_completed's failure is only logged at debug
    "on_end": ["wait span"],
    "exporter": [],
    "get_tracer": ["get_tracer"],
    "noop": [],
}


@pytest.mark.parametrize("scenario", list(EXPECTED_WAITING))
def test_wait_and_as_completed_unaffected_by_broken_telemetry(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, scenario: str
) -> None:
    executor = telemetry.executor("thread", max_workers=2)
    futures = [executor.submit(square, i) for i in range(4)]
    futures.append(executor.submit(fail, "boom"))
    executor.shutdown()  # every task span has ended (waiters wake before a span ends) before telemetry breaks
    tracedfutures.configure(tracer_provider=provider(scenario, telemetry), registry=telemetry.registry)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert tracedfutures.wait(futures, timeout=TIMEOUT) == (set(futures), set())
            assert set(tracedfutures.as_completed(futures, timeout=TIMEOUT)) == set(futures)
    assert warnings(caplog) == EXPECTED_WAITING[scenario]
    assert telemetry.histogram("futures_wait_seconds", return_when="ALL_COMPLETED", timed_out="false")[0] == 5
    assert telemetry.histogram("futures_as_completed_seconds", timed_out="false")[0] == 5
    assert telemetry.histogram("futures_as_completed_next_seconds")[0] == 25
