"""An old-Python board: Debian bullseye amd64 (python3 3.9, glibc 2.31 — a Raspberry Pi OS bullseye
board's versions), native, its own sshd in its own network namespace.

The same machinery as the emulated arm64 board (tests/arm64_board.py, kind `bullseye-amd64`;
scripts/old_python_board.sh is scripts/arm64_board.sh --board bullseye-amd64): mmdebstrap builds
the rootfs once and caches it as a tarball; each session boots a fresh copy.

`old_python_board` (session fixture) prepares, boots one board named `bullseye-py39` and writes an
inventory for it. Skip vs fail is decided exactly as for the arm64 board: where this machine
cannot host it (not Linux, not root, the script's exit status 77) the tests SKIP with the reason;
any other failure fails.

Command line: `bash scripts/old_python_board.sh prepare|start|stop|status`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm64_board import BULLSEYE_AMD64, DEVICE_WORKDIR, board_fixture  # noqa: E402

KIND = BULLSEYE_AMD64
BOARD_NAME = KIND.name  # "bullseye-py39"
SCRIPT = KIND.script  # scripts/old_python_board.sh
WHEEL_CACHE = KIND.wheel_cache  # cp39 x86_64 wheels that `devices setup --offline` downloads
PYTHON_VERSION = "3.9"  # what Debian bullseye's python3 is
__all__ = ["BOARD_NAME", "DEVICE_WORKDIR", "KIND", "PYTHON_VERSION", "SCRIPT", "WHEEL_CACHE", "old_python_board"]


@pytest.fixture(scope="session")
def old_python_board(tmp_path_factory, request):
    """One bullseye amd64 board (Python 3.9) for the session; skips with the reason where impossible."""
    yield from board_fixture(KIND, tmp_path_factory, request)
