"""Serving ``/metrics``: prometheus_client's own HTTP server and WSGI/ASGI apps, bound to loopback by default."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tracedfutures import config
from tracedfutures.metrics import MULTIPROCESS


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    if MULTIPROCESS:  # every process's files, as prometheus_client's multiprocess mode documents
        aggregated = CollectorRegistry()
        MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
        return aggregated
    configured = config.defaults().registry
    return configured if configured is not None else prometheus_client.REGISTRY


def start_http_server(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve the registry's metrics on ``addr:port`` from a daemon thread; returns (server, thread).

    The default address is loopback: binding to ``0.0.0.0`` exposes the metrics to the whole network and is
    left to an explicit choice. The text format is served unless the scraper asks for OpenMetrics.
    """
    return prometheus_client.start_http_server(port, addr=addr, registry=_registry(registry))


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the registry's metrics, to mount in an existing server."""
    return prometheus_client.make_wsgi_app(_registry(registry))


def make_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the registry's metrics, to mount in an existing server."""
    return prometheus_client.make_asgi_app(_registry(registry))
