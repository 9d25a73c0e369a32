"""``ConcurrentFuturesInstrumentor``: traces every stdlib thread and process pool and every wait / as_completed.

Usage::

    from tracedfutures import ConcurrentFuturesInstrumentor

    ConcurrentFuturesInstrumentor().instrument(tracer_provider=provider, meter_provider=meters, registry=registry)
    ...
    ConcurrentFuturesInstrumentor().uninstrument()

or, with no code change, ``opentelemetry-instrument python app.py`` (entry point ``concurrent_futures``).
``submit`` and ``shutdown`` of ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` are wrapped on the classes
(executors created before instrumenting are traced too), and ``concurrent.futures.wait`` / ``as_completed`` in
place, with wrapt; ``uninstrument()`` unwraps them, which puts back the very objects that were there (the stdlib's,
or another instrumentation's). The options given to ``instrument()`` (``tracer_provider``, ``meter_provider``,
``registry``, ``buckets``, ``record_exception_messages``) stay with the instrumentor; those not given are the defaults
of ``configure()``, which the instrumentor neither changes nor resets.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Collection
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from types import MethodType
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from tracedfutures import _config, waiting
from tracedfutures._lifecycle import Lifecycle
from tracedfutures._state import state
from tracedfutures._telemetry import in_telemetry, opentelemetry_own, use_telemetry_scopes
from tracedfutures.executor import (
    _POOL_ROUTES,
    _STDLIB_PROCESS_SUBMIT,
    _STDLIB_THREAD_SUBMIT,
    _executor_kind,
    _make_lifecycle,
    _Route,
    _submit_task,
)
from tracedfutures.package import _instruments

__all__ = ["ConcurrentFuturesInstrumentor"]

#: The functions of ``concurrent.futures`` that are wrapped in place.
_FUNCTIONS = ("wait", "as_completed")
#: The keyword arguments of ``instrument()`` that are options of tracedfutures (as ``configure()`` takes them).
_OPTIONS = ("tracer_provider", "registry", "buckets", "record_exception_messages", "meter_provider")


class _Instrumentation:
    """What one ``instrument()`` call was given, and the wrappers that record with it."""

    def __init__(self, options: _config.Options) -> None:
        self.options = options
        self.wait, self.as_completed = waiting._recording_with(_config.Resolver(options))

    def route(self, executor: Executor) -> tuple[Lifecycle, _Route, Callable[..., Any]]:
        """A stock pool's lifecycle, route and the stdlib's own submit, made on its first submit and kept on the
        executor itself (the wrapper runs as the stdlib's submit: a subclass's own submit has already run)."""
        found: tuple[Lifecycle, _Route, Callable[..., Any]] | None = executor.__dict__.get("_tf_route")
        if found is None:
            with state.instrumentor_lock:
                found = executor.__dict__.get("_tf_route")
                if found is None:
                    kind = _executor_kind(executor)
                    route = _POOL_ROUTES[kind]
                    stock = _STDLIB_PROCESS_SUBMIT if kind == "process" else _STDLIB_THREAD_SUBMIT
                    life, capacity = _make_lifecycle(executor, None, kind, route.remote, self.options)
                    found = (life, route, stock)
                    executor.__dict__["_tf_capacity"] = capacity
                    executor.__dict__["_tf_route"] = found
        return found

    def submit_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if in_telemetry() or not is_instrumentation_enabled():
            # Submitted by a span processor or exporter while tracedfutures (or an exporter, which suppresses
            # instrumentation) records: tracing it would make a span for every span, endlessly.
            return wrapped(*args, **kwargs)
        if instance is None and args:  # called through the class: ThreadPoolExecutor.submit(executor, fn)
            instance, args = args[0], args[1:]
            wrapped = partial(wrapped, instance)
        if not args:  # no callable: the stdlib's own TypeError
            return wrapped(*args, **kwargs)
        fn = _without_threading_wrapper(args[0])
        # The SDK's own work: not even a lifecycle for the pool, this may run in a child's at-fork hook.
        if type(fn) is MethodType and opentelemetry_own(fn):
            return wrapped(*args, **kwargs)
        life, route, stock = self.route(instance)
        if route.enqueue is None:  # the fallback: through the stdlib's own submit, not through another wrapper
            wrapped = partial(stock, instance)
        return _submit_task(route, instance, wrapped, life, fn, args[1:], kwargs)

    def wait_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``concurrent.futures.wait``: tracedfutures' (the stdlib's own body, timed and traced)."""
        return self.wait(*args, **kwargs)

    def as_completed_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``concurrent.futures.as_completed``: tracedfutures' (the stdlib's own body, timed and traced)."""
        return self.as_completed(*args, **kwargs)


def _shutdown_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A stock pool stops counting its workers as capacity when it is shut down (not only when collected)."""
    try:
        return wrapped(*args, **kwargs)
    finally:
        executor = instance if instance is not None else (args[0] if args else None)
        capacity = getattr(executor, "__dict__", {}).get("_tf_capacity")
        if capacity is not None:
            capacity.release()


def _without_threading_wrapper(fn: Any) -> Any:
    """The function that opentelemetry-instrumentation-threading wrapped, when it instrumented after us.

    Its wrapper of ``ThreadPoolExecutor.submit`` then runs first and hands us a closure that attaches the
    context current at submit: the very context our task span is made in, whose span is that task span's
    parent. The task runs with its task span attached once, by us, and is named after the real function,
    exactly as when the threading instrumentation is not there (or instrumented before us: then our wrapper
    runs first and never calls its).
    """
    code = getattr(fn, "__code__", None)
    if code is None or code.co_name != "wrapped_func":
        return fn
    if getattr(fn, "__module__", None) != "opentelemetry.instrumentation.threading":
        return fn
    cells = dict(zip(code.co_freevars, fn.__closure__ or ()))
    cell = cells.get("original_func")
    return fn if cell is None else cell.cell_contents


class ConcurrentFuturesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An OpenTelemetry instrumentor for ``concurrent.futures``, following the contrib instrumentations."""

    _tf_instrumentation: _Instrumentation | None = None  # what instrument() was given, while instrumented

    def instrumentation_dependencies(self) -> Collection[str]:
        """No distribution: ``concurrent.futures`` is the standard library's."""
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        """Wrap the stock pools and the module's functions; ``kwargs`` are checked as ``configure()`` checks them."""
        options = _config.checked_options(**{key: kwargs[key] for key in _OPTIONS if key in kwargs})
        instrumentation = self._tf_instrumentation = _Instrumentation(options)
        for pool in (ThreadPoolExecutor, ProcessPoolExecutor):
            wrap_function_wrapper(pool, "submit", instrumentation.submit_wrapper)
            wrap_function_wrapper(pool, "shutdown", _shutdown_wrapper)
        wrap_function_wrapper(concurrent.futures, "wait", instrumentation.wait_wrapper)
        wrap_function_wrapper(concurrent.futures, "as_completed", instrumentation.as_completed_wrapper)
        use_telemetry_scopes(True)

    def _uninstrument(self, **kwargs: Any) -> None:
        """Unwrap exactly what ``_instrument`` wrapped; the defaults of ``configure()`` are left as they are."""
        for pool in (ThreadPoolExecutor, ProcessPoolExecutor):
            unwrap(pool, "submit")
            unwrap(pool, "shutdown")
        for name in _FUNCTIONS:
            unwrap(concurrent.futures, name)
        use_telemetry_scopes(False)
        self._tf_instrumentation = None

