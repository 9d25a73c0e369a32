"""The state machine of a traced future and the one hook interface that spans and metrics both implement.

``TracedFuture`` is a real ``concurrent.futures.Future``. Its transition methods are the standard library's
(``_stdlib.FutureTransitions``) and tell the hooks about every transition, after the future's lock is released and
before done-callbacks run, so telemetry never runs under a lock a caller may be waiting on.
This module imports no telemetry vendor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, Future
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tracedfutures import _stdlib
from tracedfutures._state import state
from tracedfutures._wire import Envelope, take_remote_data

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext
    from typing_extensions import TypeVar as DefaultedTypeVar

    #: The result type of a ``TracedFuture``: ``Any`` where an annotation leaves it out (the hooks take any).
    T = DefaultedTypeVar("T", default=Any)
else:
    T = TypeVar("T")

_clock = time.time_ns
_get_ident = threading.get_ident

Kind = Literal["thread", "process", "interpreter", "other"]


class LifecycleHook(Protocol):
    """What a telemetry backend implements to hear about a task's transitions.

    A hook method never raises: telemetry that fails is lost (``_telemetry.telemetry_failed``), never the task.
    One that runs code of the user's (span processors, exporters) does so through ``_telemetry.run_telemetry``.
    One that records nothing is marked ``@not_listening``.
    """

    def on_submit(self, future: TracedFuture, fn: Any) -> None:
        """The task is being handed to the executor (``future.submitted_ns`` is set)."""

    def on_start(self, future: TracedFuture) -> None:
        """The future entered RUNNING in this process (``future.started_ns`` is set)."""

    def on_finish(self, future: TracedFuture) -> None:
        """The future finished or was cancelled (``future.finished_ns`` is set)."""

    def on_refused(self, future: TracedFuture, method: str) -> None:
        """``method`` was called in a state that does not allow it and raised as the stdlib does."""

    def on_retrieved(self, future: TracedFuture) -> None:
        """A caller read the result or exception of the FINISHED (not cancelled) future for the first time."""


_Method = TypeVar("_Method", bound=Callable[..., None])


def not_listening(method: _Method) -> _Method:
    """Marks a hook method that records nothing: the lifecycle never calls it, which costs a task nothing."""
    method._tf_not_listening = True  # type: ignore[attr-defined]
    return method


def _ignore(*args: Any) -> None:
    """A transition no hook listens to."""


def _dispatch(methods: tuple[Callable[..., None], ...]) -> Callable[..., None]:
    """One transition's hook methods, less those not listening, as one call: the method itself when there is one
    (no call in between)."""
    calls = tuple(m for m in methods if not getattr(m, "_tf_not_listening", False))
    if not calls:
        return _ignore
    if len(calls) == 1:
        return calls[0]
    if len(calls) == 2:  # the usual pair (metrics and running tasks): no loop
        first, second = calls

        def both(*args: Any) -> None:
            first(*args)
            second(*args)

        return both
    if len(calls) == 3:  # metrics, spans and the timeline under ``tracedfutures record``: no loop either
        first, second, third = calls

        def three(*args: Any) -> None:
            first(*args)
            second(*args)
            third(*args)

        return three

    def each(*args: Any) -> None:
        for call in calls:
            call(*args)

    return each


class Table(Protocol):
    """An executor's table of running tasks (``_running.RunningTasks``)."""

    @property
    def tasks(self) -> dict[TracedFuture, int]: ...


class Lifecycle:
    """One executor's view of its tasks: its name, kind, the tasks running now and, for each transition, the hooks
    that record it."""

    __slots__ = (
        "board", "here", "kind", "name", "on_finish", "on_refused", "on_retrieved", "on_start", "on_submit", "remote",
        "table", "tasks",
    )  # fmt: skip

    def __init__(self, name: str, kind: Kind, hooks: tuple[LifecycleHook, ...], remote: bool, table: Table) -> None:
        self.name = name
        self.kind: Kind = kind
        # Remote tasks run their callable elsewhere: the real start and worker data come back with the outcome.
        self.remote = remote
        # Thread and interpreter pools start a task in the worker thread that runs it: where it runs is known then.
        self.here = kind in ("thread", "interpreter")
        # The executor's table of running tasks (``_running.RunningTasks``), which lives as long as its lifecycle,
        # and its ``tasks``: the future of each task running now and its start in unix ns. The transitions add and
        # remove them (single dict operations: atomic with the GIL and locked per dict without it).
        self.table = table
        self.tasks = table.tasks
        # A process pool's shared board where its workers say which task runs now ("": none, see _start_board).
        self.board = ""
        self.on_submit = _dispatch(tuple(hook.on_submit for hook in hooks))
        self.on_start = _dispatch(tuple(hook.on_start for hook in hooks))
        self.on_finish = _dispatch(tuple(hook.on_finish for hook in hooks))
        self.on_refused = _dispatch(tuple(hook.on_refused for hook in hooks))
        self.on_retrieved = _dispatch(tuple(hook.on_retrieved for hook in hooks))

    def started(self, future: TracedFuture) -> None:
        """The future entered RUNNING in this process: it runs now (the transitions' copies do this inline)."""
        if self.remote:
            started = future.started_ns or _clock()
        else:
            started = future.started_ns = _clock()
        self.tasks[future] = started
        if self.here:
            future._tf_ran_on = (state.pid, _get_ident(), None)
        self.on_start(future)

    def ended(self, future: TracedFuture) -> None:
        """The future finished or was cancelled: it runs no more, and its function is let go."""
        self.tasks.pop(future, None)
        future._tf_fn = None
        self.on_finish(future)


if TYPE_CHECKING:  # the transitions are ``Future``'s own methods: TracedFuture is typed as a Future with its fields

    class _Transitions:
        def _settle(self, method: str, result: Any, exception: BaseException | None, data: Any) -> None: ...
        def _claim_read(self) -> bool: ...

else:  # the version-keyed copy of the stdlib's transition bodies (``_stdlib``)
    _Transitions = _stdlib.choose("future transitions")


#: The base ``__init__`` of a TracedFuture, called directly: the fallback's (which registers its done-callback) or
#: the stdlib's.
_future_init: Callable[[Any], None] = vars(_Transitions).get("__init__", Future.__init__)


class TracedFuture(_Transitions, Future[T]):
    """A ``concurrent.futures.Future`` that reports its transitions to the hooks of the executor that made it.

    Generic as ``Future`` is: ``TracedFuture[int]`` is the future of a task that returns an ``int``.
    """

    __slots__ = (
        "_tf_caller",
        "_tf_context",
        "_tf_cpu",
        "_tf_fn",
        "_tf_function",
        "_tf_life",
        "_tf_ran_for",
        "_tf_ran_on",
        "_tf_read",
        "_tf_span",
        "_tf_unretrieved",
        "_tf_worker",
        "finished_ns",
        "ran",
        "started_ns",
        "submitted_ns",
    )

    def __init__(self, life: Lifecycle | None = None, fn: Any = None) -> None:
        """A future of ``life``'s executor for a task that calls ``fn``, submitted now (None: outside an executor,
        or the SDK's own work, which tells no lifecycle)."""
        _future_init(self)
        self._tf_life = life
        self._tf_worker: Any = None  # what else came home from a worker process (its spans), for the span hook
        self._tf_span: Span | None = None
        # What a thread pool's task runs in, when a context must travel: the caller's, with the task span current.
        self._tf_caller: Context | None = None
        self._tf_context: SpanContext | None = None  # kept after the span ends, for links from wait spans
        self._tf_fn: Any = fn  # the function of a queued or running task, to name it (see ``_running``)
        self._tf_function = ""  # its capped ``function`` label, set by the metrics side at submit
        # Where the task ran, once known: (process id, thread id, thread name or None: named on that thread), see
        # ``_running``.
        self._tf_ran_on: tuple[int, int, str | None] | None = None
        self._tf_ran_for = -1  # ns the callable of a task run elsewhere ran there, by the worker's clock (-1: not)
        self._tf_cpu = -1  # the CPU ns it used on its worker's thread, for a task run elsewhere (-1: not known)
        self.submitted_ns = _clock() if life is not None else 0
        self.started_ns = 0
        self.finished_ns = 0
        # True once the future entered RUNNING in this process: tells "left the queue" from "ended after start".
        self.ran = False
        self._tf_read = False  # a caller has read the result or exception
        self._tf_unretrieved: Any = None  # the metrics side's finalizer for an exception nobody reads

    if TYPE_CHECKING:  # the stdlib's reads, from ``_stdlib``: the first one is timed (result lag) and clears the
        # "unretrieved exception" mark

        def result(self, timeout: float | None = None) -> T: ...
        def exception(self, timeout: float | None = None) -> BaseException | None: ...

    # -- helpers for the hooks ----------------------------------------------------------------------------------
    @property
    def lifecycle(self) -> Lifecycle | None:
        """The executor lifecycle this future reports to, or None for a future made outside an executor."""
        return self._tf_life

    @property
    def outcome(self) -> Literal["success", "error", "cancelled", "pending"]:
        state = self._state
        if state == FINISHED:
            return "error" if self._exception is not None else "success"
        if state in (CANCELLED, CANCELLED_AND_NOTIFIED):
            return "cancelled"
        return "pending"

    def _refused(self, method: str) -> None:
        life = self._tf_life
        if life is not None:
            life.on_refused(self, method)

    def _retrieved(self) -> None:
        if not self._claim_read():  # exactly one first read, also when threads read at once without a GIL
            return
        life = self._tf_life
        if life is not None:
            life.on_retrieved(self)

    def _accept_remote(self, life: Lifecycle, data: Any) -> None:
        """Take the worker's data that travelled back with the outcome (see ``_wire.Envelope``)."""
        if life.remote:
            self.started_ns = data[0]
            self._tf_ran_for = data[1] - data[0]
            if self._tf_ran_on is None:  # an interpreter pool's worker thread said so when the task started
                self._tf_ran_on = data[2]
            if len(data) > 3:  # the CPU ns the task used on its worker thread
                self._tf_cpu = data[3]
            if len(data) > 4:  # the spans the task finished in the worker, and how many were dropped
                self._tf_worker = data[4:]

    # -- the transitions: the stdlib's, from ``_stdlib`` (see ``FutureTransitions``) ---------------------------------
    def set_result(self, result: Any) -> None:
        data = None
        if type(result) is Envelope:
            data, result = result.data, result.value
        self._settle("set_result", result, None, data)

    def set_exception(self, exception: BaseException | None) -> None:
        data = None
        life = self._tf_life
        if life is not None and life.remote:
            data = take_remote_data(exception)
        self._settle("set_exception", None, exception, data)

    if hasattr(Future, "_get_snapshot"):  # 3.15: how asyncio.wrap_future copies a finished future's state

        def _get_snapshot(self) -> tuple[bool, bool, Any, BaseException | None]:
            try:
                return Future._get_snapshot(self)  # type: ignore[attr-defined,no-any-return]
            finally:
                if not self._tf_read:
                    self._retrieved()
