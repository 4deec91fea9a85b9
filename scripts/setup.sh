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
    # Real OpenSSH servers on loopback and in network namespaces stand in for lab devices.
    if ! [ -x /usr/sbin/sshd ] || ! command -v ip >/dev/null || ! command -v ssh-keygen >/dev/null \
        || ! command -v scp >/dev/null || ! command -v unshare >/dev/null; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server openssh-client iproute2 util-linux >/dev/null
    fi
    # A real PostgreSQL server (Debian's binaries; the tests start a private cluster) for the lab history.
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    # labgrid (coordinator, exporter, client) for the shared-lab tests, in its own venv as a lab
    # installs it: it pins grpcio/protobuf and brings a pytest plugin.
    if [ ! -x .venv-labgrid/bin/python ]; then
        "$PYTHON" -m venv .venv-labgrid
    fi
    .venv-labgrid/bin/python -m pip install --quiet "labgrid==26.0.1"
    # tflite-runtime 2.14 (last release) needs numpy<2: it lives in its own venv.
    if [ ! -x .venv-tflite214/bin/python ]; then
        "$PYTHON" -m venv .venv-tflite214
    fi
    .venv-tflite214/bin/python -m pip install --quiet "numpy<2" "tflite-runtime==2.14.0"
fi
echo "edgeq is set up in .venv ($(.venv/bin/edgeq --version))"
