"""How tracedfutures' own telemetry runs: failures that lose telemetry and never a task, and the scopes that keep
a span processor's submits from being traced.

A bottom module, used by the lifecycle's hooks (spans, metrics), by worker spans and by waiting. It imports no
telemetry vendor; of tracedfutures only ``_state``, where its process-wide state lives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import MethodType
from typing import Any

from tracedfutures._state import state

_log = logging.getLogger("tracedfutures")


class _Scope(threading.local):
    """This thread's telemetry flag; ``False`` until a scope sets it (a class attribute: reading it in a thread
    that never set it costs no AttributeError, as ``getattr(local, name, default)`` does)."""

    active = False


#: This thread's telemetry flag (``in_telemetry``): read directly where a call costs too much (a stock pool's submit).
scope = _Scope()


def in_telemetry() -> bool:
    """Whether this thread is inside tracedfutures' own telemetry (a hook, a wait span): a span processor or
    exporter that submits to an instrumented executor from there must get the stdlib's submit, untraced, or
    every span would make another task and another span (recursion, or a loop that never ends)."""
    return scope.active


class TelemetryScope:
    """``with TelemetryScope():`` marks this thread as inside tracedfutures' telemetry (see ``in_telemetry``)."""

    __slots__ = ("outer",)

    def __enter__(self) -> None:
        self.outer = scope.active
        scope.active = True

    def __exit__(self, *exc_info: object) -> None:
        scope.active = self.outer


def use_telemetry_scopes(on: bool) -> None:
    """Scopes matter only while the stock executors are instrumented (the instrumentor turns them on): elsewhere a
    task's telemetry does without the thread-local bookkeeping."""
    state.telemetry_scopes = on


def run_telemetry(where: str, call: Callable[..., object], *args: Any) -> None:
    """``call(*args)`` as a hook's telemetry that runs the user's code (span processors): inside a telemetry scope
    while scopes are on; an Exception there loses that telemetry (logged as ``where``), never reaches the task."""
    try:
        if state.telemetry_scopes:
            with TelemetryScope():
                call(*args)
        else:
            call(*args)
    except Exception as exc:
        telemetry_failed(where, exc)


def telemetry_failed(where: str, exc: Exception) -> None:
    """Telemetry is lost, never the task: one warning for the first failure in the process, then debug logs."""
    with state.failures_lock:
        logged = state.failures_logged
        if where in logged:
            return
        level = logging.DEBUG if logged else logging.WARNING
        logged.add(where)
    try:
        text = repr(exc)
    except Exception:  # an exception whose repr fails must not make logging print its own traceback
        text = type(exc).__qualname__
    _log.log(level, "tracedfutures: %s failed, its telemetry is incomplete: %s", where, text)


_OPENTELEMETRY_OWN = ("opentelemetry.sdk.", "opentelemetry.exporter.")


def opentelemetry_own(method: MethodType) -> bool:
    """Whether the bound ``method`` is the OpenTelemetry SDK's (or an exporter's) own work, which executors run
    untraced; its class may be a subclass of an SDK class defined elsewhere.

    The SDK runs its resource detectors' ``detect`` on a ``ThreadPoolExecutor`` whenever a provider is made, and
    again in every forked child from its ``os.register_at_fork`` hook. Traced, that set-up would be a span in the
    program's trace; in a forked child it would also run span processors whose locks a thread of the parent may
    have held at the fork, and never be released there (the child hangs). Callers ask only for bound methods
    (``type(fn) is MethodType``): a plain function, the usual task, costs no call.
    """
    if _own(method.__func__.__module__):
        return True
    cls = type(method.__self__)
    own = _own_classes.get(cls)
    if own is None:  # once per class: the walk of its MRO
        own = any(_own(klass.__module__) for klass in cls.__mro__)
        if len(_own_classes) < _MAX_CLASSES:
            _own_classes[cls] = own
    return own


#: Whether each class seen (up to ``_MAX_CLASSES``) is the SDK's or a subclass of one.
_MAX_CLASSES = 1024
_own_classes: dict[type, bool] = {}


def _own(module: object) -> bool:
    return type(module) is str and module.startswith(_OPENTELEMETRY_OWN)
