"""``TracedInterpreterPoolExecutor``: the drop-in ``InterpreterPoolExecutor`` (Python 3.14 and later)."""

from __future__ import annotations

from concurrent.futures.interpreter import InterpreterPoolExecutor  # type: ignore[import-not-found,unused-ignore]

from tracedfutures._lifecycle import Kind
from tracedfutures.executor import TracedThreadPoolExecutor

__all__ = ["TracedInterpreterPoolExecutor"]


class TracedInterpreterPoolExecutor(TracedThreadPoolExecutor, InterpreterPoolExecutor):  # type: ignore[misc,valid-type,unused-ignore]
    """An ``InterpreterPoolExecutor`` whose tasks get spans and metrics; same constructor plus keyword-only options
    (``name``, ``tracer_provider``, ``meter_provider``, ``registry``). As in the standard library, it is a thread
    pool too.

    Each task's real start is measured in the interpreter that runs it; spans the task starts there are children
    of the task span and come home with its outcome, as from a process pool. The callable and its arguments must be
    shareable, as for the stdlib's pool; tracedfutures adds nothing to them that is not (a function that uses no
    globals stays shareable without pickling).
    """

    _tf_kind: Kind = "interpreter"
