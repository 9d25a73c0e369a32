"""``TracedInterpreterPoolExecutor``: the drop-in ``InterpreterPoolExecutor`` (Python 3.14 and later)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.interpreter import InterpreterPoolExecutor  # type: ignore[import-not-found,unused-ignore]
from typing import Any, TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracedfutures._lifecycle import Kind
from tracedfutures.executor import _STDLIB_THREAD_SUBMIT as _STOCK_SUBMIT
from tracedfutures.executor import _TRACED_SUBMITS, _check, _TracedPool

T = TypeVar("T")


class TracedInterpreterPoolExecutor(_TracedPool, InterpreterPoolExecutor):  # type: ignore[misc,valid-type,unused-ignore]
    """An ``InterpreterPoolExecutor`` whose tasks get spans and metrics; same constructor plus keyword-only options.

    Each task's real start is measured in the interpreter that runs it; spans the task starts there are children
    of the task span and come home with its outcome, as from a process pool. The callable and its arguments must be
    shareable, as for the stdlib's pool; tracedfutures adds nothing to them that is not.
    """

    _tf_kind: Kind = "interpreter"
    _tf_stock_submit: Callable[..., Future[Any]] = staticmethod(_STOCK_SUBMIT)  # type: ignore[arg-type]

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
    ) -> None:
        _check(name, tracer_provider, registry)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self._tf_trace(name, tracer_provider, registry)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._tf_submit(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._tf_shutdown(wait, cancel_futures)


_TRACED_SUBMITS.add(TracedInterpreterPoolExecutor.submit)
