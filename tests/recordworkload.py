"""A program for ``tracedfutures record`` (tests/test_record.py), unchanged by tracing: thread, process (fork,
forkserver, spawn) and, from 3.14, interpreter pools run known tasks, errors and cancellations, then ``wait`` and
``as_completed``; what really happened goes to the JSON file named by the first argument, and the exit status is
the second.

    python recordworkload.py TRUTH.json STATUS [pools|many N|interrupt READY|killed|exit|failures|died N|traced|spans]

``killed`` and ``exit`` run 200 tasks, pause long enough for the timeline's writer to flush, then end as a crash
would: SIGKILL, ``os._exit(STATUS)``. ``failures`` serves ``/metrics`` while tasks end without running: a process
pool whose worker is killed (``BrokenProcessPool``), a submit to that broken pool and one to a shut-down pool
(``RuntimeError``), a ``shutdown(cancel_futures=True)`` with tasks queued; the truth is the ``/metrics`` text read at
the end. ``died N`` serves ``/metrics`` while a process pool of 2 runs ``task_0`` ... ``task_4``, then a sixth task
that kills its own worker mid-task (its pid and start go to ``TRUTH.json.died0``), N times, each time in a new pool
(all named ``ProcessPoolExecutor``, as a program that makes a new pool after a break has them; ``.died1``, ...);
the truth is the ``/metrics`` text read at the end. ``died N first``: the killing task is the first and only one of
a pool of 1.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from timelinesupport import (
    TASKS,
    KnownError,
    blocker,
    compress,
    dies_at,
    failing,
    importable,
    kills_its_worker,
    quick,
    resize,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def outcome(future: Future[Any]) -> dict[str, Any]:
    if future.cancelled():
        return {"outcome": "cancelled"}
    error = future.exception()
    if error is not None:
        assert isinstance(error, KnownError), error
        return {"outcome": "error"}
    result = future.result()
    if not isinstance(result, tuple):  # a blocker or a quick task: it ran, nothing more to say
        return {"outcome": "success"}
    pid, thread, start, end = result
    return {"outcome": "success", "pid": pid, "thread": thread, "ran_ns": end - start}


def run_pool(executor: concurrent.futures.Executor, name: str, max_workers: int) -> dict[str, Any]:
    """Every numbered task, one failing, and more quick tasks than the pool can start before a cancelling
    shutdown: the queued ones are cancelled."""
    futures = [(task.__name__, executor.submit(task)) for task in TASKS]
    futures.append(("failing", executor.submit(failing)))
    concurrent.futures.wait([future for _, future in futures])
    for index, future in enumerate(concurrent.futures.as_completed([future for _, future in futures])):
        assert future.done(), index
    if isinstance(executor, ThreadPoolExecutor):  # a task cancelled in the queue, behind busy workers
        blockers = [executor.submit(blocker) for _ in range(max_workers)]
        cancelled = executor.submit(quick, 1)
        assert cancelled.cancel()
        concurrent.futures.wait(blockers)
        futures += [("blocker", future) for future in blockers] + [("quick", cancelled)]
    executor.shutdown(wait=True)
    return {
        "name": name,
        "max_workers": max_workers,
        "tasks": [{"function": function} | outcome(future) for function, future in futures],
    }


def pools() -> list[dict[str, Any]]:
    found = []
    with ThreadPoolExecutor(3, thread_name_prefix="threads") as executor:
        found.append(run_pool(executor, "threads", 3))
    for method in ("fork", "forkserver", "spawn"):
        context = multiprocessing.get_context(method)
        executor = ProcessPoolExecutor(2, mp_context=context)
        found.append(run_pool(executor, "ProcessPoolExecutor", 2) | {"method": method})
    if "InterpreterPoolExecutor" in concurrent.futures.__all__:
        pool = concurrent.futures.InterpreterPoolExecutor(2, "interp", importable, (HERE,))  # type: ignore[attr-defined]
        found.append(run_pool(pool, "interp", 2))
    return found


def many(count: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(2, thread_name_prefix="many") as executor:
        results = list(executor.map(quick, range(count)))
    assert results == list(range(count))
    return [{"name": "many", "max_workers": 2, "count": count}]


def interrupt(ready: str) -> None:
    """Run tasks, say so, then wait for the Ctrl-C that the test sends."""
    with ThreadPoolExecutor(2, thread_name_prefix="before") as executor:
        list(executor.map(quick, range(4)))
    with open(f"{ready}.part", "w") as out:
        out.write(str(os.getpid()))
    os.replace(f"{ready}.part", ready)  # whole when it appears
    time.sleep(60)
    raise AssertionError("no Ctrl-C came")


def cut_short(how: str, status: int) -> None:
    """200 tasks, a pause past the writer's flush, then a crash's end."""
    with ThreadPoolExecutor(4, thread_name_prefix="before") as executor:
        assert list(executor.map(quick, range(200))) == list(range(200))
    time.sleep(1.5)
    if how == "killed":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(status)


def refused(pool: Any, error: type[BaseException]) -> None:
    """A pool that must refuse a task (broken, shut down) raises ``error``, as the stdlib's does."""
    try:
        pool.submit(quick, 1)
    except error:
        return
    raise AssertionError(f"{pool!r} took a task")


def failures() -> list[dict[str, Any]]:
    from concurrent.futures.process import BrokenProcessPool

    import tracedfutures

    server, _ = tracedfutures.start_http_server(0)
    broken = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    futures = [broken.submit(dies_at, i) for i in range(60)]
    concurrent.futures.wait(futures)
    assert any(isinstance(f.exception(), BrokenProcessPool) for f in futures)
    refused(broken, BrokenProcessPool)
    broken.shutdown()
    gate = threading.Event()
    stopped = ThreadPoolExecutor(2, thread_name_prefix="stopped")
    held = [stopped.submit(gate.wait) for _ in range(2)]
    queued = [stopped.submit(quick, i) for i in range(5)]
    stopped.shutdown(wait=False, cancel_futures=True)
    gate.set()
    concurrent.futures.wait(held)
    assert all(future.cancelled() for future in queued)
    refused(stopped, RuntimeError)
    stopped.shutdown()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=60) as response:
        metrics = response.read().decode()
    server.shutdown()
    return [{"metrics": metrics}]


def died(said: str, pools: int, first: bool = False) -> list[dict[str, Any]]:
    from concurrent.futures.process import BrokenProcessPool

    import tracedfutures

    server, _ = tracedfutures.start_http_server(0)
    for index in range(pools):
        pool = ProcessPoolExecutor(1 if first else 2, mp_context=multiprocessing.get_context("forkserver"))
        tasks = [pool.submit(task) for task in ([] if first else TASKS[:5])]
        assert [outcome(future)["outcome"] for future in tasks] == ["success"] * len(tasks)
        killer = pool.submit(kills_its_worker, f"{said}{index}")  # after the others ended: the one running then
        assert isinstance(killer.exception(), BrokenProcessPool)
        pool.shutdown()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=60) as response:
        metrics = response.read().decode()
    server.shutdown()
    return [{"metrics": metrics}]


def traced() -> list[dict[str, Any]]:
    """A program with tracing of its own (an SDK tracer provider set as the global one, its spans kept in memory):
    the task spans it gets, by name and trace id."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with ThreadPoolExecutor(2, thread_name_prefix="mine") as executor:
        assert list(executor.map(quick, range(5))) == list(range(5))
    return [
        {"name": span.name, "trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}"}
        for span in exporter.get_finished_spans()
    ]


def spans() -> list[dict[str, Any]]:
    """A program with tracing of its own whose tasks make spans: on a thread pool two nested ones (``resize``
    holding ``encode``), on a process pool (fork and spawn) and, from 3.14, an interpreter pool one (``compress``);
    every span the program got (the task spans, the tasks' own and those its workers sent home), by name, ids and
    times."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with ThreadPoolExecutor(2, thread_name_prefix="images") as executor:
        assert list(executor.map(resize, range(3))) == list(range(3))
    for method in ("fork", "spawn"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as executor:
            assert executor.submit(compress, 1).result() == 1
    if "InterpreterPoolExecutor" in concurrent.futures.__all__:
        pool = concurrent.futures.InterpreterPoolExecutor(1, "interp", importable, (HERE,))  # type: ignore[attr-defined]
        with pool:
            assert pool.submit(compress, 1).result() == 1
    return [
        {
            "name": span.name,
            "span_id": f"{span.context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "start": span.start_time,
            "end": span.end_time,
        }
        for span in exporter.get_finished_spans()
    ]


def main(argv: list[str]) -> int:
    truth, status, mode = argv[0], int(argv[1]), argv[2]
    found: Any
    if mode == "pools":
        found = pools()
    elif mode == "many":
        found = many(int(argv[3]))
    elif mode == "interrupt":
        interrupt(argv[3])
    elif mode in ("killed", "exit"):
        cut_short(mode, status)
    elif mode == "failures":
        found = failures()
    elif mode == "died":
        found = died(f"{truth}.died", int(argv[3]), argv[4:] == ["first"])
    elif mode == "traced":
        found = traced()
    elif mode == "spans":
        found = spans()
    elif mode == "raise":
        raise KnownError("uncaught")
    with open(truth, "w") as out:
        json.dump({"pid": os.getpid(), "executors": found}, out)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
