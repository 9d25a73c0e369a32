"""The ``tracedfutures`` command as the command-line tests run it: ``python -m tracedfutures ARGS``, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tracedfutures(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tracedfutures ARGS`` in ``cwd`` (not the repository root, so the installed package runs), with
    no standard input, the environment with ``env`` added; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tracedfutures", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
