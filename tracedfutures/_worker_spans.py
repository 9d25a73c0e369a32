"""Spans a task starts in a worker process come home with its outcome and are exported by the submitting process.

This is the one module that touches OpenTelemetry SDK internals, each use named here:

- in the worker, ``TracerProvider._active_span_processor._span_processors`` of a provider the worker inherited
  through ``fork`` (a copy of the submitting side's own): replaced by the collector, so that the copies of the
  parent's exporters never run in the worker and nothing is exported twice;
- in the submitting process, ``Span._span_processor`` of the task span: the span processors of the tracer
  provider that made it, to which the worker's spans are handed (``on_end``) as ``ReadableSpan``s carrying the
  submitting process's resource (``Span.resource``).

Everything else is public API (``ReadableSpan``'s constructor, ``SpanProcessor``, ``set_tracer_provider``).
Without the SDK, or with a provider that is not the SDK's, nothing is collected and nothing travels.

The rule, in the worker: the spans that a task's function finishes there, descendants of its task span, are
collected when the worker has no tracer provider of its own: either none at all (spawn and forkserver workers,
loky, Dask), in which case a collecting provider becomes the worker's global one at its first such task, or the
one it inherited through fork from the submitting side, which becomes that collector. A provider set up in the
worker itself (an initializer, a Dask worker plugin, ``opentelemetry-instrument`` on the worker) exports the
worker's spans on its own, with the worker's resource, and nothing travels. So every span is exported once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from tracedfutures._state import state
from tracedfutures._telemetry import telemetry_failed

#: At most this many spans of one task travel home; the rest are counted on the task span.
MAX_WORKER_SPANS = 128

#: ``task``: the context of the task span whose worker spans this thread is handing to span processors (``export``).
_home = threading.local()

# One finished worker span, as plain data for pickle: name, span id, parent span id, parent is remote, trace
# flags, trace state, kind, start, end, attributes, events, links, status code, status description, scope.
Record = tuple[Any, ...]


def wants_worker_spans(span: object) -> bool:
    """Whether a task span asks its worker for the spans the task makes there: an SDK span that records."""
    return isinstance(span, SdkSpan) and span.is_recording()


class _TaskSpans:
    __slots__ = ("dropped", "open", "records", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.records: list[Record] = []
        self.dropped = 0
        self.open: set[int] = set()


class _Collector(SpanProcessor):
    """Keeps the spans that descend from a running task's span, for that task; ignores every other span."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[int, _TaskSpans] = {}  # task span id -> its spans
        self._owner: dict[int, _TaskSpans] = {}  # span id of a started, unfinished span -> its task

    def begin(self, trace_id: int, span_id: int) -> _TaskSpans:
        task = _TaskSpans(trace_id, span_id)
        with self._lock:
            self._tasks[span_id] = task
        return task

    def finish(self, task: _TaskSpans) -> tuple[tuple[Record, ...], int]:
        with self._lock:
            self._tasks.pop(task.span_id, None)
            for span_id in task.open:  # still open when the task returned: they end too late to travel
                self._owner.pop(span_id, None)
            records, dropped = tuple(task.records), task.dropped
            task.records, task.open = [], set()
        return records, dropped

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = span.parent
        if parent is None:
            return
        with self._lock:
            task = self._tasks.get(parent.span_id) or self._owner.get(parent.span_id)
            if task is not None and parent.trace_id == task.trace_id:
                span_id = span.context.span_id
                self._owner[span_id] = task
                task.open.add(span_id)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        with self._lock:
            task = self._owner.pop(context.span_id, None)
            if task is None:
                return
            task.open.discard(context.span_id)
            if len(task.records) >= MAX_WORKER_SPANS:
                task.dropped += 1
                return
        record = _record(span)
        with self._lock:
            task.records.append(record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _record(span: ReadableSpan) -> Record:
    context = span.context
    assert context is not None
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        span.name,
        context.span_id,
        parent.span_id if parent is not None else 0,
        bool(parent.is_remote) if parent is not None else False,
        int(context.trace_flags),
        tuple(context.trace_state.items()) if context.trace_state else (),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        tuple((e.name, dict(e.attributes or {}), e.timestamp) for e in span.events),
        tuple(
            (link.context.trace_id, link.context.span_id, int(link.context.trace_flags), dict(link.attributes or {}))
            for link in span.links
        ),
        span.status.status_code.value,
        span.status.description,
        (scope.name, scope.version, scope.schema_url) if scope is not None else ("", None, None),
    )


# -- the worker side ---------------------------------------------------------------------------------------
def _take_over(inherited: Any) -> _Collector | None:
    """The worker's collector, set up at the first task that asks for one (None: the worker has its own);
    ``inherited``: the global tracer provider this worker inherited through fork, if any."""
    provider = trace.get_tracer_provider()
    collector = _Collector()
    if isinstance(provider, trace.ProxyTracerProvider):
        own = TracerProvider(sampler=ParentBased(ALWAYS_OFF), resource=Resource.get_empty(), shutdown_on_exit=False)
        own.add_span_processor(collector)
        trace.set_tracer_provider(own)
        return collector if trace.get_tracer_provider() is own else None
    if provider is inherited and isinstance(provider, TracerProvider):
        active = getattr(provider, "_active_span_processor", None)
        if isinstance(getattr(active, "_span_processors", None), tuple):
            active._span_processors = (collector,)  # type: ignore[union-attr]
            return collector
    return None


def begin(trace_id: int, span_id: int, inherited: Any) -> _TaskSpans | None:
    """In the worker, before the task's function runs: start collecting its spans, if this worker should
    (``inherited``: ``_calls.fork_inherited_provider()``, which only the first call reads)."""
    if not state.worker_spans_decided:
        with state.worker_spans_lock:
            if not state.worker_spans_decided:
                try:
                    state.worker_collector = _take_over(inherited)
                except Exception as exc:
                    telemetry_failed("worker span collector", exc)
                    state.worker_collector = None
                state.worker_spans_decided = True
    collector: _Collector | None = state.worker_collector
    return collector.begin(trace_id, span_id) if collector is not None else None


def finish(task: _TaskSpans) -> tuple[tuple[Record, ...], int]:
    """In the worker, after the task's function returned or raised: its spans, and how many were dropped."""
    collector: _Collector | None = state.worker_collector
    if collector is None:
        return (), 0
    return collector.finish(task)


# -- the submitting side -----------------------------------------------------------------------------------
def export(task_span: object, records: Sequence[Record]) -> None:
    """Hand the worker's spans of one task to the span processors of the task span's tracer provider, in one go,
    before the task span ends (``home_task`` names the task meanwhile)."""
    if not records or not isinstance(task_span, SdkSpan):
        return
    processor = getattr(task_span, "_span_processor", None)
    on_end = getattr(processor, "on_end", None)
    if on_end is None:
        return
    task = task_span.get_span_context()
    resource = task_span.resource
    _home.task = task
    try:
        for record in records:
            try:
                on_end(_readable(record, task.trace_id, resource))
            except Exception as exc:
                telemetry_failed("worker span export", exc)
    finally:
        _home.task = None


def home_task() -> SpanContext | None:
    """The context of the task span whose worker spans this thread is handing to span processors now, else None:
    how a processor that saw none of them start (the timeline's, ``timeline._SpansInTasks``) knows whose they are.
    Every span handed home descends from that task span (the worker's collector keeps no other)."""
    task: SpanContext | None = getattr(_home, "task", None)
    return task


def _readable(record: Record, trace_id: int, resource: Resource) -> ReadableSpan:
    (
        name,
        span_id,
        parent_id,
        parent_remote,
        flags,
        state,
        kind,
        start,
        end,
        attributes,
        events,
        links,
        status_code,
        description,
        scope,
    ) = record
    trace_flags = TraceFlags(flags)
    trace_state = TraceState(list(state)) if state else None
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace_flags, trace_state=trace_state)
    parent = (
        SpanContext(trace_id, parent_id, is_remote=parent_remote, trace_flags=trace_flags, trace_state=trace_state)
        if parent_id
        else None
    )
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=tuple(Event(n, a, timestamp=t) for n, a, t in events),
        links=tuple(Link(SpanContext(t, s, is_remote=True, trace_flags=TraceFlags(f)), a) for t, s, f, a in links),
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope(scope[0], scope[1], scope[2]),
    )
