#!/usr/bin/env bash
# Set up edgeq on a fresh machine: a venv in .venv with the host and dev extras.
#   scripts/setup.sh            edgeq + TensorFlow (host) + test tools (dev)
#   scripts/setup.sh --tests    also what the test suite needs: a second venv with the
#                               old tflite-runtime 2.14 (a stand-in for an old device)
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[host,dev]"

if [ "${1:-}" = "--tests" ]; then
    # tflite-runtime 2.14 (last release) needs numpy<2: it lives in its own venv.
    if [ ! -x .venv-tflite214/bin/python ]; then
        "$PYTHON" -m venv .venv-tflite214
    fi
    .venv-tflite214/bin/python -m pip install --quiet "numpy<2" "tflite-runtime==2.14.0"
fi
echo "edgeq is set up in .venv ($(.venv/bin/edgeq --version))"
