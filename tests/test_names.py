"""Executor names: validated when the executor is made, defaults taken from what the user chose, and one
series per name whoever feeds it."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Telemetry
from support import UserExecutor, square

import tracedfutures

TIMEOUT = 30
BAD_NAMES = ["", "1abc", "a b", "a" * 65, 'a"b', "a\nb", "a{b}", "é", 5]
GOOD_NAMES = ["a", "_", "a" * 64, "svc.io:pool-1_x", "A9"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("make", ["thread", "process", "traced"])
def test_invalid_name_raises_at_construction(telemetry: Telemetry, make: str, name: Any) -> None:
    stock = ThreadPoolExecutor(1)
    with pytest.raises(ValueError, match="invalid executor name"):
        if make == "thread":
            tracedfutures.TracedThreadPoolExecutor(1, name=name)
        elif make == "process":
            tracedfutures.TracedProcessPoolExecutor(1, name=name)
        else:
            tracedfutures.traced(stock, name)
    stock.shutdown()
    assert telemetry.series("executor_max_workers") == {}  # nothing was registered for it


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names(telemetry: Telemetry, name: str) -> None:
    executor = telemetry.executor("wrapped", name=name)
    assert executor.name == name  # type: ignore[attr-defined]
    assert executor.submit(square, 2).result(TIMEOUT) == 4
    executor.shutdown()
    assert telemetry.value("executor_tasks_submitted_total", executor=name) == 1
    assert [s.name for s in telemetry.spans()] == [f"{name} square"]


class MyPool(tracedfutures.TracedThreadPoolExecutor):
    pass


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: tracedfutures.TracedThreadPoolExecutor(1, thread_name_prefix="io", **t), "io"),
        (lambda t: tracedfutures.TracedThreadPoolExecutor(1, **t), "ThreadPoolExecutor"),
        (lambda t: tracedfutures.traced(ThreadPoolExecutor(1), **t), "ThreadPoolExecutor"),
        # asyncio's default executor is ThreadPoolExecutor(thread_name_prefix='asyncio')
        (lambda t: tracedfutures.traced(ThreadPoolExecutor(thread_name_prefix="asyncio"), **t), "asyncio"),
        (
            lambda t: tracedfutures.traced(ThreadPoolExecutor(1, thread_name_prefix="my pool"), **t),
            "ThreadPoolExecutor",
        ),
        (
            lambda t: tracedfutures.traced(
                ThreadPoolExecutor(1, thread_name_prefix="ThreadPoolExecutor-7"), **t
            ),
            "ThreadPoolExecutor",
        ),
        (lambda t: MyPool(1, **t), "MyPool"),
        (lambda t: tracedfutures.traced(UserExecutor(1), **t), "UserExecutor"),
        (
            lambda t: tracedfutures.TracedProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("fork"), **t
            ),
            "ProcessPoolExecutor",
        ),
    ],
    ids=[
        "prefix",
        "traced-class",
        "stock",
        "asyncio",
        "bad-prefix",
        "auto-prefix",
        "subclass",
        "user",
        "process",
    ],
)
def test_default_names(telemetry: Telemetry, make: Any, expected: str) -> None:
    executor = make({"tracer_provider": telemetry.provider, "registry": telemetry.registry})
    telemetry.executors.append(executor)
    assert executor.submit(square, 3).result(TIMEOUT) == 9
    executor.shutdown()
    (span,) = telemetry.spans()
    assert span.name == f"{expected} square"
    assert span.attributes["executor.name"] == expected  # type: ignore[index]
    assert telemetry.value("executor_tasks_submitted_total", executor=expected) == 1


def test_wrapping_twice_with_one_name_feeds_one_series(telemetry: Telemetry) -> None:
    stock = ThreadPoolExecutor(2)
    options: Any = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    first = tracedfutures.traced(stock, "svc", **options)
    second = tracedfutures.traced(stock, "svc", **options)
    assert telemetry.value("executor_max_workers", executor="svc") == 2  # one executor of two workers
    assert first.submit(square, 1).result(TIMEOUT) == 1
    assert second.submit(square, 2).result(TIMEOUT) == 4
    first.shutdown()
    second.shutdown()
    assert telemetry.value("executor_tasks_submitted_total", executor="svc") == 2
    assert telemetry.value("executor_max_workers", executor="svc") == 0
    assert [s.name for s in telemetry.spans()] == ["svc square", "svc square"]


def test_traced_of_traced_unwraps(telemetry: Telemetry) -> None:
    stock = ThreadPoolExecutor(1)
    options: Any = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    inner = tracedfutures.traced(stock, "inner", **options)
    outer = tracedfutures.traced(inner, "outer", **options)
    assert outer.executor is stock
    assert outer.submit(square, 2).result(TIMEOUT) == 4
    outer.shutdown()
    assert [s.name for s in telemetry.spans()] == ["outer square"]  # one span per task, not one per wrapper


@pytest.mark.parametrize("make", ["subclass", "traced"])
def test_traced_of_traced_keeps_the_inner_name(telemetry: Telemetry, make: str) -> None:
    options: Any = {"tracer_provider": telemetry.provider, "registry": telemetry.registry}
    if make == "subclass":
        inner: Any = tracedfutures.TracedThreadPoolExecutor(1, name="inner", **options)
    else:
        inner = tracedfutures.traced(ThreadPoolExecutor(1), "inner", **options)
    outer = tracedfutures.traced(inner, **options)
    assert outer.name == "inner"
    assert outer.submit(square, 2).result(TIMEOUT) == 4
    outer.shutdown()
    inner.shutdown()
    assert [s.name for s in telemetry.spans()] == ["inner square"]


def test_traced_needs_an_executor() -> None:
    with pytest.raises(TypeError, match=r"^traced\(\) needs a concurrent\.futures\.Executor, got int$"):
        tracedfutures.traced(5)  # type: ignore[arg-type]


class _Named:
    """A callable object named by its class, and one that carries a ``__qualname__`` of its own."""

    def method(self) -> None:
        """A bound method's task."""

    def __call__(self) -> None:
        """A callable object's task."""


def _own_name() -> _Named:
    named = _Named()
    named.__qualname__ = "own.name"  # type: ignore[attr-defined]
    return named


def test_name_key_names_as_function_name() -> None:
    """Names are cached by ``name_key``: every callable with a key is named by it exactly as ``function_name``
    names the callable itself, and two callables with one key have one name."""
    import functools

    from tracedfutures._naming import clean, function_name, name_key

    callables: list[Any] = [
        square, lambda: None, _Named().method, _Named(), _Named, functools.partial(square, 2),
        functools.partial(_Named().method), functools.partial(functools.partial(_Named()), 1), print, _own_name(),
    ]  # fmt: skip
    for fn in callables:
        key = name_key(fn)
        if key is None:
            continue
        named_by_key = clean(key) if isinstance(key, str) else clean(key.__qualname__)  # type: ignore[attr-defined]
        assert named_by_key == function_name(fn), fn
    assert name_key(_own_name()) is None  # its own name, not its class's: named each time
    assert name_key(functools.partial(square, 3)) == name_key(square)
