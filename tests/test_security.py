"""Bad input fails where it is given (or exactly as the stdlib fails), never when a task runs; cardinality is
bounded whatever the tasks do; no task argument, result or exception message reaches a label or a span
attribute (and messages can be kept out of spans altogether); /metrics binds to loopback by default; label
values are escaped so that promtool accepts the exposition of hostile exception class names."""

from __future__ import annotations

import math
import multiprocessing
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Telemetry, outcome_of
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from support import UserExecutor, square

import tracedfutures
from tracedfutures import _config, _naming, metrics, spans
from tracedfutures._state import state

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
TIMEOUT = 30


# -- bad input: at configuration time, or the stdlib's own error ---------------------------------------------------
def stock_and_traced(kind: str, telemetry: Telemetry) -> Iterator[tuple[str, Any]]:
    stock: Any = {"thread": ThreadPoolExecutor(1), "user": UserExecutor(1)}.get(kind) or ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork")
    )
    yield "stock", stock
    yield "traced", telemetry.executor(kind if kind != "process" else "fork")
    stock.shutdown()


def normalized(outcome: tuple[str, Any]) -> tuple[str, Any]:
    """An outcome with executor class names taken out of error messages (``TracedThreadPoolExecutor.submit()``
    names its class where the stdlib names its own)."""
    kind, value = outcome
    if kind == "raised":
        cls, args = value
        args = tuple(
            a.replace("TracedThreadPoolExecutor", "X").replace("TracedProcessPoolExecutor", "X")
            .replace("ThreadPoolExecutor", "X").replace("ProcessPoolExecutor", "X").replace("TracedExecutor", "X")
            .replace("UserExecutor", "X")
            if isinstance(a, str) else a
            for a in args
        )  # fmt: skip
        value = (cls, args)
    return kind, value


def done_future(executor: Any) -> Any:
    future = executor.submit(square, 2)
    future.result(TIMEOUT)
    return future


CALLS: dict[str, Callable[[Any], Any]] = {
    "non-callable int": lambda ex: ex.submit(5).result(TIMEOUT),
    "non-callable None": lambda ex: ex.submit(None).result(TIMEOUT),
    "non-callable str": lambda ex: ex.submit("square").result(TIMEOUT),
    "no callable": lambda ex: ex.submit(),
    "callable by keyword": lambda ex: ex.submit(fn=square),
    "wrong arguments": lambda ex: ex.submit(square, 1, 2).result(TIMEOUT),
    "map non-iterable": lambda ex: list(ex.map(square, 5)),
    "map bad timeout": lambda ex: list(ex.map(square, [1], timeout="soon")),
    "map chunksize 0": lambda ex: list(ex.map(square, [1], chunksize=0)),
    "result bad timeout, done": lambda ex: done_future(ex).result(timeout="soon"),
    "exception bad timeout, done": lambda ex: done_future(ex).exception(timeout="soon"),
    "shutdown bad keyword": lambda ex: ex.shutdown(wait=True, now=True),
}


@pytest.mark.parametrize("kind", ["thread", "user", "process"])
def test_bad_calls_fail_as_the_stdlib(telemetry: Telemetry, kind: str) -> None:
    seen = {name: [] for name in CALLS}  # type: dict[str, list[Any]]
    for _, executor in stock_and_traced(kind, telemetry):
        for name, call in CALLS.items():
            seen[name].append(normalized(outcome_of(lambda call=call, executor=executor: call(executor))))
        executor.shutdown()
    for name, (stock, traced) in seen.items():
        if kind == "process" and name == "map chunksize 0":
            assert stock == traced, name
        elif kind != "process" and name == "map chunksize 0":
            assert stock[0] == traced[0] == "ok", name  # chunksize is ignored outside process pools
        else:
            assert traced == stock, name
    # Whatever was refused at call time left no half-counted task behind.
    completed = sum(telemetry.series("executor_tasks_ended_total").values())
    assert telemetry.value("executor_tasks_submitted_total", executor="pool") == completed
    assert telemetry.value("executor_tasks_queued", executor="pool") == 0


@pytest.mark.parametrize("timeout", ["soon", [], 1j, -1, float("nan"), 10**400, True])
def test_wait_and_as_completed_take_any_timeout_the_stdlib_takes(telemetry: Telemetry, timeout: Any) -> None:
    import concurrent.futures as cf

    done: cf.Future[int] = cf.Future()
    done.set_result(1)
    for function in ("wait", "as_completed"):
        stock = outcome_of(lambda f=function: list(getattr(cf, f)([done], timeout=timeout)))
        traced = outcome_of(lambda f=function: list(getattr(tracedfutures, f)([done], timeout=timeout)))
        assert traced == stock, function


BAD_BUCKETS: list[Any] = [
    [], [0], [-1.0], [math.nan], [math.inf], [2, 1], [1, 1], ["a"], [None], [1j], "abc", b"\x01", 5, None.__class__,
]  # fmt: skip


@pytest.mark.parametrize("buckets", BAD_BUCKETS, ids=repr)
def test_bad_buckets_raise_value_error_at_configure(telemetry: Telemetry, buckets: Any) -> None:
    before = _config.defaults()
    with pytest.raises(ValueError, match="buckets"):
        tracedfutures.configure(buckets=buckets)
    assert _config.defaults() == before  # a refused configure() changes nothing


@pytest.mark.parametrize(
    "options",
    [
        {"registry": "REGISTRY"},
        {"registry": object()},
        {"tracer_provider": "provider"},
        {"tracer_provider": object()},
        {"record_exception_messages": "no"},
        {"record_exception_messages": None},
    ],
    ids=repr,
)
def test_bad_options_raise_type_error_where_given(telemetry: Telemetry, options: dict[str, Any]) -> None:
    before = _config.defaults()
    with pytest.raises(TypeError):
        tracedfutures.configure(**options)
    assert _config.defaults() == before
    if "record_exception_messages" in options:
        return
    with pytest.raises(TypeError):
        tracedfutures.TracedThreadPoolExecutor(1, **options)
    with pytest.raises(TypeError):
        tracedfutures.TracedProcessPoolExecutor(1, **options)
    stock = ThreadPoolExecutor(1)
    with pytest.raises(TypeError):
        tracedfutures.traced(stock, **options)
    stock.shutdown()


@pytest.mark.parametrize("prefix", ['a"b', "a\nb", "x" * 100, "", "é", "a}b"])
def test_hostile_thread_name_prefix_is_never_a_label(telemetry: Telemetry, prefix: str) -> None:
    stock = ThreadPoolExecutor(1, thread_name_prefix=prefix)
    expected_thread = stock.submit(lambda: __import__("threading").current_thread().name).result(TIMEOUT)
    stock.shutdown()
    executor = tracedfutures.TracedThreadPoolExecutor(
        1, thread_name_prefix=prefix, tracer_provider=telemetry.provider, registry=telemetry.registry
    )
    thread = executor.submit(lambda: __import__("threading").current_thread().name).result(TIMEOUT)
    executor.shutdown()
    digits = str.maketrans("", "", "0123456789")  # the stdlib numbers unnamed executors and their threads
    assert thread.translate(digits) == expected_thread.translate(digits)  # thread names unchanged
    names = {dict(k)["executor"] for k in telemetry.series("executor_tasks_submitted_total")}
    assert names == {"ThreadPoolExecutor"}


BAD_OTEL: list[dict[str, str]] = [
    {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
    {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
    {"OTEL_EXPORTER_OTLP_TIMEOUT": "ten"},
    {"OTEL_EXPORTER_OTLP_TIMEOUT": "-1"},
    {"OTEL_TRACES_SAMPLER": "sometimes"},
    {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
    {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
    {"OTEL_BSP_MAX_QUEUE_SIZE": "-5"},
    {"OTEL_BSP_SCHEDULE_DELAY": "soon"},
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"},
    {"OTEL_EXPORTER_OTLP_HEADERS": "=broken,,=="},
    {"OTEL_RESOURCE_ATTRIBUTES": "=,=,"},
]


@pytest.mark.skipif(not hasattr(tracedfutures, "setup_tracing"), reason="setup_tracing not in this version")
@pytest.mark.parametrize("environment", BAD_OTEL, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_bad_otel_settings_fail_at_setup_or_never(
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    environment: dict[str, str],
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from faultsupport import closed_port

    # Where nothing listens, and quick to give up: what an accepted setting leads to is seen at once.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    try:
        provider = tracedfutures.setup_tracing("svc", set_global=False)  # type: ignore[attr-defined]
    except (ValueError, TypeError, RuntimeError) as exc:
        assert str(exc)  # a clear error, at set-up
        return
    try:  # accepted: then the tasks run exactly as without telemetry
        executor = tracedfutures.TracedThreadPoolExecutor(2, tracer_provider=provider, registry=telemetry.registry)
        assert [f.result(TIMEOUT) for f in [executor.submit(square, i) for i in range(20)]] == [
            i * i for i in range(20)
        ]
        assert outcome_of(lambda: executor.submit(int, "x").result(TIMEOUT))[0] == "raised"
        executor.shutdown()
        assert capfd.readouterr().out == ""
    finally:
        provider.shutdown()


# -- bounded cardinality --------------------------------------------------------------------------------------------
def exposition_samples(registry: CollectorRegistry) -> int:
    return sum(len(family.samples) for family in registry.collect())


def test_10000_exception_classes_and_function_names_give_bounded_series(telemetry: Telemetry) -> None:
    executor = telemetry.executor("thread", max_workers=4)
    before_errors = exposition_samples(telemetry.registry)

    def raiser(cls: type[BaseException]) -> Callable[[], None]:
        def task() -> None:
            raise cls("message")

        return task

    errors = [type(f"Error{i}", (Exception,), {"__module__": f"generated.m{i}"}) for i in range(10_000)]
    futures = [executor.submit(raiser(cls)) for cls in errors]
    tracedfutures.wait(futures, timeout=TIMEOUT)
    del futures  # unread exceptions are counted as unretrieved when collected: bounded the same way
    after_errors = exposition_samples(telemetry.registry)

    functions = []
    for i in range(10_000):
        def task(x: int) -> int:
            return x

        task.__qualname__ = task.__name__ = f"task_{i}"
        functions.append(task)
    futures = [executor.submit(fn, i) for i, fn in enumerate(functions)]
    tracedfutures.wait(futures, timeout=TIMEOUT)
    after_functions = exposition_samples(telemetry.registry)
    executor.shutdown()

    completed = telemetry.series("executor_tasks_completed_total", "function")
    assert len(completed) == 1 + metrics.MAX_ERROR_TYPES + 1  # success, 20 types, other
    assert completed[frozenset({("executor", "pool"), ("outcome", "error"), ("error_type", "other")})] == 9_980
    functions_seen = {dict(k)["function"] for k in telemetry.series("executor_tasks_completed_total")}
    assert functions_seen == {"test_10000_exception_classes_and_function_names_give_bounded_series.<locals>"
                              ".raiser.<locals>.task", *(f"task_{i}" for i in range(9)), "other"}  # fmt: skip
    unretrieved = telemetry.series("executor_exceptions_unretrieved_total")
    assert len(unretrieved) <= metrics.MAX_ERROR_TYPES + 1
    # Samples (each series and its _created) per capped error type: completed and unretrieved, and the one
    # error run histogram; per capped function: completed and its run histogram (buckets, count, sum, created).
    histogram = len(metrics.DEFAULT_BUCKETS) + 1 + 3
    assert after_errors - before_errors <= 2 * 2 * (metrics.MAX_ERROR_TYPES + 1) + histogram + 2
    assert after_functions - after_errors == metrics.MAX_FUNCTIONS * (2 + histogram)
    # Internal tables stay bounded too.
    stats = state.collectors[telemetry.registry].executors["pool"]  # type: ignore[union-attr]
    assert len(stats.error_label._labels) <= metrics.MAX_ERROR_TYPES
    assert len(stats.error_label._names) <= metrics.MAX_ERROR_TYPES
    assert len([s for s in telemetry.spans() if s.name.startswith("pool ")]) == 20_000  # every task traced


# -- no task data in labels or span attributes --------------------------------------------------------------------
class Secret:
    """A task argument / result whose every rendering contains the secret."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Secret({self.token})"

    __str__ = __repr__


class SecretError(Exception):
    pass


def leak(secret: Secret, message: str) -> Secret:
    try:
        raise KeyError(message)  # chained: its message must not travel either
    except KeyError as cause:
        error = SecretError(message)
        error.add_note(message)
        raise error from cause


def echo(secret: Secret) -> Secret:
    return secret


def every_string(span: Any, include_exception_event: bool) -> Iterator[str]:
    yield span.name
    for value in (span.attributes or {}).values():
        yield str(value)
    for event in span.events:
        if event.name == "exception" and not include_exception_event:
            continue
        yield event.name
        for value in (event.attributes or {}).values():
            yield str(value)
    for link in span.links:
        for value in (link.attributes or {}).values():
            yield str(value)
    if span.status.description:
        yield span.status.description


@pytest.mark.parametrize("messages", [True, False])
@pytest.mark.parametrize("kind", ["thread", "user", "fork"])
def test_no_task_data_in_labels_or_attributes(telemetry: Telemetry, kind: str, messages: bool) -> None:
    token = uuid.uuid4().hex
    secret = Secret(token)
    tracedfutures.configure(
        tracer_provider=telemetry.provider, registry=telemetry.registry, record_exception_messages=messages
    )
    try:
        executor = telemetry.executor(kind, max_workers=2)
        ok = executor.submit(echo, secret)
        bad = executor.submit(leak, secret, f"failed for {token}")
        mapped = list(executor.map(echo, [secret, secret], timeout=TIMEOUT))
        tracedfutures.wait([ok, bad], timeout=TIMEOUT)
        list(tracedfutures.as_completed([ok, bad], timeout=TIMEOUT))
        assert token in repr(ok.result()) and all(token in repr(m) for m in mapped)
        assert token in str(bad.exception())
        executor.shutdown()
    finally:
        tracedfutures.configure(tracer_provider=telemetry.provider, registry=telemetry.registry)

    for sample in (s for family in telemetry.registry.collect() for s in family.samples):
        assert not any(token in value for value in sample.labels.values()), sample
    exposition = generate_latest(telemetry.registry).decode() + generate_openmetrics(telemetry.registry).decode()
    assert token not in exposition
    spans_ = telemetry.spans()
    assert len(spans_) == 6  # 4 tasks, wait, as_completed
    for span in spans_:
        assert not any(token in text for text in every_string(span, include_exception_event=not messages)), span
    (failed,) = [s for s in spans_ if s.status.status_code.name == "ERROR"]
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "test_security.SecretError"
    if messages:  # the default: the message is in the exception event, and only there
        assert token in str(event.attributes["exception.message"])
    else:
        assert set(event.attributes) == {"exception.type", "exception.stacktrace"}
        stacktrace = str(event.attributes["exception.stacktrace"])
        assert stacktrace.endswith("test_security.SecretError\n")
        if kind != "fork":  # the frames of the task (a process pool's exception comes back without them)
            assert "in leak" in stacktrace


def test_record_exception_messages_default_and_reset() -> None:
    assert _config.defaults().record_exception_messages is True and spans.record_exception_messages is True
    tracedfutures.configure(record_exception_messages=False)
    try:
        assert spans.record_exception_messages is False
    finally:
        tracedfutures.reset_defaults()
    assert spans.record_exception_messages is True  # reset: back to the default, like every option


# -- the metrics endpoint ---------------------------------------------------------------------------------------
def test_metrics_server_binds_to_loopback_by_default(telemetry: Telemetry) -> None:
    import socket

    telemetry.executor("thread").submit(square, 1).result(TIMEOUT)
    server, thread = tracedfutures.start_http_server(0, registry=telemetry.registry)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        assert server.socket.family == socket.AF_INET
        assert server.socket.getsockname()[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
            assert response.status == 200
            assert b"executor_tasks_submitted_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def hostile_classes() -> list[type[BaseException]]:
    names = [
        'Quote"d', "Back\\slash", "New\nline", "Tab\tulated", "Ünïcödé_é", "Emoji_\U0001f525", "RTL_\u202eevil",
        "Brace}{", 'End\\', "Carriage\rReturn", "Equals=\"x\",le=\"1\"", "Hash#comment",
    ]  # fmt: skip
    made = []
    for i, name in enumerate(names):
        cls = type(name, (Exception,), {})
        cls.__module__ = ['mod"ule', "mod\nule", "mod\\ule", "модуль"][i % 4]
        cls.__qualname__ = name
        made.append(cls)
    # Names a class statement cannot make but attributes can: a lone surrogate (not UTF-8 at all), a NUL,
    # a name of 10,000 characters.
    for module, qualname in (("surrogate\ud800", "Lone\udc00"), ("nul", "Nul\x00Byte"), ("long", "L" * 10_000)):
        cls = type("Odd", (Exception,), {})
        cls.__module__, cls.__qualname__ = module, qualname
        made.append(cls)
    return made


def test_promtool_accepts_hostile_exception_class_names(telemetry: Telemetry, tmp_path: Any) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    executor = telemetry.executor("thread", max_workers=2)
    classes = hostile_classes()

    def raise_(cls: type[BaseException]) -> None:
        raise cls("x")

    futures = [executor.submit(raise_, cls) for cls in classes]
    tracedfutures.wait(futures, timeout=TIMEOUT)
    executor.shutdown()
    del futures  # the unretrieved counter gets the hostile labels too
    import gc

    gc.collect()
    labels = {dict(k)["error_type"] for k in telemetry.series("executor_tasks_completed_total")}
    assert {_naming.error_type(cls) for cls in classes} <= labels  # every hostile name is a label value
    assert _naming.error_type(classes[0]) == 'mod"ule.Quote"d'  # kept as it is, escaped only in the exposition
    assert _naming.error_type(classes[-3]) == "surrogate\\ud800.Lone\\udc00"  # made valid UTF-8
    assert len(_naming.error_type(classes[-1])) == _naming.MAX_NAME_LENGTH
    # promtool lints the Prometheus text format (it reads an OpenMetrics exemplar as a bad timestamp).
    text = generate_latest(telemetry.registry)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=TIMEOUT)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert checked.stdout + checked.stderr == b""
    # Both formats read back by prometheus_client's parsers give every label value unchanged.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    for parse, exposition in ((parse_text, text), (parse_openmetrics, generate_openmetrics(telemetry.registry))):
        parsed = {
            s.labels["error_type"]
            for family in parse(exposition.decode())
            for s in family.samples
            if "error_type" in s.labels
        }
        assert {_naming.error_type(cls) for cls in classes} <= parsed


@pytest.fixture(autouse=True)
def _no_provider_leak() -> Iterator[None]:
    yield
    state.record_exception_messages = True


def test_tracer_provider_type_is_checked_not_called() -> None:
    """The check only looks for get_tracer: a provider whose get_tracer fails is the failure tests' business."""
    _config.check_options(TracerProvider(), CollectorRegistry())
    with pytest.raises(TypeError, match="CollectorRegistry"):
        _config.check_options(None, {})
