"""A TracedFuture against a stdlib Future, driven by Hypothesis through the same random sequences of cancel,
set_running_or_notify_cancel, set_result, set_exception, add_done_callback, result(timeout=0) and
exception(timeout=0): the same return values, the same exceptions (type and message, modulo the class name and
address in a repr), the same callback order and the same log records; and after every step the telemetry (the
task span, the counters, the gauges, invalid transitions, result lag) agrees with what happened.

The TracedFuture belongs to a real traced executor's lifecycle (its SpanHook and its metrics series, recording to an
SDK tracer provider and a registry of its own), as if that executor had just accepted the task: a thread pool's
(the start is local) or a process pool's (the start is reported by the worker).
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import Future
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracedfutures
from tracedfutures import TracedFuture

_ADDRESS = re.compile(r"<(?:Traced)?Future at 0x[0-9a-f]+")
_ID = re.compile(r"Future \d+ in unexpected state")


def normalize(text: str) -> str:
    return _ID.sub("Future ID in unexpected state", _ADDRESS.sub("<Future at ADDR", text))


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelno, normalize(record.getMessage())))


class FailureA(Exception):
    pass


class FailureB(ValueError):
    pass


EXCEPTIONS = st.sampled_from([FailureA("a"), FailureB("b"), KeyError("k"), None])
RESULTS = st.sampled_from([None, 0, "value", ("tuple",)])


class FutureAgainstStdlib(RuleBasedStateMachine):
    remote = False

    @initialize()
    def make(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()
        options: dict[str, Any] = {"name": "sm", "tracer_provider": provider, "registry": self.registry}
        pool = (
            tracedfutures.TracedProcessPoolExecutor(1, **options)
            if self.remote
            else tracedfutures.TracedThreadPoolExecutor(1, **options)
        )
        life = pool._tf_life
        # A process pool's start board (its own submit body; not under the public-API fallback): see telemetry_agrees.
        self.boarded = bool(life.board)
        pool.shutdown()  # nothing was submitted through it: only its lifecycle is used
        self.traced = TracedFuture(life, self.make)  # what submit() does before handing the task to the pool
        life.on_submit(self.traced, self.make)
        self.stock: Future[Any] = Future()
        self.calls: dict[str, list[Any]] = {"traced": [], "stock": []}
        self.handler = RecordingHandler()
        self.logger = logging.getLogger("concurrent.futures")
        self.logger.addHandler(self.handler)
        self.logs: dict[str, list[Any]] = {"traced": [], "stock": []}
        # The model of what happened, from the stdlib future's behaviour.
        self.ran = False
        self.outcome = ""  # success / error / cancelled once the future is done
        self.error_type = ""
        self.refused = {"set_result": 0, "set_exception": 0, "set_running_or_notify_cancel": 0}
        self.read_when_finished = False

    def teardown(self) -> None:
        handler = getattr(self, "handler", None)
        if handler is not None:
            self.logger.removeHandler(handler)

    # -- doing one operation on both -----------------------------------------------------------------------------
    def both(self, operation: str, *args: Any) -> Any:
        outcomes = {}
        for which, future in (("stock", self.stock), ("traced", self.traced)):
            start = len(self.handler.seen)
            try:
                value = getattr(future, operation)(*args)
                outcome: Any = ("returned", value if value is not future else "the future")
            except BaseException as exc:
                outcome = ("raised", type(exc), normalize(str(exc)))
            outcomes[which] = outcome
            self.logs[which].extend(self.handler.seen[start:])
        assert outcomes["traced"] == outcomes["stock"], (operation, args, outcomes)
        return outcomes["stock"]

    def callback(self, which: str, label: int, fail: bool) -> Any:
        def record(future: Future[Any]) -> None:
            self.calls[which].append((label, future.done(), future.cancelled()))
            if fail:
                raise RuntimeError(f"callback {label} failed")

        return record

    # -- the operations ------------------------------------------------------------------------------------------
    @rule()
    def cancel(self) -> None:
        was_done = self.stock.done()
        outcome = self.both("cancel")
        if outcome == ("returned", True) and not was_done:
            self.outcome = "cancelled"

    @rule()
    def set_running_or_notify_cancel(self) -> None:
        outcome = self.both("set_running_or_notify_cancel")
        if outcome == ("returned", True):
            self.ran = True
        elif outcome[0] == "raised":
            self.refused["set_running_or_notify_cancel"] += 1

    @rule(value=RESULTS)
    def set_result(self, value: Any) -> None:
        outcome = self.both("set_result", value)
        if outcome[0] == "raised":
            self.refused["set_result"] += 1
        else:
            self.outcome = "success"

    @rule(exception=EXCEPTIONS)
    def set_exception(self, exception: BaseException | None) -> None:
        outcome = self.both("set_exception", exception)
        if outcome[0] == "raised":
            self.refused["set_exception"] += 1
        elif exception is None:  # the stdlib takes None: a finished future with no exception, a success
            self.outcome = "success"
        else:
            self.outcome = "error"
            module = type(exception).__module__
            name = type(exception).__qualname__
            self.error_type = name if module == "builtins" else f"{module}.{name}"

    @rule(label=st.integers(0, 9), fail=st.booleans())
    def add_done_callback(self, label: int, fail: bool) -> None:
        self.stock.add_done_callback(self.callback("stock", label, fail))
        self.traced.add_done_callback(self.callback("traced", label, fail))

    @rule()
    def result(self) -> None:
        finished = self.stock.done() and not self.stock.cancelled()
        self.both("result", 0)
        self.read_when_finished |= finished

    @rule()
    def exception(self) -> None:
        finished = self.stock.done() and not self.stock.cancelled()
        self.both("exception", 0)
        self.read_when_finished |= finished

    @rule()
    def queries(self) -> None:
        for query in ("done", "running", "cancelled"):
            self.both(query)

    # -- after every step ----------------------------------------------------------------------------------------
    @invariant()
    def same_callbacks_logs_and_state(self) -> None:
        if not hasattr(self, "traced"):
            return
        assert self.calls["traced"] == self.calls["stock"]
        assert self.logs["traced"] == self.logs["stock"]
        assert self.traced._state == self.stock._state
        assert repr(self.traced).replace("TracedFuture", "Future").split(" ", 3)[3] == repr(self.stock).split(" ", 3)[3]

    @invariant()
    def telemetry_agrees(self) -> None:
        if not hasattr(self, "traced"):
            return
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # added up over functions
        for family in self.registry.collect():
            for s in family.samples:
                if s.labels.get("executor") == "sm":
                    labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("executor", "function")))
                    samples[s.name, labels] = samples.get((s.name, labels), 0.0) + s.value

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        done = self.outcome != ""
        assert value("executor_tasks_submitted_total") == 1
        completed = {k[1]: v for k, v in samples.items() if k[0] == "executor_tasks_completed_total" and v}
        if done:
            label = (("error_type", self.error_type), ("outcome", self.outcome))
            assert completed == {label: 1.0}, completed
        else:
            assert completed == {}
        # A process pool's task runs from its start in a worker, which says so on the pool's start board: one
        # started here by hand (no worker took it) waits, as if in the pool's call queue.
        running = self.ran and not done and not self.boarded
        assert value("executor_tasks_queued") == (0 if done or running else 1)
        assert value("executor_tasks_running") == (1 if running else 0)
        for method, count in self.refused.items():
            assert value("executor_invalid_transitions_total", method=method) == count, method
        timed = self.ran and not self.remote and self.outcome in ("success", "error")
        assert value("executor_task_queue_seconds_count") == (1 if timed else 0)
        for outcome in ("success", "error"):
            expected = 1 if timed and self.outcome == outcome else 0
            assert value("executor_task_run_seconds_count", outcome=outcome) == expected
        assert value("futures_result_lag_seconds_count") == (1 if self.read_when_finished else 0)

        spans = self.exporter.get_finished_spans()
        assert len(spans) == (1 if done else 0)
        if done:
            (span,) = spans
            attributes = dict(span.attributes or {})
            events = [e.name for e in span.events]
            assert span.status.status_code.name == ("ERROR" if self.outcome == "error" else "UNSET")
            assert attributes.get("executor.task.cancelled") == (True if self.outcome == "cancelled" else None)
            assert attributes.get("error.type") == (self.error_type or None)
            assert events == (["running"] if self.ran and not self.remote else []) + (
                ["exception"] if self.outcome == "error" else []
            )
        # A task's span lives from submit to completion; a thread pool's queued task also holds the context it will
        # run in until it is handed to a worker; a finished future holds neither.
        assert (self.traced._tf_span is not None) == (not done)
        if done:
            assert self.traced._tf_caller is None


class RemoteFutureAgainstStdlib(FutureAgainstStdlib):
    remote = True


SETTINGS = settings(
    max_examples=150, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestThreadLifecycle = FutureAgainstStdlib.TestCase
TestThreadLifecycle.settings = SETTINGS
TestProcessLifecycle = RemoteFutureAgainstStdlib.TestCase
TestProcessLifecycle.settings = SETTINGS
