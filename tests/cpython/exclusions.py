"""The tests of CPython's ``test_concurrent_futures`` that ``run_stdlib_suite.py`` does not run, with the reason.

This is the only place where tests are left out. A key is a unittest id, or its tail after a ``.`` (for
example ``test_shutdown_deadlock_pickle`` covers that test under every start method, in the 3.10 module and in
the 3.13 package). A test is excluded only when the instrumentation cannot behave identically, or the
environment cannot run it; never because it fails: a failure is fixed in the library.
"""

import sys

EXCLUSIONS: dict[str, str] = {}

if sys.version_info[:3] == (3, 13, 0):
    # Environment: a deadlock in the interpreter's own ProcessPoolExecutor, not in tracedfutures. The
    # _ExecutorManagerThread joins the queue feeder thread while holding _shutdown_lock, and the feeder thread,
    # handling the task's PicklingError in _SafeQueue._on_queue_feeder_error, waits for that same lock. The stock
    # classes hang here too (`run_stdlib_suite.py --mode stock` hits it on the first start method). Fixed in
    # 3.13.1 / 3.12.8 (python/cpython gh-125451, "Fix deadlock in ProcessPoolExecutor shutdown").
    EXCLUSIONS["test_shutdown_deadlock_pickle"] = (
        "CPython 3.13.0 bug gh-125451: ProcessPoolExecutor shutdown deadlocks on a task that fails to pickle "
        "(the stock classes hang too); fixed in 3.13.1"
    )
