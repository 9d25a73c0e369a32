"""Where a task ran and the tasks running now: the task span's ``process.pid``, ``thread.id`` and ``thread.name``
for thread, process (fork, forkserver, spawn), interpreter pools, loky and Dask; ``GET /tasks`` on the metrics
server with its exact fields and no task arguments, results or exception messages."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

import conftest
import pytest
from conftest import FALLBACK_FORCED, STARTS_AT_END_IN_FALLBACK, Gate, Telemetry
from support import CustomError, fail, set_process_gate, wait_process_gate
from timelinesupport import ran_on

import tracedfutures
from tracedfutures._running import SCHEMA, running_now
from tracedfutures.exposition import start_http_server

TIMEOUT = 60
SECRET = "s3cr3t-argument-value"
HAS_INTERPRETERS = "InterpreterPoolExecutor" in concurrent.futures.__all__


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    yield from conftest.dask_client(n_workers=1, threads_per_worker=2)


def executor_of(kind: str, telemetry: Telemetry, request: pytest.FixtureRequest) -> Executor:
    record: dict[str, Any] = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    if kind == "thread":
        executor: Executor = tracedfutures.TracedThreadPoolExecutor(2, "worker", name="pool", **record)
    elif kind in ("fork", "forkserver", "spawn"):
        context = multiprocessing.get_context(kind)
        executor = tracedfutures.TracedProcessPoolExecutor(2, mp_context=context, name="pool", **record)
    elif kind == "loky":
        import loky

        return tracedfutures.traced(loky.get_reusable_executor(max_workers=1), "pool", **record)
    else:
        return tracedfutures.traced(request.getfixturevalue("dask_client").get_executor(), "pool", **record)
    telemetry.executors.append(executor)
    return executor


def where(span: Any) -> tuple[Any, Any, Any]:
    """Where a task span says its task ran: ``process.pid`` where that is another process, this one's else."""
    attributes = span.attributes or {}
    if "thread.id" in attributes and "process.pid" not in attributes:
        return os.getpid(), attributes["thread.id"], attributes.get("thread.name")
    return attributes.get("process.pid"), attributes.get("thread.id"), attributes.get("thread.name")


def task_span(telemetry: Telemetry, name: str) -> Any:
    deadline = time.monotonic() + TIMEOUT  # a chained task span ends just after its result is set
    while not [s for s in telemetry.spans() if s.name == name] and time.monotonic() < deadline:
        time.sleep(0.005)
    return telemetry.span(name)


@pytest.mark.parametrize("kind", ["thread", "fork", "forkserver", "spawn", "loky", "dask"])
def test_the_task_span_says_where_the_task_ran(telemetry: Telemetry, request: pytest.FixtureRequest, kind: str) -> None:
    executor = executor_of(kind, telemetry, request)
    pid, thread_id, thread_name = executor.submit(ran_on).result(TIMEOUT)
    assert where(task_span(telemetry, "pool ran_on")) == (pid, thread_id, thread_name)
    if kind == "thread":
        assert pid == os.getpid() and thread_name.startswith("worker_")
        assert "process.pid" not in task_span(telemetry, "pool ran_on").attributes  # the resource's process
    else:
        assert pid != os.getpid()
    if kind in ("fork", "forkserver", "spawn", "loky"):
        assert thread_name == "MainThread"


@pytest.mark.skipif(not HAS_INTERPRETERS, reason="no InterpreterPoolExecutor here")
def test_an_interpreter_pool_task_ran_on_its_worker_thread(telemetry: Telemetry) -> None:
    """The worker thread as the main interpreter names it, the same thread the task's interpreter ran on."""
    from test_python_versions import TESTS, _importable

    pool = tracedfutures.TracedInterpreterPoolExecutor(
        1, "interp", _importable, (TESTS,), name="pool", tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    telemetry.executors.append(pool)
    pid, thread_id, _ = pool.submit(ran_on).result(TIMEOUT)
    (thread,) = pool._threads  # type: ignore[attr-defined]
    assert (pid, thread_id) == (os.getpid(), thread.ident)
    assert where(telemetry.span("pool ran_on")) == (pid, thread_id, thread.name)


def test_a_task_that_never_ran_says_nowhere(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread", name="pool")
    gate = telemetry.gate()
    executor.submit(gate.task)
    gate.wait_entered()
    queued = executor.submit(ran_on)
    assert queued.cancel()
    gate.open()
    assert where(telemetry.span("pool ran_on")) == (None, None, None)


# -- GET /tasks ------------------------------------------------------------------------------------------------------
@pytest.fixture
def server(telemetry: Telemetry) -> Iterator[str]:
    httpd, thread = start_http_server(0, registry=telemetry.registry)
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.headers["Content-Type"], response.read()


def ours(document: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    """The executors of ``names`` in a ``/tasks`` document (other tests' executors may still be alive)."""
    return [executor for executor in document["executors"] if executor["name"] in names]


def checked_ages(executor: dict[str, Any], now: float) -> dict[str, Any]:
    """``executor`` with each running task's ``started`` and ``age_seconds`` checked against each other and
    replaced by True."""
    for task in executor["running"]:
        assert 0 <= task["age_seconds"] < TIMEOUT
        assert task["started"] == pytest.approx(now - task["age_seconds"], abs=1e-3)
        task["started"] = task["age_seconds"] = True
    return executor


def test_tasks_lists_the_running_tasks_oldest_first(telemetry: Telemetry, server: str) -> None:
    gate = telemetry.gate()
    pool = tracedfutures.TracedThreadPoolExecutor(
        2, "io", name="io", tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    telemetry.executors.append(pool)
    assert isinstance(pool.submit(fail, SECRET).exception(TIMEOUT), CustomError)  # finished: not listed
    pool.submit(gate.task, SECRET)
    gate.wait_entered(1)
    time.sleep(0.01)
    pool.submit(gate.task, SECRET)
    gate.wait_entered(2)
    pool.submit(gate.task, SECRET)  # queued: not listed

    content_type, body = get(f"{server}/tasks")
    assert content_type == "application/json"
    assert SECRET.encode() not in body
    document = json.loads(body)
    assert set(document) == {"schema", "pid", "time", "executors"}
    assert (document["schema"], document["pid"]) == (SCHEMA, os.getpid())
    assert abs(document["time"] - time.time()) < TIMEOUT
    threads = {thread.name: thread.ident for thread in pool._threads}  # type: ignore[attr-defined]
    assert sorted(threads) == ["io_0", "io_1"]
    (executor,) = ours(document, "io")
    running = checked_ages(executor, document["time"])
    running["running"].sort(key=lambda task: task["worker"]["thread_name"])  # which thread took which: either
    assert running == {
        "name": "io",
        "kind": "thread",
        "max_workers": 2,
        "running": [
            {"function": "Gate.task", "started": True, "age_seconds": True,
             "worker": {"pid": os.getpid(), "thread_id": threads[name], "thread_name": name}}
            for name in ("io_0", "io_1")
        ],
    }  # fmt: skip
    (again,) = ours(json.loads(get(f"{server}/tasks")[1]), "io")  # other tests' live executors may come first
    ages = [task["age_seconds"] for task in again["running"]]
    assert ages == sorted(ages, reverse=True) and ages[0] > ages[1]

    gate.open()
    pool.shutdown(wait=True)
    assert ours(running_now(), "io") == []  # shut down, nothing running: gone


@pytest.mark.skipif(FALLBACK_FORCED, reason=STARTS_AT_END_IN_FALLBACK)
def test_tasks_lists_a_process_pool_task_without_its_worker(telemetry: Telemetry, server: str) -> None:
    """A process-pool task counts as running from its hand-off to the pool; its worker is known when it ends."""
    event = multiprocessing.get_context("fork").Event()

    pool = tracedfutures.TracedProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork"), initializer=set_process_gate, initargs=(event,),
        name="cpu", tracer_provider=telemetry.provider, registry=telemetry.registry,
    )  # fmt: skip
    telemetry.executors.append(pool)
    future = pool.submit(wait_process_gate, SECRET)
    deadline = time.monotonic() + TIMEOUT
    while not future.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    _, body = get(f"{server}/tasks")
    assert SECRET.encode() not in body
    document = json.loads(body)
    (executor,) = ours(document, "cpu")
    assert checked_ages(executor, document["time"]) == {
        "name": "cpu",
        "kind": "process",
        "max_workers": 1,
        "running": [{"function": "wait_process_gate", "started": True, "age_seconds": True, "worker": None}],
    }
    event.set()
    assert future.result(TIMEOUT) == SECRET


def test_tasks_takes_only_get_and_other_paths_are_metrics(telemetry: Telemetry, server: str) -> None:
    request = urllib.request.Request(f"{server}/tasks", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    assert refused.value.code == 405
    telemetry.executor("thread", name="pool").submit(ran_on).result(TIMEOUT)
    content_type, body = get(f"{server}/metrics")
    assert content_type.startswith("text/plain")
    assert b'executor_tasks_submitted_total{executor="pool"} 1.0' in body


def _call_wsgi(app: Any, method: str, path: str, script_name: str = "") -> tuple[str, dict[str, str], bytes]:
    """``app``'s answer to a request, as a WSGI server (``script_name``: where it is mounted) passes it."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, {key.lower(): value for key, value in headers}

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": script_name, "QUERY_STRING": "",
               "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}  # fmt: skip
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def _call_asgi(app: Any, method: str, path: str, root_path: str = "") -> tuple[str, dict[str, str], bytes]:
    """``app``'s answer to a request, as an ASGI server passes it (``root_path``: where a router mounted it, the
    whole path in ``path``, as Starlette's ``Mount`` does)."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": f"{root_path}{path}", "raw_path": f"{root_path}{path}".encode(), "root_path": root_path,
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start, *bodies = sent
    assert start["type"] == "http.response.start" and all(b["type"] == "http.response.body" for b in bodies)
    headers = {key.decode().lower(): value.decode() for key, value in start["headers"]}
    return str(start["status"]), headers, b"".join(b.get("body", b"") for b in bodies)


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("mounted", ["", "/metrics"], ids=["at the root", "mounted at /metrics"])
def test_the_apps_serve_tasks_and_metrics_on_every_other_path(telemetry: Telemetry, kind: str, mounted: str) -> None:
    """``make_wsgi_app`` and ``make_asgi_app`` serve the same ``/tasks`` document as the server, under the path
    they are mounted at, and the metrics on every other path."""
    gate = telemetry.gate()
    pool = tracedfutures.TracedThreadPoolExecutor(
        1, "app", name="app", tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    telemetry.executors.append(pool)
    pool.submit(gate.task, SECRET)
    gate.wait_entered(1)
    if kind == "wsgi":
        app = tracedfutures.make_wsgi_app(telemetry.registry)
        call = lambda method, path: _call_wsgi(app, method, path, mounted)  # noqa: E731
    else:
        app = tracedfutures.make_asgi_app(telemetry.registry)
        call = lambda method, path: _call_asgi(app, method, path, mounted)  # noqa: E731

    status, headers, body = call("GET", "/tasks")
    assert (status.split()[0], headers["content-type"], headers["cache-control"]) == ("200", "application/json",
                                                                                       "no-store")  # fmt: skip
    assert headers["content-length"] == str(len(body)) and SECRET.encode() not in body
    document = json.loads(body)
    assert set(document) == {"schema", "pid", "time", "executors"}
    assert (document["schema"], document["pid"]) == (SCHEMA, os.getpid())
    [thread] = pool._threads  # type: ignore[attr-defined]
    (executor,) = ours(document, "app")
    assert checked_ages(executor, document["time"]) == {
        "name": "app",
        "kind": "thread",
        "max_workers": 1,
        "running": [
            {"function": "Gate.task", "started": True, "age_seconds": True,
             "worker": {"pid": os.getpid(), "thread_id": thread.ident, "thread_name": "app_0"}}
        ],
    }  # fmt: skip
    status, headers, body = call("POST", "/tasks")
    assert (status.split()[0], headers["allow"], body) == ("405", "GET, HEAD", b"")
    for path in ("/", "/metrics", "/tasks/more"):
        status, headers, body = call("GET", path)
        assert status.split()[0] == "200" and headers["content-type"].startswith("text/plain"), path
        assert b'executor_tasks_running{executor="app"} 1.0' in body, path
    gate.open()


def test_a_forked_child_runs_none_of_its_parents_tasks(telemetry: Telemetry) -> None:
    gate = Gate()
    pool = telemetry.executor("thread", name="forked")
    telemetry.gates.append(gate)
    pool.submit(gate.task)
    gate.wait_entered()
    assert len(ours(running_now(), "forked")[0]["running"]) == 1
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(writer, json.dumps(ours(running_now(), "forked")[0]["running"]).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        assert json.loads(pipe.read()) == []
    os.waitpid(child, 0)
    assert len(ours(running_now(), "forked")[0]["running"]) == 1
    gate.open()


def test_threads_can_read_while_tasks_start_and_end(telemetry: Telemetry) -> None:
    """Readers copy each table: tasks that start and end meanwhile never make a read fail."""
    pool = telemetry.executor("thread", max_workers=4, name="busy")
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                running_now()
            except BaseException as exc:  # pragma: no cover - what the test looks for
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for future in [pool.submit(ran_on) for _ in range(2000)]:
            future.result(TIMEOUT)
    finally:
        stop.set()
        reader.join(TIMEOUT)
    assert errors == []


def test_an_executor_wrapped_twice_counts_its_workers_once(telemetry: Telemetry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stock = ThreadPoolExecutor(3)
    telemetry.executors.append(stock)
    once = tracedfutures.traced(stock, "twice", registry=telemetry.registry)
    again = tracedfutures.traced(stock, "twice", registry=telemetry.registry)
    assert once.submit(ran_on).result(TIMEOUT) and again.submit(ran_on).result(TIMEOUT)
    (executor,) = ours(running_now(), "twice")
    assert executor["max_workers"] == 3
