"""``ConcurrentFuturesInstrumentor``: traces every stdlib thread and process pool, loky's and joblib's process pools,
Dask's ``Client.get_executor()``, and every wait / as_completed.

Usage::

    from tracedfutures import ConcurrentFuturesInstrumentor

    ConcurrentFuturesInstrumentor().instrument(tracer_provider=provider, meter_provider=meters, registry=registry)
    ...
    ConcurrentFuturesInstrumentor().uninstrument()

or, with no code change, ``opentelemetry-instrument python app.py`` (entry point ``concurrent_futures``).
``submit`` and ``shutdown`` of ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` are wrapped on the classes
(executors created before instrumenting are traced too), and ``concurrent.futures.wait`` / ``as_completed`` in
place; ``uninstrument()`` unwraps them, which puts back the very objects that were there (the stdlib's, or another
instrumentation's). Each is a wrapt wrapper but ``submit``, the one call of every task: a plain function there
(``__wrapped__``: what it replaced) costs a task about 4,700 instructions less than a wrapt wrapper. The options
given to ``instrument()`` (``tracer_provider``, ``meter_provider``, ``registry``, ``buckets``,
``record_exception_messages``) stay with the instrumentor; those not given are the defaults of ``configure()``, which
the instrumentor neither changes nor resets.

The executors of other libraries (``package._instruments_optional``) are wrapped the same way when their module is
first imported (at once if it already is), if their distribution is installed in a supported version: loky's
``ProcessPoolExecutor`` (``get_reusable_executor()``, and joblib's copy that ``joblib.Parallel`` runs on) and Dask's
``ClientExecutor``, whose ``map`` then submits each call as ``concurrent.futures.Executor.map`` does. Their tasks
are traced as ``traced()`` traces them: a ``concurrent.futures.Future`` chained to the library's.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Collection
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial, wraps
from types import FunctionType, MethodType
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import register_post_import_hook, wrap_function_wrapper

from tracedfutures import _config, waiting
from tracedfutures._calls import RemoteCall
from tracedfutures._lifecycle import Lifecycle
from tracedfutures._state import state
from tracedfutures._submit import (
    CHAINED,
    POOL_ROUTES,
    STDLIB_PROCESS_SUBMIT,
    STDLIB_THREAD_SUBMIT,
    Route,
    executor_kind,
    make_lifecycle,
    submit_task,
)
from tracedfutures._telemetry import opentelemetry_own, scope, use_telemetry_scopes
from tracedfutures.package import _instruments, _instruments_optional

__all__ = ["ConcurrentFuturesInstrumentor"]

#: The functions of ``concurrent.futures`` that are wrapped in place.
_FUNCTIONS = ("wait", "as_completed")
#: The keyword arguments of ``instrument()`` that are options of tracedfutures (as ``configure()`` takes them).
_OPTIONS = ("tracer_provider", "registry", "buckets", "record_exception_messages", "meter_provider")
#: What an instrumented executor keeps (``_tf_route``): the instrumentation that made it, the lifecycle of its
#: tasks, its route and the stdlib submit of its kind.
_Routed = tuple["_Instrumentation", Lifecycle, Route, Callable[..., Any]]


class _Instrumentation:
    """What one ``instrument()`` call was given, and the wrappers that record with it."""

    def __init__(self, options: _config.Options) -> None:
        self.options = options
        self.wait, self.as_completed = waiting._recording_with(_config.Resolver(options))
        #: The other libraries' classes wrapped so far, and the methods wrapped on each.
        self.wrapped: list[tuple[type, tuple[str, ...]]] = []
        #: The stock pools' ``submit`` as this instrumentation made it (``wrap_submit``), by pool class.
        self.submits: dict[type, Callable[..., Any]] = {}

    def wrap_submit(self, pool: type) -> None:
        """Make ``pool.submit`` record: a plain function that calls ``submit_wrapper`` as wrapt would, with the
        ``submit`` it replaced (the stdlib's, or another instrumentation's wrapper) bound to the executor."""
        bind = pool.__dict__["submit"].__get__
        record = self.submit_wrapper

        @wraps(pool.__dict__["submit"])  # its name, doc and signature; ``__wrapped__``: what it replaced
        def submit(self: Executor, /, *args: Any, **kwargs: Any) -> Any:
            return record(bind(self), self, args, kwargs)

        pool.submit = submit  # type: ignore[attr-defined]
        self.submits[pool] = submit

    def unwrap_submit(self, pool: type) -> bool:
        """Put back what ``wrap_submit`` replaced, if its function is still ``pool.submit`` (else False: another
        instrumentation wrapped it since, and unwraps first)."""
        submit = self.submits.pop(pool, None)
        if submit is None or pool.__dict__.get("submit") is not submit:
            return False
        pool.submit = submit.__wrapped__  # type: ignore[attr-defined,union-attr]
        return True

    def route(self, executor: Executor, library: bool) -> _Routed:
        """An executor's lifecycle, route and the submit the route ends in, made on its first submit under this
        instrumentation and kept on the executor itself (an executor that outlives an ``uninstrument()``, as loky's
        reusable one does, records with the options of the ``instrument()`` in force). A stock pool's route is its
        own submit body (the wrapper runs as the stdlib's submit: a subclass's own submit has already run), ending
        in the stdlib's submit where there is no copy of that body; another library's (``library``) is the chained
        route of ``traced()``, ending in the library's submit."""
        found: _Routed | None = executor.__dict__.get("_tf_route")
        if found is None or found[0] is not self:
            with state.instrumentor_lock:
                found = executor.__dict__.get("_tf_route")
                if found is None or found[0] is not self:
                    kind = executor_kind(executor)
                    route = CHAINED if library else POOL_ROUTES[kind]
                    stock = STDLIB_PROCESS_SUBMIT if kind == "process" else STDLIB_THREAD_SUBMIT
                    life, capacity = make_lifecycle(executor, None, kind, route.remote, self.options)
                    found = (self, life, route, stock)
                    previous = executor.__dict__.get("_tf_capacity")
                    if previous is not None:  # counted by an earlier instrumentation's series: not any more
                        previous.release()
                    executor.__dict__["_tf_capacity"] = capacity
                    executor.__dict__["_tf_route"] = found
        return found

    def library_submit_wrapper(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Another library's ``submit`` (``package._instruments_optional``)."""
        if args and type(args[0]) is RemoteCall:  # already traced: a traced() wrapper submits through it
            return wrapped(*args, **kwargs)
        return self.submit_wrapper(wrapped, instance, args, kwargs, True)

    def submit_wrapper(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        library: bool = False,
    ) -> Any:
        """A stock pool's ``submit`` (or, ``library``, another library's)."""
        if scope.active or _suppressed():
            # Submitted by a span processor or exporter while tracedfutures (or an exporter, which suppresses
            # instrumentation) records: tracing it would make a span for every span, endlessly.
            return wrapped(*args, **kwargs)
        if instance is None and args:  # called through the class: ThreadPoolExecutor.submit(executor, fn)
            instance, args = args[0], args[1:]
            wrapped = partial(wrapped, instance)
        if not args:  # no callable: the stdlib's own TypeError
            return wrapped(*args, **kwargs)
        fn = args[0]
        if type(fn) is FunctionType and fn.__code__.co_name == "wrapped_func":  # the threading instrumentation's?
            fn = _without_threading_wrapper(fn)
        # The SDK's own work: not even a lifecycle for the pool, this may run in a child's at-fork hook.
        if type(fn) is MethodType and opentelemetry_own(fn):
            return wrapped(*args, **kwargs)
        found = instance.__dict__.get("_tf_route")  # the route made at its first submit (``route``), looked up inline
        _, life, route, stock = found if found is not None and found[0] is self else self.route(instance, library)
        if route.enqueue is None and not library:  # the fallback: the stdlib's own submit, not another wrapper
            wrapped = partial(stock, instance)
        return submit_task(route, instance, wrapped, life, fn, args[1:], kwargs)

    def instrument_library(self, module: Any, cls_name: str, requirement: str) -> None:
        """Wrap the executor class ``cls_name`` of a library's ``module`` that was just imported, if this
        instrumentation is still the instrumentor's and the library's version is supported."""
        if ConcurrentFuturesInstrumentor()._tf_instrumentation is not self:  # uninstrumented since (or again)
            return
        cls = getattr(module, cls_name, None)
        if not isinstance(cls, type) or get_dependency_conflicts([requirement]) is not None:
            return
        with state.instrumentor_lock:
            wrap_function_wrapper(cls, "submit", self.library_submit_wrapper)
            wrap_function_wrapper(cls, "shutdown", _shutdown_wrapper)
            methods = ["submit", "shutdown"]
            if cls_name == "ClientExecutor":  # Dask's map goes to the client directly: through submit instead
                wrap_function_wrapper(cls, "map", _map_through_submit)
                methods.append("map")
            self.wrapped.append((cls, tuple(methods)))

    def uninstrument_libraries(self) -> None:
        """Unwrap every library class that ``instrument_library`` wrapped."""
        with state.instrumentor_lock:
            for cls, methods in self.wrapped:
                for method in methods:
                    unwrap(cls, method)
            self.wrapped.clear()

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


def _map_through_submit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Dask's ``ClientExecutor.map``: each call submitted through its (traced) ``submit``, in order, by
    ``concurrent.futures.Executor.map``, as ``traced()`` maps. Anything that body does not take as Dask does (a
    timeout that is a string, an unknown keyword: Dask's ``TypeError``) goes to Dask's own ``map``."""
    timeout = kwargs.get("timeout")
    if (
        instance is None
        or not args
        or set(kwargs) - {"timeout", "chunksize"}
        or not (timeout is None or isinstance(timeout, (int, float)))
        or scope.active
        or _suppressed()
    ):
        return wrapped(*args, **kwargs)
    return Executor.map(instance, *args, timeout=timeout)


try:  # the keys ``is_instrumentation_enabled`` reads, read here from one look-up of the current context
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN

    def _suppressed() -> bool:
        """Whether instrumentation is suppressed in the current context (``not is_instrumentation_enabled()``)."""
        current = get_current()
        return bool(current.get(_SUPPRESS_INSTRUMENTATION_KEY) or current.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN))

except ImportError:  # pragma: no cover - an OpenTelemetry whose private names moved: its public function

    def _suppressed() -> bool:
        """Whether instrumentation is suppressed in the current context."""
        return not is_instrumentation_enabled()


def _without_threading_wrapper(fn: FunctionType) -> Any:
    """The function that opentelemetry-instrumentation-threading wrapped, when it instrumented after us (``fn``: a
    function whose code is named as its wrapper's, ``wrapped_func``).

    Its wrapper of ``ThreadPoolExecutor.submit`` then runs first and hands us a closure that attaches the
    context current at submit: the very context our task span is made in, whose span is that task span's
    parent. The task runs with its task span attached once, by us, and is named after the real function,
    exactly as when the threading instrumentation is not there (or instrumented before us: then our wrapper
    runs first and never calls its).
    """
    code = fn.__code__
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
            instrumentation.wrap_submit(pool)
            wrap_function_wrapper(pool, "shutdown", _shutdown_wrapper)
        wrap_function_wrapper(concurrent.futures, "wait", instrumentation.wait_wrapper)
        wrap_function_wrapper(concurrent.futures, "as_completed", instrumentation.as_completed_wrapper)
        use_telemetry_scopes(True)
        for module, cls, *_, requirement in _instruments_optional:
            # Called at once when the module is imported already, else when it is: a program that never imports
            # the library never pays for importing it.
            hook = partial(instrumentation.instrument_library, cls_name=cls, requirement=requirement)
            register_post_import_hook(hook, module)

    def _uninstrument(self, **kwargs: Any) -> None:
        """Unwrap exactly what ``_instrument`` wrapped; the defaults of ``configure()`` are left as they are."""
        instrumentation = self._tf_instrumentation
        for pool in (ThreadPoolExecutor, ProcessPoolExecutor):
            if instrumentation is None or not instrumentation.unwrap_submit(pool):
                unwrap(pool, "submit")
            unwrap(pool, "shutdown")
        for name in _FUNCTIONS:
            unwrap(concurrent.futures, name)
        if instrumentation is not None:
            instrumentation.uninstrument_libraries()
        use_telemetry_scopes(False)
        self._tf_instrumentation = None  # the import hooks still registered for the libraries now do nothing
