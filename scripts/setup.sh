#!/usr/bin/env bash
# Create .venv with exactly the versions in requirements.lock, then sinklens itself; a
# second run reuses everything and installs nothing.
#
#   scripts/setup.sh             # .venv from requirements.lock (what `make test` uses)
#   scripts/setup.sh --latest    # .venv-latest with the newest versions pyproject.toml allows
#   PYTHON=python3.11 scripts/setup.sh     # pick the interpreter (3.10+)
#   SINKLENS_TORCH_INDEX=<url> scripts/setup.sh
#       installs torch from that wheel index (e.g. the PyTorch CPU index) instead of the
#       default index, where plain `torch` is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
LOCK=requirements.lock
MODE=lock
VENV=.venv
if [ "${1:-}" = "--latest" ]; then
    MODE=latest
    VENV=.venv-latest
elif [ -n "${1:-}" ]; then
    echo "setup: unknown option $1; use no option or --latest" >&2
    exit 2
fi
STAMP="$VENV/.sinklens-installed"
locked() { sed -n "s/^$1==//p" "$LOCK"; }
TORCH_VERSION="${SINKLENS_TORCH_VERSION:-$(locked torch)}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

# Reinstall only when the declared dependencies or the lock changed.
want=$(cat pyproject.toml "$LOCK" | sha256sum | cut -d' ' -f1)-$MODE
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$PY" -c "import sinklens" 2>/dev/null; then
    echo "setup: $VENV is up to date"
    exit 0
fi

if [ "$MODE" = lock ]; then
    pip_install "pip==$(locked pip)"
else
    pip_install --upgrade pip
fi

# torch first, pinned, so that resolving the other dependencies never pulls a CUDA build.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION"
    if [ -n "${SINKLENS_TORCH_INDEX:-}" ]; then
        pip_install "torch==$TORCH_VERSION" --index-url "$SINKLENS_TORCH_INDEX"
    else
        pip_install "torch==$TORCH_VERSION"
    fi
fi

if [ "$MODE" = lock ]; then
    # Exactly the lock (every transitive dependency pinned), then sinklens on top of it
    # without letting pip resolve anything else.
    echo "setup: installing the locked environment ($LOCK)"
    pip_install -r "$LOCK"
    pip_install --no-deps --no-build-isolation -e .
    "$PY" -m pip check --disable-pip-version-check >/dev/null || {
        "$PY" -m pip check --disable-pip-version-check >&2
        echo "setup: $LOCK is inconsistent with pyproject.toml; regenerate it (docs/dependencies.md)" >&2
        exit 1
    }
else
    echo "setup: installing the newest versions pyproject.toml allows"
    pip_install --upgrade --upgrade-strategy eager "torch==$TORCH_VERSION" -e '.[dev]'
fi
echo "$want" > "$STAMP"
