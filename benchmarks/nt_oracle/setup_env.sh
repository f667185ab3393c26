#!/usr/bin/env bash
# Build the pinned side environment in which neural-tangents 0.6.5 runs.
# Idempotent: does nothing if the venv already imports neural_tangents.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"

if [ -x "$VENV/bin/python" ] && \
   "$VENV/bin/python" -c "import sys; sys.path.insert(0, '$HERE'); import nt_import; nt = nt_import.load(); assert nt.__version__ == '0.6.5'" \
   >/dev/null 2>&1; then
  echo "[nt_oracle] side env already built: $VENV"
  exit 0
fi

PY="${PYTHON311:-}"
if [ -z "$PY" ]; then
  if [ -x /root/.pyenv/shims/python3.11 ]; then PY=/root/.pyenv/shims/python3.11
  elif command -v python3.11 >/dev/null 2>&1; then PY="$(command -v python3.11)"
  else echo "[nt_oracle] python3.11 not found (set PYTHON311=...)" >&2; exit 1; fi
fi

echo "[nt_oracle] creating $VENV with $PY"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
  "jax==0.4.25" "jaxlib==0.4.25" "numpy<2" "scipy<1.14" "frozendict>=2.3.8"
# --no-deps: NT 0.6.5 declares tf2jax (-> tensorflow) as a dependency, which is
# only used by neural_tangents.experimental; we stub that module instead.
"$VENV/bin/python" -m pip install --quiet --no-deps "neural-tangents==0.6.5"

"$VENV/bin/python" -c "import sys; sys.path.insert(0, '$HERE'); import nt_import; nt = nt_import.load(); print('[nt_oracle] neural_tangents', nt.__version__)"
