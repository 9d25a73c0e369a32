# Sourced by tests/run.sh and examples/demo.sh: find an interpreter and make a venv with the project in it.
# Usage: tf_venv 3.11 DIR REQUIREMENTS...   (prints nothing on success, exits on failure)

tf_python() {  # tf_python 3.11 -> path of a python3.11 that runs
    local v=$1 candidate
    for candidate in "python$v" "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/$v"*/bin/"python$v" \
                     /root/.pyenv/versions/"$v"*/bin/"python$v" /usr/bin/"python$v" /usr/local/bin/"python$v"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
            command -v "$candidate" 2>/dev/null || echo "$candidate"
            return 0
        fi
    done
    return 1
}

tf_venv() {  # tf_venv 3.11 .venv-3.11 req1.txt [req2.txt ...]
    local v=$1 dir=$2; shift 2
    local py stamp want
    py=$(tf_python "$v") || { echo "Python $v not found (pyenv or python$v on PATH)" >&2; return 1; }
    want=$(cat "$@" pyproject.toml | sha256sum | cut -c1-16)
    stamp="$dir/.tf-installed"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/bin/python" -c 'import tracedfutures' 2>/dev/null; then
        return 0
    fi
    rm -rf "$dir"
    "$py" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    local args=()
    for r in "$@"; do args+=(-r "$r"); done
    if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}" -e . >"$dir/pip.log" 2>&1; then
        cat "$dir/pip.log" >&2
        return 1
    fi
    "$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; return 1; }
    echo "$want" > "$stamp"
}
