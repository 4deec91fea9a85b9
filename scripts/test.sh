#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export EDGEQ_TFLITE214_PYTHON="$PWD/.venv-tflite214/bin/python"
exec .venv/bin/python -m pytest "$@"
