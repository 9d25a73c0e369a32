"""prometheus_client's multiprocess mode (a pre-fork server): real forked processes, one aggregated exposition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Runs in a fresh interpreter: PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported.
SERVER = textwrap.dedent(
    """
    import json, os, sys
    import concurrent.futures as cf
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
    import tracedfutures

    def child(index, release):
        with tracedfutures.TracedThreadPoolExecutor(4, name="web") as pool:
            ok = [pool.submit(pow, 2, n) for n in range(10)]
            bad = [pool.submit(int, "x") for _ in range(2)]
            tracedfutures.wait(ok + bad, return_when=cf.ALL_COMPLETED)
            [f.exception() for f in bad]
            done.write(b"x"); done.flush()
            os.read(release, 1)  # stay alive (executor open) until the parent has scraped
        os._exit(0)

    release_r, release_w = os.pipe()
    done_r, done_w = os.pipe()
    pids = []
    for index in range(3):
        pid = os.fork()
        if pid == 0:
            os.close(release_w)
            done = os.fdopen(done_w, "wb")
            child(index, release_r)
        pids.append(pid)
    os.close(done_w)
    for _ in range(3):
        assert os.read(done_r, 1) == b"x"

    def scrape():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for m in registry.collect() for s in m.samples
        }

    live = scrape()
    os.write(release_w, b"xxx")
    for pid in pids:
        os.waitpid(pid, 0)
        mark_process_dead(pid)
    print(json.dumps({"live": live, "after": scrape()}))
    """
)


def _sample(samples: dict[str, float], name: str, **labels: str) -> float | None:
    return samples.get(name + json.dumps(labels, sort_keys=True))


def test_forked_processes_aggregate_exactly(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", SERVER], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    result = json.loads(run.stdout)
    live, after = result["live"], result["after"]

    assert _sample(live, "executor_tasks_submitted_total", executor="web") == 36
    assert _sample(live, "executor_tasks_ended_total", executor="web", outcome="success") == 30
    assert _sample(live, "executor_tasks_ended_total", executor="web", outcome="error") == 6
    assert _sample(live, "executor_tasks_ended_total", executor="web", outcome="cancelled") == 0
    completed = {"executor": "web", "function": "pow", "outcome": "success", "error_type": ""}
    assert _sample(live, "executor_tasks_completed_total", **completed) == 30
    errors = _sample(live, "executor_tasks_completed_total", executor="web", function="int", outcome="error",
                     error_type="ValueError")  # fmt: skip
    assert errors == 6
    assert _sample(live, "executor_task_run_seconds_count", executor="web", function="pow", outcome="success") == 30
    # Busy time is counted when tasks end; the worker-seconds available are computed at scrape time: not here.
    busy = _sample(live, "executor_workers_busy_seconds_total", executor="web")
    assert busy is not None and busy > 0
    assert not any(key.startswith("executor_workers_available_seconds") for key in live)
    assert _sample(live, "executor_task_queue_seconds_count", executor="web") == 36
    assert _sample(live, "futures_wait_seconds_count", return_when="ALL_COMPLETED", timed_out="false") == 3
    assert _sample(live, "futures_result_lag_seconds_count", executor="web") == 6
    # Gauges are summed over the live processes: three pools of 4 workers, all idle.
    assert _sample(live, "executor_max_workers", executor="web") == 12
    assert _sample(live, "executor_tasks_queued", executor="web") == 0
    assert _sample(live, "executor_tasks_running", executor="web") == 0
    # Dead processes leave the live gauges, their counters stay.
    assert _sample(after, "executor_max_workers", executor="web") is None
    assert _sample(after, "executor_tasks_submitted_total", executor="web") == 36
    # No exemplars in multiprocess mode, and none of the in-process collector's series leak in.
    assert not any("trace_id" in key for key in live)
