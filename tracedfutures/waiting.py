"""``wait`` and ``as_completed``: the standard library's own functions, timed and traced.

They accept any futures (traced or not), return exactly what the standard library returns and raise exactly
what it raises; a span per call links to the task spans of the futures handed back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future
from concurrent.futures import _base as _stdlib
from itertools import repeat
from typing import Any, TypeVar

from opentelemetry.trace import INVALID_SPAN, Span

from tracedfutures import config
from tracedfutures._lifecycle import TelemetryScope, telemetry_failed
from tracedfutures.metrics import RETURN_WHEN, MetricsBackend
from tracedfutures.spans import (
    AS_COMPLETED_SPAN,
    FUTURES_COUNT,
    FUTURES_DONE,
    FUTURES_LINKS_DROPPED,
    FUTURES_RETURN_WHEN,
    FUTURES_TIMED_OUT,
    FUTURES_TIMEOUT,
    MAX_LINKS,
    WAIT_SPAN,
    end_wait_span,
    link_task_span,
    start_wait_span,
)

T = TypeVar("T")
_clock = time.time_ns
_FINISHED_STATES = (_stdlib.CANCELLED_AND_NOTIFIED, _stdlib.FINISHED)
# The stdlib's private helpers of as_completed, which typeshed does not declare.
_private: Any = _stdlib
# The function itself, not the module attribute the instrumentor replaces.
_stdlib_wait = _stdlib.wait


def _condition_met(done: set[Future[Any]], not_done: set[Future[Any]], return_when: str) -> bool:
    """Whether ``wait`` returned because its condition held (rather than because the timeout expired)."""
    if not not_done:
        return True
    if return_when == FIRST_COMPLETED:
        return bool(done)
    if return_when == ALL_COMPLETED:
        return False
    # FIRST_EXCEPTION, read as the stdlib reads it: without marking any exception as retrieved.
    return any(not f.cancelled() and getattr(f, "_exception", None) is not None for f in done)


def _timeout_attribute(attributes: dict[str, Any], timeout: object) -> None:
    """Record a numeric timeout; any other value is left to the stdlib to accept or refuse, as it would."""
    if isinstance(timeout, (int, float)):
        with contextlib.suppress(OverflowError):  # an int too large for a float
            attributes[FUTURES_TIMEOUT] = float(timeout)


class _Call:
    """The telemetry of one wait / as_completed call; every method swallows telemetry failures."""

    __slots__ = ("collector", "links", "span", "start", "traced")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.start = _clock()
        self.links = 0
        self.traced = 0
        self.span: Span = INVALID_SPAN
        self.collector: MetricsBackend | None = None
        try:
            with TelemetryScope():
                tracer, self.collector = config.tracer_and_collector()
                self.span = start_wait_span(tracer, name, self.start, attributes)
        except Exception as exc:
            telemetry_failed(name, exc)

    def link(self, futures: Iterable[Any]) -> None:
        span = self.span
        if not span.is_recording():
            return
        try:
            remaining = iter(futures)
            for future in remaining:
                if getattr(future, "_tf_context", None) is not None:
                    self.traced += 1
                    if link_task_span(span, future):
                        self.links += 1
                    if self.links >= MAX_LINKS:
                        break
            # Past the cap the rest are only counted, for futures.links_dropped (in C: map, then list.count).
            contexts = list(map(getattr, remaining, repeat("_tf_context"), repeat(None)))
            self.traced += len(contexts) - contexts.count(None)
        except Exception as exc:
            telemetry_failed("span links", exc)

    def end(self, attributes: dict[str, Any], error: BaseException | None = None) -> int:
        end = _clock()
        try:
            attributes[FUTURES_LINKS_DROPPED] = self.traced - self.links
            with TelemetryScope():
                end_wait_span(self.span, end, attributes, error)
        except Exception as exc:
            telemetry_failed("wait span", exc)
        return end


def wait(
    fs: Iterable[Future[T]], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> _stdlib.DoneAndNotDoneFutures[T]:
    """``concurrent.futures.wait``, with a ``futures.wait`` span and the ``futures_wait_seconds`` histogram."""
    attributes: dict[str, Any] = {FUTURES_RETURN_WHEN: return_when if return_when in RETURN_WHEN else "invalid"}
    _timeout_attribute(attributes, timeout)
    call = _Call(WAIT_SPAN, attributes)
    try:
        result = _stdlib_wait(fs, timeout, return_when)
    except BaseException as exc:
        call.end({}, exc)
        raise
    done, not_done = result
    timed_out = not _condition_met(done, not_done, return_when)
    call.link(done)
    end = call.end(
        {FUTURES_COUNT: len(done) + len(not_done), FUTURES_DONE: len(done), FUTURES_TIMED_OUT: timed_out}
    )
    if call.collector is not None:
        try:
            call.collector.waits.observe_wait(return_when, timed_out, end - call.start)
        except Exception as exc:
            telemetry_failed("wait metrics", exc)
    return result


def as_completed(fs: Iterable[Future[T]], timeout: float | None = None) -> Iterator[Future[T]]:
    """``concurrent.futures.as_completed``, with a ``futures.as_completed`` span and latency histograms.

    The stdlib's own body (identical from 3.10 to 3.13), so it yields, raises and releases futures exactly as
    the stdlib does; lazy like it: nothing happens until the first ``next()``.
    """
    if timeout is not None:
        end_time = timeout + time.monotonic()
    fs = set(fs)
    total_futures = len(fs)
    attributes: dict[str, Any] = {FUTURES_COUNT: total_futures}
    _timeout_attribute(attributes, timeout)
    call = _Call(AS_COMPLETED_SPAN, attributes)
    steps = _Steps(call.collector)
    yielded = traced = links = 0
    flush_at = _STEP_BATCH
    since: int | None = call.start  # when the caller began waiting for a future not done yet (None: none is)
    timed_out = False
    error: BaseException | None = None
    recording = call.span.is_recording()
    try:
        with _stdlib._AcquireFutures(fs):
            finished: Any = {f for f in fs if f._state in _FINISHED_STATES}
            pending = fs - finished
            waiter = _private._create_and_install_waiters(fs, _private._AS_COMPLETED)
        finished = list(finished)
        try:
            ref_collect: tuple[set[Future[T]], ...] = (fs,)
            while True:
                # The stdlib's _yield_finished_futures, inline: no stale reference to a yielded future is kept.
                while finished:
                    f = finished[-1]
                    for futures_set in ref_collect:
                        futures_set.remove(f)
                    with f._condition:
                        f._waiters.remove(waiter)
                    if recording and getattr(f, "_tf_context", None) is not None:
                        traced += 1
                        if traced <= MAX_LINKS:  # past the cap only counted, for futures.links_dropped
                            try:
                                link_task_span(call.span, f)
                                links += 1
                            except Exception as exc:
                                recording = False
                                telemetry_failed("span links", exc)
                    del f
                    yielded += 1
                    if since is not None:  # the step that waited for this batch of futures
                        flush_at = steps.waited(_clock() - since, yielded)
                        since = None
                    elif yielded >= flush_at:
                        flush_at = steps.hand_over(yielded)
                    yield finished.pop()
                if not pending:
                    break
                if timeout is None:
                    wait_timeout = None
                else:
                    wait_timeout = end_time - time.monotonic()
                    if wait_timeout < 0:
                        raise _stdlib.TimeoutError(f"{len(pending)} (of {total_futures}) futures unfinished")
                if since is None:
                    since = _clock()
                waiter.event.wait(wait_timeout)
                with waiter.lock:
                    finished = waiter.finished_futures
                    waiter.finished_futures = []
                    waiter.event.clear()
                finished.reverse()  # to keep finishing order
                ref_collect = (fs, pending)
        finally:
            # Remove the waiter from unfinished futures.
            for f in fs:
                with f._condition:
                    f._waiters.remove(waiter)
    except _stdlib.TimeoutError as exc:  # the builtin from 3.11, its own class on 3.10
        timed_out, error = True, exc
        raise
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        call.traced, call.links = traced, links
        end = call.end({FUTURES_DONE: yielded, FUTURES_TIMED_OUT: timed_out}, error)
        steps.hand_over(yielded)
        if call.collector is not None:
            try:
                call.collector.waits.observe_as_completed(timed_out, end - call.start)
            except Exception as exc:
                telemetry_failed("as_completed metrics", exc)


_STEP_BATCH = 256
_STEP_FLUSH_NS = 1_000_000


class _Steps:
    """How long each ``as_completed`` step blocked, for ``futures_as_completed_next_seconds``.

    A step whose future was already done did not block: it counts as 0 s without reading a clock. The steps
    that waited keep their durations. Both reach the histogram in batches (one lock per batch, not per future):
    every ``_STEP_BATCH`` steps, at once after a step that blocked over ``_STEP_FLUSH_NS``, and at the end.
    """

    __slots__ = ("collector", "handed", "waits")

    def __init__(self, collector: MetricsBackend | None) -> None:
        self.collector = collector
        self.handed = 0  # steps already in the histogram
        self.waits: list[int] = []  # durations of the steps since then that waited

    def waited(self, ns: int, steps: int) -> int:
        """Step number ``steps`` waited ``ns``; returns the step count at which to hand over next."""
        self.waits.append(ns)
        if ns > _STEP_FLUSH_NS or steps - self.handed >= _STEP_BATCH:
            return self.hand_over(steps)
        return self.handed + _STEP_BATCH

    def hand_over(self, steps: int) -> int:
        """Hand the first ``steps`` steps to the histogram; returns the step count at which to hand over next."""
        waits, zeros = self.waits, steps - self.handed - len(self.waits)
        if self.collector is not None and (waits or zeros > 0):
            try:
                self.collector.waits.observe_as_completed_steps(waits, max(zeros, 0))
            except Exception as exc:
                telemetry_failed("as_completed metrics", exc)
        self.handed = steps
        self.waits = []
        return steps + _STEP_BATCH
