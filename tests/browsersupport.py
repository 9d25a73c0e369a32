"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no port, no
websocket library, nothing but Debian's ``chromium``.

``Page.open(path)`` loads a local file in a fresh browser (its own profile in a temporary directory, the flags a
closed network needs) and records what a test asserts on: every console error and uncaught exception, and every
request the page made. ``evaluate`` runs an expression in the page; ``screenshot`` writes a PNG of the whole page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

#: The flags of the issue's closed network, and a profile that touches nothing outside its directory.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--remote-debugging-pipe",
)
TIMEOUT = 60.0


def chromium() -> str | None:
    """The Chromium binary on PATH (Debian's ``chromium``), None when there is none."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _above_9(fd: int) -> int:
    """``fd`` moved to a descriptor number above 9 (closed on exec, as ``os.pipe`` makes them)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class PageError(AssertionError):
    """The browser did not answer, or answered a call with an error."""


class Page:
    """One page of a headless Chromium, over the DevTools protocol (a context manager: it stops the browser)."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        binary = chromium()
        if binary is None:
            raise PageError("no chromium on PATH (Debian: apt-get install chromium)")
        self.profile = tempfile.TemporaryDirectory(prefix="tf-chromium-")
        # Chromium reads commands from fd 3 and writes answers to fd 4: bash puts the pipes there (from fds above
        # 9, which the redirections cannot clobber).
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        commands_read, answers_write = _above_9(commands_read), _above_9(answers_write)
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$@" 3<&{commands_read} 4>&{answers_write} {commands_read}<&- {answers_write}>&-',
                "bash",
                binary,
                *FLAGS,
                f"--user-data-dir={self.profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(commands_read, answers_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._answered: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._answer_ready = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="chromium-devtools", daemon=True)
        self._reader.start()
        #: Console errors and uncaught exceptions, as text.
        self.errors: list[str] = []
        #: Every request the page made (its url).
        self.requests: list[str] = []
        self.loaded = False
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=self.session,
        )

    # -- the protocol ------------------------------------------------------------------------------------------
    def _read(self) -> None:
        buffered = b""
        while True:
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                break
            buffered += chunk
            *messages, buffered = buffered.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._answer_ready:
                        self._answered[message["id"]] = message
                        self._answer_ready.notify_all()
                else:
                    self._events.put(message)
        with self._answer_ready:
            self._answer_ready.notify_all()

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and return its result (``PageError`` on an error or no answer in time)."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        with self._answer_ready:
            while ident not in self._answered:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise PageError(f"chromium gave no answer to {method}")
                self._answer_ready.wait(left)
            answer = self._answered.pop(ident)
        if "error" in answer:
            raise PageError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _drain(self, timeout: float) -> None:
        """Take in the events that arrive until none comes for ``timeout`` seconds."""
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                return
            self._seen(event)

    def _seen(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(str(details.get("exception", {}).get("description", details.get("text"))))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loaded = True

    # -- what tests use -----------------------------------------------------------------------------------------
    def open(self, path: Path, ready: str = "document.body.dataset.ready === 'true'") -> float:
        """Load ``path`` and wait for its load event and for ``ready`` to be true; the seconds that took."""
        began = time.monotonic()
        self.loaded = False
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session=self.session)
        deadline = began + TIMEOUT
        while not self.loaded:
            if time.monotonic() > deadline:
                raise PageError(f"{path} did not load in {TIMEOUT} s")
            with contextlib.suppress(queue.Empty):
                self._seen(self._events.get(timeout=0.1))
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise PageError(f"{path}: {ready} still false after {TIMEOUT} s; errors: {self.errors}")
            time.sleep(0.05)
        took = time.monotonic() - began
        self.settle()
        return took

    def settle(self, quiet: float = 0.3) -> None:
        """Take in what the page logs or requests until ``quiet`` seconds pass with nothing new."""
        self._drain(quiet)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (``PageError`` when it throws)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=self.session)
        if "exceptionDetails" in result:
            raise PageError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wheel(self, x: float, y: float, delta_y: float, *, shift: bool = False) -> None:
        """Turn the mouse wheel at (``x``, ``y``) of the viewport (negative ``delta_y``: away from the user)."""
        self.call(
            "Input.dispatchMouseEvent",
            {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": delta_y, "modifiers": 8 if shift else 0},
            session=self.session,
        )

    def move(self, x: float, y: float) -> None:
        """Move the mouse to (``x``, ``y``) of the viewport."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=self.session)

    def double_click(self, x: float, y: float) -> None:
        """Double-click the left button at (``x``, ``y``) of the viewport."""
        for clicks in (1, 2):
            for kind in ("mousePressed", "mouseReleased"):
                self.call(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": x, "y": y, "button": "left", "clickCount": clicks},
                    session=self.session,
                )

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the viewport) at ``path``."""
        size = self.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=self.session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        with contextlib.suppress(PageError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        self._reader.join(timeout=5)
        os.close(self._answers)
        self.profile.cleanup()

    def __enter__(self) -> Page:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def table(page: Page, table_id: str) -> list[dict[str, str]]:
    """The rows of a table of the page, each as {column title: cell text}."""
    rows: list[dict[str, str]] = page.evaluate(
        f"""(() => {{
            const t = document.getElementById({json.dumps(table_id)});
            const heads = [...t.tHead.rows[0].cells].map((c) => c.textContent);
            const row = (r) => Object.fromEntries([...r.cells].map((c, i) => [heads[i], c.textContent]));
            return [...t.tBodies[0].rows].map(row);
        }})()"""
    )
    return rows
