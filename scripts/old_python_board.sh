#!/usr/bin/env bash
# An old-Python test board: Debian bullseye amd64 (python3 3.9, glibc 2.31 — the versions of a
# Raspberry Pi OS bullseye board), native, no emulation; its own sshd in its own network namespace.
# The same recipe as the emulated arm64 board (scripts/arm64_board.sh --board bullseye-amd64):
#
#   bash scripts/old_python_board.sh prepare      # mmdebstrap once (~1 min), cached rootfs tarball (root)
#   bash scripts/old_python_board.sh start        # boot it in the background, print its edgeq.toml
#   bash scripts/old_python_board.sh stop         # stop it, delete its namespace and rootfs copy
#   bash scripts/old_python_board.sh status | rootfs-path
#
# Exit status 77: this machine cannot host the board (not root, not x86_64); tests skip.
exec bash "$(dirname "$(realpath "$0")")/arm64_board.sh" --board bullseye-amd64 "$@"
