"""Traced executors: ``traced()`` for any executor, and drop-in subclasses of the standard library's pools.

Thread and process pools of the standard library are traced exactly: their futures are ``TracedFuture`` from
birth, so every transition is seen. Any other executor (loky, Dask's ``Client.get_executor()``, a user's own)
is traced through a ``TracedFuture`` chained to the future it returns. Nothing here holds a reference to an
executor: dropping one still shuts it down as the standard library does.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures._base import CANCELLED as _CANCELLED
from concurrent.futures._base import LOGGER as _LOGGER
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING
from functools import partial
from types import MethodType
from typing import Any, NamedTuple, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures import _config, _stdlib
from tracedfutures._calls import NOT_RUN, LocalCall, RemoteCall, StartingCall, call_remote
from tracedfutures._lifecycle import Kind, Lifecycle, LifecycleHook, TracedFuture
from tracedfutures._naming import executor_name, is_context_run, validate_name
from tracedfutures._running import RunningTasks
from tracedfutures._start_board import StartBoard
from tracedfutures._state import state
from tracedfutures._telemetry import opentelemetry_own
from tracedfutures.metrics import ExecutorRecorder
from tracedfutures.package import _instruments_optional
from tracedfutures.spans import _span_hook, _task_cpu_hook

__all__ = ["TracedExecutor", "TracedProcessPoolExecutor", "TracedThreadPoolExecutor", "traced"]

T = TypeVar("T")

_STDLIB_THREAD_SUBMIT = ThreadPoolExecutor.submit
_STDLIB_PROCESS_SUBMIT = ProcessPoolExecutor.submit


class _Capacity:
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


def _capacity(executor: Executor, stats: ExecutorRecorder | None) -> _Capacity:
    """One _Capacity per executor and series (``state.capacities``): an executor wrapped twice under one name
    counts its workers once."""
    if stats is None:
        return _Capacity(executor, None)
    with state.capacities_lock:
        try:
            shared: dict[ExecutorRecorder, _Capacity] = state.capacities.setdefault(executor, {})
        except TypeError:  # an executor that cannot be weakly referenced
            return _Capacity(executor, stats)
        capacity = shared.get(stats)
        if capacity is None:
            capacity = shared[stats] = _Capacity(executor, stats)
        return capacity


def _executor_kind(executor: Executor) -> Kind:
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


def _make_lifecycle(
    executor: Executor,
    name: str | None,
    kind: Kind,
    remote: bool,
    options: _config.Options,
) -> tuple[Lifecycle, _Capacity]:
    """The lifecycle of ``executor``'s tasks, recording with ``options`` (each from the defaults where not given),
    and the capacity its workers add to its series."""
    library = _library(executor) if name is None else None
    label = executor_name(executor, library[1] if library is not None else name)
    tracer, backend = _config.tracer_and_backend(options)
    stats = backend.executor(label) if backend is not None else None
    spans = _span_hook(tracer, label, kind, remote, options.record_exception_messages)
    running = RunningTasks(executor, label, kind)
    hooks: list[LifecycleHook] = []
    if spans is not None:
        timed = _task_cpu_hook(kind)
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
    if kind != "process" or _PROCESS_ENQUEUE is None or _stock_submit(executor) is None or not isinstance(workers, int):
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


class _Route(NamedTuple):
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
_CHAINED = _Route(None, _remote_call, _ChainedFuture, True)
#: Each kind of stdlib pool: through its submit body, or through its ``submit`` where ``_stdlib`` falls back.
_POOL_ROUTES: dict[Kind, _Route] = {
    "thread": _Route(_THREAD_ENQUEUE, _thread_call, TracedFuture, False)
    if _THREAD_ENQUEUE is not None
    else _Route(None, _starting_call, TracedFuture, False, _relay),
    "interpreter": _Route(_THREAD_ENQUEUE, _interpreter_call, TracedFuture, True)
    if _THREAD_ENQUEUE is not None
    else _CHAINED._replace(make_call=_interpreter_call),
    "process": (
        _Route(_PROCESS_ENQUEUE, _process_call, TracedFuture, True) if _PROCESS_ENQUEUE is not None else _CHAINED
    ),
}


def _submit_task(
    route: _Route, executor: Executor, submit: Callable[..., Future[Any]] | None, life: Lifecycle,
    fn: Callable[..., T], args: Any, kwargs: Any,
) -> TracedFuture[T]:  # fmt: skip
    """Submit ``fn(*args, **kwargs)`` by ``route``: into ``executor`` through its pool's submit body, or through
    ``submit`` (the executor's own; None: a drop-in pool's stock ``submit``) with the returned future chained to the
    caller's."""
    # The SDK's own work (its detectors' bound methods): a future that tells no lifecycle, the call as it is.
    own = type(fn) is MethodType and opentelemetry_own(fn)
    future = route.future(None, fn) if own else life.submit(fn, route.future)
    try:
        if callable(fn) and not own:  # anything else fails as the stdlib makes it fail
            fn, args, kwargs = route.make_call(future, fn, args, kwargs)
        if route.enqueue is not None:
            route.enqueue(executor, future, fn, args, kwargs)
        else:
            if submit is None:  # made here, per task: the pool holds no call that holds it
                submit = partial(cast("_TracedPool", executor)._tf_stock_submit, executor)
            route.follow(future, submit(fn, *args, **kwargs))
    except BaseException as exc:
        if not future.done():  # a refused submit ends its task as an error with the exception the caller gets
            future.set_exception(exc)
        del future  # the exception's traceback holds this frame: no cycle future -> exception -> frame -> future
        raise
    return future


#: The ``submit`` of each drop-in pool class.
_TRACED_SUBMITS: set[Callable[..., Any]] = set()


def _stock_submit(executor: Executor) -> Callable[..., Any] | None:
    """The stdlib's ``submit`` of ``executor``'s pool when that is what its ``submit`` is (or a drop-in class's, or
    an instrumentation's wrapper of either), else None."""
    submit = type(executor).submit
    while hasattr(submit, "__wrapped__"):  # instrumentations (ours, opentelemetry-instrumentation-threading)
        submit = submit.__wrapped__
    stock = _STDLIB_PROCESS_SUBMIT if isinstance(executor, ProcessPoolExecutor) else _STDLIB_THREAD_SUBMIT
    if isinstance(executor, (ProcessPoolExecutor, ThreadPoolExecutor)) and (
        submit is stock or submit in _TRACED_SUBMITS
    ):
        return stock
    return None


class TracedExecutor(Executor):
    """What ``traced()`` returns: delegates to the wrapped executor and traces every task submitted through it."""

    def __init__(
        self,
        executor: Executor,
        name: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"traced() needs a concurrent.futures.Executor, got {type(executor).__qualname__}")
        if name is not None:
            validate_name(name)
        if isinstance(executor, TracedExecutor):  # one span per task, not one per wrapper; the name carries over
            name = executor.name if name is None else name
            executor = executor.executor
        options = _config.checked_options(tracer_provider, registry, meter_provider=meter_provider)
        kind = _executor_kind(executor)
        stock = _stock_submit(executor)
        self._route = _CHAINED if stock is None else _POOL_ROUTES[kind]
        self._submit_to = executor.submit if stock is None else partial(stock, executor)
        self._process_map = kind == "process" and stock is not None
        self._executor = executor
        remote = self._route.remote
        self._life, self._capacity = _make_lifecycle(executor, name, kind, remote, options)

    @property
    def executor(self) -> Executor:
        """The executor this one delegates to."""
        return self._executor

    @property
    def name(self) -> str:
        """The ``executor`` label and ``executor.name`` attribute of this executor's tasks."""
        return self._life.name

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TracedFuture[T]:
        """The wrapped executor's ``submit``, the task traced: returns a ``TracedFuture``."""
        return _submit_task(self._route, self._executor, self._submit_to, self._life, fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **options: Any,
    ) -> Iterator[T]:
        """The wrapped executor's ``map``, each call a traced task (``buffersize=`` where the stdlib takes it)."""
        if self._process_map:  # ProcessPoolExecutor.map: chunks of calls, one task each, flattened back in order
            body = _stdlib.choose("process pool map")
            return body(self, fn, iterables, timeout, chunksize, options)  # type: ignore[no-any-return]
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **options)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The wrapped executor's ``shutdown``; then its workers stop counting as capacity."""
        if cancel_futures:
            self._executor.shutdown(wait=wait, cancel_futures=True)
        else:
            self._executor.shutdown(wait=wait)
        self._capacity.release()

    def __getattr__(self, name: str) -> Any:
        # Attributes this wrapper does not define (Dask's ``client``, loky's internals, a process pool's
        # ``terminate_workers``) come from the executor.
        try:
            executor = self.__dict__["_executor"]
        except KeyError:
            raise AttributeError(name) from None
        found = getattr(executor, name)
        if name in _FORCED_SHUTDOWNS and callable(found):
            return partial(_force_shutdown, found, self._capacity)
        return found

    def __repr__(self) -> str:
        return f"<TracedExecutor {self._life.name!r} of {self._executor!r}>"


#: A process pool's forced shutdowns (3.14): they end the pool, so its workers stop counting as capacity.
_FORCED_SHUTDOWNS = frozenset(("terminate_workers", "kill_workers"))


def _force_shutdown(method: Callable[[], None], capacity: _Capacity) -> None:
    try:
        method()
    finally:
        capacity.release()


def traced(
    executor: Executor,
    name: str | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    meter_provider: MeterProvider | None = None,
) -> TracedExecutor:
    """Wrap ``executor`` so that every task gets a span and metrics; behaviour and results are unchanged.

    ``name`` is the ``executor`` label (default: the thread name prefix the user chose, else the class name);
    ``tracer_provider``, ``registry`` and ``meter_provider`` default to those set by ``configure()`` (the meter
    provider: else the global one, once set).
    """
    return TracedExecutor(
        executor, name, tracer_provider=tracer_provider, registry=registry, meter_provider=meter_provider
    )


class _TracedPool(Executor):
    """What the drop-in pools share: a lifecycle made at construction, ``submit`` through the pool's own body, and
    ``shutdown`` that stops counting its workers as capacity."""

    _tf_kind: Kind
    _tf_stock_submit: Callable[..., Future[Any]]  # the stdlib pool's own, unbound

    def _tf_trace(
        self,
        name: str | None,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        self._tf_route = _POOL_ROUTES[self._tf_kind]
        remote = self._tf_route.remote
        options = _config.Options(tracer_provider, registry, meter_provider=meter_provider)  # checked by ``_check``
        self._tf_life, self._tf_capacity = _make_lifecycle(self, name, self._tf_kind, remote, options)

    def _tf_shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Each drop-in class's ``shutdown``: the pool's, then its workers stop counting as capacity."""
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._tf_capacity.release()


class TracedThreadPoolExecutor(_TracedPool, ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks get spans and metrics; same constructor plus keyword-only options."""

    _tf_kind: Kind = "thread"
    _tf_stock_submit: Callable[..., Future[Any]] = staticmethod(_STDLIB_THREAD_SUBMIT)  # type: ignore[arg-type]

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        name: str | None = None,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        _check(name, tracer_provider, registry, meter_provider)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self._tf_trace(name, tracer_provider, registry, meter_provider)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TracedFuture[T]:
        """The pool's ``submit``, the task traced: returns a ``TracedFuture``."""
        return _submit_task(self._tf_route, self, None, self._tf_life, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The pool's ``shutdown``; then its workers stop counting as capacity."""
        self._tf_shutdown(wait, cancel_futures)


class TracedProcessPoolExecutor(_TracedPool, ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose tasks get spans and metrics; same constructor plus keyword-only options.

    Each task's real start is measured in the worker process; spans the task starts there are children of the
    task span (W3C trace context travels with the call). ``terminate_workers()`` and ``kill_workers()`` (3.14)
    shut the pool down through ``shutdown``, so its workers stop counting as capacity there too.
    """

    _tf_kind: Kind = "process"
    _tf_stock_submit: Callable[..., Future[Any]] = staticmethod(_STDLIB_PROCESS_SUBMIT)  # type: ignore[arg-type]

    def __init__(
        self,
        *args: Any,
        name: str | None = None,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        meter_provider: MeterProvider | None = None,
        **kwargs: Any,
    ) -> None:
        _check(name, tracer_provider, registry, meter_provider)
        super().__init__(*args, **kwargs)
        self._tf_trace(name, tracer_provider, registry, meter_provider)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TracedFuture[T]:
        """The pool's ``submit``, the task traced: returns a ``TracedFuture``."""
        return _submit_task(self._tf_route, self, None, self._tf_life, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The pool's ``shutdown``; then its workers stop counting as capacity."""
        self._tf_shutdown(wait, cancel_futures)


_TRACED_SUBMITS.update((TracedThreadPoolExecutor.submit, TracedProcessPoolExecutor.submit))


def _check(name: str | None, tracer_provider: object, registry: object, meter_provider: object) -> None:
    """A drop-in pool's own options, refused at construction as ``configure`` refuses them."""
    if name is not None:
        validate_name(name)
    _config.check_options(tracer_provider, registry, meter_provider)
