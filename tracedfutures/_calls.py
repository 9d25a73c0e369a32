"""The callables that run a task inside its task span's context, in a worker thread or a worker process.

``RemoteCall`` travels with the call (pickle and cloudpickle) and brings the worker's timestamps and where the task
ran home in the wire format of ``_wire``: a result comes back wrapped in an ``Envelope``; an exception is raised
unchanged, carrying the same data in its ``__dict__``. ``TracedFuture`` unwraps both.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace

from tracedfutures import _start_board
from tracedfutures._running import ran_on_here
from tracedfutures._state import state
from tracedfutures._wire import REMOTE_ATTR, Envelope

_clock = time.time_ns
_thread_time = time.thread_time_ns


def fork_inherited_provider() -> Any:
    """The tracer provider this process inherited through fork as its global one (None if it was not forked
    or had none then): a copy of the parent's, whose exporters must not run here."""
    return state.inherited_provider

WireContext = tuple[int, int, int]  # trace_id, span_id, trace_flags of the task span


class LocalCall:
    """Runs ``fn`` in a worker thread in the caller's context, with the task span current when there is one."""

    __slots__ = ("ctx", "fn")

    def __init__(self, fn: Any, ctx: otel_context.Context) -> None:
        self.fn = fn
        self.ctx = ctx

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # "self" is a keyword the task may take
        # A failed task's traceback keeps this frame, and from 3.14 the pool's frame that holds this call: neither
        # may keep the task span's context (a call runs once).
        fn, context = self.fn, self.ctx
        self.ctx = None  # type: ignore[assignment]
        token = otel_context.attach(context)
        del self, context
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)


class RemoteCall:
    """Runs ``fn`` in a worker process with the task span's W3C context attached and times the real start.

    ``origin`` is the submitting process's ``state.process_token`` when its task span records into an SDK tracer
    provider (else 0): then, run in another process, the spans the task finishes there come back with its
    outcome (see ``_worker_spans``). With 0 the call imports nothing and collects nothing. ``board`` and ``task``:
    a process pool's start board and the task's id there (see ``_start_board``).
    """

    __slots__ = ("board", "fn", "origin", "parent", "task")

    def __init__(self, fn: Any, parent: WireContext | None, origin: int = 0, board: str = "", task: int = 0) -> None:
        self.fn = fn
        self.parent = parent
        self.origin = origin
        self.board = board  # a process pool's start board (``_start_board``), "" for none
        self.task = task  # the id of the task's future in the submitting process, which the worker writes there

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteCall, (self.fn, self.parent, self.origin, self.board, self.task))

    @property
    def __name__(self) -> str:
        """The function's name, which executors that name their tasks (Dask's keys) read, as they would untraced."""
        fn = self.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        name = getattr(fn, "__name__", None)
        return name if isinstance(name, str) else type(fn).__name__

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # "self" is a keyword the task may take
        board = self.board
        return call_remote(self.fn, self.parent, self.origin, (board, self.task) if board else "", *args, **kwargs)


def call_remote(
    fn: Any, parent: WireContext | None, origin: int, board: tuple[str, int] | Literal[""], /, *args: Any, **kwargs: Any
) -> Any:
    """What a ``RemoteCall`` runs; an interpreter pool runs it as it is, with ``fn`` among its arguments, so that a
    function the interpreters share without pickling (one that uses no globals) stays shareable. With a ``board``
    (a process pool's: its path and the task's id, "" for none), the worker says there which task runs, since
    when, and when it ends."""
    token = None
    collected = None
    if parent is not None:
        trace_id, span_id, flags = parent
        span_context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
        if origin and origin != state.process_token:
            collected = _begin_collecting(trace_id, span_id)
    start = _clock()  # the callable's start: after the context, and the collector a new worker sets up first
    cpu = _thread_time()  # and the CPU time this thread used so far: the task's own is the difference
    slot = _start_board.begin(board[0], start, board[1]) if board else None
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        # An exception object that refuses attributes keeps its outcome and loses the timing.
        with contextlib.suppress(Exception):
            exc.__dict__[REMOTE_ATTR] = _worker_data(start, collected, cpu)
        raise
    finally:
        if slot is not None:
            _start_board.end(slot)
        if token is not None:
            otel_context.detach(token)
    return Envelope(result, _worker_data(start, collected, cpu))


#: What a ``StartingCall`` returns for a task whose future was cancelled before the pool started it.
NOT_RUN = object()


class StartingCall:
    """Starts the task's own future where the pool starts the task, then runs ``call`` (the public-API fallback of
    a stdlib thread pool, whose own future runs this call): a future cancelled meanwhile is notified, as the pool's
    worker would notify it, and ``call`` does not run.

    It holds the future weakly: a refused submit's traceback keeps this call, and that exception is kept on the
    future (no cycle). A queued task's future lives on in the pool's future's done-callback.
    """

    __slots__ = ("call", "future")

    def __init__(self, future: Any, call: Any) -> None:
        self.future = weakref.ref(future)
        self.call = call

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # "self" is a keyword the task may take
        future, call = self.future(), self.call
        del self
        if future is None or not future.set_running_or_notify_cancel():
            return NOT_RUN
        del future
        return call(*args, **kwargs)


def _begin_collecting(trace_id: int, span_id: int) -> Any:
    try:
        from tracedfutures import _worker_spans

        return _worker_spans.begin(trace_id, span_id, fork_inherited_provider())
    except Exception:  # no SDK in this worker: the task runs, its spans stay here
        return None


def _worker_data(start: int, collected: Any, cpu: int) -> tuple[Any, ...]:
    """(start ns, end ns, where it ran, the CPU ns the task used on its thread) and, when the task's spans were
    collected, those spans and how many were dropped."""
    end = _clock()
    cpu = _thread_time() - cpu
    ran_on = ran_on_here()
    if collected is None:
        return (start, end, ran_on, cpu)
    try:
        from tracedfutures import _worker_spans

        records, dropped = _worker_spans.finish(collected)
    except Exception:  # the outcome travels whatever happens to the spans
        return (start, end, ran_on, cpu)
    return (start, end, ran_on, cpu, records, dropped) if records or dropped else (start, end, ran_on, cpu)
