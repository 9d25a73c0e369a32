"""``ConcurrentFuturesInstrumentor``: traces every stdlib thread and process pool and every wait / as_completed.

Usage::

    from tracedfutures import ConcurrentFuturesInstrumentor

    ConcurrentFuturesInstrumentor().instrument(tracer_provider=provider, registry=registry)
    ...
    ConcurrentFuturesInstrumentor().uninstrument()

or, with no code change, ``opentelemetry-instrument python app.py`` (entry point ``concurrent_futures``).
``submit`` of ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` is wrapped on the classes (executors created
before instrumenting are traced too) and ``concurrent.futures.wait`` / ``as_completed`` are replaced;
``uninstrument()`` puts back the very same objects.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tracedfutures import waiting
from tracedfutures._lifecycle import Lifecycle
from tracedfutures.config import configure
from tracedfutures.executor import _lifecycle, executor_kind, submit_to_process_pool, submit_to_thread_pool
from tracedfutures.package import _instruments

_lock = threading.Lock()
_STDLIB_FUNCTIONS = {"wait": concurrent.futures.wait, "as_completed": concurrent.futures.as_completed}


def _instance_lifecycle(executor: Executor, remote: bool) -> Lifecycle:
    """The lifecycle of a stock executor, made on its first submit and kept on the executor itself."""
    life: Lifecycle | None = executor.__dict__.get("_tf_life")
    if life is None:
        with _lock:
            life = executor.__dict__.get("_tf_life")
            if life is None:
                life, capacity = _lifecycle(executor, None, executor_kind(executor), remote, None, None)
                executor.__dict__["_tf_capacity"] = capacity
                executor.__dict__["_tf_life"] = life
    return life


def _submit_wrapper(submit: Callable[..., Any], remote: bool) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if instance is None and args:  # called through the class: ThreadPoolExecutor.submit(executor, fn)
            instance, args = args[0], args[1:]
        if not args:  # no callable: the stdlib's own TypeError
            return wrapped(*args, **kwargs)
        return submit(instance, _instance_lifecycle(instance, remote), args[0], args[1:], kwargs)

    return wrapper


class ConcurrentFuturesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An OpenTelemetry instrumentor for ``concurrent.futures``, following the contrib instrumentations."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        configure(tracer_provider=kwargs.get("tracer_provider"), registry=kwargs.get("registry"))
        wrap_function_wrapper(ThreadPoolExecutor, "submit", _submit_wrapper(submit_to_thread_pool, False))
        wrap_function_wrapper(ProcessPoolExecutor, "submit", _submit_wrapper(submit_to_process_pool, True))
        concurrent.futures.wait = waiting.wait
        concurrent.futures.as_completed = waiting.as_completed  # type: ignore[assignment]

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(ThreadPoolExecutor, "submit")
        unwrap(ProcessPoolExecutor, "submit")
        for name, function in _STDLIB_FUNCTIONS.items():
            setattr(concurrent.futures, name, function)
        configure()
