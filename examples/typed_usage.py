"""The public API as a type checker sees it: mypy (strict) checks this file in CI, and it runs as a script.

    python examples/typed_usage.py

Every ``assert_type`` states what a user's annotations may rely on; at run time it does nothing.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import assert_type
from wsgiref.simple_server import WSGIServer
from wsgiref.types import WSGIApplication

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import tracedfutures
from tracedfutures import (
    DEFAULT_BUCKETS,
    ConcurrentFuturesInstrumentor,
    TracedExecutor,
    TracedFuture,
    TracedProcessPoolExecutor,
    TracedThreadPoolExecutor,
)
from tracedfutures.exposition import ASGIApplication


def square(x: int) -> int:
    return x * x


def configured(provider: TracerProvider, registry: CollectorRegistry) -> None:
    tracedfutures.configure(tracer_provider=provider, registry=registry, buckets=[0.01, 0.1, 1.0])
    tracedfutures.configure(record_exception_messages=False)  # the provider and registry stay
    assert_type(DEFAULT_BUCKETS, tuple[float, ...])


def executors(registry: CollectorRegistry) -> int:
    wrapped = tracedfutures.traced(ThreadPoolExecutor(2), "wrapped", registry=registry)
    assert_type(wrapped, TracedExecutor)
    with wrapped, TracedThreadPoolExecutor(2, name="drop-in", registry=registry) as pool:
        future = pool.submit(square, 3)
        assert_type(future, TracedFuture[int])  # a Future[int] that reports to the executor's telemetry
        assert isinstance(future, Future)
        done, not_done = tracedfutures.wait([future, wrapped.submit(square, 4)])
        assert_type(done, set[Future[int]])
        assert not not_done
        ordered = tracedfutures.as_completed([future], timeout=10)
        assert_type(ordered, Iterator[Future[int]])
        results = list(wrapped.map(square, range(3)))
        assert_type(results, list[int])
        return future.result() + sum(results)


def a_traced_future() -> int:
    future: TracedFuture[int] = TracedFuture()
    future.set_result(7)
    assert_type(future.result(), int)
    assert isinstance(future, Future)
    return future.result()


def instrumented(provider: TracerProvider, registry: CollectorRegistry) -> int:
    instrumentor = ConcurrentFuturesInstrumentor()
    instrumentor.instrument(tracer_provider=provider, registry=registry)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the stock class, traced
            future = pool.submit(square, 5)
            concurrent.futures.wait([future])
            return future.result()
    finally:
        instrumentor.uninstrument()


def served(registry: CollectorRegistry) -> None:
    server, thread = tracedfutures.start_http_server(0, registry=registry)
    assert_type(server, WSGIServer)
    assert_type(thread, threading.Thread)
    server.shutdown()
    server.server_close()
    assert_type(tracedfutures.make_wsgi_app(registry), WSGIApplication)
    assert_type(tracedfutures.make_asgi_app(registry), ASGIApplication)


def process_pool() -> type[TracedProcessPoolExecutor]:
    return TracedProcessPoolExecutor  # made like ProcessPoolExecutor, plus name=, tracer_provider=, registry=


if __name__ == "__main__":
    provider, registry = TracerProvider(), CollectorRegistry()
    configured(provider, registry)
    try:
        assert executors(registry) == 9 + 0 + 1 + 4
        assert a_traced_future() == 7
        assert instrumented(provider, registry) == 25
        served(registry)
        assert process_pool().__name__ == "TracedProcessPoolExecutor"
    finally:
        tracedfutures.reset_defaults()
    print("typed usage: ok")
