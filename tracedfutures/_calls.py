"""The callables that run a task inside its task span's context, in a worker thread or a worker process.

``RemoteCall`` travels with the call (pickle and cloudpickle) and brings the worker's timestamps home: a result
comes back wrapped in an ``Envelope``; an exception is raised unchanged, carrying the same data in its ``__dict__``
so the executor handles it exactly as it would the bare exception. ``TracedFuture`` unwraps both.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

_REMOTE_ATTR = "_tracedfutures_remote"
_clock = time.time_ns

WireContext = tuple[int, int, int]  # trace_id, span_id, trace_flags of the task span


class LocalCall:
    """Runs ``fn`` in a worker thread with the task span's context attached."""

    __slots__ = ("ctx", "fn")

    def __init__(self, fn: Any, ctx: otel_context.Context) -> None:
        self.fn = fn
        self.ctx = ctx

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # "self" is a keyword the task may take
        fn = self.fn
        token = otel_context.attach(self.ctx)
        del self  # a failed task's traceback keeps this frame: it must not keep the task span alive
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)


class Envelope:
    """A task's result with the worker's (start_ns, end_ns), unwrapped by ``TracedFuture.set_result``."""

    __slots__ = ("data", "value")

    def __init__(self, value: Any, data: tuple[int, int]) -> None:
        self.value = value
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (Envelope, (self.value, self.data))


class RemoteCall:
    """Runs ``fn`` in a worker process with the task span's W3C context attached and times the real start."""

    __slots__ = ("fn", "parent")

    def __init__(self, fn: Any, parent: WireContext | None) -> None:
        self.fn = fn
        self.parent = parent

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteCall, (self.fn, self.parent))

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # "self" is a keyword the task may take
        start = _clock()
        token = None
        if self.parent is not None:
            trace_id, span_id, flags = self.parent
            span_context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
            token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
        try:
            result = self.fn(*args, **kwargs)
        except BaseException as exc:
            try:
                exc.__dict__[_REMOTE_ATTR] = (start, _clock())
            except Exception:  # an exception object that refuses attributes keeps its outcome, loses the timing
                pass
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        return Envelope(result, (start, _clock()))


def take_remote_data(exception: object) -> Any:
    """Remove and return the worker data a ``RemoteCall`` attached to ``exception`` (None if there is none)."""
    attrs = getattr(exception, "__dict__", None)
    if type(attrs) is dict:
        return attrs.pop(_REMOTE_ATTR, None)
    return None
