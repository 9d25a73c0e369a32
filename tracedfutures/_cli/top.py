"""``tracedfutures top [URL]``: a live terminal view of a running program's executors, like ``top``.

Every ``--interval`` seconds it scrapes the program's ``/metrics`` and ``/tasks`` (``scrape``), works out the
interval's rates and quantiles (``top_interval``) and redraws the screen (``top_view``, with rich: the
``tracedfutures[cli]`` extra). ``q`` quits (``keyboard``), as does Ctrl-C; the terminal is put back either way. A
program that is not reachable at the start ends the command with one line that says so (exit status 1); one that
stops answering later is said so on the screen, which keeps its last numbers and tries again.
"""

from __future__ import annotations

import argparse
import sys

from tracedfutures._cli.arguments import positive_seconds

#: Where ``tracedfutures.start_http_server(9464)`` serves.
DEFAULT_URL = "http://127.0.0.1:9464"
#: Seconds between refreshes unless ``--interval`` says otherwise.
DEFAULT_INTERVAL = 2.0
#: The exit status when the program cannot be reached or rich is missing (usage errors: argparse's 2).
EXIT_FAILED = 1

DESCRIPTION = """\
A live view of a program whose executors tracedfutures traces, read from the
server that serves its metrics (tracedfutures.start_http_server,
prometheus_client's own, an app mounted in a web app): per executor, tasks
ended per second, queued / running / max workers, how busy the workers are, the
CPUs they use, p50 and p95 queue wait and run time over the last interval, the
share of tasks that raised; and the tasks running now, oldest first, where the
server serves tracedfutures' /tasks (else a note says why they are not listed).
q quits.

Needs rich: pip install 'tracedfutures[cli]'.
"""

EPILOG = f"""\
examples:
  tracedfutures top                                  {DEFAULT_URL}, every {DEFAULT_INTERVAL:g} s
  tracedfutures top 127.0.0.1:8000/metrics -n 0.5    an app's /metrics, twice a second
"""


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``top`` verb to the ``tracedfutures`` command line."""
    parser = verbs.add_parser(
        "top",
        help="a live terminal view of a running program's executors",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"where the program serves /metrics and /tasks (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "-n",
        "--interval",
        type=positive_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between refreshes, more than 0 (default: {DEFAULT_INTERVAL:g})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The ``top`` verb: show the program at ``args.url`` until ``q``; return the exit status."""
    interval: float = args.interval
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        print("tracedfutures top: needs rich: pip install 'tracedfutures[cli]'", file=sys.stderr)
        return EXIT_FAILED
    from tracedfutures._cli import scrape, top_interval, top_view
    from tracedfutures._cli.keyboard import Keyboard

    url = scrape.base_url(args.url)
    reader = scrape.Reader(url)
    try:
        previous = reader.scrape()
    except scrape.Unreachable as exc:
        print(f"tracedfutures top: {exc}: is the program running and serving its metrics there?", file=sys.stderr)
        return EXIT_FAILED
    console = Console()
    shown = top_interval.interval(None, previous)
    problem: str | None = None
    try:
        with (
            Keyboard() as keyboard,
            Live(console=console, screen=True, auto_refresh=False, transient=True) as live,
        ):
            while True:
                live.update(top_view.render(shown, url, interval, console.size.height, problem), refresh=True)
                if "q" in keyboard.wait(interval).lower():
                    return 0
                try:
                    current = reader.scrape()
                except scrape.Unreachable as exc:
                    problem = str(exc)
                    continue
                shown, previous, problem = top_interval.interval(previous, current), current, None
    except KeyboardInterrupt:
        return 0
