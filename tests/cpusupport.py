"""Tasks for the worker CPU tests, importable in a worker process or a subinterpreter: nothing but the standard
library (a subinterpreter imports this by name, see ``importable``)."""

from __future__ import annotations

import time


def importable(path: str) -> None:
    """A pool initializer that uses no globals (so an interpreter pool shares it without pickling): this module
    becomes importable in each new interpreter."""
    import sys

    sys.path.insert(0, path)


def spin(loops: int) -> int:
    """Pure-Python work: holds the GIL of its interpreter the whole time."""
    total = 0
    for i in range(loops):
        total += i
    return total


def nap(seconds: float) -> float:
    """A task that waits: it uses next to no CPU."""
    time.sleep(seconds)
    return seconds
