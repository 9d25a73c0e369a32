"""What tracedfutures instruments: the standard library's concurrent.futures, so no distribution is required."""

_instruments: tuple[str, ...] = ()
