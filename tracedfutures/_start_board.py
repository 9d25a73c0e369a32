"""Where a process pool's workers say which task runs now: a small shared-memory board per pool.

A process pool hands a task to its call queue before any worker takes it, so the parent learns the real start
only with the outcome. The board closes that gap for the metrics: a file-backed shared mapping of three rows of
``slots`` signed 64-bit integers, worker pids (written by the parent), the start (unix ns, 0: idle) of the task
each worker runs now and that task's id (the ``id()`` of its future in the parent; both written by that worker).
The parent writes the pid row whenever the pool's processes change, at each hand-off (before the task reaches the
call queue, so a worker finds its slot before its first task); a worker looks its slot up once and writes three
integers per task (``call_remote``); a scrape reads the starts of the live workers. A worker that finds no slot (a
pool shut down, a board that could not be made) runs its tasks unrecorded here: they count as queued until they
end. Nothing per finished task is kept.

A worker that dies mid-task (SIGKILL, the OOM killer) leaves its slot as it was: when its pool breaks, the parent
reads there which task it was running, and since when (``running``; ``board`` finds a pool's board by its path).

Vendor-free and below the telemetry: the parent side is a lifecycle hook, the worker side two functions.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
import weakref
from concurrent.futures import Executor
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Protocol

from tracedfutures._lifecycle import not_listening

if TYPE_CHECKING:
    from tracedfutures._lifecycle import TracedFuture


class RunningTable(Protocol):
    """The pool's table of tasks handed to its call queue and not ended (``_running.RunningTasks``)."""

    @property
    def tasks(self) -> dict[Any, int]: ...


_WORD = 8  # bytes of one slot
_ROWS = 3  # pids, starts, task ids

#: Every live board, by its file's path: where ``board`` finds a pool's (``Lifecycle.board`` holds the path).
_boards: weakref.WeakValueDictionary[str, StartBoard] = weakref.WeakValueDictionary()


def _shared_directory() -> str | None:
    """/dev/shm where it exists (memory, never written to disk), else the temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class StartBoard:
    """One process pool's board, parent side: a lifecycle hook that keeps the pid row up to date, and what the
    metrics read at scrape time: the tasks running in the workers (``tasks``, by their start there) and those
    handed to the call queue (``handed``)."""

    __slots__ = ("__weakref__", "_handed", "_known", "_lock", "_map", "_pool", "_view", "path", "slots")

    def __init__(self, pool: Executor, slots: int, handed: RunningTable) -> None:
        self._pool = weakref.ref(pool)
        self._handed = handed
        self.slots = slots
        self._known: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        fd, self.path = tempfile.mkstemp(prefix="tracedfutures-board-", dir=_shared_directory())
        try:
            os.ftruncate(fd, _ROWS * slots * _WORD)
            self._map = mmap.mmap(fd, _ROWS * slots * _WORD)
        finally:
            os.close(fd)
        self._view = memoryview(self._map).cast("q")
        weakref.finalize(pool, _remove, self.path)
        _boards[self.path] = self

    def close(self) -> None:
        """The pool is shut down: no worker attaches any more (those attached keep their mapping)."""
        _remove(self.path)

    @not_listening
    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        """The pid row changes when processes do, which the hand-off sees."""

    def on_start(self, future: TracedFuture) -> None:
        """A hand-off to the call queue (in the pool's management thread): the processes the pool has now get
        their slots before the task can reach one of them."""
        pool = self._pool()
        processes = getattr(pool, "_processes", None) or {}
        if processes.keys() != self._known:
            self._assign(frozenset(processes))

    @not_listening
    def on_finish(self, future: TracedFuture) -> None:
        """A worker clears its own slot."""

    @not_listening
    def on_refused(self, future: TracedFuture, method: str) -> None:
        """Nothing runs or stops."""

    @not_listening
    def on_retrieved(self, future: TracedFuture) -> None:
        """Nothing runs or stops."""

    def _assign(self, pids: frozenset[int]) -> None:
        """Slots for ``pids``: a pid keeps its slot, a gone one's slot is cleared and given to a new one (its task
        id stays: a start of 0 says it is idle)."""
        view, slots = self._view, self.slots
        with self._lock:
            for index in range(slots):
                if view[index] and view[index] not in pids:
                    view[slots + index] = 0  # its worker died mid-task, say: nothing runs there now
                    view[index] = 0
            placed = {view[index] for index in range(slots)}
            free = (index for index in range(slots) if not view[index])
            for pid in pids - placed:
                slot = next(free, None)
                if slot is None:
                    break  # more processes than slots: those run unrecorded here
                view[slots + slot] = 0
                view[slot] = pid
            self._known = pids

    @property
    def handed(self) -> int:
        """Tasks handed to the call queue and not ended: those running in a worker and those waiting there."""
        return len(self._handed.tasks)

    @property
    def tasks(self) -> dict[int, int]:
        """The start (unix ns) of the task each live worker runs now, by pid."""
        pool = self._pool()
        live = set(getattr(pool, "_processes", None) or ())
        view, slots = self._view, self.slots
        found = {}
        for index in range(slots):
            pid, start = view[index], view[slots + index]
            if start and pid in live:
                found[pid] = start
        return found

    def running(self, task: int) -> tuple[int, int, int | None] | None:
        """Where the task whose future's ``id()`` is ``task`` runs now as its worker says, or, after its pool
        broke, where it ran then: (the worker's pid, the task's start in unix ns, the worker's exit code, None
        while it lives), None when no worker says so (it waited in the call queue, or its worker had not begun
        it). Read when a task ends without an outcome from its worker (``BrokenProcessPool``), not per task."""
        view, slots = self._view, self.slots
        for index in range(slots):
            pid, start = view[index], view[slots + index]
            if start and pid and view[2 * slots + index] == task:
                process = (getattr(self._pool(), "_processes", None) or {}).get(pid)
                return pid, start, exit_code(process) if process is not None else None
        return None


def exit_code(process: Any) -> int | None:
    """The exit code of a worker process, None while it lives. One that has ended as its pool saw it (its sentinel
    is ready: the pool breaks on that) may not be reaped yet, for a moment: it is waited for, a second at most.
    Where a task it was running is drawn (``running``) and where its death is marked (``timeline``)."""
    code: int | None = process.exitcode
    if code is None:
        with contextlib.suppress(ValueError, OSError, AssertionError):  # closed, or not this process's child
            if wait([process.sentinel], 0):
                process.join(1.0)
                code = process.exitcode
    return code


def board(path: str) -> StartBoard | None:
    """The live board whose file is ``path`` (a pool's ``Lifecycle.board``), None when there is none."""
    return _boards.get(path)


def cut_short(future: TracedFuture) -> tuple[int, int, int | None] | None:
    """Where a task its process pool's break ended (``BrokenProcessPool``, no outcome from a worker) was running as
    the pool's start board says: (the worker's pid, the task's start in unix ns, the worker's exit code, None if it
    lived: the pool ended it as it broke); None when no worker was (it waited in the call queue, or its pool has no
    board). Only the break ends a task handed to the call queue this way, so every id on the board is then that of a
    live future, handed to the queue (``future.ran``); a submit the broken pool refused later never reached it."""
    life = future._tf_life
    found = board(life.board) if future.ran and life is not None and life.board else None
    return found.running(id(future)) if found is not None else None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):  # removed already
        os.unlink(path)


# -- the worker side ------------------------------------------------------------------------------------------------
#: In a worker: each board's mapped view and this process's slot there (-1: none, looked up again next task).
_attached: dict[str, tuple[memoryview, int]] = {}


def _slot(path: str) -> tuple[memoryview, int]:
    found = _attached.get(path)
    if found is not None and found[1] >= 0:
        return found
    if found is None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:  # the pool is gone: never again
            found = _attached[path] = (memoryview(b""), -1)
            return found
        try:
            mapped = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        found = (memoryview(mapped).cast("q"), -1)
    view = found[0]
    slots = len(view) // _ROWS
    pid = os.getpid()
    index = next((i for i in range(slots) if view[i] == pid), -1)
    found = _attached[path] = (view, index)
    return found


def begin(path: str, start_ns: int, task: int) -> tuple[memoryview, int] | None:
    """In a worker: the task ``task`` (its future's id in the parent) started at ``start_ns``; returns the slot to
    pass to ``end`` (None: none). The id is written first: a start that is not 0 always has its own task's id."""
    try:
        view, index = _slot(path)
        if index < 0:
            return None
        slots = len(view) // _ROWS
        view[2 * slots + index] = task
        view[slots + index] = start_ns
    except (OSError, ValueError):  # ValueError: a mapping cut short, an id that does not fit (never on CPython)
        return None
    return view, index


def end(slot: tuple[memoryview, int]) -> None:
    """In a worker: the task ``begin`` recorded ended."""
    view, index = slot
    view[len(view) // _ROWS + index] = 0
