"""tracedfutures: spans and Prometheus metrics for every ``concurrent.futures`` task, without changing behaviour.

Wrap the executor you have with ``traced()`` (or use ``TracedThreadPoolExecutor`` /
``TracedProcessPoolExecutor``), call ``tracedfutures.wait`` / ``as_completed`` where you would call the stdlib's,
or instrument a whole program with ``ConcurrentFuturesInstrumentor``. ``setup_tracing()`` sends the spans of a
program with no OpenTelemetry set-up over OTLP, configured by the standard ``OTEL_*`` environment variables.
"""

from tracedfutures._lifecycle import TracedFuture
from tracedfutures.config import configure
from tracedfutures.executor import TracedExecutor, TracedProcessPoolExecutor, TracedThreadPoolExecutor, traced
from tracedfutures.exposition import make_asgi_app, make_wsgi_app, start_http_server
from tracedfutures.instrumentor import ConcurrentFuturesInstrumentor
from tracedfutures.metrics import DEFAULT_BUCKETS
from tracedfutures.tracing import setup_tracing
from tracedfutures.version import __version__
from tracedfutures.waiting import as_completed, wait

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
    "setup_tracing",
    "start_http_server",
    "traced",
    "wait",
]
