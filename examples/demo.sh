#!/usr/bin/env bash
# Runs the demo workload on a fresh clone: makes .venv-demo, installs, runs; arguments go to demo.py. The venv is
# made from the first supported Python (3.11 or later, with ensurepip) found on this machine: python3 on PATH,
# else python3.15 ... python3.11 from pyenv, PATH or /usr/bin (tests/tools/venv.sh's tf_python). Only where there
# is none does it fall back to tf_venv 3.14, which as root on Debian installs one or makes a Debian sid root
# (tests/tools/sid.sh, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.." || exit
source tests/tools/venv.sh

TF_DEMO_PYTHONS="3.15 3.14 3.13 3.12 3.11"  # supported (pyproject's classifiers), newest first

demo_python() {  # the first supported Python found on this machine, or nothing
    local v
    if python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        command -v python3
        return 0
    fi
    for v in $TF_DEMO_PYTHONS; do
        tf_python "$v" ensurepip && return 0
    done
    return 1
}

if py=$(demo_python); then
    echo "demo: $("$py" -c 'import platform; print("Python", platform.python_version())') ($py)" >&2
    tf_venv_in tf_on_host "$py" .venv-demo examples/requirements.txt
else
    source tests/tools/sid.sh
    trap tf_sid_umount EXIT
    tf_venv 3.14 .venv-demo examples/requirements.txt
fi
tf_py .venv-demo examples/demo.py "$@"
