#!/usr/bin/env bash
# Run the tests: lmmlib's unit tests and the execution of every notebook of the book.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not notebooks"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_venv
cd "$ROOT"
python -m pytest "$@"
