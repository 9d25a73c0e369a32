# shellcheck shell=bash
# Sourced by tests/run.sh and examples/demo.sh (after tests/tools/sid.sh): find an interpreter and make a venv
# with the project in it. Each function prints nothing on success but what it installs or makes, and on failure
# says why and returns non-zero.
#
#   tf_venv [--tests] 3.14 DIR REQUIREMENTS...   a venv from a Python 3.14 found in this order: one on this machine
#       (pyenv, PATH, /usr/bin); Debian's sid root (tests/tools/sid.sh) for the versions it has; as root, Debian's
#       own (apt-get install python3.X-venv). --tests: the interpreter must have CPython's test package (the
#       stdlib suite), from apt's libpython3.X-testsuite when it comes to that.
#   tf_py DIR ARGS...   run DIR/bin/python where its venv was made (here, or inside the sid root)

tf_on_host() { "$@"; }

tf_python() {  # tf_python 3.11 [MODULE...] -> path of a python3.11 on this machine that runs and imports MODULEs
    local v=$1 candidate code="import sys"; shift
    for candidate; do code+=", $candidate"; done
    for candidate in "python$v" "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/$v"*/bin/"python$v" \
                     /root/.pyenv/versions/"$v"*/bin/"python$v" /usr/bin/"python$v" /usr/local/bin/"python$v"; do
        if [ -n "$candidate" ] && "$candidate" -c "$code" >/dev/null 2>&1; then
            command -v "$candidate" 2>/dev/null || echo "$candidate"
            return 0
        fi
    done
    return 1
}

tf_apt_install() {  # tf_apt_install PACKAGE...: Debian packages, as root, quietly (its output only on failure)
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "not root on Debian: install $* yourself" >&2
        return 1
    fi
    local log; log=$(mktemp)
    # One apt at a time: stages running side by side may both install something.
    if ! flock /run/lock/tracedfutures-apt sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@"' sh "$@" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
}

tf_venv() {  # tf_venv [--tests] 3.11 DIR REQUIREMENTS...
    local modules=(ensurepip) debs=()
    if [ "$1" = --tests ]; then modules+=(test.test_concurrent_futures); shift; fi
    local v=$1 dir=$2; shift 2
    local py runner=tf_on_host
    debs=("python$v-venv")
    [ "${#modules[@]}" -eq 1 ] || debs+=("libpython$v-testsuite")
    if ! py=$(tf_python "$v" "${modules[@]}"); then
        if declare -F tf_sid_has >/dev/null && tf_sid_has "$v"; then
            runner=tf_in_sid py=/usr/bin/python$v
        elif ! { tf_apt_install "${debs[@]}" && py=$(tf_python "$v" "${modules[@]}"); }; then
            echo "no Python $v that imports ${modules[*]}: install one (Debian: apt-get install ${debs[*]};" \
                 "pyenv: pyenv install $v), or run this as root on Debian 12 (it installs those, or makes a" \
                 "Debian sid root for ${TF_SID_PYTHONS:-3.14 3.15})" >&2
            return 1
        fi
    fi
    tf_venv_in "$runner" "$py" "$dir" "$@"
}

tf_venv_in() {  # tf_venv_in RUNNER PYTHON DIR REQUIREMENTS...: made once, again when requirements or Python change
    local runner=$1 py=$2 dir=$3; shift 3
    local stamp="$dir/.tf-installed" want r args=()
    want=$({ cat "$@" pyproject.toml; echo "$runner $py"; } | sha256sum | cut -c1-16)
    "$runner" true || return 1  # the sid root made and mounted, saying so, before a check that hides errors
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && tf_py "$dir" -c 'import tracedfutures' 2>/dev/null; then
        return 0
    fi
    rm -rf "$dir"
    "$runner" "$py" -m venv "$dir" || return 1
    echo "$runner" >"$dir/.tf-runner"
    tf_py "$dir" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    for r; do args+=(-r "$r"); done
    if ! tf_py "$dir" -m pip install -q --disable-pip-version-check "${args[@]}" -e . >"$dir/pip.log" 2>&1; then
        cat "$dir/pip.log" >&2
        return 1
    fi
    tf_py "$dir" -m pip check >/dev/null || { tf_py "$dir" -m pip check; return 1; }
    echo "$want" >"$stamp"
}

tf_py() {  # tf_py DIR ARGS...: DIR/bin/python ARGS, here or inside the sid root, where tf_venv made it
    local dir=$1 runner; shift
    runner=$(cat "$dir/.tf-runner" 2>/dev/null)
    case $runner in
        tf_on_host | tf_in_sid) "$runner" "$dir/bin/python" "$@" ;;
        *) echo "$dir: no venv made by tf_venv (did its venv stage fail?)" >&2; return 1 ;;
    esac
}
