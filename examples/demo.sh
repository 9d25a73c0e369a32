#!/usr/bin/env bash
# Runs the demo workload on a fresh clone: makes .venv-demo (Python 3.11, else 3.13/3.12/3.10), installs, runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/tools/venv.sh
for v in 3.11 3.13 3.12 3.10; do
    if tf_python "$v" >/dev/null; then break; fi
done
tf_venv "$v" .venv-demo examples/requirements.txt
exec .venv-demo/bin/python examples/demo.py "$@"
