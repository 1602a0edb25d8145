#!/usr/bin/env bash
# Build the book: make .venv if needed, execute every notebook (cached in
# _build/.jupyter_cache, so a fresh clone executes all of them) and write the site to
# _build/html. Fails on a notebook error and on any Sphinx warning.
#   bash scripts/build-book.sh          # build
#   bash scripts/build-book.sh --clean  # forget the cache and the old site first
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_venv
cd "$ROOT"
if [ "${1:-}" = "--clean" ]; then
    rm -rf _build
fi
start=$(date +%s)
jupyter-book build . --builder html -W -n --keep-going
python scripts/check_site.py _build/html
echo "==> book built in $(( $(date +%s) - start )) s: open _build/html/index.html"
