"""One look at a running program for ``tracedfutures top``: its ``/metrics`` (parsed with prometheus_client's own
parser) and its ``/tasks`` document of the tasks running now, fetched over HTTP.

A program that cannot be reached, or that serves something else, raises ``Unreachable`` with one sentence that
says what went wrong and where; nothing here prints a traceback at the user.
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
#: The ``/tasks`` document versions this reader understands.
TASKS_SCHEMAS = ("tracedfutures.tasks/1",)
TIMEOUT = 5.0

#: A sample: (metric sample name, its labels as a sorted tuple of pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Unreachable(Exception):
    """The program could not be scraped (the message is one sentence for the user)."""


@dataclass(frozen=True)
class Scrape:
    """What one look at the program saw: every sample of ``/metrics``, the ``/tasks`` document (None when the
    program serves none: an older tracedfutures), and when (``time.monotonic()``)."""

    at: float
    samples: Samples
    tasks: dict[str, Any] | None

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
        raise Unreachable(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise Unreachable(f"cannot reach {url}: {str(reason).lower()}") from None
    except TimeoutError:
        raise Unreachable(f"cannot reach {url}: no answer in {TIMEOUT:g} s") from None
    except (OSError, ValueError) as exc:  # a reset connection, a URL that is not one
        raise Unreachable(f"cannot reach {url}: {exc}") from None


def scrape(url: str) -> Scrape:
    """Read ``/metrics`` and ``/tasks`` of the program serving at ``url`` (its base URL, see ``base_url``)."""
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
    tasks_url = f"{url}{TASKS_PATH}"
    raw = _get(tasks_url)
    tasks: dict[str, Any] | None = None
    if raw is not None:
        try:
            tasks = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Unreachable(f"{tasks_url} is not JSON ({exc})") from None
        if not isinstance(tasks, dict) or tasks.get("schema") not in TASKS_SCHEMAS:
            schema = tasks.get("schema") if isinstance(tasks, dict) else None
            raise Unreachable(f"{tasks_url} is not a running-tasks document this top reads (schema {schema!r})")
    return Scrape(time.monotonic(), samples, tasks)
