"""The workaround for a process-pool shutdown deadlock in CPython 3.12.0 to 3.12.7 and 3.13.0 (gh-125451).

In those versions the pool's manager thread joins the queue feeder thread while it holds the pool's
``_shutdown_lock``. A feeder thread that is handling a task that failed to pickle waits for that same lock (to
wake the manager) and never gets it, so ``shutdown()`` hangs. The stock pools hang too, but rarely: the feeder
must be between two statements at the moment the manager starts to shut down. The feeder also runs the failed
task's ``set_exception``, and with it tracedfutures' hooks, which makes the window much wider.

CPython fixed it (3.12.8, 3.13.1) by giving the wake-up pipe its own lock. The workaround does the same for each
pool tracedfutures submits to: the feeder takes a lock of its own to wake the manager, and closing the pipe takes
that lock as well. The pipe is still never written after it is closed, and the feeder does not wait for
``_shutdown_lock``. Other versions are left as they are.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

AFFECTED = (3, 12, 0) <= sys.version_info[:3] < (3, 12, 8) or sys.version_info[:3] == (3, 13, 0)


def unlock_queue_feeder(executor: Any) -> None:
    """Apply the workaround to a ``ProcessPoolExecutor`` (once; the caller holds its ``_shutdown_lock``)."""
    queue = getattr(executor, "_call_queue", None)
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    if queue is None or wakeup is None or getattr(queue, "shutdown_lock", None) is not executor._shutdown_lock:
        return  # applied already, or not the internals this workaround knows
    lock = threading.Lock()
    close = wakeup.close

    def close_under_lock() -> None:
        with lock:
            close()

    wakeup.close = close_under_lock
    queue.shutdown_lock = lock  # what _SafeQueue._on_queue_feeder_error takes to wake the manager
