#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
# Emulated aarch64 board: tools, binfmt, cached rootfs. 77 = this machine cannot emulate
# (its tests then skip, saying why, and .ci/run counts the skips).
rc=0; bash scripts/arm64_board.sh prepare || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 77 ] || exit "$rc"
# Old-Python board (Debian bullseye amd64, Python 3.9, as on an older Raspberry Pi OS): cached rootfs.
rc=0; bash scripts/old_python_board.sh prepare || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 77 ] || exit "$rc"
export EDGEQ_TFLITE214_PYTHON="$PWD/.venv-tflite214/bin/python"
exec .venv/bin/python -m pytest "$@"
