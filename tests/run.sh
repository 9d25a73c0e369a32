#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venvs, packages, lint, type check, unit tests, and CPython's own
# test_concurrent_futures on the oldest and newest supported Python. Exits non-zero if any stage fails.
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/tools/venv.sh

passed=0
failed=0
failures=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
stage_log() { echo "$logs/$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '_').log"; }
stage() {  # stage NAME COMMAND...: run one stage, keep going, remember the outcome (and the stage's output)
    local name=$1; shift
    echo
    echo "=== $name"
    local start=$SECONDS
    if "$@" 2>&1 | tee "$(stage_log "$name")"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== $name: FAILED ($((SECONDS - start))s)"
    fi
}

tf_prometheus() {  # Debian's prometheus and promtool for tests/prometheus (as root, quietly), unless on PATH
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "prometheus/promtool not on PATH and not root: install them (Debian: apt-get install prometheus)" >&2
            return 1
        fi
        local log; log=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                prometheus; } >"$log" 2>&1; then
            cat "$log" >&2; rm -f "$log"; return 1
        fi
        rm -f "$log"
    fi
    prometheus --version 2>&1 | sed -n 1p
}

stage "venv 3.11" tf_venv 3.11 .venv-3.11 tests/requirements.txt tests/lint-requirements.txt dashboards/requirements.txt
stage "venv 3.10" tf_venv 3.10 .venv-3.10 tests/requirements.txt
stage "venv 3.13" tf_venv 3.13 .venv-3.13 tests/requirements.txt

stage "ruff" .venv-3.11/bin/ruff check tracedfutures tests examples benchmarks dashboards
stage "mypy" .venv-3.11/bin/mypy
stage "prometheus + promtool" tf_prometheus  # before the unit tests: tests/test_security.py runs promtool too
stage "unit tests 3.11" .venv-3.11/bin/python -m pytest tests -q -p no:randomly --ignore=tests/cpython --ignore=tests/prometheus
stage "unit tests 3.13" .venv-3.13/bin/python -m pytest tests -q --ignore=tests/cpython --ignore=tests/prometheus
stage "dashboards, alert rules, real Prometheus" .venv-3.11/bin/python -m pytest tests/prometheus -q -p no:randomly
stage "CPython suite 3.10" .venv-3.10/bin/python tests/cpython/run_stdlib_suite.py
stage "CPython suite 3.13" .venv-3.13/bin/python tests/cpython/run_stdlib_suite.py
stage "CPython suite 3.13, instrumentor" .venv-3.13/bin/python tests/cpython/run_stdlib_suite.py --mode instrumentor
# Stress (about 40 s and 90 s on 2 cores): 200,000 tasks from 16 threads, exact counts; 1,000,000 tasks, flat memory.
stage "stress: load, 200,000 tasks" .venv-3.11/bin/python tests/stress/load.py 200000
stage "stress: soak, 1,000,000 tasks" .venv-3.11/bin/python tests/stress/soak.py 1000000

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
