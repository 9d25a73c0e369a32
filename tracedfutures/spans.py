"""The only module that makes spans: one per task, and one per ``wait`` / ``as_completed`` call.

Span and attribute names are module constants; task arguments, results and exception messages never become
attributes (an exception's message appears only in its ``exception`` event).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Hashable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from tracedfutures._lifecycle import not_listening
from tracedfutures._naming import CODE_FUNCTION as CODE_FUNCTION  # code.function.name, shared with the metrics
from tracedfutures._naming import error_type, function_name, joblib_calls, name_key
from tracedfutures._running import thread_name as _thread_name
from tracedfutures._start_board import cut_short
from tracedfutures._state import state
from tracedfutures._telemetry import run_telemetry, telemetry_failed
from tracedfutures.version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from tracedfutures._lifecycle import Kind, TracedFuture

TRACER_NAME = "tracedfutures"

EXECUTOR_NAME = "executor.name"
EXECUTOR_KIND = "executor.kind"
QUEUE_DURATION = "executor.task.queue_duration"  # seconds, submit to the callable's real start
TASK_CANCELLED = "executor.task.cancelled"
#: Spans the task finished in a worker process beyond the ``MAX_WORKER_SPANS`` that travel home (only when > 0).
WORKER_SPANS_DROPPED = "executor.task.worker_spans_dropped"
RUNNING_EVENT = "running"
# Where the task ran (the semantic conventions' names): the worker's process and thread.
PROCESS_PID = "process.pid"
THREAD_ID = "thread.id"  # threading.get_ident(), as the SDK's log records name a thread
THREAD_NAME = "thread.name"
#: The exit code of the worker process that died running the task (negative: killed by that signal), on the span of a
#: task its process pool's break ended, with that worker's ``process.pid`` and the ``running`` event at its start.
PROCESS_EXIT_CODE = "process.exit.code"
#: Seconds the callable of a task run elsewhere (a process, an interpreter) ran there, by the worker's clock: the
#: span itself ends when the outcome came home.
RUN_DURATION = "executor.task.run_duration"
#: The calls a joblib batch made (``joblib.Parallel`` submits them as one task, named after their function).
BATCH_SIZE = "executor.task.batch_size"
#: CPU seconds a thread or interpreter pool's task used in its worker thread (its thread's CPU clock from its start
#: to its end): only under ``tracedfutures record``, which draws every task anyway (``_TaskCpuHook``).
TASK_CPU_TIME = "executor.task.cpu_time"

WAIT_SPAN = "futures.wait"
AS_COMPLETED_SPAN = "futures.as_completed"
FUTURES_COUNT = "futures.count"
FUTURES_DONE = "futures.done_count"
FUTURES_RETURN_WHEN = "futures.return_when"
FUTURES_TIMEOUT = "futures.timeout"
FUTURES_TIMED_OUT = "futures.timed_out"
FUTURES_LINKS_DROPPED = "futures.links_dropped"
#: Span links a wait / as_completed span carries to the task spans it handed back; the rest are only counted.
MAX_LINKS = 32


def get_tracer(tracer_provider: TracerProvider | None) -> Tracer:
    """Tracedfutures' tracer (name and version) from ``tracer_provider`` (None: the global one); a no-op tracer
    where the provider fails."""
    try:
        return trace.get_tracer(TRACER_NAME, __version__, tracer_provider)
    except Exception as exc:  # a broken provider loses the spans, never the executor or its tasks
        telemetry_failed("get_tracer", exc)
        return trace.NoOpTracer()


def span_hook(
    tracer: Tracer, name: str, kind: Kind, remote: bool, record_exception_messages: bool | None = None
) -> _SpanHook | None:
    """The span side of an executor's lifecycle, or None when its tracer can never record (a no-op tracer).
    ``record_exception_messages``: None follows ``configure()``."""
    if isinstance(tracer, trace.NoOpTracer):
        return None
    return _SpanHook(tracer, name, kind, remote, record_exception_messages)


def _drops_unsampled_children(tracer: Tracer) -> bool:
    """Whether ``tracer`` is an SDK tracer whose sampler drops every child of a parent that is not sampled (the
    default ``ParentBased``): then a span that could only be dropped need not be made at all."""
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:  # API only: no SDK tracer to ask
        return False
    sampler = getattr(tracer, "sampler", None)
    return (
        isinstance(sampler, ParentBased)
        and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
        and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
    )


def _no_global_provider() -> bool:
    # The API's global provider is unset until set_tracer_provider(): a proxy tracer then records nothing.
    return trace._TRACER_PROVIDER is None


#: Task names kept per executor (span name and attributes of each function name), so that a task costs one lookup.
_MAX_TASK_NAMES = 256
#: A task's span name and the attributes its span starts with.
_TaskNaming = tuple[str, dict[str, Any]]


class _SpanHook:
    """The span side of the lifecycle: a task span from submit to completion, with a ``running`` event.

    Its methods run span processors (the user's code) through ``run_telemetry``: a span that fails is lost, never
    the task.
    """

    __slots__ = ("attributes", "drops_unsampled", "messages", "name", "named", "proxy", "remote", "tracer")

    def __init__(
        self, tracer: Tracer, name: str, kind: Kind, remote: bool, record_exception_messages: bool | None = None
    ) -> None:
        self.tracer = tracer
        self.name = name
        self.remote = remote
        self.attributes = {EXECUTOR_NAME: name, EXECUTOR_KIND: kind}
        self.named: dict[Hashable, _TaskNaming] = {}  # by _naming.name_key
        self.proxy = isinstance(tracer, trace.ProxyTracer)
        self.drops_unsampled = _drops_unsampled_children(tracer)
        self.messages = record_exception_messages

    def _naming(self, fn: Any) -> _TaskNaming:
        """The span name and attributes of a task running ``fn``, made once per callable (kept by
        ``_naming.name_key``); a callable named each time (a joblib batch) gets its batch counted."""
        key = name_key(fn)
        naming = self.named.get(key) if key is not None else None
        if naming is None:
            fname = function_name(fn)
            naming = (f"{self.name} {fname}", {**self.attributes, CODE_FUNCTION: fname})
            if key is not None:
                if len(self.named) < _MAX_TASK_NAMES:
                    self.named[key] = naming
            else:
                calls = joblib_calls(fn)
                if calls is not None:
                    naming[1][BATCH_SIZE] = len(calls)
        return naming

    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        # No span object at all when nothing would record it; the caller's (unsampled) context still travels,
        # so spans the task starts stay unsampled children rather than new root traces.
        if self.proxy and _no_global_provider():
            return
        try:
            context = otel_context.get_current()
            if not self.remote:  # a thread pool's task runs in the caller's context (with its task span, if any)
                future._tf_caller = context
            if self.drops_unsampled:
                parent = trace.get_current_span(context).get_span_context()
                if parent.is_valid and not parent.trace_flags.sampled:
                    future._tf_context = parent
                    return
            name, attributes = self._naming(fn)
        except Exception as exc:
            telemetry_failed("SpanHook", exc)
            return
        run_telemetry("SpanHook", self._start_span, future, context, name, attributes.copy())

    def _start_span(self, future: TracedFuture, parent: Context, name: str, attributes: dict[str, Any]) -> None:
        """The task span, from submit (made in the submitting thread, which has the caller's context at hand)."""
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes, start_time=future.submitted_ns
        )
        context = span.get_span_context()
        if context.is_valid:
            if span.is_recording():  # a span the sampler dropped: nothing to add or end, only its ids travel
                future._tf_span = span
            future._tf_context = context
            if not self.remote:
                future._tf_caller = trace.set_span_in_context(span, parent)

    @not_listening
    def on_start(self, future: TracedFuture) -> None:
        """The ``running`` event is added when the task finishes, stamped with its real start: nothing runs
        between a worker thread's start and the call, and a worker process's start comes home with the outcome."""

    def on_finish(self, future: TracedFuture) -> None:
        span, worker = future._tf_span, future._tf_worker
        future._tf_span = future._tf_worker = future._tf_caller = None  # a finished future keeps none of them
        if span is not None:
            run_telemetry("SpanHook", self._finish, future, span, worker)

    def _finish(self, future: TracedFuture, span: Span, worker: Any) -> None:
        if future.started_ns:
            span.add_event(RUNNING_EVENT, timestamp=future.started_ns)
        attributes = _where_and_when(future)
        if attributes:
            span.set_attributes(attributes)  # in one call: the SDK checks each attribute, and locks once a call
        if worker is not None:
            _worker_spans_home(span, worker)
        outcome = future.outcome
        if outcome == "cancelled":
            span.set_attribute(TASK_CANCELLED, True)
        elif outcome == "error":
            exc = future._exception
            assert exc is not None
            span.set_attribute(ERROR_TYPE, error_type(type(exc)))
            if not future.started_ns and isinstance(exc, BrokenProcessPool):
                _where_it_was_cut_short(span, future)
            _record_exception(span, exc, future.finished_ns, self.messages)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=future.finished_ns)

    @not_listening
    def on_refused(self, future: TracedFuture, method: str) -> None:
        """A refused transition changes nothing; the task span has ended already. Metrics count it."""

    @not_listening
    def on_retrieved(self, future: TracedFuture) -> None:
        """Reading a result happens after the task span ended; metrics time it."""


def task_cpu_hook(kind: Kind) -> _TaskCpuHook | None:
    """Under ``tracedfutures record`` (``state.task_cpu``), for a thread or interpreter pool, the hook that puts
    each task's own CPU time on its span; None elsewhere (a process pool starts its tasks in its manager thread)."""
    return _TaskCpuHook() if state.task_cpu and kind in ("thread", "interpreter") else None


class _TaskCpuHook:
    """The CPU time each task used, by its worker thread's CPU clock from its start to its end, put on its task span
    (``TASK_CPU_TIME``) before the span side ends it: a thread or interpreter pool starts and ends a task on the
    worker thread that runs it (an interpreter pool runs the callable in between in its interpreter, on that same
    thread). Two clock reads and a dict entry a task: only under ``tracedfutures record``, which draws every task."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started: dict[TracedFuture, int] = {}  # the tasks running now: their thread's CPU time at the start

    @not_listening
    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        """The CPU is counted from the start."""

    def on_start(self, future: TracedFuture) -> None:
        self.started[future] = time.thread_time_ns()

    def on_finish(self, future: TracedFuture) -> None:
        start = self.started.pop(future, None)
        span = future._tf_span
        if start is not None and span is not None:
            run_telemetry("SpanHook", span.set_attribute, TASK_CPU_TIME, (time.thread_time_ns() - start) / 1e9)

    @not_listening
    def on_refused(self, future: TracedFuture, method: str) -> None:
        """A refused transition changes no task's CPU."""

    @not_listening
    def on_retrieved(self, future: TracedFuture) -> None:
        """Reading a result happens after the task ended."""


def _record_exception(span: Span, exc: BaseException, timestamp: int, messages: bool | None = None) -> None:
    """The ``exception`` event; without messages it keeps the type and the frames, and drops every message
    (the exception's, its notes, and those of chained exceptions, which may hold task data)."""
    if state.record_exception_messages if messages is None else messages:  # None: as ``configure()`` set it
        span.record_exception(exc, timestamp=timestamp)
        return
    kind = error_type(type(exc))
    frames = "".join(traceback.format_tb(exc.__traceback__))
    stacktrace = f"Traceback (most recent call last):\n{frames}{kind}\n" if frames else f"{kind}\n"
    span.add_event("exception", {"exception.type": kind, "exception.stacktrace": stacktrace}, timestamp)


def _worker_spans_home(span: Span, worker: Any) -> None:
    """Export the spans the task finished in its worker (children of ``span``, ended before it) and count the
    ones that did not travel."""
    records, dropped = worker
    if dropped:
        span.set_attribute(WORKER_SPANS_DROPPED, dropped)
    if records:
        from tracedfutures import _worker_spans  # the SDK is there: the worker was asked by an SDK span

        _worker_spans.export(span, records)


def _where_and_when(future: TracedFuture) -> dict[str, Any]:
    """The attributes of a task's real start and of where it ran, once it ended: its queue duration; the process
    that ran it where it is not this one (the resource's, which a span says once for all), and the thread (a
    thread or interpreter pool's task ends on the worker thread that ran it, which names it now); how long it ran
    there, for a task run elsewhere."""
    attributes: dict[str, Any] = {}
    if future.started_ns:
        attributes[QUEUE_DURATION] = max(future.started_ns - future.submitted_ns, 0) / 1e9
    ran_on = future._tf_ran_on
    if ran_on is not None:
        pid, thread_id, thread_name = ran_on
        if pid != state.pid:
            attributes[PROCESS_PID] = pid
        attributes[THREAD_ID] = thread_id
        if thread_name is None:  # named where it is known: the task may end on another thread (the fallback)
            thread_name = _thread_name(thread_id)
        if thread_name is not None:
            attributes[THREAD_NAME] = thread_name
    if future._tf_ran_for >= 0:
        attributes[RUN_DURATION] = future._tf_ran_for / 1e9
    return attributes


def _where_it_was_cut_short(span: Span, future: TracedFuture) -> None:
    """The real start and the worker of a task its process pool's break ended, when a worker process was running it
    (``_start_board.cut_short``): the ``running`` event at that start, the worker's ``process.pid`` and, if it died,
    its ``process.exit.code``; nothing for a task that waited in the call queue."""
    where = cut_short(future)
    if where is None:
        return
    pid, start, exit_code = where
    span.add_event(RUNNING_EVENT, timestamp=start)
    attributes: dict[str, Any] = {PROCESS_PID: pid, QUEUE_DURATION: max(start - future.submitted_ns, 0) / 1e9}
    if exit_code is not None:
        attributes[PROCESS_EXIT_CODE] = exit_code
    span.set_attributes(attributes)


def start_wait_span(tracer: Tracer, name: str, start_ns: int, attributes: dict[str, Any]) -> Span:
    """The span of one ``wait`` or ``as_completed`` call, a child of the caller's current span."""
    return tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes, start_time=start_ns)


def end_wait_span(span: Span, end_ns: int, attributes: dict[str, Any], error: BaseException | None = None) -> None:
    """End a ``wait`` / ``as_completed`` span with what the call found, and ``error`` if it raised."""
    span.set_attributes(attributes)
    if error is not None:
        span.set_attribute(ERROR_TYPE, error_type(type(error)))
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=end_ns)


def __getattr__(name: str) -> Any:
    """``record_exception_messages``: whether the ``exception`` event of a failed task carries the exception's
    message, as ``configure()`` set it (read from the process state)."""
    if name == "record_exception_messages":
        return state.record_exception_messages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
