"""The CPU seconds of an executor name's workers, read when someone reads (a scrape, a collection, ``top``, the
timeline writer), never per task.

A thread or interpreter pool's workers are threads of this process: each one's CPU clock
(``time.pthread_getcpuclockid`` once, while the thread is alive, then ``time.clock_gettime_ns`` at every read; a
clock of a thread that has ended raises instead of reading another thread's). An interpreter pool's worker runs its
subinterpreter on that same thread, so its clock holds both. A process pool's workers are processes: what the OS
charged each one, user plus system time, from ``/proc/PID/stat`` (Linux; elsewhere such a pool has no series).

For ``tracedfutures report``, each worker's time runnable but waiting for a CPU is read too (``waits``).

A worker that ends between two reads: a worker thread hands its final CPU over as it ends (``ThreadExit``, kept in
its thread-local counts, made once per thread); a worker process cannot (it is reaped by ``multiprocessing`` as it
ends), so what it used since the last read is not counted: the counter is a lower bound by at most that. Every
worker's last read is kept, so the total never goes down. Vendor-free: nothing here imports a telemetry vendor.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

#: Clock ticks a second, the unit of ``/proc/PID/stat``'s times (0 where the system does not say).
try:
    _TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICKS = 0
_THREAD_CLOCKS = hasattr(time, "pthread_getcpuclockid") and hasattr(time, "clock_gettime_ns")
_PROCESS_TIMES = _TICKS > 0 and os.path.exists("/proc/self/stat")
#: Ended threads whose final CPU is kept until the next read: a bound for a program that never reads.
_MAX_EXITED = 4096


def process_cpu_ns(pid: int) -> tuple[int, int] | None:
    """The CPU time (user plus system, in ns) the OS charged process ``pid``, and its start time (clock ticks
    after boot, which tells a reused pid apart); None when it cannot be read (it has been reaped). Only where
    ``_PROCESS_TIMES``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name, in parentheses, may hold spaces: fields 3 on
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _TICKS, int(fields[19])


def live_pools(tables: Iterable[Any]) -> list[tuple[str, Any]]:
    """The kind and the object of each executor still alive among ``tables`` (each an executor's running-tasks
    table, with its ``kind`` and a weak ``executor``): what ``WorkerCpu.read`` reads the workers of."""
    refs = [(table.kind, table.executor) for table in tables]
    return [(kind, executor) for kind, ref in refs if ref is not None and (executor := ref()) is not None]


class ThreadExit:
    """Kept in a thread's own thread-local counts: when the thread ends, its thread-local data is cleared on that
    thread, and this hands the thread's final CPU time to ``WorkerCpu``. Does nothing when cleared from another
    thread (a reset of the counts, a fork)."""

    __slots__ = ("cpu", "ident", "thread")

    def __init__(self, cpu: WorkerCpu) -> None:
        self.cpu = cpu
        # The thread itself, not only its id, which a thread started later may reuse: as it ends, the thread is no
        # longer listed (``threading.current_thread()`` would make a dummy one).
        self.thread = threading.current_thread()
        self.ident = threading.get_ident()

    def __del__(self) -> None:
        try:
            if threading.get_ident() == self.ident:
                self.cpu.thread_ended(self.thread, time.thread_time_ns())
        except Exception:  # a thread's end must never fail for its telemetry
            pass


class _Worker:
    """What was last read of one worker: its CPU clock (a thread's; None once it handed over its final CPU), its
    CPU time and its time runnable but waiting for a CPU (ns)."""

    __slots__ = ("clock", "cpu", "wait")

    def __init__(self, clock: int | None) -> None:
        self.clock = clock
        self.cpu = self.wait = 0


class WorkerCpu:
    """The CPU nanoseconds of the workers of every executor of one name: the workers' last reads added up, and
    those of the workers gone (``retired_ns``). Thread-safe; every read takes ``lock``.

    With ``waits`` (what ``tracedfutures report`` needs, not the metrics), each read also adds up the time the
    workers were runnable but waiting for a CPU (Linux's ``/proc/.../schedstat``) into ``waited_ns``: what tells a
    machine short of cores from tasks that wait on I/O."""

    def __init__(self, waits: bool = False) -> None:
        self.lock = threading.Lock()
        self.waits = waits
        #: Each worker thread seen, and each worker process seen by (pid, start time).
        self.threads: dict[threading.Thread, _Worker] = {}
        self.processes: dict[tuple[int, int], _Worker] = {}
        #: The final CPU time of threads that ended since the last read (``ThreadExit``), kept while the thread object
        #: is (a worker seen before, or one of an executor still alive): one nobody holds could not be told a worker
        #: of this name at the next read, and a program of short-lived pools keeps none of theirs.
        self.exited: weakref.WeakKeyDictionary[threading.Thread, int] = weakref.WeakKeyDictionary()
        self.retired_ns = self.retired_wait_ns = 0
        self.waited_ns = 0

    def thread_ended(self, thread: threading.Thread, cpu_ns: int) -> None:
        with self.lock:
            if len(self.exited) < _MAX_EXITED:
                self.exited[thread] = cpu_ns

    def read(self, executors: Iterable[tuple[str, Any]]) -> int | None:
        """The CPU nanoseconds of the workers of ``executors`` ((kind, executor) pairs, the live executors of this
        name) and of every worker seen before, now; None when none of them has workers whose CPU can be read."""
        threads: set[threading.Thread] = set()
        pids: set[int] = set()
        readable = False
        for kind, executor in executors:
            if kind in ("thread", "interpreter") and _THREAD_CLOCKS:
                readable = True
                threads.update(getattr(executor, "_threads", None) or ())
            elif kind == "process" and _PROCESS_TIMES:
                readable = True
                pids.update(getattr(executor, "_processes", None) or ())
        with self.lock:
            if not readable and not self.threads and not self.processes and not self.retired_ns:
                return None
            self._read_threads(threads)
            self._read_processes(pids)
            workers = [*self.threads.values(), *self.processes.values()]
            self.waited_ns = self.retired_wait_ns + sum(worker.wait for worker in workers)
            return self.retired_ns + sum(worker.cpu for worker in workers)

    def _retire(self, worker: _Worker) -> None:
        self.retired_ns += worker.cpu
        self.retired_wait_ns += worker.wait

    def _read_threads(self, threads: set[threading.Thread]) -> None:
        """Bring the threads' reads up to now (under ``lock``): a thread that ended hands over its final CPU, one
        that ended without (not seen before its end) keeps its last read; those no executor holds any more and that
        have ended are folded into ``retired_ns``."""
        exited, self.exited = self.exited, weakref.WeakKeyDictionary()
        for thread in threads | self.threads.keys():
            worker = self.threads.get(thread)
            final = exited.get(thread)
            if final is not None and (worker is not None or thread in threads):
                worker = self.threads.setdefault(thread, _Worker(None))
                worker.clock, worker.cpu = None, max(final, worker.cpu)
            elif thread.is_alive() and thread in threads:
                clock = worker.clock if worker is not None else _thread_clock(thread)
                if clock is not None:
                    worker = self.threads.setdefault(thread, _Worker(clock))
                    with contextlib.suppress(OSError):  # it ended since: its last read stands
                        worker.cpu = max(time.clock_gettime_ns(clock), worker.cpu)
                    if self.waits:
                        worker.wait = max(_runnable_wait_ns(f"/proc/self/task/{thread.native_id}"), worker.wait)
            if thread in self.threads and not thread.is_alive() and thread not in threads:
                self._retire(self.threads.pop(thread))

    def _read_processes(self, pids: set[int]) -> None:
        """Bring the processes' reads up to now (under ``lock``); a process that is gone keeps its last read, folded
        into ``retired_ns``."""
        seen = set()
        for pid in pids:
            found = process_cpu_ns(pid)
            if found is not None:
                cpu_ns, started = found
                key = (pid, started)
                seen.add(key)
                worker = self.processes.setdefault(key, _Worker(None))
                worker.cpu = max(cpu_ns, worker.cpu)
                if self.waits:
                    worker.wait = max(_runnable_wait_ns(f"/proc/{pid}"), worker.wait)
        for key in self.processes.keys() - seen:
            self._retire(self.processes.pop(key))


def _runnable_wait_ns(task: str) -> int:
    """The time the thread or process of the ``/proc`` directory ``task`` spent runnable, waiting for a CPU (the
    second field of its ``schedstat``); 0 where the kernel does not say."""
    try:
        with open(f"{task}/schedstat", "rb") as file:
            return int(file.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _thread_clock(thread: threading.Thread) -> int | None:
    """The CPU clock of a live thread (None if it cannot be had): asked once, while the thread runs."""
    try:
        return time.pthread_getcpuclockid(thread.ident) if thread.ident is not None else None
    except (OSError, OverflowError):
        return None
