"""Run CPython's own ``test_concurrent_futures`` with tracedfutures in place of the standard library's objects.

    python tests/cpython/run_stdlib_suite.py [--mode substitute|instrumentor|stock] [-v] [--match TEXT ...]
                                             [--shard K/N]

The suite is read from this interpreter's ``test`` package (a single module on 3.11, a package from 3.12 on),
never copied. Before it is imported:

* ``--mode substitute`` (default): ``TracedThreadPoolExecutor`` / ``TracedProcessPoolExecutor`` replace
  ``ThreadPoolExecutor`` / ``ProcessPoolExecutor`` in ``concurrent.futures`` and in the ``thread`` / ``process``
  submodules that define them, and ``tracedfutures.wait`` / ``as_completed`` replace ``concurrent.futures.wait``
  / ``as_completed``. The suite's mixins (``executor_type = futures.ThreadPoolExecutor``) and the executors its
  tests build directly (``futures.ProcessPoolExecutor(...)``) are then all traced ones.
* ``--mode instrumentor``: ``ConcurrentFuturesInstrumentor().instrument()`` traces the stock classes instead.
* ``--mode stock``: nothing is changed; the baseline, to tell the environment's failures from the library's.

Telemetry is really recorded: an SDK ``TracerProvider`` (every span sampled) with a span processor that counts
finished spans, and a fresh Prometheus ``CollectorRegistry``. The Python child processes some tests start with
``assert_python_ok('-c', ...)`` get the same treatment through a one-line prelude, so the executors they build
are traced too. At the end the runner prints how many task spans were recorded and the
``executor_tasks_submitted_total`` sum, and fails if either is zero.

Every start method the platform has is run (the suite's own fork / forkserver / spawn mixins). Resources:
``cpu`` and ``walltime`` are enabled, so nothing is skipped for lack of a resource (they cost about half a
minute of sleeping: ``test_map_timeout`` and ``test_timeout`` wait out 5 to 6 second timeouts per executor).
Exclusions live in ``exclusions.py`` only. The last line is ``stdlib-suite: N passed, N failed, N skipped``
with the Python version; the exit status is non-zero on any failure, error, or environment change (dangling
threads or processes, unraisable exceptions, exceptions in threads, as regrtest's ``--fail-env-changed``).
``--shard K/N`` runs every N-th test from the K-th (0-based) in the suite's order: the test command runs the N
shards side by side (the suite mostly sleeps and waits on its children), each with its own last line.
A failed test is run once more, alone, in a fresh process, as CPython's CI runs this suite (regrtest
``--rerun``): one that passes then is reported as ``PASSED ON RERUN`` (and its first failure stays in the log),
not as a failure; a class or module fixture that failed is not re-run.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import importlib
import os
import platform
import subprocess
import sys
import threading
import time
import unittest
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("substitute", "instrumentor", "stock")
RESOURCES = ["cpu", "walltime"]
PER_TEST_TIMEOUT = 600.0  # seconds; the suite itself fails a test that lasts 300 s
#: TF_SUITE_WATCH names a file that holds the running test's id, and its threads' stacks if it times out (the
#: test command prints it when the suite fails): a timed-out run names its test even in a truncated log.
_watch_path = os.environ.get("TF_SUITE_WATCH")
_watch = open(_watch_path, "w") if _watch_path else None  # noqa: SIM115  (open for the whole run)


# -- telemetry and the substitution (also run, through the prelude, in the suite's Python child processes) --------


class Telemetry:
    """A real SDK tracer provider with a span processor that counts finished spans, and a fresh registry."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from prometheus_client import CollectorRegistry

        counts = self.counts = {"task": 0, "wait": 0, "other": 0}
        lock = threading.Lock()

        class CountingProcessor(SpanProcessor):  # type: ignore[misc]
            def on_end(self, span: Any) -> None:
                if "executor.kind" in (span.attributes or {}):
                    kind = "task"
                else:
                    kind = "wait" if span.name.startswith("futures.") else "other"
                with lock:
                    counts[kind] += 1

        # No exit hook: the suite checks what its children print at exit, and a SimpleSpanProcessor-like
        # processor starts no thread (the suite counts threads).
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(CountingProcessor())
        self.registry = CollectorRegistry()

    def submitted_total(self) -> float:
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == "executor_tasks_submitted_total"
        )


_untraced: list[str] = []


def _census(cls: type, traced: tuple[type, ...]) -> None:
    """Record every executor of the stock class ``cls`` made without being one of the ``traced`` classes."""
    init = cls.__init__  # type: ignore[misc]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(self, traced):
            _untraced.append(type(self).__qualname__)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]


def activate(mode: str) -> Telemetry | None:
    """Put tracedfutures in place as ``mode`` says, with telemetry recorded into a fresh ``Telemetry``."""
    if mode == "stock":
        return None
    import concurrent.futures as cf
    from concurrent.futures import process, thread

    import tracedfutures

    telemetry = Telemetry()
    interpreter = None
    if "InterpreterPoolExecutor" in cf.__all__:  # 3.14 and later; before its base class is replaced below
        from concurrent.futures import interpreter
    if mode == "substitute":
        tracedfutures.configure(tracer_provider=telemetry.provider, registry=telemetry.registry)
        traced = tuple(getattr(tracedfutures, name) for name in tracedfutures.__all__ if name.endswith("PoolExecutor"))
        substitutes = [(thread, "ThreadPoolExecutor"), (process, "ProcessPoolExecutor")]
        if interpreter is not None:
            substitutes.append((interpreter, "InterpreterPoolExecutor"))
        for module, name in substitutes:
            _census(getattr(module, name), traced)
        for module, name in substitutes:
            traced_class = getattr(tracedfutures, f"Traced{name}")
            for target in (cf, module):
                setattr(target, name, traced_class)
            # Child scripts import ``self.executor_type.__name__`` from concurrent.futures: give it that name too.
            setattr(cf, traced_class.__name__, traced_class)
        cf.wait = tracedfutures.wait  # type: ignore[assignment]
        cf.as_completed = tracedfutures.as_completed
    elif mode == "instrumentor":
        tracedfutures.ConcurrentFuturesInstrumentor().instrument(
            tracer_provider=telemetry.provider, registry=telemetry.registry
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return telemetry


def child_prelude(mode: str) -> str:
    """One line put before the code of ``python -c`` children, so that they run in the same ``mode``."""
    return (
        f"import sys as _tf_sys; _tf_sys.path.insert(0, {HERE!r}); import run_stdlib_suite as _tf_run; "
        f"_tf_run.activate({mode!r}); _tf_sys.path.remove({HERE!r}); del _tf_sys, _tf_run\n"
    )


def patch_script_helper(mode: str) -> None:
    """Make ``assert_python_ok('-c', code)`` (and friends) run ``child_prelude(mode)`` first in the child."""
    from test.support import script_helper

    run = script_helper.run_python_until_end
    prelude = child_prelude(mode)

    @functools.wraps(run)
    def run_python_until_end(*args: Any, **env_vars: Any) -> Any:
        args = list(args)
        for i, arg in enumerate(args[:-1]):
            if arg == "-c" and isinstance(args[i + 1], str):
                args[i + 1] = prelude + args[i + 1]
                break
        return run(*args, **env_vars)

    script_helper.run_python_until_end = run_python_until_end


def describe_substitution() -> str:
    """What ``concurrent.futures`` resolves to in this process, as ``check_children`` compares it."""
    import concurrent.futures as cf

    submit = cf.ThreadPoolExecutor.submit, cf.ProcessPoolExecutor.submit
    wrapped = all(hasattr(f, "__wrapped__") for f in submit)
    return (
        f"{cf.ThreadPoolExecutor.__name__} {cf.ProcessPoolExecutor.__name__} "
        f"{_module(cf.wait)} {_module(cf.as_completed)} submit-wrapped={wrapped}"
    )


def _module(function: Any) -> str:
    """The module of ``function``; of a wrapt wrapper's wrapper function (the instrumentor's), if it is one."""
    wrapper = getattr(function, "_self_wrapper", None)
    return str((function if wrapper is None else wrapper).__module__)


def check_children() -> tuple[str, str]:
    """What this process and a ``python -c`` child of the suite (``assert_python_ok``) each resolve to."""
    from test.support.script_helper import assert_python_ok

    code = "; ".join(
        (
            f"import sys; sys.path.insert(0, {HERE!r})",
            "import run_stdlib_suite as r",
            "print(r.describe_substitution())",
        )
    )
    _, out, err = assert_python_ok("-c", code)
    return describe_substitution(), (out.decode().strip() + err.decode().strip())


# -- running ---------------------------------------------------------------------------------------------------


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def excluded_reason(test_id: str, exclusions: dict[str, str]) -> str | None:
    for key, reason in exclusions.items():
        if test_id == key or test_id.endswith("." + key):
            return reason
    return None


class Result(unittest.TextTestResult):
    """Per-test outcomes (a test with failing subtests counts once), environment changes counted as failures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.env_changed: dict[str, list[str]] = {}
        self.current = "(module setup)"

    def _set(self, test: Any, outcome: str) -> None:
        test_id = getattr(test, "test_case", test).id()  # a subtest counts for its test
        previous = self.outcomes.get(test_id)
        if previous == "failed" or (previous == "passed" and outcome == "skipped"):
            return
        self.outcomes[test_id] = outcome

    def env_change(self, what: str) -> None:
        self.env_changed.setdefault(self.current, []).append(what)

    def check_environment(self) -> None:
        from test import support

        if support.environment_altered:
            support.environment_altered = False
            self.env_change("environment altered (see the warning above: dangling threads or processes)")

    def startTest(self, test: unittest.TestCase) -> None:
        self.check_environment()  # from the previous module's cleanups
        self.current = test.id()
        if _watch is not None:  # the test's id, then (if it times out) every thread's stack
            _watch.seek(0)
            _watch.truncate()
            _watch.write(f"FAIL: timed out after {PER_TEST_TIMEOUT:.0f} s: {self.current}\n")
            _watch.flush()
            faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True, file=_watch)
        else:
            faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True)
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()
        self.check_environment()
        if test.id() not in self.outcomes:
            self._set(test, "passed")
        self.current = f"(after {test.id()})"

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._set(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._set(test, "failed")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._set(test, "failed")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._set(test, "skipped")

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set(test, "passed")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._set(test, "failed")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "skipped" if issubclass(err[0], unittest.SkipTest) else "failed")


def install_env_hooks(result_holder: list[Result]) -> None:
    """Like regrtest: unraisable exceptions and exceptions in threads change the environment."""
    unraisable_hook = sys.unraisablehook
    thread_hook = threading.excepthook

    def on_unraisable(unraisable: Any) -> None:
        unraisable_hook(unraisable)
        if result_holder:
            result_holder[0].env_change(f"unraisable exception: {unraisable.exc_value!r}")

    def on_thread_exception(args: Any) -> None:
        thread_hook(args)
        if result_holder:
            result_holder[0].env_change(f"exception in thread {args.thread!r}: {args.exc_value!r}")

    sys.unraisablehook = on_unraisable
    threading.excepthook = on_thread_exception


def load_suite() -> unittest.TestSuite:
    """The interpreter's own suite, through its own ``load_tests`` where it has one."""
    module = importlib.import_module("test.test_concurrent_futures")
    return unittest.defaultTestLoader.loadTestsFromModule(module)


def check_substituted(tests: list[unittest.TestCase]) -> list[str]:
    """The test classes whose ``executor_type`` is not a traced one (substitute mode)."""
    import tracedfutures

    traced = tuple(getattr(tracedfutures, name) for name in tracedfutures.__all__ if name.endswith("PoolExecutor"))
    return sorted(
        {
            type(t).__qualname__
            for t in tests
            if hasattr(t, "executor_type") and not issubclass(t.executor_type, traced)  # type: ignore[attr-defined]
        }
    )


def rerun_failures(mode: str, failures: list[str], known: set[str]) -> list[str]:
    """Run each failed test again, alone, in a fresh process, as CPython's own CI does (regrtest ``--rerun``):
    a test that fails only under load passes there. Returns the ones that passed; every rerun is printed."""
    passed = []
    for test_id in failures:
        # An environment change found after a test belongs to that test.
        target = test_id[len("(after ") : -1] if test_id.startswith("(after ") else test_id
        if target not in known:  # a class or module fixture, or cleanups: no single test to run again
            continue
        print(f"RERUN {target}, alone, verbose", flush=True)
        command = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--verbose", "--rerun", "--exact"]
        if subprocess.run([*command, target], check=False).returncode == 0:
            passed.append(test_id)
    return passed


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="substitute")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test, and the suite's verbose")
    parser.add_argument("--match", action="append", default=[], help="run only tests whose id contains TEXT")
    parser.add_argument("--no-exclusions", action="store_true", help="run the excluded tests too")
    parser.add_argument("--exact", action="append", default=[], help="run only the test with this id")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N", help="every N-th test from the K-th")
    parser.add_argument(
        "--rerun", action="store_true", help="this run re-runs failures (internal): no telemetry minimum, no rerun"
    )
    return parser.parse_args(argv)


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` as (K, N), 0 <= K < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not K/N: {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"K/N needs 0 <= K < N: {text!r}")
    return index, count


def in_place(mode: str) -> bool:
    """Whether this process and the suite's ``python -c`` children resolve ``concurrent.futures`` to what ``mode``
    puts in place (printed, and what is wrong on stderr)."""
    here, child = check_children()
    print(f"concurrent.futures here:     {here}")
    print(f"concurrent.futures in child: {child}")
    if here != child:
        print("the suite's python -c children would not run as this process does", file=sys.stderr)
        return False
    expected = {
        "substitute": "TracedThreadPoolExecutor TracedProcessPoolExecutor tracedfutures.waiting",
        "instrumentor": "ThreadPoolExecutor ProcessPoolExecutor tracedfutures.instrumentor submit-wrapped=True",
    }.get(mode, "")
    if not set(expected.split()) <= set(here.split()):
        print(f"tracedfutures is not in place for --mode {mode}: {here}", file=sys.stderr)
        return False
    return True


def select(
    tests: list[unittest.TestCase], options: argparse.Namespace
) -> tuple[list[unittest.TestCase], dict[str, str]]:
    """The tests ``--match`` / ``--exact`` select, the excluded ones among them skipped, and why each was."""
    sys.path.insert(0, HERE)
    try:
        from exclusions import EXCLUSIONS
    finally:
        sys.path.remove(HERE)
    selected = []
    excluded = {}
    index, count = options.shard
    for test in tests[index::count]:
        test_id = test.id()
        if options.match and not any(text in test_id for text in options.match):
            continue
        if options.exact and test_id not in options.exact:
            continue
        reason = None if options.no_exclusions else excluded_reason(test_id, EXCLUSIONS)
        if reason is not None and hasattr(test, "_testMethodName"):
            excluded[test_id] = reason
            method = getattr(test, test._testMethodName)
            setattr(test, test._testMethodName, unittest.skip(f"excluded: {reason}")(method))
        selected.append(test)
    return selected, excluded


def run(selected: list[unittest.TestCase], verbose: bool) -> Result:
    """Run the tests with the environment checks, and check the environment once more after them."""
    holder: list[Result] = []
    install_env_hooks(holder)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2 if verbose else 1, resultclass=Result)
    original_make_result = runner._makeResult

    def make_result() -> unittest.TestResult:
        result = original_make_result()
        holder.append(result)  # type: ignore[arg-type]
        return result

    runner._makeResult = make_result  # type: ignore[method-assign]
    result: Result = runner.run(unittest.TestSuite(selected))  # type: ignore[assignment]
    result.current = "(module cleanups)"
    result.check_environment()
    return result


def telemetry_ok(telemetry: Telemetry, options: argparse.Namespace) -> bool:
    """Print what was recorded; False when nothing was (or, substituting, when an executor was not traced)."""
    ok = True
    submitted = telemetry.submitted_total()
    counts = telemetry.counts
    if options.mode == "substitute":
        untraced = f", untraced executors created: {len(_untraced)}"
        ok = not _untraced
    else:
        untraced = ""
    print(
        f"telemetry ({options.mode}): {counts['task']} task spans, {counts['wait']} wait/as_completed spans "
        f"recorded, executor_tasks_submitted_total = {submitted:g}{untraced}"
    )
    if not options.rerun and (not counts["task"] or not submitted):
        print("telemetry: nothing was recorded, the instrumentation was not exercised")
        ok = False
    telemetry.provider.shutdown()
    return ok


def tally(
    result: Result, selected: list[unittest.TestCase], excluded: dict[str, str], options: argparse.Namespace
) -> tuple[int, int, int, list[str]]:
    """Print each environment change, exclusion and failure, re-run the failures (unless this run is a re-run);
    returns how many tests passed, failed and were skipped, and the failures that passed on rerun."""
    outcomes = result.outcomes
    for test_id, changes in result.env_changed.items():
        outcomes[test_id] = "failed"  # a test, or a module's fixtures or cleanups
        for change in changes:
            print(f"ENV CHANGED {test_id}: {change}")
    for test_id, reason in sorted(excluded.items()):
        print(f"EXCLUDED {test_id}: {reason}")
    passed = sum(1 for o in outcomes.values() if o == "passed")
    failed = sum(1 for o in outcomes.values() if o == "failed")
    skipped = sum(1 for o in outcomes.values() if o == "skipped")
    failures = sorted(test_id for test_id, outcome in outcomes.items() if outcome == "failed")
    for test_id in failures:
        print(f"FAILED {test_id}")
    rerun_passed: list[str] = []
    if failed and not options.rerun:
        known = {t.id() for t in selected}
        rerun_passed = rerun_failures(options.mode, failures, known)
        for test_id in rerun_passed:
            print(f"PASSED ON RERUN {test_id}")
            failed -= 1
            passed += test_id in known  # "(after X)": an environment change of X, not a test of its own
    return passed, failed, skipped, rerun_passed


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    started = time.monotonic()
    version = f"Python {platform.python_version()}"
    mode = options.mode + (
        ", fallback forced" if os.environ.get("TRACEDFUTURES_FORCE_FALLBACK", "") not in ("", "0") else ""
    )

    from test import support

    support.verbose = 1 if options.verbose else 0
    support.use_resources = list(RESOURCES)

    telemetry = activate(options.mode)
    if options.mode != "stock":
        patch_script_helper(options.mode)
    if not in_place(options.mode):
        return 2

    suite = load_suite()
    tests = list(iter_tests(suite))
    if options.mode == "substitute":
        wrong = check_substituted(tests)
        if wrong:
            print(f"not substituted: {', '.join(wrong)}", file=sys.stderr)
            return 2
    selected, excluded = select(tests, options)
    if options.exact and len(selected) != len(set(options.exact)):
        print(f"--exact: no such test among {options.exact}", file=sys.stderr)
        return 2
    shard = f", shard {options.shard[0]}/{options.shard[1]}" if options.shard[1] > 1 else ""
    print(f"{version} ({sys.executable}), mode {mode}{shard}, {len(selected)} tests, resources {RESOURCES}")
    print(f"start methods: {', '.join(__import__('multiprocessing').get_all_start_methods())}", flush=True)
    if options.mode != "stock":
        from tracedfutures import _stdlib

        fallbacks = sorted(part for part, body in _stdlib.chosen().items() if body is _stdlib.FALLBACKS[part])
        print(f"public-API fallback in use for: {', '.join(fallbacks) or 'nothing'}", flush=True)
    result = run(selected, options.verbose)
    passed, failed, skipped, rerun_passed = tally(result, selected, excluded, options)

    ok = failed == 0
    if telemetry is not None:
        ok = telemetry_ok(telemetry, options) and ok
    print(f"wall time {time.monotonic() - started:.0f}s")
    reran = f" ({len(rerun_passed)} on rerun)" if rerun_passed else ""
    print(f"stdlib-suite: {passed} passed{reran}, {failed} failed, {skipped} skipped ({version}, mode {mode})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
