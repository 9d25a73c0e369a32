#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venvs, packages, lint, type check, docs, unit tests, and CPython's
# own test_concurrent_futures on the oldest and newest supported Pythons. Exits non-zero if any stage fails.
#
# Pythons (tests/tools/venv.sh): 3.11 from pyenv or PATH (lint, type check, docs, unit tests, dashboards,
# stress); a 3.11 with CPython's test package, on Debian 12 Debian's own python3.11 (the stdlib suite on 3.11);
# 3.14 and 3.15 with their test package from pyenv or PATH when there, else from a Debian sid root
# (tests/tools/sid.sh). As root on Debian 12, whatever is missing is installed; not as root, a stage whose
# Python is missing fails and says what to install.
#
# Stages run TF_JOBS (default 2) at a time, each one's output printed in full when it ends, in the order they
# started. TF_STAGES=REGEX runs only the stages whose name matches (bash =~); the venv stages always run (quick
# when nothing changed), e.g.  TF_STAGES='unit tests 3.14|CPython suite 3.15$' bash tests/run.sh
set -uo pipefail
set -m  # each stage in its own process group: an interrupted run stops a stage's processes, not only its shell
cd "$(dirname "$0")/.." || exit
source tests/tools/sid.sh
source tests/tools/venv.sh

TF_JOBS=${TF_JOBS:-2}
export TF_PROMETHEUS3=${TF_PROMETHEUS3:-$TF_SID_ROOT/usr/bin/prometheus}  # tests/prometheus runs this one too
TF_STAGES=${TF_STAGES:-}
passed=0
failed=0
failures=()
logs=$(mktemp -d)
names=() pids=() starts=() ends=() statuses=()
printed=0
finish() {
    local pid
    for pid in $(running); do kill -- "-$pid" 2>/dev/null; done  # stages still going when interrupted
    wait
    tf_sid_umount
    rm -rf "$logs"
}
trap finish EXIT
stage_log() { echo "$logs/$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '_').log"; }

stage() {  # stage [--always] NAME COMMAND...: start one stage (in the background), keep going
    local always=
    if [ "$1" = --always ]; then always=1; shift; fi
    local name=$1; shift
    if [ -z "$always" ] && [ -n "$TF_STAGES" ] && ! [[ $name =~ $TF_STAGES ]]; then
        return 0
    fi
    while [ "$(running | wc -w)" -ge "$TF_JOBS" ]; do reap; done
    echo "--- started: $name"
    names+=("$name")
    starts+=("$SECONDS")
    ends+=("")
    statuses+=("")
    ("$@") >"$(stage_log "$name")" 2>&1 </dev/null &
    pids+=("$!")
}

running() {  # the pids of the stages not reaped yet
    local i
    for i in "${!pids[@]}"; do [ -n "${statuses[i]}" ] || echo "${pids[i]}"; done
}

reap() {  # wait for a stage to end; print each ended stage whose predecessors are all printed
    local pid status i
    # shellcheck disable=SC2046  # one word per pid
    wait -n -p pid $(running)
    status=$?
    for i in "${!pids[@]}"; do
        if [ "${pids[i]}" = "$pid" ]; then statuses[i]=$status; ends[i]=$SECONDS; fi
    done
    while [ "$printed" -lt "${#names[@]}" ] && [ -n "${statuses[printed]}" ]; do
        report "$printed"
        printed=$((printed + 1))
    done
}

report() {  # report INDEX: the stage's output and its outcome
    local name=${names[$1]} took=$((ends[$1] - starts[$1]))
    echo
    echo "=== $name"
    cat "$(stage_log "$name")"
    if [ "${statuses[$1]}" -eq 0 ]; then
        passed=$((passed + 1))
        echo "=== $name: ok (${took}s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== $name: FAILED (${took}s)"
    fi
}

all_ended() {
    while [ -n "$(running)" ]; do reap; done
}

venv() {  # venv [--tests] VERSION DIR REQUIREMENTS...: tf_venv, then which Python the venv has, and where
    local dir=$2
    [ "$1" != --tests ] || dir=$3
    tf_venv "$@" || return 1
    echo "$dir: Python $(tf_py "$dir" -c 'import sys; print(sys.version.split()[0], "from", sys.base_prefix)')" \
         "$([ "$(cat "$dir/.tf-runner")" = tf_in_sid ] && echo "inside the Debian sid root $TF_SID_ROOT")"
}

tf_prometheus() {  # Prometheus 2.42 (Debian 12's, on PATH) and 3.5 (Debian sid's, in the sid root) for tests/prometheus
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        tf_apt_install prometheus || return 1
    fi
    prometheus --version 2>&1 | sed -n 1p
    [ -x "$TF_PROMETHEUS3" ] || tf_sid_root >/dev/null || return 1  # the sid root holds Debian sid's prometheus
    "$TF_PROMETHEUS3" --version 2>&1 | sed -n 1p
}

tf_report_tools() {  # Debian's chromium (the report's page) and tmux (top's screen) for the unit tests, unless on PATH
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v tmux >/dev/null || missing+=(tmux)
    if [ "${#missing[@]}" -gt 0 ]; then
        tf_apt_install "${missing[@]}" || return 1
    fi
    chromium --version 2>/dev/null | sed -n 1p
    tmux -V
}

optional_venv() {  # optional_venv [--tests] VERSION DIR REQUIREMENTS...: venv, or a note where the Python is missing
    local v=$1 modules=(ensurepip)
    if [ "$1" = --tests ]; then v=$2 modules+=(test.test_concurrent_futures); fi
    if ! tf_python "$v" "${modules[@]}" >/dev/null; then
        echo "no Python $v with ${modules[*]} on this machine (pyenv install $v): its stages are skipped"
        return 0
    fi
    venv "$@"
}

if_venv() {  # if_venv DIR COMMAND...: COMMAND, or a note where optional_venv made no venv DIR
    if [ ! -f "$1/.tf-runner" ]; then
        echo "skipped: no venv $1 (its Python is not on this machine, see its venv stage)"
        return 0
    fi
    "${@:2}"
}

forced_fallback() {  # forced_fallback COMMAND...: the library's public-API fallback path, forced
    TRACEDFUTURES_FORCE_FALLBACK=1 "$@"
}

unit_tests() {  # unit_tests VENV PYTEST-ARGS...: and the slowest tests, where the stage's time goes
    tf_py "$1" -m pytest tests -q --durations=12 --ignore=tests/cpython --ignore=tests/prometheus "${@:2}"
}

# The unit tests whose subject is the same on every interpreter and every path through the stdlib (pages in
# Chromium, top in tmux, the docs' blocks, exporters and receivers, text bounds, static checks): run in full on
# the oldest and newest released interpreters (3.11, 3.14), left out where a stage is there for the interpreter or
# the fallback path (3.12, 3.13, 3.15, the forced fallback): a unit stage in full costs about 450 core-seconds.
SAME_EVERYWHERE=(test_cli_report test_cli_top test_cli_dashboards test_docs test_layering test_security
                 test_otlp_export test_otel_metrics_export test_record_crash test_record_libraries
                 test_executor_names test_setup_tracing test_config test_exemplars test_load)

version_tests() {  # version_tests VENV: the unit tests less SAME_EVERYWHERE
    local name ignore=()
    for name in "${SAME_EVERYWHERE[@]}"; do ignore+=("--ignore=tests/$name.py"); done
    unit_tests "$1" "${ignore[@]}"
}

instruction_gate() {  # instruction_gate VENV: every row of benchmarks/budgets.toml for VENV's Python within budget
    # valgrind: the host's, installed when missing; a venv in the sid root uses the root's (TF_SID_PACKAGES).
    if [ "$(cat "$1/.tf-runner" 2>/dev/null)" = tf_on_host ] && ! command -v valgrind >/dev/null; then
        tf_apt_install valgrind || return 1
    fi
    tf_py "$1" benchmarks/instructions.py --check
}

suite() {  # suite VENV ARGS...: CPython's test_concurrent_futures with tracedfutures substituted (by default), in
    # TF_SUITE_SHARDS shards side by side (the suite mostly sleeps and waits on its children): each shard's output
    # in turn, then their sum in one line
    local n=${TF_SUITE_SHARDS:-3} k status=0 pids=() watches=() outs=() line passed=0 failed=0 skipped=0 about=
    for ((k = 0; k < n; k++)); do
        watches[k]=$(mktemp "$TF_SID_REPO/.tf-suite-watch.XXXXXX")  # in the repository: the sid root sees it there
        outs[k]=$(mktemp)
        TF_SUITE_WATCH=${watches[k]} tf_py "$1" tests/cpython/run_stdlib_suite.py --shard "$k/$n" "${@:2}" \
            >"${outs[k]}" 2>&1 &
        pids[k]=$!
    done
    for ((k = 0; k < n; k++)); do
        if ! wait "${pids[k]}"; then
            status=1
            if [ "$(wc -l <"${watches[k]}")" -gt 1 ]; then cat "${watches[k]}" >>"${outs[k]}"; fi  # timed out: which
        fi
        echo "--- shard $k/$n"
        cat "${outs[k]}"
        line=$(grep '^stdlib-suite: ' "${outs[k]}" | tail -n 1)
        if [[ $line =~ ([0-9]+)\ passed.*\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped\ \((.*)\)$ ]]; then
            passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
            skipped=$((skipped + BASH_REMATCH[3])) about=${BASH_REMATCH[4]}
        else
            status=1
        fi
        rm -f "${watches[k]}" "${outs[k]}"
    done
    echo "stdlib-suite, $n shards: $passed passed, $failed failed, $skipped skipped ($about)"
    return "$status"
}

# The venvs are made 4 at a time (pip waits on the disk and the network as much as on a core).
jobs=$TF_JOBS
TF_JOBS=$((TF_JOBS > 4 ? TF_JOBS : 4))
# Needed by what follows: the venvs (the 3.14 and 3.15 ones may wait for the sid root), promtool, which
# tests/test_security.py runs too, and chromium and tmux (tests/test_cli_report.py, tests/test_cli_top.py).
stage --always "venv 3.14" venv --tests 3.14 .venv-3.14 tests/requirements.txt
stage --always "venv 3.15" venv --tests 3.15 .venv-3.15 tests/requirements.txt
stage --always "venv 3.11" \
    venv 3.11 .venv-3.11 tests/requirements.txt tests/lint-requirements.txt dashboards/requirements.txt
stage --always "venv 3.11 with its test package" venv --tests 3.11 .venv-3.11-debian tests/requirements.txt
stage --always "venv docs" venv 3.11 .venv-docs docs/requirements.txt
# 3.12.1 and 3.13.0 from pyenv, where this machine has them (its 3.12.1 has no test_concurrent_futures): the very
# releases the shutdown-deadlock workaround (tracedfutures/_shutdown_deadlock.py) exists for.
stage --always "venv 3.12" optional_venv 3.12 .venv-3.12 tests/requirements.txt
stage --always "venv 3.13 with its test package" optional_venv --tests 3.13 .venv-3.13 tests/requirements.txt
stage "prometheus + promtool" tf_prometheus
stage "chromium + tmux" tf_report_tools
all_ended
TF_JOBS=$jobs

# Longest first, so that the two lanes end together, each unit-test stage (busy on a core) beside a CPython suite
# (which mostly sleeps and waits on its children: run as TF_SUITE_SHARDS shards side by side, about 70 s where it
# took 200 s in one).
stage "unit tests 3.11" unit_tests .venv-3.11 -p no:randomly
stage "CPython suite 3.15" suite .venv-3.15
stage "unit tests 3.14" unit_tests .venv-3.14
stage "CPython suite 3.15, instrumentor" suite .venv-3.15 --mode instrumentor
stage "unit tests 3.15, interpreter-dependent" version_tests .venv-3.15
stage "CPython suite 3.15, forced fallback" forced_fallback suite .venv-3.15
stage "unit tests 3.15, forced fallback, path-dependent" forced_fallback version_tests .venv-3.15
stage "CPython suite 3.14" suite .venv-3.14
stage "unit tests 3.12, interpreter-dependent" if_venv .venv-3.12 version_tests .venv-3.12
stage "CPython suite 3.13" if_venv .venv-3.13 suite .venv-3.13
stage "unit tests 3.13, interpreter-dependent" if_venv .venv-3.13 version_tests .venv-3.13
stage "CPython suite 3.11" suite .venv-3.11-debian
# Stress: 500,000 tasks, flat memory; 100,000 tasks from 16 threads, exact counts; 10,000 pool names, bounded.
stage "stress: soak, 500,000 tasks" tf_py .venv-3.11 tests/stress/soak.py 500000
# Both Prometheus versions scrape one program; Prometheus 3's binary (and promtool) from the sid root runs here as is.
stage "dashboards, alert rules, real Prometheus 2 and 3" tf_py .venv-3.11 -m pytest tests/prometheus -q -p no:randomly
# The cost per task, counted (callgrind, about 2 minutes each on 2 cores): over a budget fails.
stage "instruction gate 3.11" instruction_gate .venv-3.11
stage "instruction gate 3.14" instruction_gate .venv-3.14
stage "stress: load, 100,000 tasks" tf_py .venv-3.11 tests/stress/load.py 100000
# tests/stress/free_threaded.py, written for free-threaded builds (3.14t, 3.15t), which cannot be had here: it runs on
# 3.15 with the GIL (it prints sys._is_gil_enabled()), every piece of shared state from 16 threads at once, exact
# counts afterwards. Named for what it runs: a free-threaded build would be a stage of its own.
stage "stress: shared state from 16 threads, 3.15 with the GIL" tf_py .venv-3.15 tests/stress/free_threaded.py 100000
stage "stress: 10,000 pool names" tf_py .venv-3.11 tests/stress/pool_names.py 10000
stage "docs: mkdocs build --strict" tf_py .venv-docs -m mkdocs build --strict --quiet -d "$logs/site"
stage "mypy" tf_py .venv-3.11 -m mypy
stage "ruff" tf_py .venv-3.11 -m ruff check tracedfutures tests examples benchmarks dashboards
all_ended

echo
if [ "$failed" -ne 0 ]; then
    # Again at the very end, where a truncated CI log still shows it: what each failed stage said last.
    for name in "${failures[@]}"; do
        echo "--- $name: its failure lines and its last 40 lines"
        grep -E '^(FAILED|ERROR|FAIL|ENV CHANGED|Timeout|Thread 0x|E  )' "$(stage_log "$name")" | head -n 40
        echo "..."
        tail -n 40 "$(stage_log "$name")"
    done
    printf 'failed stage: %s\n' "${failures[@]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
