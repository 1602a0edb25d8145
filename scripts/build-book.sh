#!/usr/bin/env bash
# Build the book: make .venv if needed, execute every notebook (cached in
# _build/.jupyter_cache, so a fresh clone executes all of them) and write the site to
# _build/html. Fails on a notebook error and on any Sphinx warning. Then write the reader
# notebooks (_build/notebooks/answers and students; the site serves the answer key).
#   bash scripts/build-book.sh              # build
#   bash scripts/build-book.sh --clean      # forget the cache and the old site first
#   bash scripts/build-book.sh --students   # also the students' edition (_build/students/html)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_venv
cd "$ROOT"
students=0
for arg in "$@"; do
    case "$arg" in
        --clean) rm -rf _build ;;
        --students) students=1 ;;
        *) echo "unknown option $arg (use --clean, --students)" >&2; exit 2 ;;
    esac
done
start=$(date +%s)
jupyter-book build . --builder html -W -n --keep-going
python scripts/make_notebooks.py
python scripts/check_site.py _build/html
echo "==> book built in $(( $(date +%s) - start )) s: open _build/html/index.html"
if [ "$students" = 1 ]; then
    python scripts/students_edition.py
    python scripts/check_site.py _build/students/html
fi
