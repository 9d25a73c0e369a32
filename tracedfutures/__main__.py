"""The ``tracedfutures`` command, also ``python -m tracedfutures``: parse the command line, run its verb.

The verbs and their parser are in ``tracedfutures._cli``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tracedfutures._cli import parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (by default ``sys.argv[1:]``) and return its exit status."""
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
