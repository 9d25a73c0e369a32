"""What comes home from a worker with a task's outcome, as both sides read it: the vendor-free wire format.

A ``RemoteCall`` (``_calls``) wraps a result in an ``Envelope``; an exception is raised unchanged, carrying the
same data in its ``__dict__`` under ``REMOTE_ATTR``, so the executor handles it exactly as it would the bare
exception. ``TracedFuture`` (``_lifecycle``) unwraps both. A bottom module: it imports no telemetry vendor and
nothing of tracedfutures.
"""

from __future__ import annotations

from typing import Any

REMOTE_ATTR = "_tracedfutures_remote"


class Envelope:
    """A task's result with the worker's data, unwrapped by ``TracedFuture.set_result``: (start_ns, end_ns,
    ran_on, cpu_ns), ``ran_on`` being where the task ran, (process id, thread id, thread name), ``cpu_ns`` the CPU
    time the task used on that thread, and when the task made spans that were collected in the worker, those spans
    (plain tuples) and how many were dropped."""

    __slots__ = ("data", "value")

    def __init__(self, value: Any, data: tuple[Any, ...]) -> None:
        self.value = value
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (Envelope, (self.value, self.data))


def take_remote_data(exception: object) -> Any:
    """Remove and return the worker data a ``RemoteCall`` attached to ``exception`` (None if there is none)."""
    attrs = getattr(exception, "__dict__", None)
    if type(attrs) is dict:
        return attrs.pop(REMOTE_ATTR, None)
    return None
