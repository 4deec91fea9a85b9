#!/usr/bin/env bash
# Test boards: a Debian userland built once with mmdebstrap, cached as a tarball, booted as a
# chroot with its own sshd in its own network namespace (tests/arm64_board.py). Two boards share
# this one recipe:
#   arm64 (default)   an emulated aarch64 board: Raspberry-Pi-like Debian bookworm arm64 under
#                     qemu-user (Python 3.11)
#   bullseye-amd64    an old-Python board: Debian bullseye amd64, native (Python 3.9, glibc
#                     2.31, as on a Raspberry Pi OS bullseye board); scripts/old_python_board.sh
#
#   bash scripts/arm64_board.sh [--board B] prepare  # tools (+ binfmt) + cached rootfs tarball (root)
#   bash scripts/arm64_board.sh [--board B] start    # boot the board in the background, print its edgeq.toml
#   bash scripts/arm64_board.sh [--board B] stop     # stop it, delete its namespace and rootfs copy
#   bash scripts/arm64_board.sh [--board B] status   # what is installed/cached/running
#   bash scripts/arm64_board.sh [--board B] rootfs-path  # the cached tarball this recipe gives
#
# prepare: apt installs mmdebstrap (and, for arm64, qemu-user-static >= 8: bookworm's 7.2 passes
# the x86 /proc/cpuinfo through and ai-edge-litert 2.3.0 crashes on it; 10.x comes from
# bookworm-backports, whose apt source is added under /etc/apt/sources.list.d/ if missing, then
# mounts binfmt_misc and registers qemu-aarch64 with the F flag so a chroot needs no qemu binary
# inside), then builds the rootfs with mmdebstrap once and caches it as
#   ${EDGEQ_CACHE:-~/.cache/edgeq}/<board>-rootfs-<recipe hash>.tar
# A changed recipe (suite, arch, packages, mirror) gives a new hash, so a stale cache is never used.
#
# Exit status 77 means "this machine cannot host the board" (not root; arm64: binfmt_misc cannot
# be mounted, no qemu-user >= 8 available; bullseye-amd64: not an x86_64 host): the tests skip
# with the printed reason. Any other non-zero status is a real failure.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."

BOARD=${EDGEQ_BOARD:-arm64}
if [ "${1:-}" = --board ]; then BOARD=${2:-}; shift 2 || true; fi
CACHE_DIR=${EDGEQ_CACHE:-$HOME/.cache/edgeq}
DEFAULT_MIRROR=${EDGEQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,openssh-server,ca-certificates
QEMU_MIN_MAJOR=8
case "$BOARD" in
    arm64)
        SUITE=bookworm ARCH=arm64 MACHINE=aarch64 EMULATE=1
        MIRROR=${EDGEQ_ARM64_MIRROR:-$DEFAULT_MIRROR}
        # (this recipe line names no arch: it predates the second board and keeps its cached tarball)
        RECIPE="suite=$SUITE mirror=$MIRROR packages=$PACKAGES variant=apt recipe=2"
        STATE_DIR=${EDGEQ_ARM64_STATE:-/var/tmp/edgeq-arm64-board}
        CANNOT="cannot emulate here"
        ;;
    bullseye-amd64)
        SUITE=bullseye ARCH=amd64 MACHINE=x86_64 EMULATE=
        MIRROR=${EDGEQ_BULLSEYE_MIRROR:-$DEFAULT_MIRROR}
        RECIPE="suite=$SUITE arch=$ARCH mirror=$MIRROR packages=$PACKAGES variant=apt recipe=2"
        STATE_DIR=${EDGEQ_BULLSEYE_STATE:-/var/tmp/edgeq-bullseye-amd64-board}
        CANNOT="cannot host here"
        ;;
    *)
        echo "unknown board '$BOARD' (choose arm64 or bullseye-amd64)" >&2
        exit 2
        ;;
esac
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
TARBALL=$CACHE_DIR/$BOARD-rootfs-$HASH.tar
PYTHON=${PYTHON:-.venv/bin/python}

cannot() { echo "$BOARD board: $CANNOT: $*" >&2; exit 77; }
say() { echo "$BOARD board: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

qemu_major() {
    local bin
    bin=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
    [ -n "$bin" ] || { echo 0; return; }
    "$bin" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}

install_tools() {
    [ "$(id -u)" = 0 ] || cannot "needs root (apt, ${EMULATE:+binfmt_misc, }chroot, network namespaces)"
    if [ -z "$EMULATE" ] && [ "$(uname -m)" != "$MACHINE" ]; then
        cannot "the $BOARD board runs natively and needs a $MACHINE host, not $(uname -m)"
    fi
    local need=()
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    if [ -n "$EMULATE" ]; then
        command -v arch-test >/dev/null || need+=(arch-test)  # mmdebstrap needs it for a foreign arch
        [ "$(qemu_major)" -ge "$QEMU_MIN_MAJOR" ] || need+=(qemu-user-static)
    fi
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
            || cannot "apt-get install ${pkgs[*]} failed${EMULATE:+ (is $SUITE-backports reachable?)}"
    fi
    if [ -n "$EMULATE" ]; then
        local major
        major=$(qemu_major)
        [ "$major" -ge "$QEMU_MIN_MAJOR" ] || cannot "qemu-user is version $major; ai-edge-litert 2.3.0 needs >= $QEMU_MIN_MAJOR (bookworm-backports)"
    fi
}

register_binfmt() {
    [ -n "$EMULATE" ] || return 0  # a native board runs its binaries as they are
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
    local t0 part hooks=()
    t0=$(now)
    part=$CACHE_DIR/.$BOARD-rootfs-$HASH.$$.tar  # mmdebstrap writes a tarball only to a *.tar name
    say "building the $ARCH $SUITE rootfs (cold, ${EMULATE:+a few minutes under qemu}${EMULATE:-about a minute}): $PACKAGES"
    if [ -z "$EMULATE" ]; then
        # What the board is, read from inside it once (status prints it; the tests check it too).
        hooks+=(--customize-hook='chroot "$1" python3 -c "import platform, sys; print(\"python=%d.%d.%d\" % sys.version_info[:3]); print(\"libc=%s-%s\" % platform.libc_ver()); print(\"machine=\" + platform.machine())" > "$1/etc/edgeq-board-facts"')
    fi
    # Docs, man pages and locales are left out: the board needs none and the tarball stays small.
    if ! mmdebstrap --quiet --arch="$ARCH" --variant=apt --include="$PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' "${hooks[@]}" \
        "$SUITE" "$part" "$MIRROR" >&2; then
        rm -f "$part"
        say "mmdebstrap failed"
        exit 1
    fi
    mv "$part" "$TARBALL"
    say "cold build: $(since "$t0") s, $(du -h "$TARBALL" | cut -f1) -> $TARBALL"
}

check_board() {
    if [ -z "$EMULATE" ]; then
        local facts
        facts=$(tar -xOf "$TARBALL" ./etc/edgeq-board-facts 2>/dev/null || true)
        grep -qx "machine=$MACHINE" <<<"$facts" || { say "$TARBALL has no facts for a $MACHINE board: delete it and prepare again"; exit 1; }
        say "$(tr '\n' ' ' <<<"$facts")"
        return 0
    fi
    # The smallest proof: run an arm64 binary from the tarball through binfmt.
    local probe
    probe=$(mktemp -d)
    tar -xf "$TARBALL" -C "$probe" ./lib ./usr/bin/uname ./usr/lib/ld-linux-aarch64.so.1 \
        ./usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 ./usr/lib/aarch64-linux-gnu/libc.so.6 2>/dev/null || true
    local arch
    arch=$(chroot "$probe" /usr/bin/uname -m 2>/dev/null || true)
    rm -rf "$probe"
    [ "$arch" = "$MACHINE" ] || cannot "an arm64 binary did not run through binfmt (uname -m said '${arch:-nothing}')"
}

case "${1:-}" in
    prepare)
        t0=$(now)
        install_tools
        register_binfmt
        build_rootfs
        check_board
        say "ready in $(since "$t0") s (${EMULATE:+qemu $(qemu_major).x, }rootfs $TARBALL)"
        ;;
    rootfs-path)
        echo "$TARBALL"
        ;;
    start)
        [ -s "$TARBALL" ] || bash "$SELF" --board "$BOARD" prepare
        shift
        exec "$PYTHON" tests/arm64_board.py start --board "$BOARD" --rootfs-tar "$TARBALL" --state "$STATE_DIR" "$@"
        ;;
    stop)
        exec "$PYTHON" tests/arm64_board.py stop --state "$STATE_DIR"
        ;;
    status)
        if [ -n "$EMULATE" ]; then
            echo "qemu-user: $(qemu_major).x ($(command -v qemu-aarch64-static || echo none))"
            echo "binfmt: $(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null | head -1 || echo 'not registered')"
        fi
        echo "rootfs: $TARBALL $([ -s "$TARBALL" ] && echo '(cached)' || echo '(not built)')"
        if [ -z "$EMULATE" ] && [ -s "$TARBALL" ]; then
            echo "board: $(tar -xOf "$TARBALL" ./etc/edgeq-board-facts 2>/dev/null | tr '\n' ' ')"
        fi
        [ -s "$STATE_DIR/edgeq.toml" ] && { echo "running board (pid $(cat "$STATE_DIR/pid" 2>/dev/null)):"; cat "$STATE_DIR/edgeq.toml"; }
        true
        ;;
    *)
        sed -n '2,26p' "$SELF"
        exit 2
        ;;
esac
