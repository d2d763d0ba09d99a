#!/usr/bin/env bash
# Create .venv and install sinklens with its dev tools; a second run reuses everything.
#
#   PYTHON=python3.11 scripts/setup.sh     # pick the interpreter (3.10+)
#   SINKLENS_TORCH_INDEX=<url> scripts/setup.sh
#       installs torch from that wheel index (e.g. the PyTorch CPU index) instead of the
#       default index, where plain `torch` is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${SINKLENS_TORCH_VERSION:-2.13.0}"
VENV=.venv
STAMP="$VENV/.sinklens-installed"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"

# torch first, pinned, so that resolving the other dependencies never pulls a CUDA build.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION"
    if [ -n "${SINKLENS_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$SINKLENS_TORCH_INDEX"
    else
        "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
    fi
fi

# Reinstall the package only when its declared dependencies changed.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] || ! "$PY" -c "import sinklens" 2>/dev/null; then
    echo "setup: installing sinklens and its dev tools"
    "$PY" -m pip install --quiet -e '.[dev]'
    echo "$want" > "$STAMP"
else
    echo "setup: $VENV is up to date"
fi
