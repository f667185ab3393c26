#!/usr/bin/env bash
# One command to (re)build the NT side env and regenerate tests/data/nt_kernels.npz.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/setup_env.sh"
"$HERE/.venv/bin/python" -W ignore "$HERE/make_references.py" "$@"
