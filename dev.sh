#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv (Python >= 3.12) and runs a job.
#   bash dev.sh demo [OUT]   write a demo export (default OUT: ./demo-output)
#   bash dev.sh test         ruff, mypy, then the test suite (CAREamics and torch included)
#   bash dev.sh docs [PORT]  build the user guide and API reference, serve on 127.0.0.1
#   bash dev.sh bench [samples|tiles|pyramid|careamics|careamics_real|scale|distributed|overlap] [ARGS]
#                            one benchmark (minutes; see benchmarks/README.md)
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    local candidate
    for candidate in python3.12 python3.13 python3.14 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

setup() {
    local extras=$1
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
        local py
        if ! py=$(find_python); then
            echo "ngff-writer needs Python >= 3.12 (zarr >= 3.2 does); none was found on PATH." >&2
            echo "Install one (e.g. 'pyenv install 3.12', which .python-version selects) and retry." >&2
            exit 3
        fi
        echo "Creating .venv with $($py --version)" >&2
        rm -rf .venv
        "$py" -m venv .venv
    fi
    local target="."
    [ -n "$extras" ] && target=".[$extras]"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target" 2>&1 \
        | grep -v "^WARNING: Location" || true
    .venv/bin/python -c 'import ngff_writer' || { echo "installation failed" >&2; exit 3; }
}

job=${1:-}
case "$job" in
    demo)
        setup ""
        .venv/bin/ngff-writer demo "${2:-demo-output}" --overwrite
        ;;
    test)
        setup "test,careamics,docs"
        .venv/bin/ruff check ngff_writer tests examples benchmarks docs
        .venv/bin/python -m mypy ngff_writer
        .venv/bin/python -m pytest -q -p no:cacheprovider
        ;;
    docs)
        setup "docs"
        NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
        NO_MKDOCS_2_WARNING=1 exec .venv/bin/mkdocs serve --strict -a "127.0.0.1:${2:-8000}"
        ;;
    bench)
        setup "test,bench"
        name=samples
        case "${2:-}" in samples|tiles|pyramid|careamics|careamics_real|scale|distributed|overlap) name=$2; shift ;; esac
        .venv/bin/python "benchmarks/bench_$name.py" "${@:2}"
        ;;
    *)
        echo "usage: bash dev.sh demo [OUT] | test | docs [PORT] | bench [samples|tiles|pyramid|careamics|careamics_real|scale|distributed|overlap] [ARGS]" >&2
        exit 2
        ;;
esac
