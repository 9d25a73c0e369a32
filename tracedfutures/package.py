"""What tracedfutures instruments: the standard library's ``concurrent.futures`` (no distribution required), and
the executors of other libraries when they are installed in a supported version.

``_instruments`` is what a contrib instrumentation declares and ``opentelemetry-instrument`` checks before it
instruments: nothing here, the standard library is always there. ``_instruments_optional`` lists, in the same
requirement form, the libraries whose executors are traced too; each is checked when its module is first imported
(a missing library, or one of another version, is left alone, with no error).
"""

_instruments: tuple[str, ...] = ()

#: (module, class, kind, name, requirement): the executor class that module defines, the ``executor.kind`` of its
#: executors and their default ``executor`` name, traced when the distribution in the requirement is installed in a
#: version it allows. loky's class is also what joblib's default backend runs on
#: (``joblib.externals.loky``, joblib's own copy, versioned as joblib); ``ClientExecutor`` is what Dask's
#: ``Client.get_executor()`` returns.
_instruments_optional: tuple[tuple[str, str, str, str, str], ...] = (
    ("loky.process_executor", "ProcessPoolExecutor", "process", "loky", "loky >= 3.0, < 4"),
    ("joblib.externals.loky.process_executor", "ProcessPoolExecutor", "process", "joblib", "joblib >= 1.3, < 2"),
    ("distributed.cfexecutor", "ClientExecutor", "other", "dask", "distributed >= 2023.1.0"),
)
