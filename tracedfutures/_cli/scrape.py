"""One look at a running program for ``tracedfutures top``: its ``/metrics`` (parsed with prometheus_client's own
parser) and its ``/tasks`` document of the tasks running now, fetched over HTTP.

A program whose metrics cannot be read raises ``Unreachable`` with one sentence that says what went wrong and
where; nothing here prints a traceback at the user. A program whose server has no running-tasks document (any
server but tracedfutures': prometheus_client's own, its apps mounted in a web app, a web app's own ``/tasks``)
is read all the same, with a one-line note that says why its running tasks are not listed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

METRICS_PATH = "/metrics"
TASKS_PATH = "/tasks"
#: Where ``/tasks`` is looked for under the base URL, in order: beside ``/metrics`` (``start_http_server``, an app
#: mounted at the root), then under it (tracedfutures' app mounted at ``/metrics`` in a web app).
TASKS_PATHS = (TASKS_PATH, f"{METRICS_PATH}{TASKS_PATH}")
#: The ``/tasks`` document versions this reader understands.
TASKS_SCHEMAS = ("tracedfutures.tasks/1",)
TIMEOUT = 5.0
#: The end of the note shown where there is no running-tasks document to read.
NOT_LISTED = "running tasks are not listed"

#: A sample: (metric sample name, its labels as a sorted tuple of pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Unreachable(Exception):
    """The program could not be scraped (the message is one sentence for the user)."""


class Refused(Unreachable):
    """The program answered with an HTTP error other than 404 (``answer``: ``HTTP 500 Internal Server Error``)."""

    def __init__(self, url: str, answer: str) -> None:
        super().__init__(f"{url} answered {answer}")
        self.answer = answer


class NotTasks(Exception):
    """What a program serves at a ``/tasks`` path is not a running-tasks document this reader reads (the message
    says what it is)."""


@dataclass(frozen=True)
class Scrape:
    """What one look at the program saw: every sample of ``/metrics``, the ``/tasks`` document (None when there is
    none to read: ``tasks_note`` says why, in one line), and when (``time.monotonic()``)."""

    at: float
    samples: Samples
    tasks: dict[str, Any] | None
    tasks_note: str | None = None

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Each sample named ``name`` (``executor_tasks_queued``, ``..._bucket``) with its labels."""
        return [(dict(labels), value) for (sample, labels), value in self.samples.items() if sample == name]


def base_url(url: str) -> str:
    """``url`` without a trailing ``/metrics`` or ``/``, with ``http://`` when it names no scheme."""
    if "://" not in url:
        url = f"http://{url}"
    url = url.rstrip("/")
    return url.removesuffix(METRICS_PATH)


def _get(url: str) -> bytes | None:
    """The body at ``url``; None for a 404 (an endpoint the program does not serve)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise Refused(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise Unreachable(f"cannot reach {url}: {str(reason).lower()}") from None
    except TimeoutError:
        raise Unreachable(f"cannot reach {url}: no answer in {TIMEOUT:g} s") from None
    except (OSError, ValueError) as exc:  # a reset connection, a URL that is not one
        raise Unreachable(f"cannot reach {url}: {exc}") from None


def _metrics(url: str) -> Samples:
    metrics_url = f"{url}{METRICS_PATH}"
    body = _get(metrics_url)
    if body is None:
        raise Unreachable(f"{metrics_url} answered HTTP 404: is this the program's metrics server?")
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise Unreachable(f"{metrics_url} is not the Prometheus text format ({exc})") from None
    return samples


def _tasks(url: str, path: str) -> dict[str, Any]:
    """The running-tasks document at ``url`` + ``path``; ``NotTasks`` says what is there instead."""
    try:
        raw = _get(f"{url}{path}")
    except Refused as exc:
        raise NotTasks(f"{path} answered {exc.answer}") from None
    if raw is None:
        raise NotTasks(f"the program serves no {path}")
    try:
        tasks = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NotTasks(f"{path} is not JSON (not tracedfutures' server)") from None
    schema = tasks.get("schema") if isinstance(tasks, dict) else None
    if schema is None or not isinstance(tasks, dict):
        raise NotTasks(f"{path} is not tracedfutures' document")
    if schema not in TASKS_SCHEMAS:
        raise NotTasks(f"{path} is schema {schema!r}, which this top does not read")
    return tasks


class Reader:
    """Scrapes of the program serving at ``url`` (its base URL, see ``base_url``): ``/metrics`` each time, and the
    running-tasks document where the first scrape found it (``TASKS_PATHS``, in order). Where the first scrape found
    none (a 404, not JSON, a document of something else: prometheus_client's own server serves its metrics on every
    path, a web app may have a ``/tasks`` route of its own), later scrapes do not ask again and carry the first
    one's note."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._paths: tuple[str, ...] = TASKS_PATHS
        self._note: str | None = None

    def scrape(self) -> Scrape:
        """Read the program once; ``Unreachable`` when its metrics cannot be read."""
        samples = _metrics(self.url)
        for path in self._paths:
            try:
                tasks = _tasks(self.url, path)
            except NotTasks as exc:
                if self._note is None:
                    self._note = f"{exc}: {NOT_LISTED}"  # the first path's reason: where a reader looks first
                continue
            self._paths, self._note = (path,), None
            return Scrape(time.monotonic(), samples, tasks)
        self._paths = ()
        return Scrape(time.monotonic(), samples, None, self._note)


def scrape(url: str) -> Scrape:
    """One look at the program serving at ``url`` (its base URL, see ``base_url``)."""
    return Reader(url).scrape()
