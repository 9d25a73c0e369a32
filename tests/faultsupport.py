"""Importable helpers for the fault, exit and fork tests: tasks and initializers that worker processes find by
module name (gates shared through the pool's initializer, a task that kills its own worker, results that cannot
be pickled), and broken telemetry parts (exporters, span processors).

Kept apart from conftest.py so that spawned workers import this small module, not pytest's plugins.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

GATE_TIMEOUT = 30.0

# -- gates a worker process inherits through the initializer ---------------------------------------------------
_gates: tuple[Any, ...] = ()


def set_gates(*events: Any) -> None:
    global _gates
    _gates = events


def gated(value: Any) -> Any:
    """Wait for the first gate, then return ``value``."""
    _gates[0].wait(GATE_TIMEOUT)
    return value


def report_and_hold() -> None:
    """Tell the test which worker runs this task (on the queue that is the third gate), then block until the pool
    is torn down (or the timeout)."""
    _gates[2].put(os.getpid())
    _gates[1].wait(GATE_TIMEOUT)


def hold() -> None:
    """Block until the pool is torn down (or the timeout)."""
    _gates[1].wait(GATE_TIMEOUT)


def kill_own_worker() -> None:
    """Once the first gate opens, SIGKILL the worker process running this task."""
    _gates[0].wait(GATE_TIMEOUT)
    os.kill(os.getpid(), signal.SIGKILL)


def failing_initializer() -> None:
    raise RuntimeError("initializer failed")


def lock_result() -> Any:
    return threading.Lock()


def local_function_result() -> Any:
    def local() -> None:
        pass

    return local


def pid(_: object = None) -> int:
    return os.getpid()


def square(x: int) -> int:
    return x * x


# -- broken telemetry parts -------------------------------------------------------------------------------------
class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        raise RuntimeError("export is broken")


class HangingExporter(SpanExporter):
    """Every export blocks for 60 s, or until ``release`` is set (teardown, or the processor's shutdown)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(60)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class ClosedPortExporter(SpanExporter):
    """Stands in for an OTLP exporter when opentelemetry-exporter-otlp-proto-http is not installed: every export
    connects to a closed loopback port and fails."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout).close()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_exporter(timeout: float) -> tuple[SpanExporter, str]:
    """The real OTLP/HTTP exporter pointed at a closed port when installed, else ``ClosedPortExporter``."""
    port = closed_port()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return ClosedPortExporter(port, timeout), "closed-port socket exporter"
    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=timeout), "OTLPSpanExporter"


class BrokenProcessor(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise RuntimeError("on_start is broken")

    def on_end(self, span: Any) -> None:
        if self.where == "on_end":
            raise RuntimeError("on_end is broken")
