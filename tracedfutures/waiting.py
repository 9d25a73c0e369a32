"""``wait`` and ``as_completed``: the standard library's own functions, timed and traced.

They accept any futures (traced or not), return exactly what the standard library returns and raise exactly
what it raises; a span per call links to the task spans of the futures handed back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, _base
from functools import partial
from typing import Any, TypeVar

from opentelemetry.trace import INVALID_SPAN, Span, Tracer

from tracedfutures import _config, _stdlib
from tracedfutures._state import state
from tracedfutures._telemetry import TelemetryScope, telemetry_failed
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
    start_wait_span,
)

__all__ = ["as_completed", "wait"]

T = TypeVar("T")
_clock = time.time_ns
#: Where a call finds the tracer and metrics backend it records with: the defaults, or the instrumentor's options.
_Resolve = Callable[[], tuple[Tracer, MetricsBackend | None]]


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

    __slots__ = ("backend", "links", "name", "span", "start", "traced")

    def __init__(self, name: str, attributes: dict[str, Any], resolve: _Resolve) -> None:
        self.start = _clock()
        self.name = name
        self.links = 0
        self.traced = 0
        self.span: Span = INVALID_SPAN
        self.backend: MetricsBackend | None = None
        try:
            with TelemetryScope():
                tracer, self.backend = resolve()
                self.span = start_wait_span(tracer, name, self.start, attributes)
        except Exception as exc:
            telemetry_failed(name, exc)

    def link(self, futures: Collection[Any]) -> None:
        """Link the span to the task spans of ``futures`` (at most ``MAX_LINKS``); count the rest."""
        if not self.span.is_recording():
            return
        try:
            self.traced = _traced_count(futures)
            contexts = []
            if self.traced:
                for future in futures:
                    context = getattr(future, "_tf_context", None)
                    if context is not None:
                        contexts.append(context)
                        if len(contexts) == MAX_LINKS:
                            break
            self.link_contexts(contexts)
        except Exception as exc:
            telemetry_failed("span links", exc)

    def link_contexts(self, contexts: list[Any]) -> None:
        """Link the span to these task span contexts (no more than ``MAX_LINKS``)."""
        for context in contexts:
            self.span.add_link(context)
            self.links += 1

    def end(self, attributes: dict[str, Any], error: BaseException | None = None) -> int:
        end = _clock()
        try:
            attributes[FUTURES_LINKS_DROPPED] = self.traced - self.links
            with TelemetryScope():
                end_wait_span(self.span, end, attributes, error)
            timeline = state.timeline_call
            if timeline is not None:  # tracedfutures record: the call on the timeline, without a span
                timeline(self.name, self.start, end, attributes)
        except Exception as exc:
            telemetry_failed("wait span", exc)
        return end


def wait(
    fs: Iterable[Future[T]], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> _base.DoneAndNotDoneFutures[T]:
    """``concurrent.futures.wait``, with a ``futures.wait`` span and the ``futures_wait_seconds`` histogram."""
    return _wait(_config.tracer_and_backend, fs, timeout, return_when)


def _wait(
    resolve: _Resolve, fs: Iterable[Future[T]], timeout: float | None, return_when: str
) -> _base.DoneAndNotDoneFutures[T]:
    attributes: dict[str, Any] = {FUTURES_RETURN_WHEN: return_when if return_when in RETURN_WHEN else "invalid"}
    _timeout_attribute(attributes, timeout)
    call = _Call(WAIT_SPAN, attributes, resolve)
    try:
        result: _base.DoneAndNotDoneFutures[T] = _WAIT(fs, timeout, return_when)
    except BaseException as exc:
        call.end({}, exc)
        raise
    done, not_done = result
    timed_out = not _condition_met(done, not_done, return_when)
    call.link(done)
    end = call.end({FUTURES_COUNT: len(done) + len(not_done), FUTURES_DONE: len(done), FUTURES_TIMED_OUT: timed_out})
    if call.backend is not None:
        try:
            call.backend.waits.observe_wait(return_when, timed_out, end - call.start)
        except Exception as exc:
            telemetry_failed("wait metrics", exc)
    return result


def as_completed(fs: Iterable[Future[T]], timeout: float | None = None) -> Iterator[Future[T]]:
    """``concurrent.futures.as_completed``, with a ``futures.as_completed`` span and latency histograms.

    The stdlib's own body (see ``_stdlib.as_completed``), so it yields, raises and releases futures exactly as the
    stdlib does; lazy like it: nothing happens until the first ``next()``.
    """
    return _as_completed(_config.tracer_and_backend, fs, timeout)


def _as_completed(resolve: _Resolve, fs: Iterable[Future[T]], timeout: float | None) -> Iterator[Future[T]]:
    return _AS_COMPLETED(fs, timeout, partial(_AsCompleted, resolve, timeout))  # type: ignore[no-any-return]


def _recording_with(
    resolve: _Resolve,
) -> tuple[
    Callable[..., _base.DoneAndNotDoneFutures[Any]],
    Callable[..., Iterator[Future[Any]]],
]:
    """A ``wait`` and an ``as_completed`` that record with what ``resolve()`` gives (the instrumentor's options).
    They bear the stdlib functions' names, so that a call with bad arguments raises the very same ``TypeError``.
    """

    def wait(
        fs: Iterable[Future[T]], timeout: float | None = None, return_when: str = ALL_COMPLETED
    ) -> _base.DoneAndNotDoneFutures[T]:
        return _wait(resolve, fs, timeout, return_when)

    def as_completed(fs: Iterable[Future[T]], timeout: float | None = None) -> Iterator[Future[T]]:
        return _as_completed(resolve, fs, timeout)

    wait.__qualname__, as_completed.__qualname__ = "wait", "as_completed"
    return wait, as_completed


class _AsCompleted:
    """The telemetry of one ``as_completed`` iteration, told of each batch of finished futures and each wait.

    The task spans of the futures handed back are linked, at most ``MAX_LINKS``, when the call ends (the futures
    of the last batch that were never handed back are not); steps are timed by batch: the first step after a wait
    blocked for the wait, the others of its batch for 0 s.
    """

    __slots__ = ("call", "contexts", "since", "steps", "total", "traced")

    def __init__(self, resolve: _Resolve, timeout: object, total: int) -> None:
        self.total = total
        attributes: dict[str, Any] = {FUTURES_COUNT: total}
        _timeout_attribute(attributes, timeout)
        self.call = _Call(AS_COMPLETED_SPAN, attributes, resolve)
        self.steps = _Steps(self.call.backend)
        self.since: int | None = self.call.start  # when the caller began waiting for a future not done yet
        self.traced = 0  # traced futures among those of the batches seen
        # The task span contexts to link, each with its future's place in the yield order (at most MAX_LINKS).
        self.contexts: list[tuple[int, Any]] = []

    def batch(self, futures: list[Future[Any]], remaining: int) -> int:
        steps = self.steps
        first = self.total - remaining  # the place of this batch's first future in the yield order
        if futures and self.since is not None:  # the first step of this batch blocked until now
            ns = _clock() - self.since
            steps.waits.append(ns)
            self.since = None
            if ns > _STEP_FLUSH_NS:  # shown at once
                steps.hand_over(first + 1)
        if futures and self.call.span.is_recording():
            self.links_from(futures, first)
        return self.total - steps.handed - _STEP_BATCH

    def due(self, remaining: int) -> int:
        self.steps.hand_over(self.total - remaining)
        return remaining - _STEP_BATCH

    def links_from(self, futures: list[Future[Any]], first: int) -> None:
        """Count the traced futures of a batch, and keep the task span contexts to link, up to the cap."""
        try:
            self.traced += _traced_count(futures)
            contexts = self.contexts
            if len(contexts) < MAX_LINKS:
                for place, future in enumerate(reversed(futures), first):  # yielded last first
                    context = getattr(future, "_tf_context", None)
                    if context is not None:
                        contexts.append((place, context))
                        if len(contexts) == MAX_LINKS:
                            break
        except Exception as exc:
            telemetry_failed("span links", exc)

    def waiting(self) -> None:
        self.since = _clock()

    def ended(self, left: list[Future[Any]], yielded: int, error: BaseException | None) -> None:
        call = self.call
        if isinstance(error, GeneratorExit):
            error = None
        timed_out = isinstance(error, TimeoutError)
        try:
            if left and call.span.is_recording():  # the last batch's futures never handed back
                self.traced -= _traced_count(left)
            call.link_contexts([context for position, context in self.contexts if position < yielded])
        except Exception as exc:
            telemetry_failed("span links", exc)
        call.traced = self.traced
        end = call.end({FUTURES_DONE: yielded, FUTURES_TIMED_OUT: timed_out}, error)
        self.steps.hand_over(yielded)
        if call.backend is not None:
            try:
                call.backend.waits.observe_as_completed(timed_out, end - call.start)
            except Exception as exc:
                telemetry_failed("as_completed metrics", exc)


_STEP_BATCH = 256
_STEP_FLUSH_NS = 1_000_000
_WAIT = _stdlib.choose("wait")
_AS_COMPLETED = _stdlib.choose("as_completed")


class _Steps:
    """How long each ``as_completed`` step blocked, for ``futures_as_completed_next_seconds``.

    A step whose future was already done did not block: it counts as 0 s without reading a clock. The steps
    that waited keep their durations. Both reach the histogram in batches (one lock per batch, not per future):
    every ``_STEP_BATCH`` steps, at once after a step that blocked over ``_STEP_FLUSH_NS``, and at the end.
    """

    __slots__ = ("backend", "handed", "waits")

    def __init__(self, backend: MetricsBackend | None) -> None:
        self.backend = backend
        self.handed = 0  # steps already in the histogram
        self.waits: list[int] = []  # durations of the steps since then that blocked

    def hand_over(self, steps: int) -> None:
        """Hand the first ``steps`` steps to the histogram."""
        waits, zeros = self.waits, steps - self.handed - len(self.waits)
        if self.backend is not None and (waits or zeros > 0):
            try:
                self.backend.waits.observe_as_completed_steps(waits, max(zeros, 0))
            except Exception as exc:
                telemetry_failed("as_completed metrics", exc)
        self.handed = steps
        self.waits = []
