"""Serving ``/metrics`` and ``/tasks``: an HTTP server and WSGI/ASGI apps on prometheus_client's, bound to loopback
by default.

The server and both apps serve ``GET /tasks``, a JSON document of the tasks running now (``_running.running_now``,
schema in the docs' "Running tasks" page): function names, ages and workers, never a task's arguments, results or
exception messages. Every other path serves the metrics, as prometheus_client's apps do. An app mounted under a
prefix (``/metrics`` in a web app) serves it under that prefix: ``/metrics/tasks``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer

from tracedfutures import _config
from tracedfutures._running import running_now
from tracedfutures.metrics import MULTIPROCESS

__all__ = [
    "TASKS_PATH", "ASGIApplication", "make_asgi_app", "make_wsgi_app", "multiprocess_registry", "start_http_server",
]

#: The path of the running-tasks document.
TASKS_PATH = "/tasks"
#: An ASGI 3 application: called with the scope, ``receive`` and ``send``.
ASGIApplication = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    """The registry to serve; one that is not a ``CollectorRegistry`` raises ``TypeError`` here, at the call, as
    ``configure`` does (it would otherwise fail every scrape)."""
    if registry is not None:
        _config.check_options(None, registry)
        return registry
    if MULTIPROCESS:
        return multiprocess_registry()
    configured = _config.defaults().registry
    return configured if configured is not None else prometheus_client.REGISTRY


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry that serves every process's metrics in prometheus_client's multiprocess mode, from ``path``
    (default ``PROMETHEUS_MULTIPROC_DIR``): use it instead of prometheus_client's ``MultiProcessCollector`` (the
    apps here do). It counts live processes only, with no server hook, keeps the directory as small as the live
    processes' files, and derives the running tasks, capacity and oldest task's age at scrape time (see
    ``tracedfutures._multiprocess.MultiprocessCollector``)."""
    # Imported here: the multiprocess backend (its file lock is POSIX's) loads only where that mode is used.
    from tracedfutures._multiprocess import MultiprocessCollector

    registry = CollectorRegistry()
    registry.register(MultiprocessCollector(path))
    return registry


class _QuietHandler(WSGIRequestHandler):
    """Logs no request (a scraper calls every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the registry's metrics, and ``/tasks``, on ``addr:port`` from a daemon thread; returns (server,
    thread). ``port`` 0 picks a free port: ``server.server_port`` says which.

    The default address is loopback: binding to ``0.0.0.0`` exposes the metrics and the running tasks' function
    names to the whole network and is left to an explicit choice. The text format is served unless the scraper
    asks for OpenMetrics.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    host = str(sockaddr[0])

    class Server(ThreadingWSGIServer):
        address_family = family  # an IPv6 address needs an IPv6 socket (as prometheus_client's server does)

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="tracedfutures-http", daemon=True)
    thread.start()
    return server, thread


def _tasks_body() -> bytes:
    """The ``/tasks`` document, as served."""
    return json.dumps(running_now(), separators=(",", ":")).encode()


def make_wsgi_app(registry: CollectorRegistry | None = None) -> WSGIApplication:
    """A WSGI app serving ``/tasks`` and, on every other path, the registry's metrics, to mount in an existing
    server."""
    metrics = prometheus_client.make_wsgi_app(_registry(registry))

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != TASKS_PATH:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = _tasks_body()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store")]  # fmt: skip
        start_response("200 OK", headers)
        return [body]

    return app


def make_asgi_app(registry: CollectorRegistry | None = None) -> ASGIApplication:
    """An ASGI app serving ``/tasks`` and, on every other path, the registry's metrics, to mount in an existing
    server (``app.mount("/metrics", make_asgi_app())`` in FastAPI or Starlette: ``/metrics/tasks``)."""
    metrics: ASGIApplication = prometheus_client.make_asgi_app(_registry(registry))

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http" or _asgi_path(scope) != TASKS_PATH:
            return await metrics(scope, receive, send)
        if scope.get("method") not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET, HEAD")]})
            await send({"type": "http.response.body", "body": b""})
            return None
        body = _tasks_body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store")]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
        return None

    return app


def _asgi_path(scope: MutableMapping[str, Any]) -> str:
    """The request's path within the app: ASGI servers and routers (Starlette's ``Mount``) keep the whole path in
    ``path`` and the mount's prefix in ``root_path``; older ones strip the prefix from ``path``."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    return path.removeprefix(root) if root and path.startswith(f"{root}/") else path
