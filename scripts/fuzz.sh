#!/usr/bin/env bash
# Nightly fuzzing: the input-set, run-directory and .tflite readers, N minutes each.
#   bash scripts/fuzz.sh --minutes 10 [--seed N]     (exit 1 when a crash was found)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests >/dev/null
exec .venv/bin/python scripts/fuzz.py "$@"
