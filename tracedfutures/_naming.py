"""Names that become labels and span names: executor names, function names and error types.

Everything here is low-cardinality by construction: no value ever comes from task arguments or results.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import process as _process
from types import FunctionType, MethodType
from typing import Any

from tracedfutures._stdlib import run_chunk
from tracedfutures.package import _instruments_optional

#: The attribute that names a task's function on spans, on the OpenTelemetry metrics and on the timeline's slices: the
#: semantic conventions' ``code.function.name`` (until 0.1.0 ``code.function``, which they deprecated).
CODE_FUNCTION = "code.function.name"
#: What ProcessPoolExecutor.map (and its fallback) submit, partially applied to the function.
_CHUNK_RUNNERS = (getattr(_process, "_process_chunk", None), run_chunk)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}")
_AUTO_THREAD_PREFIX = re.compile(r"(?:Thread|Interpreter)PoolExecutor-\d+")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid executor name, else raise ``ValueError`` (at wrap time, never later)."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid executor name {name!r}: use 1 to 64 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or '_'"
        )
    return name


def executor_name(executor: Executor, name: str | None) -> str:
    """The ``executor`` label: ``name`` when given (``validate_name`` checked it where it was given), else the
    thread name prefix the user chose, else the class."""
    if name is not None:
        return name
    inner = getattr(executor, "_tf_life", None)  # a traced executor wrapped again keeps its name
    if inner is not None:
        return str(inner.name)
    if isinstance(executor, ThreadPoolExecutor):
        prefix = getattr(executor, "_thread_name_prefix", "")
        # The stdlib numbers executors that got no prefix ("ThreadPoolExecutor-3"): one series per executor
        # would be unbounded, so those fall back to the class name.
        if prefix and not _AUTO_THREAD_PREFIX.fullmatch(prefix) and _NAME.fullmatch(prefix):
            return str(prefix)
    cls = type(executor).__name__
    if cls.startswith("Traced") and cls.endswith("PoolExecutor"):
        cls = cls[len("Traced") :]
    return cls if _NAME.fullmatch(cls) else "executor"


def is_context_run(fn: Any) -> bool:
    """Whether ``fn`` is ``partial(context.run, func, ...)``, what ``asyncio.to_thread`` submits."""
    if not isinstance(fn, functools.partial) or not fn.args:
        return False
    run = fn.func
    return type(getattr(run, "__self__", None)) is contextvars.Context and getattr(run, "__name__", "") == "run"


def function_name(fn: Any) -> str:
    """The qualified name of the code a task runs, with ``functools.partial``, process-pool chunks (the stdlib's
    and loky's), ``asyncio.to_thread``'s ``Context.run`` and joblib's batches unwrapped."""
    while isinstance(fn, functools.partial):
        unwrap_first = fn.func in _CHUNK_RUNNERS or is_context_run(fn) or _is_loky_chunk(fn.func)
        fn = fn.args[0] if unwrap_first and fn.args else fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return clean(name)
    calls = joblib_calls(fn)
    if calls is not None:
        return function_name(calls[0][0])
    return clean(type(fn).__qualname__)


#: The most classes ``name_key`` remembers whether their instances are named by their class.
MAX_CLASSES = 1024
_class_keys: dict[type, bool] = {}


def name_key(fn: Any) -> Hashable | None:
    """A key that names ``fn`` as ``function_name`` does, cheap to take on every task: the ``__qualname__`` of a
    function, a method or anything else that has one (a partial's, a process-pool chunk's, ``asyncio.to_thread``'s
    unwrapped first), the class of a callable object named by its class; None for what must be named each time (a
    joblib batch, an object whose name is its own). ``function_name(fn)`` is ``clean(key)`` for a string key,
    ``clean(key.__qualname__)`` for a class; callers cache names by this key, so each callable is named once."""
    cls = type(fn)
    if cls is FunctionType or cls is MethodType:
        return fn.__qualname__  # type: ignore[no-any-return]
    if cls is functools.partial:
        inner = fn.func
        if type(inner) is FunctionType and inner not in _CHUNK_RUNNERS and inner.__name__ != "_process_chunk":
            return inner.__qualname__  # the usual partial: no chunk, no Context.run
        if fn.args and (inner in _CHUNK_RUNNERS or is_context_run(fn) or _is_loky_chunk(inner)):
            return name_key(fn.args[0])
        return name_key(inner)
    plain = _class_keys.get(cls)
    if plain is None:
        plain = _named_by_class(cls)
        if len(_class_keys) < MAX_CLASSES:
            _class_keys[cls] = plain
    if plain:
        own = getattr(fn, "__dict__", None)
        if own is None or "__qualname__" not in own:
            return cls  # type: ignore[return-value]  # classes are hashable
        return None
    name = getattr(fn, "__qualname__", None)
    return name if type(name) is str else None


def _named_by_class(cls: type) -> bool:
    """Whether instances of ``cls`` are named by their class: no ``__qualname__`` of the class's own, no attribute
    hook that could make one, no joblib batch."""
    if cls.__name__ == "BatchedCalls" and cls.__module__ == "joblib.parallel":
        return False
    if getattr(cls, "__getattribute__", None) is not object.__getattribute__:
        return False
    return not any("__qualname__" in vars(klass) or "__getattr__" in vars(klass) for klass in cls.__mro__)


def _is_loky_chunk(fn: Any) -> bool:
    """Whether ``fn`` is loky's ``_process_chunk`` (loky's, or joblib's copy): what its ``map`` submits."""
    return getattr(fn, "__name__", None) == "_process_chunk" and getattr(fn, "__module__", None) in _LOKY_MODULES


#: The modules of loky's process pool (loky's own and joblib's copy), from the table of what is instrumented.
_LOKY_MODULES = tuple(module for module, cls, kind, *_ in _instruments_optional if kind == "process")


def joblib_calls(fn: Any) -> list[tuple[Any, Any, Any]] | None:
    """The ``(function, args, kwargs)`` calls of a joblib batch (``joblib.parallel.BatchedCalls``, what
    ``joblib.Parallel`` submits to its loky executor: one task, several calls), else None."""
    cls = type(fn)
    if cls.__name__ != "BatchedCalls" or cls.__module__ != "joblib.parallel":
        return None
    calls = getattr(fn, "items", None)
    if isinstance(calls, list) and calls and isinstance(calls[0], tuple) and len(calls[0]) == 3:
        return calls
    return None


def error_type(cls: type[BaseException]) -> str:
    """The fully qualified class name of an exception (``builtins.`` left out, as users write it)."""
    module = cls.__module__
    if module == "builtins":
        return clean(cls.__qualname__)
    return clean(f"{module if isinstance(module, str) else ''}.{cls.__qualname__}")


#: The longest name kept whole in a label value or span name; longer ones are cut (and end with "...").
MAX_NAME_LENGTH = 256


def clean(name: str) -> str:
    """``name`` as any exporter and scraper can take it: at most ``MAX_NAME_LENGTH`` characters, and valid UTF-8
    (a lone surrogate, which a class or function name may hold, would make every scrape or export fail)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(name) > MAX_NAME_LENGTH:
        name = name[: MAX_NAME_LENGTH - 3] + "..."
    return name
