"""Every private body of the standard library that tracedfutures runs as its own, each beside the fingerprint of
the source it mirrors, and the public-API fallback used where this interpreter's source matches none of them.

A copy is kept where the public API cannot see a transition at the moment it happens: a future that is a
``TracedFuture`` from birth needs the pool's ``submit`` body, and the future's transitions report to the hooks
after the lock is released and before the callbacks run. Each copy is registered with ``@mirrors``: the Python
versions it was taken from and the fingerprint (``fingerprint``) of every stdlib function it mirrors or relies on.
Once per process, at the first ``choose``, every fingerprint is compared with this interpreter's own source: a part
whose fingerprints all match uses its copy; any other (a Python newer than this module, a patched build, source
that cannot be read) uses its fallback, which calls only public API (the stdlib's own ``submit``, ``wait`` and
``as_completed``, a done-callback, a call wrapper that stamps the real start), and one warning says which parts.
Behaviour is the stdlib's either way; the fallback's telemetry is coarser (see ``docs/python-versions.md``).
``TRACEDFUTURES_FORCE_FALLBACK=1`` forces every fallback, so that the tests run it on any interpreter.

Lines marked ``# tf:`` are where tracedfutures departs from the stdlib body it mirrors. This module imports no
telemetry vendor, and of tracedfutures only ``_shutdown_deadlock`` and ``_state``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import io
import itertools
import logging
import os
import textwrap
import threading
import time
import tokenize
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, InvalidStateError, _base
from concurrent.futures import process as _process
from concurrent.futures import thread as _thread
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    LOGGER,
    PENDING,
    RUNNING,
)
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tracedfutures import _shutdown_deadlock
from tracedfutures._state import state

T = TypeVar("T")
_log = logging.getLogger("tracedfutures")
_clock = time.time_ns
_get_ident = threading.get_ident
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_FINISHED_STATES = (CANCELLED_AND_NOTIFIED, FINISHED)
# The stdlib's private helpers, which typeshed does not declare.
_private: Any = _base
_thread_private: Any = _thread
_process_private: Any = _process
#: The process-wide state, under a name that the transitions' local ``state`` (the future's) leaves alone.
_shared = state

#: Set to 1 to use every public-API fallback whatever the interpreter (how the tests run the fallback).
FORCE_FALLBACK_ENV = "TRACEDFUTURES_FORCE_FALLBACK"


def fingerprint(function: Callable[..., Any]) -> str:
    """The first 16 hex digits of the SHA-256 of ``function``'s source, dedented, without docstrings, comments,
    trailing blanks or empty lines: a reflowed docstring or a new comment does not change it, a changed line does."""
    source = textwrap.dedent(inspect.getsource(function))
    skip: set[int] = set()
    for first, last in _docstring_lines(source):
        skip.update(range(first, last + 1))
    cut: dict[int, int] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            cut[token.start[0]] = token.start[1]
    lines = []
    for number, line in enumerate(source.splitlines(), 1):
        if number in skip:
            continue
        line = line[: cut.get(number, len(line))].rstrip()
        if line:
            lines.append(line)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _docstring_lines(source: str) -> Iterator[tuple[int, int]]:
    """The first and last line of every docstring in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield first.lineno, first.end_lineno or first.lineno


def stdlib_object(name: str) -> Any:
    """``"concurrent.futures._base:Future.cancel"`` -> that object of this interpreter."""
    module, _, qualname = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


# -- the registry -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Copy:
    """A part's copy: the Python versions it was taken from, and the fingerprint of each stdlib function it mirrors
    or relies on (by ``module:qualname``; a function whose source differs between versions has one per version)."""

    part: str
    versions: str
    fingerprints: dict[str, tuple[str, ...]]
    body: Any


#: Each part's copies, one per run of Python versions whose source it mirrors.
COPIES: dict[str, list[Copy]] = {}
FALLBACKS: dict[str, Any] = {}
_B = TypeVar("_B")


def mirrors(part: str, versions: str, fingerprints: dict[str, str | tuple[str, ...]]) -> Callable[[_B], _B]:
    """Registers the decorated function or class as ``part``'s copy of the stdlib functions ``fingerprints`` names."""

    def register(body: _B) -> _B:
        prints = {name: (value,) if isinstance(value, str) else value for name, value in fingerprints.items()}
        COPIES.setdefault(part, []).append(Copy(part, versions, prints, body))
        return body

    return register


def fallback(part: str) -> Callable[[_B], _B]:
    """Registers the decorated function or class as ``part``'s public-API fallback."""

    def register(body: _B) -> _B:
        FALLBACKS[part] = body
        return body

    return register


def mismatches(copy: Copy) -> list[str]:
    """The functions ``copy`` mirrors whose source here matches none of its fingerprints (or cannot be read)."""
    differing = []
    for name, prints in copy.fingerprints.items():
        try:
            if fingerprint(stdlib_object(name)) in prints:
                continue
        except Exception:  # gone, renamed, or no source: all the same to a copy
            pass
        differing.append(name)
    return differing


@functools.cache
def chosen() -> dict[str, Any]:
    """Each part's body for this process: the copy all of whose fingerprints match, else its fallback (one warning
    names the parts that fell back, and the functions whose source matched no copy)."""
    forced = os.environ.get(FORCE_FALLBACK_ENV, "") not in ("", "0")
    bodies: dict[str, Any] = {}
    differing: dict[str, list[str]] = {}
    for part, copies in COPIES.items():
        bodies[part] = FALLBACKS[part]
        if forced:
            differing[part] = [f"forced by {FORCE_FALLBACK_ENV}"]
            continue
        wrong: list[str] = []
        for copy in copies:
            names = mismatches(copy)
            if not names:
                bodies[part] = copy.body
                break
            wrong += [name for name in names if name not in wrong]
        else:
            differing[part] = wrong
    if differing:
        # Forced (the tests' switch) it is what was asked for: said at INFO. Otherwise it is news: one WARNING.
        _log.log(
            logging.INFO if forced else logging.WARNING,
            "tracedfutures: this Python's concurrent.futures differs from the versions tracedfutures knows (%s), so "
            "those parts use only public API: results, exceptions and states are unchanged, some telemetry is "
            "coarser. Please report it with your Python version.",
            "; ".join(f"{part}: {', '.join(names)}" for part, names in differing.items()),
        )
    return bodies


def choose(part: str) -> Any:
    """The body ``part`` uses in this process (see ``chosen``)."""
    return chosen()[part]


# -- the future's transitions ---------------------------------------------------------------------------------------
# They expect, on the future: ``_tf_life`` (the lifecycle to tell, or None; see ``_lifecycle.Lifecycle``), ``_tf_fn``,
# ``_tf_ran_on``, ``finished_ns``, ``started_ns`` and ``ran``, and the methods ``_refused(method)`` and
# ``_accept_remote(life, data)`` (see ``TracedFuture``).


@mirrors(
    "future transitions",
    "3.11-3.15",
    {
        "concurrent.futures._base:Future.cancel": "67e9456f5d2af7f0",
        "concurrent.futures._base:Future.set_running_or_notify_cancel": "815f98f1438d308e",
        "concurrent.futures._base:Future.set_result": "61ba1775e7688002",
        "concurrent.futures._base:Future.set_exception": "39df47f162921e52",
        "concurrent.futures._base:Future.result": "a2c6bd496c37df0e",
        "concurrent.futures._base:Future.exception": "06f5285d63a0b339",
        "concurrent.futures._base:Future._Future__get_result": ("a72cbcdaedb6aceb", "28850a28cb1b4e4f"),
    },
)
class FutureTransitions:
    """``Future.cancel``, ``set_running_or_notify_cancel`` and the body ``set_result`` and ``set_exception`` share
    (``_settle``), telling the lifecycle of each transition after the lock is released, before callbacks run."""

    __slots__ = ()

    def cancel(self: Any) -> bool:
        with self._condition:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self.finished_ns = _clock()  # tf: when it ended
            self._condition.notify_all()
        life = self._tf_life  # tf: tell the lifecycle (``Lifecycle.ended``, inline)
        if life is not None:
            life.tasks.pop(self, None)
            self._tf_fn = None
            life.on_finish(self)
        self._invoke_callbacks()
        return True

    def set_running_or_notify_cancel(self: Any) -> bool:
        with self._condition:
            state = self._state
            if state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                return False
            if state == PENDING:
                self._state = RUNNING
            else:
                LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        if state != PENDING:  # tf: the stdlib raises under the lock; counted here, after it
            self._refused("set_running_or_notify_cancel")
            raise RuntimeError("Future in unexpected state")
        self.ran = True  # tf: it started here, now (a remote task's real start comes home with its outcome)
        life = self._tf_life  # tf: tell the lifecycle (``Lifecycle.started``, inline)
        if life is not None:
            if life.remote:
                started = self.started_ns or _clock()
            else:
                started = self.started_ns = _clock()
            life.tasks[self] = started
            if life.here:
                self._tf_ran_on = (_shared.pid, _get_ident(), None)
            life.on_start(self)
        return True

    def _settle(self: Any, method: str, result: Any, exception: BaseException | None, data: Any) -> None:
        """``set_result`` (``exception`` None) or ``set_exception``; ``data``: what came home from a worker."""
        with self._condition:
            state = self._state
            if state not in _DONE:
                self._result = result
                self._exception = exception
                self._state = FINISHED
                self.finished_ns = _clock()  # tf
                for waiter in self._waiters:
                    if method == "set_result":
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                self._condition.notify_all()
        if state in _DONE:  # tf: the stdlib raises under the lock; counted here, after it
            self._refused(method)
            raise InvalidStateError(f"{state}: {self!r}")
        life = self._tf_life  # tf: tell the lifecycle (``Lifecycle.ended``, inline)
        if life is not None:
            if data is not None:
                self._accept_remote(life, data)
            life.tasks.pop(self, None)
            self._tf_fn = None
            life.on_finish(self)
        self._invoke_callbacks()

    def result(self: Any, timeout: float | None = None) -> Any:
        try:
            with self._condition:
                if self._state in [CANCELLED, CANCELLED_AND_NOTIFIED]:
                    raise _base.CancelledError()
                elif self._state != FINISHED:  # tf: the stdlib's second look, once: FINISHED goes on below
                    self._condition.wait(timeout)
                    if self._state in [CANCELLED, CANCELLED_AND_NOTIFIED]:
                        raise _base.CancelledError()
                    elif self._state != FINISHED:
                        raise _base.TimeoutError()
                first = not self._tf_read  # tf: the first read, claimed under the lock
                self._tf_read = True  # tf
            if first:  # tf: told after the lock is released
                life = self._tf_life
                if life is not None:
                    life.on_retrieved(self)
            return self._Future__get_result()
        finally:
            # Break a reference cycle with the exception in self._exception
            self = None

    def exception(self: Any, timeout: float | None = None) -> BaseException | None:
        with self._condition:
            if self._state in [CANCELLED, CANCELLED_AND_NOTIFIED]:
                raise _base.CancelledError()
            elif self._state != FINISHED:  # tf: as in ``result``
                self._condition.wait(timeout)
                if self._state in [CANCELLED, CANCELLED_AND_NOTIFIED]:
                    raise _base.CancelledError()
                elif self._state != FINISHED:
                    raise _base.TimeoutError()
            first = not self._tf_read  # tf: as in ``result``
            self._tf_read = True  # tf
        if first:  # tf
            life = self._tf_life
            if life is not None:
                life.on_retrieved(self)
        exception: BaseException | None = self._exception
        return exception

    def _claim_read(self: Any) -> bool:
        """Whether this read of the FINISHED future is the first (marked ``_tf_read``, under the future's lock)."""
        condition = self._condition
        condition.acquire()  # its lock's own methods: ``with`` would run Condition.__enter__/__exit__ in Python
        try:
            if self._tf_read or self._state != FINISHED:
                return False
            self._tf_read = True
            return True
        finally:
            condition.release()


def _ended(future: Any) -> None:
    """The fallback's done-callback, the first one registered: the future finished or was cancelled."""
    future.finished_ns = _clock()
    life = future._tf_life
    if life is not None:
        life.ended(future)


@fallback("future transitions")
class PublicTransitions:
    """The stdlib's own transitions; the lifecycle hears of the end from a done-callback registered at birth."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        Future.add_done_callback(self, _ended)  # type: ignore[arg-type]

    def set_running_or_notify_cancel(self: Any) -> bool:
        try:
            running = Future.set_running_or_notify_cancel(self)
        except RuntimeError:
            self._refused("set_running_or_notify_cancel")
            raise
        if running:
            self.ran = True
            life = self._tf_life
            if life is not None:
                life.started(self)
        return running

    def _settle(self: Any, method: str, result: Any, exception: BaseException | None, data: Any) -> None:
        life = self._tf_life
        if data is not None and life is not None and not self.done():
            self._accept_remote(life, data)  # before the done-callback reads it
        try:
            if method == "set_result":
                Future.set_result(self, result)
            else:
                Future.set_exception(self, exception)
        except InvalidStateError:
            self._refused(method)
            raise

    def result(self: Any, timeout: float | None = None) -> Any:
        try:
            return Future.result(self, timeout)
        finally:
            if not self._tf_read:
                self._retrieved()

    def exception(self: Any, timeout: float | None = None) -> BaseException | None:
        try:
            return Future.exception(self, timeout)
        finally:
            if not self._tf_read:
                self._retrieved()

    def _claim_read(self: Any) -> bool:
        if not self.done() or self.cancelled():
            return False
        with state.read_lock:  # the fallback claims first reads under a process-wide lock
            if self._tf_read:
                return False
            self._tf_read = True
            return True


# -- submit -----------------------------------------------------------------------------------------------------------
class Enqueue(Protocol):
    """A pool's submit body: queue ``call(*args, **kwargs)`` with ``future`` as its future, or raise as the pool's
    ``submit`` raises (broken, shut down)."""

    def __call__(self, executor: Any, future: Future[Any], call: Any, args: Any, kwargs: Any) -> None: ...


@mirrors(
    "thread pool submit",
    "3.11-3.13",
    {
        "concurrent.futures.thread:ThreadPoolExecutor.submit": "b2c325e07c75c294",
        "concurrent.futures.thread:_WorkItem.__init__": "b36009f2fccbe85b",
    },
)
def enqueue_thread_work_item(executor: Any, future: Future[Any], call: Any, args: Any, kwargs: Any) -> None:
    try:
        with executor._shutdown_lock, _thread_private._global_shutdown_lock:
            if executor._broken:
                raise _thread.BrokenThreadPool(executor._broken)
            if executor._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _thread_private._shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            executor._work_queue.put(_thread_private._WorkItem(future, call, args, kwargs))  # tf: our future, our call
            executor._adjust_thread_count()
    except BaseException:  # tf: a refused submit's traceback keeps this frame: not the future,
        del future  # which holds that exception (no cycle future -> exception -> frame -> future)
        raise


@mirrors(
    "thread pool submit",
    "3.14-3.15",
    {
        "concurrent.futures.thread:ThreadPoolExecutor.submit": "5dbe8c5b7a13ac3a",
        "concurrent.futures.thread:_WorkItem.__init__": "101afdecfdd646ac",
    },
)
def enqueue_thread_task(executor: Any, future: Future[Any], call: Any, args: Any, kwargs: Any) -> None:
    try:
        with executor._shutdown_lock, _thread_private._global_shutdown_lock:
            if executor._broken:
                raise executor.BROKEN(executor._broken)
            if executor._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _thread_private._shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            task = executor._resolve_work_item_task(call, args, kwargs)  # tf: our call
            executor._work_queue.put(_thread_private._WorkItem(future, task))  # tf: our future
            executor._adjust_thread_count()
    except BaseException:  # tf: a refused submit's traceback keeps this frame: not the future,
        del future  # which holds that exception (no cycle future -> exception -> frame -> future)
        raise


@mirrors(
    "process pool submit",
    "3.11-3.15",
    {
        "concurrent.futures.process:ProcessPoolExecutor.submit": "885cc638af8e81cd",
        "concurrent.futures.process:_WorkItem.__init__": "b36009f2fccbe85b",
    },
)
def enqueue_process_work_item(executor: Any, future: Future[Any], call: Any, args: Any, kwargs: Any) -> None:
    try:
        with executor._shutdown_lock:
            if executor._broken:
                raise _process.BrokenProcessPool(executor._broken)
            if executor._shutdown_thread:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _process_private._global_shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if _shutdown_deadlock.AFFECTED:  # tf: a workaround for gh-125451
                _shutdown_deadlock.unlock_queue_feeder(executor)
            work = _process_private._WorkItem(future, call, args, kwargs)  # tf: our future, our call
            executor._pending_work_items[executor._queue_count] = work
            executor._work_ids.put(executor._queue_count)
            executor._queue_count += 1
            executor._executor_manager_thread_wakeup.wakeup()
            if executor._safe_to_dynamically_spawn_children:
                executor._adjust_process_count()
            executor._start_executor_manager_thread()
    except BaseException:  # tf: a refused submit's traceback keeps this frame: not the future,
        del future  # which holds that exception (no cycle future -> exception -> frame -> future)
        raise


# A part whose fallback is None has no body of its own: the executor chains to the stdlib's own submit.
FALLBACKS["thread pool submit"] = FALLBACKS["process pool submit"] = None


def thread_pool_enqueue() -> Enqueue | None:
    """This interpreter's thread-pool submit body, or None: chain to ``ThreadPoolExecutor.submit``."""
    return choose("thread pool submit")  # type: ignore[no-any-return]


def process_pool_enqueue() -> Enqueue | None:
    """This interpreter's process-pool submit body, or None: chain to ``ProcessPoolExecutor.submit``."""
    return choose("process pool submit")  # type: ignore[no-any-return]


# -- ProcessPoolExecutor.map, for an executor that wraps a process pool ------------------------------------------------
def _batched(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[tuple[Any, ...]]:
    it = zip(*iterables)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


@mirrors(
    "process pool map",
    "3.11-3.15",
    {
        # 3.13 chunks with itertools.batched where 3.11 had _get_chunks (the same chunks); 3.14 adds buffersize.
        "concurrent.futures.process:ProcessPoolExecutor.map": (
            "9489d1f520a7a6e0",
            "3586590796a55793",
            "17f23cd22aad7de3",
        ),
        "concurrent.futures.process:_process_chunk": "8513f00bf1d2b3c8",
        "concurrent.futures.process:_chain_from_iterable_of_lists": "9ba4a6def9ac3166",
    },
)
def process_pool_map(
    executor: Executor, fn: Callable[..., T], iterables: tuple[Iterable[Any], ...], timeout: float | None,
    chunksize: int, options: dict[str, Any],
) -> Iterator[T]:  # fmt: skip
    """``ProcessPoolExecutor.map`` for ``executor``, which submits to a process pool: chunks of calls, one task
    each, flattened back in order. ``options``: ``buffersize`` where the stdlib takes it."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    results = Executor.map(
        executor, functools.partial(_process_private._process_chunk, fn), _batched(iterables, chunksize),
        timeout=timeout, **options,
    )  # fmt: skip
    return _process_private._chain_from_iterable_of_lists(results)  # type: ignore[no-any-return]


def run_chunk(fn: Callable[..., T], chunk: Iterable[tuple[Any, ...]]) -> list[T]:
    """One task of the fallback's chunked ``map``: ``fn`` over a chunk of argument tuples."""
    return [fn(*args) for args in chunk]


def _flatten(results: Iterator[list[T]]) -> Iterator[T]:
    """The results of the chunks, in order; each is dropped from its chunk as it is yielded."""
    for chunk in results:
        chunk.reverse()
        while chunk:
            yield chunk.pop()


@fallback("process pool map")
def process_pool_map_public(
    executor: Executor, fn: Callable[..., T], iterables: tuple[Iterable[Any], ...], timeout: float | None,
    chunksize: int, options: dict[str, Any],
) -> Iterator[T]:  # fmt: skip
    """The same chunks through ``Executor.map``, with a chunk runner of our own."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    chunks = _batched(iterables, chunksize)
    return _flatten(Executor.map(executor, functools.partial(run_chunk, fn), chunks, timeout=timeout, **options))


# -- wait and as_completed --------------------------------------------------------------------------------------------
@mirrors(
    "wait",
    "3.11-3.15",
    {
        "concurrent.futures._base:wait": "d6f1a6596d6a78b4",
        "concurrent.futures._base:_AcquireFutures.__enter__": "aa2d21cbc964cd1a",
        "concurrent.futures._base:_AcquireFutures.__exit__": "083560f6e2897147",
        "concurrent.futures._base:_create_and_install_waiters": "832559b16a0a0b50",
    },
)
def wait(fs: Iterable[Future[T]], timeout: float | None, return_when: str) -> _base.DoneAndNotDoneFutures[T]:
    """The stdlib's ``wait``, but for its finished-state test: against a constant tuple, where the stdlib builds a
    list for each future."""
    fs = set(fs)
    with _private._AcquireFutures(fs):
        done = {f for f in fs if f._state in _FINISHED_STATES}  # tf: a tuple
        not_done = fs - done
        if return_when == FIRST_COMPLETED and done:
            return _base.DoneAndNotDoneFutures(done, not_done)
        if (
            return_when == FIRST_EXCEPTION
            and done
            and any(f for f in done if not f.cancelled() and f.exception() is not None)
        ):
            return _base.DoneAndNotDoneFutures(done, not_done)

        if len(done) == len(fs):
            return _base.DoneAndNotDoneFutures(done, not_done)

        waiter = _private._create_and_install_waiters(fs, return_when)

    waiter.event.wait(timeout)
    for f in fs:
        with f._condition:
            f._waiters.remove(waiter)

    done.update(waiter.finished_futures)
    return _base.DoneAndNotDoneFutures(done, fs - done)


@fallback("wait")
def wait_public(fs: Iterable[Future[T]], timeout: float | None, return_when: str) -> _base.DoneAndNotDoneFutures[T]:
    return _STDLIB_WAIT(fs, timeout, return_when)


class Tracker(Protocol):
    """What an ``as_completed`` body tells the call's telemetry, besides its start and end."""

    def batch(self, futures: list[Future[Any]], remaining: int) -> int:
        """``futures`` are done and about to be yielded, last first; ``remaining``: the futures not yielded yet,
        these included. Returns how few must remain for ``due`` to be called."""

    def due(self, remaining: int) -> int:
        """As few futures remain to be yielded as ``batch`` or the last ``due`` asked for (the one about to be
        yielded not among them). Returns how few must remain for the next call."""

    def waiting(self) -> None:
        """The iteration is about to block until a future is done."""

    def ended(self, left: list[Future[Any]], yielded: int, error: BaseException | None) -> None:
        """The iteration ended (``error``: what it raised, None when it ran out or was closed), after ``yielded``
        futures; ``left``: the futures of the last batch that were never yielded."""


@mirrors(
    "as_completed",
    "3.11-3.15",
    {
        "concurrent.futures._base:as_completed": "e713d032fc72f8ce",
        "concurrent.futures._base:_yield_finished_futures": "af9effc03c75d248",
        "concurrent.futures._base:_AcquireFutures.__enter__": "aa2d21cbc964cd1a",
        "concurrent.futures._base:_AcquireFutures.__exit__": "083560f6e2897147",
        "concurrent.futures._base:_create_and_install_waiters": "832559b16a0a0b50",
    },
)
def as_completed(
    fs: Iterable[Future[T]], timeout: float | None, track: Callable[[int], Tracker]
) -> Iterator[Future[T]]:
    """The stdlib's ``as_completed`` with ``_yield_finished_futures`` inline (it keeps no stale reference to a
    yielded future either); ``track(len(fs))`` makes the tracker it tells of each batch and wait."""
    if timeout is not None:
        end_time = timeout + time.monotonic()
    fs = set(fs)
    total_futures = len(fs)
    tracker = track(total_futures)  # tf
    finished: Any = []
    try:
        with _private._AcquireFutures(fs):
            finished = {f for f in fs if f._state in _FINISHED_STATES}
            pending = fs - finished
            waiter = _private._create_and_install_waiters(fs, _private._AS_COMPLETED)
        finished = list(finished)
        try:
            ref_collect: tuple[set[Future[T]], ...] = (fs,)
            while True:
                due = tracker.batch(finished, len(fs))  # tf
                while finished:
                    f = finished[-1]
                    for futures_set in ref_collect:
                        futures_set.remove(f)
                    with f._condition:
                        f._waiters.remove(waiter)
                    del f
                    if len(fs) == due:  # tf
                        due = tracker.due(due)
                    yield finished.pop()
                if not pending:
                    break
                if timeout is None:
                    wait_timeout = None
                else:
                    wait_timeout = end_time - time.monotonic()
                    if wait_timeout < 0:
                        raise TimeoutError(f"{len(pending)} (of {total_futures}) futures unfinished")
                tracker.waiting()  # tf
                waiter.event.wait(wait_timeout)
                with waiter.lock:
                    finished = waiter.finished_futures
                    waiter.finished_futures = []
                    waiter.event.clear()
                finished.reverse()  # to keep finishing order
                ref_collect = (fs, pending)
        finally:
            for f in fs:
                with f._condition:
                    f._waiters.remove(waiter)
    except BaseException as exc:  # tf: the end of the call's telemetry, also when closed (GeneratorExit)
        tracker.ended(finished, total_futures - len(fs), exc)
        raise
    tracker.ended(finished, total_futures - len(fs), None)


@fallback("as_completed")
def as_completed_public(
    fs: Iterable[Future[T]], timeout: float | None, track: Callable[[int], Tracker]
) -> Iterator[Future[T]]:
    """The stdlib's own ``as_completed``. It yields the futures done when it starts first: those steps count as
    0 s (but the first, which also set the iteration up); each later step is timed."""
    fs = set(fs)
    total = len(fs)
    tracker = track(total)
    done_first = sum(1 for f in fs if f.done())
    steps: Any = _STDLIB_AS_COMPLETED(fs, timeout)
    del fs  # the stdlib's iteration holds the futures not yielded yet; nothing here may hold a yielded one
    yielded = 0
    box: list[Future[T]] = []
    try:
        while True:
            if yielded >= done_first:
                tracker.waiting()
            try:
                box.append(next(steps))
            except StopIteration:
                break
            remaining = total - yielded
            if tracker.batch(box, remaining) == remaining - 1:
                tracker.due(remaining - 1)
            yielded += 1
            yield box.pop()  # no reference to the future is kept while the caller holds it
    except BaseException as exc:
        steps.close()
        tracker.ended(box, yielded, exc)
        raise
    tracker.ended(box, yielded, None)


#: The stdlib's own functions, whatever later replaces ``concurrent.futures.wait`` / ``as_completed``.
_STDLIB_WAIT = _base.wait
_STDLIB_AS_COMPLETED = _base.as_completed
