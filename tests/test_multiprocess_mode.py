"""prometheus_client's multiprocess mode (a pre-fork server): real forked processes, one aggregated exposition
through ``tracedfutures.exposition.multiprocess_registry()``, with no ``mark_process_dead`` hook anywhere."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

# Every script runs in a fresh interpreter (PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is
# imported) after this prelude: ``scrape()`` reads every sample of the directory as tracedfutures serves it.
PRELUDE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import concurrent.futures as cf
    import tracedfutures
    from tracedfutures.exposition import multiprocess_registry

    def scrape():
        return {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for m in multiprocess_registry().collect() for s in m.samples
        }

    def files():
        return sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))

    def fork_children(count, child):  # count processes that each run child(index), then exit: their pids
        pids = []
        for index in range(count):
            pid = os.fork()
            if pid == 0:
                try:
                    child(index)
                finally:
                    os._exit(0)
            pids.append(pid)
        return pids
    """
)
#: What the directory holds once every process that counted has died and a scrape folded their files.
ARCHIVES = ["counter_archive.db", "histogram_archive.db", "tracedfutures.lock", "tracedfutures_archive.tf"]


def run_script(tmp_path: Path, body: str, warning: str = "") -> Any:
    """What the script printed (JSON); on stderr, nothing, or one line that starts with ``warning``."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    script = PRELUDE + textwrap.dedent(body)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    if warning:
        assert run.stderr.startswith(warning) and run.stderr.count("\n") == 1, run.stderr
    else:
        assert run.stderr == ""
    return json.loads(run.stdout)


def _sample(samples: dict[str, float], name: str, **labels: str) -> float | None:
    return samples.get(name + json.dumps(labels, sort_keys=True))


def test_forked_processes_aggregate_exactly(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        release_r, release_w = os.pipe()
        done_r, done_w = os.pipe()

        def child(index):
            with tracedfutures.TracedThreadPoolExecutor(4, name="web") as pool:
                ok = [pool.submit(pow, 2, n) for n in range(10)]
                bad = [pool.submit(int, "x") for _ in range(2)]
                tracedfutures.wait(ok + bad, return_when=cf.ALL_COMPLETED)
                [f.exception() for f in bad]
                if index == 0:
                    try:
                        ok[0].set_result(1)  # refused: the future is finished
                    except cf.InvalidStateError:
                        pass
                os.write(done_w, b"x")
                os.read(release_r, 1)  # stay alive (executor open) until the parent has scraped

        pids = fork_children(3, child)
        os.close(done_w)
        for _ in range(3):
            assert os.read(done_r, 1) == b"x"
        live = scrape()
        os.write(release_w, b"xxx")
        for pid in pids:
            os.waitpid(pid, 0)  # and no mark_process_dead
        print(json.dumps({"live": live, "after": scrape(), "files": files()}))
        """,
    )
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
    assert _sample(live, "executor_task_queue_seconds_count", executor="web") == 36
    assert _sample(live, "futures_wait_seconds_count", return_when="ALL_COMPLETED", timed_out="false") == 3
    assert _sample(live, "futures_result_lag_seconds_count", executor="web") == 6
    # Every counter an alert reads exists from the executor's start, at 0 where nothing happened.
    invalid = {m: _sample(live, "executor_invalid_transitions_total", executor="web", method=m)
               for m in ("set_result", "set_exception", "set_running_or_notify_cancel")}  # fmt: skip
    assert invalid == {"set_result": 1, "set_exception": 0, "set_running_or_notify_cancel": 0}
    # The live state of the three processes: three pools of 4 workers, all idle, busy and offered worker-seconds.
    assert _sample(live, "executor_max_workers", executor="web") == 12
    assert _sample(live, "executor_tasks_queued", executor="web") == 0
    assert _sample(live, "executor_tasks_running", executor="web") == 0
    assert _sample(live, "executor_oldest_running_task_age_seconds", executor="web") == 0
    busy = _sample(live, "executor_workers_busy_seconds_total", executor="web")
    available = _sample(live, "executor_workers_available_seconds_total", executor="web")
    assert busy is not None and available is not None and 0 < busy < available
    # The processes ended without a word: their live state is gone at the next scrape, what they counted stays,
    # and their files were folded into the archives.
    assert _sample(after, "executor_max_workers", executor="web") == 0
    assert _sample(after, "executor_tasks_running", executor="web") == 0
    assert _sample(after, "executor_tasks_submitted_total", executor="web") == 36
    assert _sample(after, "executor_task_run_seconds_count", executor="web", function="pow", outcome="success") == 30
    assert _sample(after, "executor_invalid_transitions_total", executor="web", method="set_result") == 1
    assert _sample(after, "executor_workers_busy_seconds_total", executor="web") >= busy  # type: ignore[operator]
    assert _sample(after, "executor_workers_available_seconds_total", executor="web") >= available  # type: ignore[operator]
    assert result["files"] == ARCHIVES
    # No exemplars in multiprocess mode.
    assert not any("trace_id" in key for key in live)


def test_hung_task_and_a_worker_killed_without_a_hook(tmp_path: Path) -> None:
    """A task hung in one process is the oldest running task; SIGKILLed (left a zombie, not reaped), that
    process stops counting at the next scrape."""
    result = run_script(
        tmp_path,
        """
        started_r, started_w = os.pipe()
        block_r, block_w = os.pipe()

        def child(index):
            pool = tracedfutures.TracedThreadPoolExecutor(2, name="web")
            if index == 0:
                submitted = time.time()
                def hang():
                    os.write(started_w, json.dumps([submitted, time.time()]).encode() + b"\\n")
                    os.read(block_r, 1)
                pool.submit(hang)
            else:
                pool.submit(pow, 2, 2).result()
                os.write(started_w, b"[0, 0]\\n")
            time.sleep(120)

        pids = fork_children(2, child)
        started = os.fdopen(started_r)  # one line from each child (two writes may arrive in one read)
        marks = sorted(json.loads(started.readline()) for _ in range(2))
        submitted, began = marks[1]
        time.sleep(1.5)  # the task hangs
        before = time.time()
        hung = scrape()
        after_scrape = time.time()
        os.kill(pids[0], signal.SIGKILL)
        while open(f"/proc/{pids[0]}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        killed = scrape()
        os.waitpid(pids[0], 0)
        os.kill(pids[1], signal.SIGKILL)
        os.waitpid(pids[1], 0)
        print(json.dumps({"hung": hung, "killed": killed, "bounds": [before - began, after_scrape - submitted]}))
        """,
    )
    hung, killed = result["hung"], result["killed"]
    low, high = result["bounds"]
    age = _sample(hung, "executor_oldest_running_task_age_seconds", executor="web")
    assert age is not None and low <= age <= high
    assert _sample(hung, "executor_tasks_running", executor="web") == 1
    assert _sample(hung, "executor_max_workers", executor="web") == 4
    busy = _sample(hung, "executor_workers_busy_seconds_total", executor="web")
    assert busy is not None and busy >= low  # the hung task's time counts while it runs
    # Killed mid-task, never reaped nor reported: its task and its workers are gone at once.
    assert _sample(killed, "executor_tasks_running", executor="web") == 0
    assert _sample(killed, "executor_max_workers", executor="web") == 2
    assert _sample(killed, "executor_oldest_running_task_age_seconds", executor="web") == 0
    assert _sample(killed, "executor_workers_busy_seconds_total", executor="web") >= busy  # type: ignore[operator]
    assert _sample(killed, "executor_tasks_submitted_total", executor="web") == 2
    assert _sample(killed, "executor_tasks_ended_total", executor="web", outcome="success") == 1


def test_a_pool_made_before_the_fork_counts_in_each_process_that_uses_it(tmp_path: Path) -> None:
    """``gunicorn --preload``: the pool made at import counts once per worker, and not in the master."""
    result = run_script(
        tmp_path,
        """
        pool = tracedfutures.TracedThreadPoolExecutor(4, name="web")
        done_r, done_w = os.pipe()
        release_r, release_w = os.pipe()

        def child(index):
            pool.submit(pow, 2, index).result()
            os.write(done_w, b"x")
            os.read(release_r, 1)

        pids = fork_children(2, child)
        for _ in range(2):
            os.read(done_r, 1)
        live = scrape()
        os.write(release_w, b"xx")
        for pid in pids:
            os.waitpid(pid, 0)
        print(json.dumps({"live": live, "after": scrape()}))
        """,
    )
    assert _sample(result["live"], "executor_max_workers", executor="web") == 8
    assert _sample(result["live"], "executor_tasks_submitted_total", executor="web") == 2
    assert _sample(result["after"], "executor_max_workers", executor="web") == 0


def test_workers_come_and_go_the_directory_follows_the_live_ones(tmp_path: Path) -> None:
    """100 workers, 4 at a time, each counting 5 tasks: after each round the directory holds the archives only,
    and every counter is exact and never lower than at the scrape before."""
    result = run_script(
        tmp_path,
        """
        def child(index):
            with tracedfutures.TracedThreadPoolExecutor(2, name="web") as pool:
                futures = [pool.submit(pow, 2, n) for n in range(4)] + [pool.submit(int, "x")]
                tracedfutures.wait(futures)
                futures[-1].exception()

        rounds = []
        for round_ in range(25):
            pids = fork_children(4, child)
            middle = scrape() if round_ % 10 == 5 else None  # some while they run
            for pid in pids:
                os.waitpid(pid, 0)
            rounds.append({"scrape": scrape(), "files": files(), "middle": middle})
        print(json.dumps(rounds))
        """,
    )
    last = {"busy": 0.0, "available": 0.0}
    for index, round_ in enumerate(result, 1):
        samples = round_["scrape"]
        assert round_["files"] == ARCHIVES
        assert _sample(samples, "executor_tasks_submitted_total", executor="web") == 20 * index
        assert _sample(samples, "executor_tasks_ended_total", executor="web", outcome="error") == 4 * index
        assert _sample(samples, "executor_task_run_seconds_count", executor="web", function="pow",
                       outcome="success") == 16 * index  # fmt: skip
        assert _sample(samples, "executor_max_workers", executor="web") == 0
        for counter in ("busy", "available"):
            if round_["middle"] is not None:
                value = _sample(round_["middle"], f"executor_workers_{counter}_seconds_total", executor="web")
                assert value is not None and value >= last[counter]
                last[counter] = value
            value = _sample(samples, f"executor_workers_{counter}_seconds_total", executor="web")
            assert value is not None and value >= last[counter]
            last[counter] = value


def test_executor_names_are_capped_per_process(tmp_path: Path) -> None:
    """MAX_EXECUTORS names per process, then ``other``, with one warning, in this mode too."""
    result = run_script(
        tmp_path,
        """
        import logging
        from tracedfutures.metrics import MAX_EXECUTORS
        warnings = []
        handler = logging.Handler()
        handler.emit = lambda record: warnings.append(record.getMessage())
        logging.getLogger("tracedfutures").addHandler(handler)
        for n in range(MAX_EXECUTORS + 6):
            with tracedfutures.TracedThreadPoolExecutor(1, name=f"job-{n}") as pool:
                pool.submit(pow, 2, n).result()
        submitted = {key: value for key, value in scrape().items() if key.startswith("executor_tasks_submitted")}
        print(json.dumps({"submitted": submitted, "warnings": warnings, "cap": MAX_EXECUTORS}))
        """,
    )
    cap = result["cap"]
    expected = {f"job-{n}": 1 for n in range(cap)} | {"other": 6}
    assert result["submitted"] == {
        "executor_tasks_submitted_total" + json.dumps({"executor": name}): count for name, count in expected.items()
    }
    assert result["warnings"] == [
        f"more than {cap} executor names: executor 'job-{cap}' and later new names are counted as 'other' (name "
        "pools by role, not by job)"
    ]


def test_files_of_a_dead_process_cut_short_or_empty_are_removed(tmp_path: Path) -> None:
    """A process killed while it added a key leaves a file whose header says more than it holds, one that died
    right after opening its file leaves no values: the scrape exposes the rest, once warns, and removes both."""
    dead = []
    for _ in range(2):
        child = subprocess.Popen(["true"])
        child.wait()
        dead.append(child.pid)
    (tmp_path / f"tracedfutures_live_{dead[0]}.tf").write_bytes(struct.pack("i", 10_000) + bytes(60))
    (tmp_path / f"tracedfutures_live_{dead[1]}.tf").write_bytes(struct.pack("i", 8) + bytes(60))
    result = run_script(
        tmp_path,
        """
        with tracedfutures.TracedThreadPoolExecutor(2, name="web") as pool:
            pool.submit(pow, 2, 2).result()
            first = scrape()
        print(json.dumps({"first": first, "files": files()}))
        """,
        warning="tracedfutures: MultiprocessCollector failed, its telemetry is incomplete: ",
    )
    assert _sample(result["first"], "executor_tasks_submitted_total", executor="web") == 1
    assert _sample(result["first"], "executor_max_workers", executor="web") == 2
    assert not [name for name in result["files"] if str(dead[0]) in name or str(dead[1]) in name]


def test_workers_cpu_seconds_add_up_over_processes_alive_and_dead(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        done_r, done_w = os.pipe()
        release_r, release_w = os.pipe()

        def spin(seconds):  # pure-Python work for about this much CPU time
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass

        def child(index):
            pool = tracedfutures.TracedThreadPoolExecutor(2, name="cpu")
            tracedfutures.wait([pool.submit(spin, 0.15) for _ in range(6)])
            os.write(done_w, b"x")
            os.read(release_r, 1)
            pool.shutdown()

        pids = fork_children(2, child)
        os.close(done_w)
        for _ in range(2):
            assert os.read(done_r, 1) == b"x"
        live = scrape()
        os.write(release_w, b"xx")
        for pid in pids:
            os.waitpid(pid, 0)
        children = os.times()
        after = scrape()
        print(json.dumps({
            "live": live, "after": after, "again": scrape(),
            "charged": children.children_user + children.children_system,
        }))
        """,
    )
    live = _sample(result["live"], "executor_workers_cpu_seconds_total", executor="cpu")
    after = _sample(result["after"], "executor_workers_cpu_seconds_total", executor="cpu")
    # Each process writes what its workers used as tasks end (at most once a second) and as its pool shuts down;
    # what the dead processes wrote last stays, in the archive.
    assert live is not None and after is not None
    assert 0 < live <= after
    assert 0.75 * result["charged"] <= after <= result["charged"] * 1.05, (after, result["charged"])
    assert _sample(result["again"], "executor_workers_cpu_seconds_total", executor="cpu") == after
