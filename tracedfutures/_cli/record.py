"""``tracedfutures record -o TRACE.json [--] python app.py ARGS...``: run an unchanged program with every stdlib
executor, ``wait`` and ``as_completed`` traced, and write its timeline (``tracedfutures.timeline``) when it exits.

The program runs as a child process whose ``PYTHONPATH`` starts with a temporary directory holding a
``sitecustomize`` module: at the child's start-up it sets up what ``opentelemetry-instrument`` would (an SDK
tracer provider as the global one, the ``ConcurrentFuturesInstrumentor``), with a ``TimelineWriter`` as its span
processor, then runs the ``sitecustomize`` the program would have run without it. The writer finishes the file when
the provider shuts down at the program's exit: a normal end, ``sys.exit``, an uncaught exception, Ctrl-C
(``KeyboardInterrupt``) or SIGTERM (when the program left it to the default, which it still gets after the file is
finished). ``os._exit``, SIGKILL or a crash end the program before that: the file then holds what the writer
flushed (at least once a second), readable as it is, and ``record`` says that it was cut short and how much it
holds. The environment variables that ask for the recording are removed at start-up, so the program's worker
processes (spawn, forkserver), which send their spans home as they always do, and its subprocesses record nothing
of their own.

The exit status is the program's (128 + N when a signal N ended it). While the program runs, ``record`` ignores
Ctrl-C itself: the terminal sends it to the program, which ends as it would (and writes its timeline).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tracedfutures._cli.arguments import count
from tracedfutures._recording import MAX_TASKS_VARIABLE, OUTPUT_VARIABLE

#: The exit status when the program cannot be started (a shell's, for a command not found).
EXIT_NOT_STARTED = 127
#: A usage error's exit status, argparse's.
EXIT_USAGE = 2
#: ``tracedfutures.timeline.DEFAULT_MAX_TASKS``, written out so that the command line imports no OpenTelemetry
#: (tests/test_record.py holds the two equal).
DEFAULT_MAX_TASKS = 200_000

DESCRIPTION = """\
Run COMMAND (a Python program: python app.py ARGS...) with every
concurrent.futures executor, wait and as_completed traced, and write its
timeline to TRACE.json when it exits, also on an exception or Ctrl-C;
ui.perfetto.dev and chrome://tracing open it, `tracedfutures report` makes a
page of it. The exit status is the program's.
"""

EPILOG = """\
examples:
  tracedfutures record -o trace.json -- python app.py --workers 8
  tracedfutures record -o trace.json --max-tasks 50000 -- python -m mypackage.job
  tracedfutures report trace.json -o report.html
"""

SITECUSTOMIZE = '''\
"""Written by `tracedfutures record`: record this program's timeline (tracedfutures/_recording.py)."""
try:
    from tracedfutures._recording import start_recording
except ImportError as exc:  # the program's Python lacks tracedfutures or the OpenTelemetry SDK
    import sys

    print(f"tracedfutures record: this Python cannot record ({exc}); running the program untraced", file=sys.stderr)
else:
    start_recording(__file__)
'''


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``record`` verb to the ``tracedfutures`` command line."""
    parser = verbs.add_parser(
        "record",
        help="run a Python program with its executors traced and write its timeline (Chrome Trace Event Format)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="TRACE.json", help="the timeline file to write"
    )
    parser.add_argument(
        "--max-tasks",
        type=count,
        metavar="N",
        help=f"draw at most N tasks and calls, 0 or more; the file counts the rest (default: {DEFAULT_MAX_TASKS})",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="[--] COMMAND ARGS", help="the program to run")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    """The ``record`` verb: run the command with a recording asked for; return its exit status."""
    command: list[str] = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        args.parser.error("no command to run (tracedfutures record -o TRACE.json -- python app.py)")
    output: Path = args.output.resolve()
    site = tempfile.mkdtemp(prefix="tracedfutures-record-")
    try:
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
        env[OUTPUT_VARIABLE] = str(output)
        if args.max_tasks is not None:
            env[MAX_TASKS_VARIABLE] = str(args.max_tasks)
        status = _run_child(command, env)
    finally:
        shutil.rmtree(site, ignore_errors=True)
    if output.exists():
        print(f"tracedfutures record: {_what_was_written(output, status)}", file=sys.stderr)
    else:
        print(f"tracedfutures record: no timeline was written (did {command[0]} run Python?)", file=sys.stderr)
    return status


def _what_was_written(output: Path, status: int) -> str:
    """The sentence that says what the timeline holds: all of the run, or, when the program was killed or ended
    without finishing it (``os._exit``, a crash), how much of it (the writer flushes at least once a second)."""
    from tracedfutures._cli import timeline_reader

    try:
        with output.open("rb") as stream:  # a finished file ends with the writer's end: nothing more to read
            stream.seek(max(stream.seek(0, os.SEEK_END) - 512, 0))
            if f'"name":"{timeline_reader.END}"'.encode() in stream.read():
                return f"timeline written to {output}"
        timeline = timeline_reader.read(output)
    except timeline_reader.TimelineError as exc:
        return f"the timeline in {output} cannot be read: {exc}"
    if timeline.complete:
        return f"timeline written to {output}"
    if status > 128 and status - 128 in _SIGNALS:
        how = f"the program was killed by signal {status - 128} ({_SIGNALS[status - 128]})"
    else:
        how = f"the program ended with status {status} without finishing its timeline (os._exit, or a crash)"
    tasks = sum(timeline.ended().values())
    held = max(timeline.end - timeline.origin, 0.0)
    return (
        f"{how}; the timeline in {output} was cut short at its last flush and holds the first {held:.1f} s: "
        f"{tasks:,} task{'' if tasks == 1 else 's'}"
    )


def _default_ctrl_c() -> None:
    """In the child, before it runs the command: Ctrl-C as the shell would leave it (the default)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: The name of each signal, by number.
_SIGNALS = {int(number): number.name for number in signal.Signals}


def _run_child(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` to its end with Ctrl-C left to it; its exit status as a shell gives it."""
    # Ignored here from before the child starts (a Ctrl-C in between must not end record and leave the child
    # running); the child starts with the default (one started with it ignored would keep ignoring it).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            child = subprocess.Popen(command, env=env, preexec_fn=_default_ctrl_c)  # record runs no thread
        except OSError as exc:
            print(f"tracedfutures record: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_NOT_STARTED
        status = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - status if status < 0 else status
