"""Single keys from the terminal, for ``tracedfutures top``: the terminal in cbreak mode (each key read as it is
typed, not echoed; Ctrl-C still interrupts) while the ``Keyboard`` is open, and put back as it was when it closes,
also on an exception. Standard input that is not a terminal gives no keys (the view then ends on Ctrl-C alone).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from types import TracebackType
from typing import Any


class Keyboard:
    """A context manager: ``wait(seconds)`` returns the keys typed within that time (at the first one)."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> Keyboard:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def wait(self, seconds: float) -> str:
        """The keys typed before ``seconds`` pass: returns as soon as there are any ("" when none came)."""
        if self._saved is None:
            time.sleep(seconds)
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(seconds, 0.0))
        if not ready:
            return ""
        return os.read(self.fd, 64).decode(errors="replace")
