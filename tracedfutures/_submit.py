"""How a task reaches an executor: the three submit paths (a stdlib pool's own submit body, a stdlib pool's
``submit`` under the public-API fallback, any other executor's ``submit`` with a chained future), what runs for a
task in each kind of pool, and the lifecycle an executor's tasks report to. ``executor`` (``traced()`` and the
drop-in classes) and ``instrumentor`` (the stock pools) both submit through here.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures._base import CANCELLED as _CANCELLED
from concurrent.futures._base import LOGGER as _LOGGER
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING
from functools import partial
from types import MethodType
from typing import Any, NamedTuple, TypeVar, cast

from opentelemetry import context as otel_context

from tracedfutures import _config, _stdlib
from tracedfutures._calls import NOT_RUN, LocalCall, RemoteCall, StartingCall, call_remote
from tracedfutures._lifecycle import Kind, Lifecycle, LifecycleHook, TracedFuture
from tracedfutures._naming import executor_name, is_context_run
from tracedfutures._running import RunningTasks
from tracedfutures._start_board import StartBoard
from tracedfutures._state import state
from tracedfutures._telemetry import opentelemetry_own
from tracedfutures.metrics import ExecutorRecorder
from tracedfutures.package import _instruments_optional
from tracedfutures.spans import span_hook, task_cpu_hook

T = TypeVar("T")

STDLIB_THREAD_SUBMIT = ThreadPoolExecutor.submit
STDLIB_PROCESS_SUBMIT = ProcessPoolExecutor.submit


class Capacity:
    """Adds an executor's ``max_workers`` to its series until it is shut down or collected, exactly once."""

    __slots__ = ("__weakref__", "count", "lock", "stats")

    def __init__(self, executor: Executor, stats: ExecutorRecorder | None) -> None:
        count = getattr(executor, "_max_workers", None)
        self.count = count if isinstance(count, int) and stats is not None else 0
        self.stats = stats
        # Shutdown and the finalizer may race (and the finalizer may run from garbage collection in a thread that
        # holds it): the count is taken once, under a re-entrant lock, with or without a GIL.
        self.lock = threading.RLock()
        if self.count and stats is not None:
            stats.add_workers(self.count)
            weakref.finalize(executor, self.release)

    def release(self) -> None:
        with self.lock:
            count, self.count = self.count, 0
        if count and self.stats is not None:
            self.stats.add_workers(-count)


def _capacity(executor: Executor, stats: ExecutorRecorder | None) -> Capacity:
    """One Capacity per executor and series (``state.capacities``): an executor wrapped twice under one name
    counts its workers once."""
    if stats is None:
        return Capacity(executor, None)
    with state.capacities_lock:
        try:
            shared: dict[ExecutorRecorder, Capacity] = state.capacities.setdefault(executor, {})
        except TypeError:  # an executor that cannot be weakly referenced
            return Capacity(executor, stats)
        capacity = shared.get(stats)
        if capacity is None:
            capacity = shared[stats] = Capacity(executor, stats)
        return capacity


def executor_kind(executor: Executor) -> Kind:
    if isinstance(executor, ThreadPoolExecutor):
        pools = sys.modules.get("concurrent.futures.interpreter")  # no interpreter pool exists until it is imported
        if pools is not None and isinstance(executor, pools.InterpreterPoolExecutor):
            return "interpreter"
        return "thread"
    if isinstance(executor, ProcessPoolExecutor):
        return "process"
    library = _library(executor)
    return library[0] if library is not None else "other"


#: The kind and default name of the other libraries' executors (``package._instruments_optional``), by the module
#: and name of their class.
_LIBRARIES: dict[tuple[str, str], tuple[Kind, str]] = {
    (module, cls): (cast(Kind, kind), name) for module, cls, kind, name, _ in _instruments_optional
}


def _library(executor: Executor) -> tuple[Kind, str] | None:
    """The kind and default name of an executor of another library (loky's pool, joblib's copy of it, Dask's
    ``ClientExecutor``, or a subclass of one), else None."""
    for cls in type(executor).__mro__:
        found = _LIBRARIES.get((cls.__module__, cls.__qualname__))
        if found is not None:
            return found
    return None


def make_lifecycle(
    executor: Executor,
    name: str | None,
    kind: Kind,
    remote: bool,
    options: _config.Options,
) -> tuple[Lifecycle, Capacity]:
    """The lifecycle of ``executor``'s tasks, recording with ``options`` (each from the defaults where not given),
    and the capacity its workers add to its series."""
    library = _library(executor) if name is None else None
    label = executor_name(executor, library[1] if library is not None else name)
    tracer, backend = _config.tracer_and_backend(options)
    stats = backend.executor(label) if backend is not None else None
    spans = span_hook(tracer, label, kind, remote, options.record_exception_messages)
    running = RunningTasks(executor, label, kind)
    hooks: list[LifecycleHook] = []
    if spans is not None:
        timed = task_cpu_hook(kind)
        if timed is not None:  # before the span side, which ends the span
            hooks.append(timed)
        hooks.append(spans)
    board = None
    if stats is not None:
        stats.watch(running)
        hooks.append(stats.hook())
        board = _worker_board(executor, kind, running)
        if board is not None:
            hooks.append(board)
            stats.watch_board(board)
    if state.timeline_hook is not None:  # tracedfutures record: the timeline, fed by the lifecycle
        hooks.append(state.timeline_hook(label, kind))
    life = Lifecycle(label, kind, tuple(hooks), remote, running)
    if board is not None:
        life.board = board.path
    return life, _capacity(executor, stats)


def _worker_board(executor: Executor, kind: Kind, handed: RunningTasks) -> StartBoard | None:
    """The start board of a stdlib process pool submitted to through the pool's own submit body, where its workers
    say which task runs now (``_start_board``): a slot for twice ``max_workers`` processes (a worker that leaves,
    after ``max_tasks_per_child`` tasks say, and the one replacing it). None elsewhere, or where no shared file can
    be made: that pool's tasks count as running from their hand-off to the call queue."""
    workers = getattr(executor, "_max_workers", None)
    if kind != "process" or _PROCESS_ENQUEUE is None or stock_submit(executor) is None or not isinstance(workers, int):
        return None
    try:
        return StartBoard(executor, 2 * workers, handed)
    except OSError:
        return None


def _wire_context(future: TracedFuture) -> tuple[int, int, int] | None:
    context = future._tf_context
    if context is None:
        return None
    return (context.trace_id, context.span_id, int(context.trace_flags))


try:  # the OpenTelemetry SDK is optional: without it no task asks its worker for spans
    from tracedfutures._worker_spans import wants_worker_spans
except ImportError:  # pragma: no cover - the tests run with the SDK

    def wants_worker_spans(span: object) -> bool:
        return False


#: What a pool runs for a task: a callable, its positional and its keyword arguments.
_Call = tuple[Any, tuple[Any, ...], dict[str, Any]]


def _remote_call(future: TracedFuture, fn: Any, args: Any, kwargs: Any) -> _Call:
    """A call that travels (a process or a user's executor): the task span's context, and whether the spans made
    in the worker come home."""
    origin = state.process_token if wants_worker_spans(future._tf_span) else 0
    return RemoteCall(fn, _wire_context(future), origin), args, kwargs


def _process_call(future: TracedFuture, fn: Any, args: Any, kwargs: Any) -> _Call:
    """A ``_remote_call`` for a stdlib process pool: its workers also say on the pool's start board which task runs
    (its future's ``id()``: where a worker that died was, see ``_start_board.StartBoard.running``), since when, and
    when it ends."""
    origin = state.process_token if wants_worker_spans(future._tf_span) else 0
    life = future._tf_life
    board = life.board if life is not None else ""
    return RemoteCall(fn, _wire_context(future), origin, board, id(future)), args, kwargs


def _interpreter_call(future: TracedFuture, fn: Any, args: Any, kwargs: Any) -> _Call:
    """A ``_remote_call`` shaped for an interpreter pool: ``fn`` stays an argument, shared as the stdlib shares
    it (a function that uses no globals crosses without pickling)."""
    origin = state.process_token if wants_worker_spans(future._tf_span) else 0
    return call_remote, (fn, _wire_context(future), origin, "", *args), kwargs


def _thread_call(future: TracedFuture, fn: Any, args: Any, kwargs: Any) -> _Call:
    """What a thread pool runs: ``fn``, in the context set by the span side (``future._tf_caller``) when one must
    travel: the caller's, with the task span current (or an unsampled parent, so that spans the task starts stay
    unsampled children)."""
    context = future._tf_caller
    if context is None:
        return fn, args, kwargs
    future._tf_caller = None  # the call holds it now
    call = LocalCall(fn, context)
    if isinstance(fn, partial) and is_context_run(fn):
        # asyncio.to_thread runs the function in a copy of the caller's context: the task span goes inside it.
        call.fn = fn.args[0]
        return partial(fn.func, call, *fn.args[1:], **fn.keywords), args, kwargs
    return call, args, kwargs


def _starting_call(future: TracedFuture, fn: Any, args: Any, kwargs: Any) -> _Call:
    """A ``_thread_call`` that starts the task's own future first (a thread pool's public-API fallback)."""
    call, args, kwargs = _thread_call(future, fn, args, kwargs)
    return StartingCall(future, call), args, kwargs


class _ChainedFuture(TracedFuture):
    """A ``TracedFuture`` that mirrors another executor's future: cancel goes down, the outcome comes up.

    Its done-callbacks run in the OpenTelemetry context that was current at submit, wherever the other executor
    reports the outcome (loky's management thread, Dask's event loop): work that a callback submits in turn
    (``joblib.Parallel`` dispatches its next batch from there) stays in the submitter's trace.
    """

    __slots__ = ("_tf_inner", "_tf_submitter")

    def __init__(self, life: Lifecycle | None = None, fn: Any = None) -> None:
        super().__init__(life, fn)
        self._tf_inner: Future[Any] | None = None
        self._tf_submitter: otel_context.Context | None = None

    def follow(self, inner: Future[Any]) -> None:
        self._tf_inner = inner
        self._tf_submitter = otel_context.get_current()
        inner.add_done_callback(self._relay)

    def _relay(self, inner: Future[Any]) -> None:
        self._tf_inner = None  # break the cycle inner -> callback -> self -> inner
        submitter, self._tf_submitter = self._tf_submitter, None
        token = otel_context.attach(submitter) if submitter is not None else None
        try:
            self._take_outcome(inner)
        finally:
            if token is not None:
                otel_context.detach(token)

    def _take_outcome(self, inner: Future[Any]) -> None:
        if inner.cancelled():
            super().cancel()
            if self._state == _CANCELLED:  # wake wait() and as_completed() as an executor would on dequeue
                self.set_running_or_notify_cancel()
            return
        exc = inner.exception()
        if exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(inner.result())

    def cancel(self) -> bool:
        inner = self._tf_inner
        if inner is not None and not inner.cancel():
            return False
        return super().cancel()

    def running(self) -> bool:
        inner = self._tf_inner
        return inner.running() if inner is not None else super().running()

    def set_running_or_notify_cancel(self) -> bool:
        inner = self._tf_inner
        if inner is not None and inner.running() and self._state == _PENDING:
            # Running in the other executor: refused as the stdlib refuses a RUNNING future.
            _LOGGER.critical("Future %s in unexpected state: %s", id(self), _RUNNING)
            self._refused("set_running_or_notify_cancel")
            raise RuntimeError("Future in unexpected state")
        return super().set_running_or_notify_cancel()


def _relay_outcome(future: TracedFuture, inner: Future[Any]) -> None:
    """The done-callback by which a thread pool's future brings its outcome to the task's own future, in the
    public-API fallback. The task's future starts, is cancelled and is notified as the pool's own would be (its
    ``StartingCall`` runs where the pool starts the task)."""
    if inner.cancelled():  # shutdown(cancel_futures=True) cancelled it in the queue, without notifying
        future.cancel()
        return
    exc = inner.exception()
    if exc is not None:
        future.set_exception(exc)
        return
    result = inner.result()
    if result is not NOT_RUN:
        future.set_result(result)


def _chain(future: TracedFuture, inner: Future[Any]) -> None:
    cast("_ChainedFuture", future).follow(inner)  # the chained route makes a _ChainedFuture


def _relay(future: TracedFuture, inner: Future[Any]) -> None:
    inner.add_done_callback(partial(_relay_outcome, future))


class Route(NamedTuple):
    """How tasks reach one kind of executor: the stdlib pool's own submit body (``enqueue``; None: through the
    executor's ``submit``, with ``follow`` tying the future it returns to the caller's), what runs for a task, the
    future the caller gets, and whether the call runs remotely (its real start then comes home with the outcome)."""

    enqueue: _stdlib.Enqueue | None
    make_call: Callable[[TracedFuture, Any, Any, Any], _Call]
    future: Callable[[Lifecycle | None, Any], TracedFuture]
    remote: bool
    follow: Callable[[TracedFuture, Future[Any]], None] = _chain


#: Each stdlib pool's own submit body in this interpreter, or None where ``_stdlib`` falls back to public API.
_THREAD_ENQUEUE = _stdlib.thread_pool_enqueue()
_PROCESS_ENQUEUE = _stdlib.process_pool_enqueue()
#: Any executor that is not a stdlib pool with the stdlib's ``submit``: chained to its own ``submit``.
CHAINED = Route(None, _remote_call, _ChainedFuture, True)
#: Each kind of stdlib pool: through its submit body, or through its ``submit`` where ``_stdlib`` falls back.
POOL_ROUTES: dict[Kind, Route] = {
    "thread": Route(_THREAD_ENQUEUE, _thread_call, TracedFuture, False)
    if _THREAD_ENQUEUE is not None
    else Route(None, _starting_call, TracedFuture, False, _relay),
    "interpreter": Route(_THREAD_ENQUEUE, _interpreter_call, TracedFuture, True)
    if _THREAD_ENQUEUE is not None
    else CHAINED._replace(make_call=_interpreter_call),
    "process": (
        Route(_PROCESS_ENQUEUE, _process_call, TracedFuture, True) if _PROCESS_ENQUEUE is not None else CHAINED
    ),
}


def submit_task(
    route: Route, executor: Executor, submit: Callable[..., Future[Any]] | None, life: Lifecycle,
    fn: Callable[..., T], args: Any, kwargs: Any,
) -> TracedFuture[T]:  # fmt: skip
    """Submit ``fn(*args, **kwargs)`` by ``route``: into ``executor`` through its pool's submit body, or through
    ``submit`` (the executor's own; None: a drop-in pool's stock ``submit``) with the returned future chained to the
    caller's."""
    # The SDK's own work (its detectors' bound methods): a future that tells no lifecycle, the call as it is.
    own = type(fn) is MethodType and opentelemetry_own(fn)
    if own:
        future = route.future(None, fn)
    else:
        future = route.future(life, fn)
        life.on_submit(future, fn)
    try:
        if callable(fn) and not own:  # anything else fails as the stdlib makes it fail
            fn, args, kwargs = route.make_call(future, fn, args, kwargs)
        if route.enqueue is not None:
            route.enqueue(executor, future, fn, args, kwargs)
        else:
            if submit is None:  # made here, per task: the pool holds no call that holds it
                submit = partial(cast(Any, executor)._tf_stock_submit, executor)
            route.follow(future, submit(fn, *args, **kwargs))
    except BaseException as exc:
        if not future.done():  # a refused submit ends its task as an error with the exception the caller gets
            future.set_exception(exc)
        del future  # the exception's traceback holds this frame: no cycle future -> exception -> frame -> future
        raise
    return future


#: The ``submit`` of each drop-in pool class.
TRACED_SUBMITS: set[Callable[..., Any]] = set()


def stock_submit(executor: Executor) -> Callable[..., Any] | None:
    """The stdlib's ``submit`` of ``executor``'s pool when that is what its ``submit`` is (or a drop-in class's, or
    an instrumentation's wrapper of either), else None."""
    submit = type(executor).submit
    while hasattr(submit, "__wrapped__"):  # instrumentations (ours, opentelemetry-instrumentation-threading)
        submit = submit.__wrapped__
    stock = STDLIB_PROCESS_SUBMIT if isinstance(executor, ProcessPoolExecutor) else STDLIB_THREAD_SUBMIT
    if isinstance(executor, (ProcessPoolExecutor, ThreadPoolExecutor)) and (
        submit is stock or submit in TRACED_SUBMITS
    ):
        return stock
    return None
