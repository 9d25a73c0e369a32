"""``wait`` and ``as_completed``: the standard library's own functions, timed and traced.

They accept any futures (traced or not), return exactly what the standard library returns and raise exactly
what it raises; a span per call links to the task spans of the futures handed back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future
from concurrent.futures import _base as _stdlib
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
# The stdlib's private helpers of wait and as_completed, which typeshed does not declare.
_private: Any = _stdlib


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


def _traced_count(futures: Collection[Any]) -> int:
    """How many of ``futures`` are traced tasks with a task span (``futures.links_dropped`` counts those past the
    link cap): one slot read each when all are ``TracedFuture``, one ``getattr`` each when some are not; then
    C counts the ``False`` singletons (no comparison of span contexts with None)."""
    try:
        untraced = [f._tf_context is None for f in futures]
    except AttributeError:  # stock futures among them
        untraced = [getattr(f, "_tf_context", None) is None for f in futures]
    return untraced.count(False)


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

    def link(self, futures: Collection[Any]) -> None:
        """Link the span to the task spans of ``futures`` (at most ``MAX_LINKS``); count the rest."""
        span = self.span
        if not span.is_recording():
            return
        try:
            self.traced = _traced_count(futures)
            linkable = min(self.traced, MAX_LINKS)
            for future in futures:
                if self.links >= linkable:
                    break
                if link_task_span(span, future):
                    self.links += 1
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
        result = _wait(fs, timeout, return_when)
    except BaseException as exc:
        call.end({}, exc)
        raise
    done, not_done = result
    timed_out = not _condition_met(done, not_done, return_when)
    call.link(done)
    end = call.end({FUTURES_COUNT: len(done) + len(not_done), FUTURES_DONE: len(done), FUTURES_TIMED_OUT: timed_out})
    if call.collector is not None:
        try:
            call.collector.waits.observe_wait(return_when, timed_out, end - call.start)
        except Exception as exc:
            telemetry_failed("wait metrics", exc)
    return result


def _wait(fs: Iterable[Future[T]], timeout: float | None, return_when: str) -> _stdlib.DoneAndNotDoneFutures[T]:
    """The stdlib's own ``wait`` (identical from 3.10 to 3.13), but for its finished-state test: against a
    constant tuple, where the stdlib builds a list for each future (a third of the cost of that test)."""
    fs = set(fs)
    with _stdlib._AcquireFutures(fs):
        done = {f for f in fs if f._state in _FINISHED_STATES}
        not_done = fs - done
        if return_when == FIRST_COMPLETED and done:
            return _stdlib.DoneAndNotDoneFutures(done, not_done)
        if (
            return_when == FIRST_EXCEPTION
            and done
            and any(f for f in done if not f.cancelled() and f.exception() is not None)
        ):
            return _stdlib.DoneAndNotDoneFutures(done, not_done)

        if len(done) == len(fs):
            return _stdlib.DoneAndNotDoneFutures(done, not_done)

        waiter = _private._create_and_install_waiters(fs, return_when)

    waiter.event.wait(timeout)
    for f in fs:
        with f._condition:
            f._waiters.remove(waiter)

    done.update(waiter.finished_futures)
    return _stdlib.DoneAndNotDoneFutures(done, fs - done)


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
    linkable = 0  # links allowed so far: the traced futures of the batches seen, up to the cap
    counted: list[Future[T]] = []  # the batch whose traced futures are counted (those left at the end are not)
    try:
        with _stdlib._AcquireFutures(fs):
            finished: Any = {f for f in fs if f._state in _FINISHED_STATES}
            pending = fs - finished
            waiter = _private._create_and_install_waiters(fs, _private._AS_COMPLETED)
        finished = list(finished)
        try:
            ref_collect: tuple[set[Future[T]], ...] = (fs,)
            while True:
                if recording and finished:  # counted by batch rather than at each step
                    traced += _traced_count(finished)
                    linkable = min(traced, MAX_LINKS)
                    counted = finished
                # The stdlib's _yield_finished_futures, inline: no stale reference to a yielded future is kept.
                while finished:
                    f = finished[-1]
                    for futures_set in ref_collect:
                        futures_set.remove(f)
                    with f._condition:
                        f._waiters.remove(waiter)
                    if links < linkable:
                        try:
                            links += link_task_span(call.span, f)
                        except Exception as exc:
                            linkable = links
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
        traced -= _traced_count(counted)  # not handed back: the iteration was closed or failed
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
