"""The program tests/test_record_libraries.py records with ``tracedfutures record``, with no tracing code of its own:
``joblib.Parallel(n_jobs=2)`` on joblib's default backend (loky) over 200 calls of ``work``, in four ``Parallel``
calls of 50 on the one reusable executor. The last call of the second and of the fourth raises ``ValueError`` once the
others have ended (it sleeps first), and the program catches it: two failed batches. It serves ``/metrics`` while it
runs (``tracedfutures.start_http_server``, on a free port) and writes, to the file named by its first argument, its
pid and the ``/metrics`` text it reads from there at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import joblib

import tracedfutures

CALLS, PER_PARALLEL = 200, 50
RAISING = {2 * PER_PARALLEL - 1, 4 * PER_PARALLEL - 1}


def work(n: int) -> int:
    if n in RAISING:
        time.sleep(0.5)  # the batches before it have ended: joblib's abort then stops no other batch
        raise ValueError(n)
    return n


def main() -> None:
    server, _ = tracedfutures.start_http_server(0)
    failed = 0
    for first in range(0, CALLS, PER_PARALLEL):
        try:
            joblib.Parallel(n_jobs=2)(joblib.delayed(work)(n) for n in range(first, first + PER_PARALLEL))
        except ValueError:
            failed += 1
    assert failed == len(RAISING), failed
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=60) as response:
        metrics = response.read().decode()
    server.shutdown()
    with open(sys.argv[1], "w") as out:
        json.dump({"pid": os.getpid(), "metrics": metrics}, out)


if __name__ == "__main__":  # loky's workers import this module again
    main()
