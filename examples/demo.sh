#!/usr/bin/env bash
# Runs the demo workload on a fresh clone, on Python 3.14: makes .venv-demo (from a python3.14 on this machine,
# else, as root on Debian, from a Debian sid root: tests/tools/sid.sh), installs, runs. Arguments go to demo.py.
set -euo pipefail
cd "$(dirname "$0")/.." || exit
source tests/tools/sid.sh
source tests/tools/venv.sh
trap tf_sid_umount EXIT
tf_venv 3.14 .venv-demo examples/requirements.txt
tf_py .venv-demo examples/demo.py "$@"
