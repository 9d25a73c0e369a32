"""Process-wide state: every lock, per-process table and process-wide setting of tracedfutures, in one object, and
the one fork hook that gives a forked child its own.

A forked child is a new process: a parent thread may have held any of these locks at fork, so the child gets fresh
ones; it logs its own first telemetry failure, gets a new process token and its own pid, runs none of the
parent's tasks, keeps the tracer provider it inherited (to turn it into a collector of worker spans, see
``_worker_spans``), decides anew about worker spans, and starts with clean metrics (each backend resets itself,
see ``after_fork``). A bottom module: it imports no telemetry vendor and nothing of tracedfutures; what it holds
of theirs is typed loosely here and precisely where it is used.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any


def new_process_token() -> int:
    """A random odd 64-bit number that names this process (never 0, which means "none")."""
    return int.from_bytes(os.urandom(8), "big") | 1


class ProcessState:
    """The process-wide state of tracedfutures, by the module that uses it."""

    def __init__(self) -> None:
        # _telemetry: the first failure of each kind is a warning, later ones debug logs. Re-entrant: a failure
        # may be reported from garbage collection (a finalizer) in a thread that holds it.
        self.failures_lock = threading.RLock()
        self.failures_logged: set[str] = set()
        #: _telemetry: whether hooks run the user's code inside telemetry scopes (the instrumentor turns it on).
        self.telemetry_scopes = False
        # _stdlib: the public-API fallback's first-read claim (see ``PublicTransitions._claim_read``).
        self.read_lock = threading.Lock()
        # _calls: this process, as a ``RemoteCall`` names the process that submitted it (a fork gets a new one).
        self.process_token = new_process_token()
        self.forking: Any = None  # the global tracer provider while this process forks
        self.inherited_provider: Any = None  # in a forked child: the one the parent had when it forked
        # _worker_spans: the worker's span collector, decided once (under its lock) at the first task that asks.
        self.worker_spans_lock = threading.Lock()
        self.worker_spans_decided = False
        self.worker_collector: Any = None
        # config: writes of the defaults; spans: whether exception events carry messages (``configure()`` sets it).
        self.config_lock = threading.Lock()
        self.record_exception_messages = True
        # metrics: the backend of each registry (None: the registry refused our metrics), the multiprocess one.
        self.collectors_lock = threading.Lock()
        self.collectors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.multiprocess: Any = None
        # _otel_metrics: what each SDK MeterProvider exports of tracedfutures' metrics (its readers' hooks).
        self.meter_exports_lock = threading.Lock()
        self.meter_exports: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # executor: the capacity (max workers) each executor adds to each of its series, counted once.
        self.capacities_lock = threading.Lock()
        self.capacities: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
        # instrumentor: each stock pool's lifecycle is made once, under this lock.
        self.instrumentor_lock = threading.Lock()
        # _running: this process's id (read per task, so kept rather than asked of the kernel), and every
        # executor's table of running tasks, added to under the lock.
        self.pid = os.getpid()
        self.running_lock = threading.Lock()
        self.running: weakref.WeakSet[Any] = weakref.WeakSet()
        # timeline: every timeline writer, told of a fork (the child must not write the parent's file).
        self.timelines_lock = threading.Lock()
        self.timelines: weakref.WeakSet[Any] = weakref.WeakSet()
        # tracedfutures record: thread and interpreter pools made from now on time each task's own CPU
        # (``spans._TaskCpuHook``).
        self.task_cpu = False
        # tracedfutures record: the timeline writer fed by the lifecycle, without spans (``timeline``): a factory
        # of each executor's hook, (name, kind) -> LifecycleHook, and what a wait / as_completed call tells it,
        # (span name, start ns, end ns, attributes) -> None. None: no timeline is fed that way.
        self.timeline_hook: Any = None
        self.timeline_call: Any = None

    def before_fork(self) -> None:
        """Keep the global tracer provider the child inherits; only once ``_calls``, which asks for it, is there
        (it imports the OpenTelemetry API)."""
        if "tracedfutures._calls" not in sys.modules:
            return
        try:
            self.forking = sys.modules["opentelemetry.trace"].get_tracer_provider()
        except Exception:
            self.forking = None

    def after_fork_in_parent(self) -> None:
        """The multiprocess backend's pools count again from this process's next task (see ``_multiprocess``)."""
        self.forking = None
        if self.multiprocess is not None:
            self.multiprocess.after_fork(child=False)

    def after_fork_in_child(self) -> None:
        """In a forked child, in this order: fresh locks, then the child's own identity and tables."""
        self.failures_lock = threading.RLock()
        self.read_lock = threading.Lock()
        self.worker_spans_lock = threading.Lock()
        self.config_lock = threading.Lock()
        self.collectors_lock = threading.Lock()
        self.meter_exports_lock = threading.Lock()
        self.capacities_lock = threading.Lock()
        self.instrumentor_lock = threading.Lock()
        self.running_lock = threading.Lock()
        self.timelines_lock = threading.Lock()
        self.failures_logged.clear()
        self.pid = os.getpid()
        for table in list(self.running):
            table.after_fork()
        for writer in list(self.timelines):
            writer.after_fork()
        self.inherited_provider, self.forking = self.forking, None
        self.process_token = new_process_token()
        self.worker_spans_decided = False
        self.worker_collector = None
        for backend in list(self.collectors.values()):
            if backend is not None:
                backend.after_fork()
        if self.multiprocess is not None:
            self.multiprocess.after_fork(child=True)
        for export in list(self.meter_exports.values()):
            export.after_fork()


state = ProcessState()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=state.before_fork,
        after_in_parent=state.after_fork_in_parent,
        after_in_child=state.after_fork_in_child,
    )
