#!/usr/bin/env bash
# An emulated aarch64 board (a Raspberry-Pi-like Debian arm64 userland under qemu-user) for
# the tests and for trying edgeq without hardware.
#
#   bash scripts/arm64_board.sh prepare   # tools + binfmt + cached rootfs tarball (root)
#   bash scripts/arm64_board.sh start     # boot the board in the background, print its edgeq.toml
#   bash scripts/arm64_board.sh stop      # stop it, delete its namespace and rootfs copy
#   bash scripts/arm64_board.sh status    # what is installed/cached/running
#   bash scripts/arm64_board.sh rootfs-path  # the cached tarball this recipe gives
#
# prepare: apt installs mmdebstrap and qemu-user-static >= 8 (bookworm's 7.2 passes the x86
# /proc/cpuinfo through and ai-edge-litert 2.3.0 crashes on it; 10.x comes from
# bookworm-backports, whose apt source is added under /etc/apt/sources.list.d/ if missing),
# mounts binfmt_misc and registers qemu-aarch64 with the F flag (so a chroot needs no qemu
# binary inside), then builds the rootfs with mmdebstrap once and caches it as
#   ${EDGEQ_CACHE:-~/.cache/edgeq}/arm64-rootfs-<recipe hash>.tar
# A changed recipe (suite, packages, mirror) gives a new hash, so a stale cache is never used.
#
# Exit status 77 means "this machine cannot emulate an arm64 board" (not root, binfmt_misc
# cannot be mounted, no qemu-user >= 8 available): the tests skip with the printed reason.
# Any other non-zero status is a real failure.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."

SUITE=bookworm
MIRROR=${EDGEQ_ARM64_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,openssh-server,ca-certificates
QEMU_MIN_MAJOR=8
CACHE_DIR=${EDGEQ_CACHE:-$HOME/.cache/edgeq}
RECIPE="suite=$SUITE mirror=$MIRROR packages=$PACKAGES variant=apt recipe=2"
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
TARBALL=$CACHE_DIR/arm64-rootfs-$HASH.tar
STATE_DIR=${EDGEQ_ARM64_STATE:-/var/tmp/edgeq-arm64-board}
PYTHON=${PYTHON:-.venv/bin/python}

cannot() { echo "arm64 board: cannot emulate here: $*" >&2; exit 77; }
say() { echo "arm64 board: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

qemu_major() {
    local bin
    bin=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
    [ -n "$bin" ] || { echo 0; return; }
    "$bin" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}

install_tools() {
    [ "$(id -u)" = 0 ] || cannot "needs root (apt, binfmt_misc, chroot, network namespaces)"
    local need=()
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    command -v arch-test >/dev/null || need+=(arch-test)  # mmdebstrap needs it for a foreign arch
    [ "$(qemu_major)" -ge "$QEMU_MIN_MAJOR" ] || need+=(qemu-user-static)
    for tool in sshd:openssh-server ssh-keygen:openssh-client ip:iproute2 unshare:util-linux; do
        PATH=$PATH:/usr/sbin:/sbin command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || cannot "no apt-get to install ${need[*]}"
        if [[ " ${need[*]} " == *" qemu-user-static "* ]] && ! grep -rqs "$SUITE-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            say "adding $SUITE-backports to /etc/apt/sources.list.d/edgeq-backports.sources"
            printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$MIRROR" "$SUITE" > /etc/apt/sources.list.d/edgeq-backports.sources
        fi
        say "installing ${need[*]}"
        apt-get update -qq >&2 || cannot "apt-get update failed"
        local pkgs=()
        for p in "${need[@]}"; do
            if [ "$p" = qemu-user-static ]; then pkgs+=("qemu-user-static/$SUITE-backports"); else pkgs+=("$p"); fi
        done
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 \
            || cannot "apt-get install ${pkgs[*]} failed (is $SUITE-backports reachable?)"
    fi
    local major
    major=$(qemu_major)
    [ "$major" -ge "$QEMU_MIN_MAJOR" ] || cannot "qemu-user is version $major; ai-edge-litert 2.3.0 needs >= $QEMU_MIN_MAJOR (bookworm-backports)"
}

register_binfmt() {
    [ "$(id -u)" = 0 ] || cannot "needs root to register binfmt_misc"
    local dir=/proc/sys/fs/binfmt_misc
    if [ ! -e $dir/register ]; then
        mount -t binfmt_misc binfmt_misc $dir 2>/dev/null || cannot "binfmt_misc cannot be mounted at $dir"
    fi
    local qemu
    qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
    if [ -e $dir/qemu-aarch64 ]; then
        # Any enabled entry with F (e.g. Debian's own, from systemd-binfmt) serves: keep it.
        if grep -qx enabled $dir/qemu-aarch64 && grep -q '^flags:.*F' $dir/qemu-aarch64; then
            return 0
        fi
        say "replacing the qemu-aarch64 binfmt entry (disabled or without the F flag)"
        echo -1 > $dir/qemu-aarch64
    fi
    # ELF64 little-endian, e_machine 0xb7 (aarch64); F: the interpreter is opened now, so it
    # works inside chroots; P: keep argv[0]; C: credentials of the binary (setuid as on a board).
    printf '%s' ":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$qemu:FPC" \
        > $dir/register 2>/dev/null || cannot "could not register qemu-aarch64 in binfmt_misc"
}

build_rootfs() {
    if [ -s "$TARBALL" ]; then
        say "rootfs cached: $TARBALL"
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    local t0 part
    t0=$(now)
    part=$CACHE_DIR/.arm64-rootfs-$HASH.$$.tar  # mmdebstrap writes a tarball only to a *.tar name
    say "building the arm64 $SUITE rootfs (cold, a few minutes under qemu): $PACKAGES"
    # Docs, man pages and locales are left out: the board needs none and the tarball stays small.
    if ! mmdebstrap --quiet --arch=arm64 --variant=apt --include="$PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
        "$SUITE" "$part" "$MIRROR" >&2; then
        rm -f "$part"
        say "mmdebstrap failed"
        exit 1
    fi
    mv "$part" "$TARBALL"
    say "cold build: $(since "$t0") s, $(du -h "$TARBALL" | cut -f1) -> $TARBALL"
}

check_emulation() {
    # The smallest proof: run an arm64 binary from the tarball through binfmt.
    local probe
    probe=$(mktemp -d)
    tar -xf "$TARBALL" -C "$probe" ./lib ./usr/bin/uname ./usr/lib/ld-linux-aarch64.so.1 \
        ./usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 ./usr/lib/aarch64-linux-gnu/libc.so.6 2>/dev/null || true
    local arch
    arch=$(chroot "$probe" /usr/bin/uname -m 2>/dev/null || true)
    rm -rf "$probe"
    [ "$arch" = aarch64 ] || cannot "an arm64 binary did not run through binfmt (uname -m said '${arch:-nothing}')"
}

case "${1:-}" in
    prepare)
        t0=$(now)
        install_tools
        register_binfmt
        build_rootfs
        check_emulation
        say "ready in $(since "$t0") s (qemu $(qemu_major).x, rootfs $TARBALL)"
        ;;
    rootfs-path)
        echo "$TARBALL"
        ;;
    start)
        [ -s "$TARBALL" ] || bash "$SELF" prepare
        shift
        exec "$PYTHON" tests/arm64_board.py start --rootfs-tar "$TARBALL" --state "$STATE_DIR" "$@"
        ;;
    stop)
        exec "$PYTHON" tests/arm64_board.py stop --state "$STATE_DIR"
        ;;
    status)
        echo "qemu-user: $(qemu_major).x ($(command -v qemu-aarch64-static || echo none))"
        echo "binfmt: $(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null | head -1 || echo 'not registered')"
        echo "rootfs: $TARBALL $([ -s "$TARBALL" ] && echo '(cached)' || echo '(not built)')"
        [ -s "$STATE_DIR/edgeq.toml" ] && { echo "running board (pid $(cat "$STATE_DIR/pid" 2>/dev/null)):"; cat "$STATE_DIR/edgeq.toml"; }
        true
        ;;
    *)
        sed -n '2,22p' "$SELF"
        exit 2
        ;;
esac
