"""The tasks running now, per executor, and where each task ran: what ``GET /tasks`` serves.

Every executor has one ``RunningTasks`` table, whose ``tasks`` dict its lifecycle writes as tasks start and end
(``_lifecycle.Lifecycle``): the futures of the tasks running now, with their start. The lifecycle lets go of the
function it keeps on each future (to name it, never its arguments) as the task ends, and, where a task starts in
the worker thread that runs it (thread and interpreter pools), records where it runs: ``future._tf_ran_on``,
(process id, thread id, None: the thread's name is read on that thread when the task ends, or by a reader of the
table while it runs). A task that runs in another process brings the same triple home with its outcome, the name
filled in (``_calls``). The span of a task carries it as the semantic conventions' ``process.pid`` (where that is
another process), ``thread.id`` and ``thread.name``.

A task counts as running from the moment its future enters RUNNING in this process until it ends: for a process
pool, from its hand-off to the pool's call queue; its worker is known only when it ends. (The metrics count a
process pool's task as running only from its start in a worker, which the pool's start board says: see
``_start_board``; this table holds the tasks handed off, running or waiting in the call queue.) Executors reached
through their own ``submit`` (loky, Dask) never say when a task starts: they list no running task. Nothing per
finished task is kept; the table is as long as the tasks running now. Vendor-free: nothing here imports a telemetry
vendor.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypedDict

from tracedfutures._naming import function_name
from tracedfutures._state import state

if TYPE_CHECKING:
    from tracedfutures._lifecycle import Kind, TracedFuture

#: The version of the ``/tasks`` document (``schema``); a change that breaks readers makes a new one.
SCHEMA = "tracedfutures.tasks/1"

_current_thread = threading.current_thread


def ran_on_here() -> tuple[int, int, str | None]:
    """Where the calling code runs: (process id, thread id, thread name); the thread id is
    ``threading.get_ident()``, as the OpenTelemetry SDK's log records name threads. The name is None in a thread
    that this interpreter did not start (a subinterpreter's view of an interpreter pool's worker thread, a
    "Dummy-N"): the interpreter that started the thread names it by its id (``thread_name``)."""
    thread = _current_thread()
    return state.pid, thread.ident or 0, None if isinstance(thread, threading._DummyThread) else thread.name


def thread_name(thread_id: int) -> str | None:
    """The name of this process's live thread ``thread_id``: the current thread's at once, else looked up."""
    thread = _current_thread()
    if thread.ident == thread_id:
        return thread.name
    return next((t.name for t in threading.enumerate() if t.ident == thread_id), None)


class RunningTasks:
    """One executor's running tasks, as its lifecycle keeps them, and what ``/tasks`` reads of them.

    ``tasks`` maps the future of each running task to its start in this process, in ns (insertion and removal
    are single dict operations: atomic with the GIL and locked per dict without it); a reader copies it.
    """

    __slots__ = ("__weakref__", "executor", "kind", "name", "tasks")

    def __init__(self, executor: Executor, name: str, kind: Kind) -> None:
        self.name = name
        self.kind: Kind = kind
        self.tasks: dict[TracedFuture, int] = {}
        try:
            self.executor: weakref.ref[Executor] | None = weakref.ref(executor)
        except TypeError:  # an executor that cannot be weakly referenced: its capacity is not known
            self.executor = None
        with state.running_lock:
            state.running.add(self)

    def alive(self) -> bool:
        """Whether the executor lives and is not shut down (an executor that cannot be weakly referenced counts
        as alive)."""
        executor = self.executor() if self.executor is not None else True
        if executor is None:
            return False
        return not (getattr(executor, "_shutdown", False) or getattr(executor, "_shutdown_thread", False))

    def max_workers(self) -> int | None:
        """The executor's ``max_workers`` while it is alive (0 after), None when it has none to read."""
        if not self.alive():
            return 0
        executor = self.executor() if self.executor is not None else None
        count = getattr(executor, "_max_workers", None)
        return count if isinstance(count, int) else None

    def after_fork(self) -> None:
        """In a forked child: the parent's running tasks do not run here."""
        self.tasks.clear()


class RunningTask(TypedDict):
    """One running task in ``/tasks``."""

    function: str
    started: float
    age_seconds: float
    worker: Worker | None


class Worker(TypedDict):
    """Where a running task runs."""

    pid: int
    thread_id: int
    thread_name: str


class ExecutorTasks(TypedDict):
    """One executor name in ``/tasks``: every live executor of that name together, as the metrics count them."""

    name: str
    kind: str
    max_workers: int | None
    running: list[RunningTask]


class TasksDocument(TypedDict):
    """The ``/tasks`` document."""

    schema: str
    pid: int
    time: float
    executors: list[ExecutorTasks]


def _task(future: TracedFuture, started: int, now_ns: int, threads: dict[int | None, str]) -> RunningTask | None:
    fn = future._tf_fn
    if fn is None:  # it ended while the table was read
        return None
    ran_on = future._tf_ran_on
    worker: Worker | None = None
    if ran_on is not None:
        pid, thread_id, name = ran_on
        name = threads.get(thread_id, "") if name is None else name
        worker = {"pid": pid, "thread_id": thread_id, "thread_name": name}
    return {
        "function": function_name(fn),
        "started": started / 1e9,
        "age_seconds": max(now_ns - started, 0) / 1e9,
        "worker": worker,
    }


def _capacity(tables: Iterable[RunningTasks]) -> int | None:
    """The ``max_workers`` of the executors of ``tables`` added up, each executor once (one wrapped twice has two
    tables); None when one of them has none to read."""
    counts: dict[int, int | None] = {}
    for table in tables:
        executor = table.executor() if table.executor is not None else None
        counts.setdefault(id(table) if executor is None else id(executor), table.max_workers())
    found = list(counts.values())
    return None if None in found else sum(count for count in found if count is not None)


def _executor(name: str, tables: list[RunningTasks], now_ns: int, threads: dict[int | None, str]) -> ExecutorTasks:
    running: list[RunningTask] = []
    for table in tables:
        for future, started in table.tasks.copy().items():
            task = _task(future, started, now_ns, threads)
            if task is not None:
                running.append(task)
    running.sort(key=lambda task: task["started"])
    return {"name": name, "kind": tables[0].kind, "max_workers": _capacity(tables), "running": running}


def _tables_by_name() -> dict[str, list[RunningTasks]]:
    """Every executor's table, by executor name: those that are alive or still have a task running."""
    with state.running_lock:
        tables = list(state.running)
    by_name: dict[str, list[RunningTasks]] = {}
    for table in tables:
        if table.tasks or table.alive():
            by_name.setdefault(table.name, []).append(table)
    return by_name


def executors_now() -> dict[str, tuple[str, int | None]]:
    """The kind and ``max_workers`` (as ``/tasks`` adds them up) of every executor name now."""
    return {name: (tables[0].kind, _capacity(tables)) for name, tables in _tables_by_name().items()}


def pools_by_name() -> dict[str, list[tuple[str, Any]]]:
    """The kind and the object of every live executor, by name: whose workers' CPU ``_worker_cpu`` reads."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for name, tables in _tables_by_name().items():
        for table in tables:
            executor = table.executor() if table.executor is not None else None
            if executor is not None:
                found.setdefault(name, []).append((table.kind, executor))
    return found


def running_now() -> TasksDocument:
    """The ``/tasks`` document: every live executor by name (sorted), its capacity and its running tasks, the
    oldest first. It holds function names and timestamps, never a task's arguments, result or exception."""
    by_name = _tables_by_name()
    threads = {thread.ident: thread.name for thread in threading.enumerate()}  # the workers' names, now
    now_ns = time.time_ns()
    return {
        "schema": SCHEMA,
        "pid": state.pid,
        "time": now_ns / 1e9,
        "executors": [_executor(name, by_name[name], now_ns, threads) for name in sorted(by_name)],
    }
