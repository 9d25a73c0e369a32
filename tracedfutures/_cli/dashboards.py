"""``tracedfutures dashboards -o DIR``: write the Grafana dashboards, their Grafana provisioning and the
Prometheus alert rules that come with the library into ``DIR``.

The files are the package data in ``tracedfutures/_dashboards/``, written byte for byte in the layout they have
there (they are copies of the repository's ``dashboards/`` and ``examples/grafana/provisioning/``, made by
``dashboards/generate.py`` and checked by ``dashboards/check.py``)::

    DIR/grafana/dashboards/tracedfutures-executors.json     the dashboards: mount the directory where the
    DIR/grafana/dashboards/tracedfutures-waits.json         provisioning below looks for them
    DIR/grafana/provisioning/dashboards/tracedfutures.yaml  Grafana: loads /var/lib/grafana/dashboards/tracedfutures
    DIR/grafana/provisioning/datasources/tracedfutures.yaml Grafana: the Prometheus and Jaeger data sources
    DIR/prometheus/rules/tracedfutures.yaml                 Prometheus: the alert rules (rule_files)

Nothing is overwritten without ``--force``: if any of the files exists, none is written and the exit status is
2. Files in ``DIR`` that are not among these are left alone.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import TextIO

#: The package data directory (in the ``tracedfutures`` package) that holds the files, as they are written.
DATA = "_dashboards"
#: The exit status when a file exists and ``--force`` was not given (argparse's, for a usage error).
EXIT_EXISTS = 2
#: The exit status when a file cannot be read or written.
EXIT_FAILED = 1

DESCRIPTION = """\
Write the Grafana dashboards, the Grafana provisioning files (dashboards and data sources) and the Prometheus
alert rules of tracedfutures into DIR: grafana/dashboards/*.json, grafana/provisioning/dashboards/*.yaml,
grafana/provisioning/datasources/*.yaml and prometheus/rules/*.yaml. Mount DIR/grafana/provisioning as
Grafana's provisioning directory and DIR/grafana/dashboards at /var/lib/grafana/dashboards/tracedfutures; set
the data sources' urls to your Prometheus and Jaeger; list DIR/prometheus/rules/*.yaml in Prometheus' rule_files.
"""


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboards`` verb to the ``tracedfutures`` command line."""
    parser = verbs.add_parser(
        "dashboards",
        help="write the Grafana dashboards, provisioning and Prometheus alert rules into a directory",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="the directory to write into (made if need be)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The ``dashboards`` verb: write the files into ``args.output``; return the exit status."""
    output: Path = args.output
    force: bool = args.force
    return write(output, force=force)


def packaged() -> list[tuple[PurePosixPath, Traversable]]:
    """Every file of the package data, as (its path relative to the data directory, the resource), by path."""
    found: list[tuple[PurePosixPath, Traversable]] = []

    def walk(directory: Traversable, relative: PurePosixPath) -> None:
        for entry in directory.iterdir():
            if entry.is_dir():
                walk(entry, relative / entry.name)
            elif entry.is_file():
                found.append((relative / entry.name, entry))

    root = resources.files("tracedfutures").joinpath(DATA)
    if root.is_dir():
        walk(root, PurePosixPath())
    return sorted(found, key=lambda item: item[0])


def write(output: Path, *, force: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write the packaged files into ``output``, saying each on ``out``; return the exit status.

    Without ``force`` nothing is written when any of the files exists (status ``EXIT_EXISTS``, the files named
    on ``err``). A file that cannot be read or written ends the run with ``EXIT_FAILED`` (those written before
    it stay).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    files = packaged()
    if not files:
        print(
            f"tracedfutures dashboards: no dashboards in this installation of tracedfutures "
            f"(tracedfutures/{DATA}/ is missing or empty): reinstall it",
            file=err,
        )
        return EXIT_FAILED
    targets = [(output.joinpath(*relative.parts), resource) for relative, resource in files]
    existing = [path for path, _ in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        for path in existing:
            print(f"tracedfutures dashboards: {path} exists", file=err)
        print("tracedfutures dashboards: nothing written (--force overwrites)", file=err)
        return EXIT_EXISTS
    for path, resource in targets:
        try:
            data = resource.read_bytes()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            print(f"tracedfutures dashboards: cannot write {path}: {exc}", file=err)
            return EXIT_FAILED
        print(f"wrote {path}", file=out)
    return 0
