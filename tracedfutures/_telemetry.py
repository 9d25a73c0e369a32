"""How tracedfutures' own telemetry runs: failures that lose telemetry and never a task, and the scopes that keep
a span processor's submits from being traced.

A bottom module, used by the lifecycle's hooks (spans, metrics), by worker spans and by waiting. It imports no
telemetry vendor and nothing of tracedfutures.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("tracedfutures")

_telemetry = threading.local()


def in_telemetry() -> bool:
    """Whether this thread is inside tracedfutures' own telemetry (a hook, a wait span): a span processor or
    exporter that submits to an instrumented executor from there must get the stdlib's submit, untraced, or
    every span would make another task and another span (recursion, or a loop that never ends)."""
    return getattr(_telemetry, "active", False)


class TelemetryScope:
    """``with TelemetryScope():`` marks this thread as inside tracedfutures' telemetry (see ``in_telemetry``)."""

    __slots__ = ("outer",)

    def __enter__(self) -> None:
        self.outer = getattr(_telemetry, "active", False)
        _telemetry.active = True

    def __exit__(self, *exc_info: object) -> None:
        _telemetry.active = self.outer


#: Scopes matter only while the stock executors are instrumented (the instrumentor turns them on): elsewhere a
#: task's telemetry does without the thread-local bookkeeping.
_scoped = False


def use_telemetry_scopes(on: bool) -> None:
    global _scoped
    _scoped = on


def run_telemetry(where: str, call: Callable[..., object], *args: Any) -> None:
    """``call(*args)`` as a hook's telemetry that runs the user's code (span processors): inside a telemetry scope
    while scopes are on; an Exception there loses that telemetry (logged as ``where``), never reaches the task."""
    try:
        if _scoped:
            with TelemetryScope():
                call(*args)
        else:
            call(*args)
    except Exception as exc:
        telemetry_failed(where, exc)


_failures_logged: set[str] = set()
# Re-entrant: a failure may be reported from garbage collection (a finalizer) in a thread that holds it.
_failures_lock = threading.RLock()


def telemetry_failed(where: str, exc: Exception) -> None:
    """Telemetry is lost, never the task: one warning for the first failure in the process, then debug logs."""
    with _failures_lock:
        if where in _failures_logged:
            return
        level = logging.DEBUG if _failures_logged else logging.WARNING
        _failures_logged.add(where)
    try:
        text = repr(exc)
    except Exception:  # an exception whose repr fails must not make logging print its own traceback
        text = type(exc).__qualname__
    _log.log(level, "tracedfutures: %s failed, its telemetry is incomplete: %s", where, text)


def _after_fork_in_child() -> None:
    """A forked child is a new process: fresh lock (a parent thread may have held it), its own first warning."""
    global _failures_lock
    _failures_lock = threading.RLock()
    _failures_logged.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
