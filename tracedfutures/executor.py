"""Traced executors: ``traced()`` for any executor, and drop-in subclasses of the standard library's pools.

Thread and process pools of the standard library are traced exactly: their futures are ``TracedFuture`` from
birth, so every transition is seen. Any other executor (loky, Dask's ``Client.get_executor()``, a user's own)
is traced through a ``TracedFuture`` chained to the future it returns. Nothing here holds a reference to an
executor: dropping one still shuts it down as the standard library does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures import _config, _stdlib
from tracedfutures._lifecycle import Kind, TracedFuture
from tracedfutures._naming import validate_name
from tracedfutures._submit import (
    CHAINED,
    POOL_ROUTES,
    STDLIB_PROCESS_SUBMIT,
    STDLIB_THREAD_SUBMIT,
    TRACED_SUBMITS,
    Capacity,
    executor_kind,
    make_lifecycle,
    stock_submit,
    submit_task,
)

__all__ = ["TracedExecutor", "TracedProcessPoolExecutor", "TracedThreadPoolExecutor", "traced"]

T = TypeVar("T")


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
        kind = executor_kind(executor)
        stock = stock_submit(executor)
        self._route = CHAINED if stock is None else POOL_ROUTES[kind]
        self._submit_to = executor.submit if stock is None else partial(stock, executor)
        self._process_map = kind == "process" and stock is not None
        self._executor = executor
        remote = self._route.remote
        self._life, self._capacity = make_lifecycle(executor, name, kind, remote, options)

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
        return submit_task(self._route, self._executor, self._submit_to, self._life, fn, args, kwargs)

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


def _force_shutdown(method: Callable[[], None], capacity: Capacity) -> None:
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
        self._tf_route = POOL_ROUTES[self._tf_kind]
        remote = self._tf_route.remote
        options = _config.Options(tracer_provider, registry, meter_provider=meter_provider)  # checked by ``_check``
        self._tf_life, self._tf_capacity = make_lifecycle(self, name, self._tf_kind, remote, options)

    def _tf_shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Each drop-in class's ``shutdown``: the pool's, then its workers stop counting as capacity."""
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._tf_capacity.release()


class TracedThreadPoolExecutor(_TracedPool, ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks get spans and metrics; same constructor plus keyword-only options."""

    _tf_kind: Kind = "thread"
    _tf_stock_submit: Callable[..., Future[Any]] = staticmethod(STDLIB_THREAD_SUBMIT)  # type: ignore[arg-type]

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
        return submit_task(self._tf_route, self, None, self._tf_life, fn, args, kwargs)

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
    _tf_stock_submit: Callable[..., Future[Any]] = staticmethod(STDLIB_PROCESS_SUBMIT)  # type: ignore[arg-type]

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
        return submit_task(self._tf_route, self, None, self._tf_life, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The pool's ``shutdown``; then its workers stop counting as capacity."""
        self._tf_shutdown(wait, cancel_futures)


TRACED_SUBMITS.update((TracedThreadPoolExecutor.submit, TracedProcessPoolExecutor.submit))


def _check(name: str | None, tracer_provider: object, registry: object, meter_provider: object) -> None:
    """A drop-in pool's own options, refused at construction as ``configure`` refuses them."""
    if name is not None:
        validate_name(name)
    _config.check_options(tracer_provider, registry, meter_provider)
