"""Argument types the verbs share: each rejects a bad value at parsing, so argparse says so with the verb's usage
and exit status 2, as it does for every other usage error."""

from __future__ import annotations

import argparse
import math


def positive_seconds(text: str) -> float:
    """A number of seconds more than 0 (``--interval``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds more than 0, not {text!r}")
    return value


def count(text: str) -> int:
    """A whole number, 0 or more (``--max-tasks``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value
