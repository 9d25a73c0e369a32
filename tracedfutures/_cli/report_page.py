"""The page ``tracedfutures report`` writes: one self-contained HTML file that opens with no network.

It is ``tracedfutures/_report/report.html`` with everything inlined: the data (``report_data``) as JSON, the
page's script and style (``report.js``, ``report.css``), and the charting library, uPlot, vendored in
``tracedfutures/_report/uplot/`` (its ``README.md`` says how it was fetched, and the hashes) with its MIT licence
kept next to its code. The page's Content-Security-Policy allows no request at all.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

from tracedfutures.version import __version__

#: The package data directory (in the ``tracedfutures`` package) of the page's template, script and style.
ASSETS = "_report"
UPLOT_VERSION = "1.6.32"


def _asset(*parts: str) -> str:
    return resources.files("tracedfutures").joinpath(ASSETS, *parts).read_text(encoding="utf-8")


def embedded_json(value: Any) -> str:
    """``value`` as JSON that can stand inside a ``<script>`` element (no ``<``, so no ``</script>``)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render(data: dict[str, Any]) -> str:
    """The report page of ``data`` (what ``report_data.report_data`` returned)."""
    replacements = {
        "@TITLE@": html.escape(str(data["title"])),
        "@VERSION@": html.escape(__version__),
        "@UPLOT_VERSION@": UPLOT_VERSION,
        "@UPLOT_CSS@": _asset("uplot", "uPlot.min.css"),
        "@REPORT_CSS@": _asset("report.css"),
        "@UPLOT_LICENSE@": _asset("uplot", "LICENSE").strip(),
        "@UPLOT_JS@": _asset("uplot", "uPlot.iife.min.js"),
        "@REPORT_JS@": _asset("report.js"),
        "@DATA@": embedded_json(data),
    }
    # One pass over the template: the inlined files are not searched for placeholders.
    return re.sub(r"@[A-Z_]+@", lambda match: replacements[match.group(0)], _asset("report.html"))
