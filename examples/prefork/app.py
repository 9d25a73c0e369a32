"""A WSGI app and an ASGI (FastAPI) app, each serving a traced thread pool and ``/metrics``.

For the pre-fork servers of docs/metrics.md: gunicorn (sync or gthread workers, with or without ``--preload``)
and ``uvicorn --workers``. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts::

    rm -rf /tmp/tf-metrics && mkdir /tmp/tf-metrics && export PROMETHEUS_MULTIPROC_DIR=/tmp/tf-metrics
    gunicorn -w 2 -b 127.0.0.1:8000 examples.prefork.app:wsgi_app
    gunicorn -w 2 -k gthread --threads 4 --preload -b 127.0.0.1:8000 examples.prefork.app:wsgi_app
    uvicorn --workers 2 --host 127.0.0.1 --port 8000 examples.prefork.app:asgi_app

``GET /work?seconds=S`` runs one task of ``S`` seconds in the pool (0 by default) and answers when it ended (with
``&background=1``: at once, the task outliving the request as fire-and-forget work does), ``GET /pid`` names the worker
that answered, ``GET /misuse`` does what the misuse alerts are for (sets the result of a finished future, drops a
failed one unread), ``GET /metrics`` serves every live worker's metrics (any worker may answer it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from concurrent.futures import InvalidStateError
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from fastapi import FastAPI

import tracedfutures
from tracedfutures.exposition import make_asgi_app, make_wsgi_app

#: Made at import: with ``--preload`` in the master, and each worker counts it as its own from its first task.
POOL = tracedfutures.TracedThreadPoolExecutor(int(os.environ.get("POOL_WORKERS", "4")), name="web")


def work(seconds: float) -> int:
    """The task: sleeps ``seconds`` (a slow call), then names the process that ran it."""
    time.sleep(seconds)
    return os.getpid()


def misuse() -> int:
    """A refused transition and a failure nobody reads, counted rather than hidden; names the process."""
    done = POOL.submit(work, 0)
    done.result()
    with contextlib.suppress(InvalidStateError):
        done.set_result(0)
    failed = POOL.submit(int, "x")
    tracedfutures.wait([failed])
    del failed  # collected unread: executor_exceptions_unretrieved_total{error_type="ValueError"}
    return os.getpid()


def run_work(seconds: float, background: bool) -> int:
    """Submit one task; the process that ran it, or (``background``) the one that submitted it, at once."""
    future = POOL.submit(work, seconds)
    return os.getpid() if background else future.result()


_metrics = make_wsgi_app()


def wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/work``, ``/pid``, and the metrics on every other path."""
    path = environ.get("PATH_INFO", "")
    if path == "/work":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        pid = run_work(float(query.get("seconds", ["0"])[0]), query.get("background") == ["1"])
    elif path in ("/pid", "/misuse"):
        pid = misuse() if path == "/misuse" else os.getpid()
    else:
        return _metrics(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(pid).encode()]


asgi_app = FastAPI()
asgi_app.mount("/metrics", make_asgi_app())


@asgi_app.get("/work")
def asgi_work(seconds: float = 0.0, background: bool = False) -> int:
    """FastAPI runs a sync endpoint in its own threads: the task runs in the traced pool."""
    return run_work(seconds, background)


@asgi_app.get("/pid")
def asgi_pid() -> int:
    return os.getpid()


@asgi_app.get("/misuse")
def asgi_misuse() -> int:
    return misuse()
