"""``wait`` and ``as_completed``: the standard library's own functions, timed and traced.

They accept any futures (traced or not), return exactly what the standard library returns and raise exactly
what it raises; a span per call links to the task spans of the futures handed back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future
from concurrent.futures import _base as _stdlib
from typing import Any, TypeVar, cast

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
# The functions themselves, not the module attributes the instrumentor replaces.
_stdlib_wait = _stdlib.wait
_stdlib_as_completed = _stdlib.as_completed


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
                self.link_one(future)
                if self.links >= MAX_LINKS:
                    break
            # Past the cap the rest are only counted, for futures.links_dropped.
            self.traced += sum(1 for f in remaining if getattr(f, "_tf_context", None) is not None)
        except Exception as exc:
            telemetry_failed("span links", exc)

    def link_one(self, future: Any) -> None:
        """Link one future's task span while there is room; past ``MAX_LINKS`` only count it (no span call)."""
        if getattr(future, "_tf_context", None) is not None:
            self.traced += 1
            if self.links < MAX_LINKS and link_task_span(self.span, future):
                self.links += 1

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

    Lazy like the stdlib's: nothing happens until the first ``next()``.
    """
    fs = set(fs)
    attributes: dict[str, Any] = {FUTURES_COUNT: len(fs)}
    _timeout_attribute(attributes, timeout)
    call = _Call(AS_COMPLETED_SPAN, attributes)
    inner = cast(Generator[Future[T], None, None], _stdlib_as_completed(fs, timeout))
    del fs  # the stdlib's generator drops each future it yields from its own set; this one must not keep them
    yielded = 0
    timed_out = False
    error: BaseException | None = None
    recording = call.span.is_recording()
    # Each step's blocked time, handed to the histogram in batches (one lock per batch, not per future): at the
    # end, every _STEP_BATCH steps, and after a step that blocked over _STEP_FLUSH_NS (slow iterations show at once).
    steps: list[int] = []
    handoff: list[Future[T]] = []  # one list for every step: no allocation per future
    try:
        while True:
            before = _clock()
            try:
                future = next(inner)
            except StopIteration:
                break
            blocked = _clock() - before
            steps.append(blocked)
            if blocked > _STEP_FLUSH_NS or len(steps) >= _STEP_BATCH:
                _observe_steps(call, steps)
            yielded += 1
            if recording:
                try:
                    call.link_one(future)
                except Exception as exc:
                    recording = False
                    telemetry_failed("span links", exc)
            handoff.append(future)
            del future  # nor keep the yielded one while suspended (bpo-14406), as the stdlib takes care not to
            yield handoff.pop()
    except _stdlib.TimeoutError as exc:  # the builtin from 3.11, its own class on 3.10
        timed_out, error = True, exc
        raise
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        inner.close()
        end = call.end({FUTURES_DONE: yielded, FUTURES_TIMED_OUT: timed_out}, error)
        _observe_steps(call, steps)
        if call.collector is not None:
            try:
                call.collector.waits.observe_as_completed(timed_out, end - call.start)
            except Exception as exc:
                telemetry_failed("as_completed metrics", exc)


_STEP_BATCH = 256
_STEP_FLUSH_NS = 1_000_000


def _observe_steps(call: _Call, steps: list[int]) -> None:
    """Hand the collected ``as_completed`` step durations to the histogram and empty ``steps``."""
    if call.collector is not None and steps:
        try:
            call.collector.waits.observe_as_completed_steps(steps)
        except Exception as exc:
            telemetry_failed("as_completed metrics", exc)
    steps.clear()
