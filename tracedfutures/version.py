"""The version of tracedfutures, read by packaging and by get_tracer()."""

__version__ = "0.1.0"
