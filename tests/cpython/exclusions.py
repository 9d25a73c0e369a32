"""The tests of CPython's ``test_concurrent_futures`` that ``run_stdlib_suite.py`` does not run, with the reason.

This is the only place where tests are left out. A key is a unittest id, or its tail after a ``.`` (for
example ``test_shutdown_deadlock_pickle`` covers that test under every start method, in every version's
package). A test is excluded only when the instrumentation cannot behave identically, or the
environment cannot run it; never because it fails: a failure is fixed in the library.
"""

EXCLUSIONS: dict[str, str] = {}

# None at present. CPython 3.13.0's test_shutdown_deadlock_pickle used to be excluded here: the interpreter's own
# ProcessPoolExecutor can deadlock at shutdown when a task fails to pickle (gh-125451, fixed in 3.12.8 and 3.13.1),
# and the stock classes hang on it too. The pools tracedfutures submits to now carry CPython's fix
# (tracedfutures/_shutdown_deadlock.py), so the test runs, and passes, in both modes.
