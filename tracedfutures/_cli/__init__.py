"""The command line of ``tracedfutures`` (``tracedfutures.__main__`` runs it): one argparse sub-command per verb.

A verb is a module of this package with a ``register(verbs)`` function that adds the verb's parser to ``verbs``
(``parser.add_subparsers()``'s result) and sets its ``run`` default: a function of the parsed arguments that
returns the exit status. Add a verb by listing its ``register`` in ``VERBS``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from tracedfutures._cli import dashboards, record, report, top
from tracedfutures.version import __version__

#: What a verb's ``register`` gets: the sub-command group of the ``tracedfutures`` parser.
Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # generic in typeshed only: a string

#: Each verb's ``register``, in the order ``tracedfutures --help`` lists them.
VERBS: tuple[Callable[[Verbs], None], ...] = (record.register, report.register, top.register, dashboards.register)


def parser() -> argparse.ArgumentParser:
    """The parser of the ``tracedfutures`` command line, every verb of ``VERBS`` registered."""
    main = argparse.ArgumentParser(
        prog="tracedfutures",
        description="Tools that come with tracedfutures (spans and Prometheus metrics for concurrent.futures).",
    )
    main.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = main.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for register in VERBS:
        register(verbs)
    return main
