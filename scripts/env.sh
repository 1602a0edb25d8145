#!/usr/bin/env bash
# Sourced by the other scripts: finds Python >= 3.12 and makes the project's virtual
# environment (.venv) from requirements.txt, reinstalling only when requirements.txt changes.
#   PYTHON=/path/to/python3.12 bash scripts/test.sh   # to choose the interpreter yourself
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

python_ok() {  # is "$1" a Python >= 3.12?
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    # The pins in requirements.txt were made with 3.12, so 3.12 is preferred to newer ones.
    candidates+=(python3.12)
    if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
        local root
        root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
        candidates+=($(ls -d "$root"/versions/3.12.*/bin/python3 2>/dev/null | sort -rV))
        candidates+=($(ls -d "$root"/versions/3.1[3-9]*/bin/python3 2>/dev/null | sort -V))
    fi
    candidates+=(python3.13 python3 python)
    local c
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    echo "error: this book needs Python 3.12 or newer and none was found" \
         "(tried: ${candidates[*]}). Install one, or set PYTHON=/path/to/python3.12." >&2
    return 1
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
        local py
        py="$(find_python)"
        echo "==> creating $VENV with $py ($("$py" --version))"
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
    fi
    local want have
    # Python's hashlib, not sha256sum (which macOS lacks).
    want="$("$VENV/bin/python" -c 'import hashlib, sys
print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' \
        "$ROOT/requirements.txt" "$ROOT/pyproject.toml")"
    have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        echo "==> installing requirements.txt into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r requirements.txt)
        echo "$want" > "$VENV/.requirements.sha256"
    fi
    export PATH="$VENV/bin:$PATH"
}
