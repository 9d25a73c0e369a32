"""tracedfutures: spans and Prometheus metrics for every ``concurrent.futures`` task, without changing behaviour.

Wrap the executor you have with ``traced()`` (or use ``TracedThreadPoolExecutor`` /
``TracedProcessPoolExecutor``), call ``tracedfutures.wait`` / ``as_completed`` where you would call the stdlib's,
or instrument a whole program with ``ConcurrentFuturesInstrumentor``. ``setup_tracing()`` sends the spans of a
program with no OpenTelemetry set-up over OTLP, configured by the standard ``OTEL_*`` environment variables.

Names are imported on first use: a worker process that only runs traced calls imports ``tracedfutures._calls``
and the OpenTelemetry API, not the SDK, prometheus_client or the instrumentation package.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from tracedfutures.version import __version__

if TYPE_CHECKING:
    from tracedfutures._lifecycle import TracedFuture
    from tracedfutures.config import configure, reset_defaults
    from tracedfutures.executor import TracedExecutor, TracedProcessPoolExecutor, TracedThreadPoolExecutor, traced
    from tracedfutures.exposition import make_asgi_app, make_wsgi_app, start_http_server
    from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor
    from tracedfutures.interpreter import TracedInterpreterPoolExecutor
    from tracedfutures.metrics import DEFAULT_BUCKETS
    from tracedfutures.tracing import setup_tracing
    from tracedfutures.waiting import as_completed, wait

#: Each public name and the module that defines it.
_PUBLIC = {
    "ConcurrentFuturesInstrumentor": "tracedfutures.instrumentor",
    "DEFAULT_BUCKETS": "tracedfutures.metrics",
    "TracedExecutor": "tracedfutures.executor",
    "TracedFuture": "tracedfutures._lifecycle",
    "TracedProcessPoolExecutor": "tracedfutures.executor",
    "TracedThreadPoolExecutor": "tracedfutures.executor",
    "as_completed": "tracedfutures.waiting",
    "configure": "tracedfutures.config",
    "make_asgi_app": "tracedfutures.exposition",
    "make_wsgi_app": "tracedfutures.exposition",
    "reset_defaults": "tracedfutures.config",
    "setup_tracing": "tracedfutures.tracing",
    "start_http_server": "tracedfutures.exposition",
    "traced": "tracedfutures.executor",
    "wait": "tracedfutures.waiting",
}

__all__ = [
    "DEFAULT_BUCKETS",
    "ConcurrentFuturesInstrumentor",
    "TracedExecutor",
    "TracedFuture",
    "TracedProcessPoolExecutor",
    "TracedThreadPoolExecutor",
    "__version__",
    "as_completed",
    "configure",
    "make_asgi_app",
    "make_wsgi_app",
    "reset_defaults",
    "setup_tracing",
    "start_http_server",
    "traced",
    "wait",
]

if "InterpreterPoolExecutor" in concurrent.futures.__all__:  # 3.14 and later, where subinterpreters are built in
    _PUBLIC["TracedInterpreterPoolExecutor"] = "tracedfutures.interpreter"
    __all__ += ["TracedInterpreterPoolExecutor"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule, as if the package had imported it
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
