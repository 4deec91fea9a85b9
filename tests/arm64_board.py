"""Test boards booted from a cached Debian rootfs: a chroot with its own sshd and its own address.

Two kinds share one recipe (scripts/arm64_board.sh, `--board`) and this module:

- `arm64` — an emulated aarch64 board: a Debian bookworm arm64 rootfs under qemu-user (Python
  3.11). `bash scripts/arm64_board.sh prepare` installs qemu-user (>= 8), mmdebstrap and the
  binfmt entry and caches the rootfs as a tarball.
- `bullseye-amd64` — an old-Python board: Debian bullseye amd64, native (Python 3.9, glibc 2.31,
  as on a Raspberry Pi OS bullseye board); `bash scripts/old_python_board.sh prepare`
  (tests/old_python_board.py holds its fixture).

This module boots boards from such a tarball, reusing the lab's namespace and sshd code
(tests/lab.py):

- `ChrootBoard` is a `lab.SshServer` whose sshd is the rootfs's own /usr/sbin/sshd, chrooted
  into a fresh copy of the rootfs (proc, /dev, /sys and a tmpfs /run mounted in sshd's private
  mount namespace only). Its config, keys and authorized_keys live in the rootfs under
  /etc/edgeq-board. `Arm64Board` is one with `SetEnv QEMU_CPU=<cpu>` so every program a session
  starts is emulated as that CPU (cortex-a72 is a Pi 4, cortex-a76 a Pi 5).
- `BoardLab` is a `lab.NetnsLab` whose devices are such boards: each board in its own network
  namespace, reached from the host through a veth pair at 10.77.<n>.2:22 (`Arm64Lab`: arm64 ones).
- `arm64_board` (session fixture) prepares, boots one board named `arm64-emu` and writes an
  inventory for it (`board_fixture` does the same for any kind). Where this machine cannot host
  the board (not root; arm64: no binfmt_misc, no qemu >= 8; bullseye-amd64: not x86_64) the tests
  SKIP with the reason the script printed (its exit status 77); any other failure fails.

Command line (scripts/arm64_board.sh and scripts/old_python_board.sh start/stop call these):
    python tests/arm64_board.py start [--board arm64|bullseye-amd64] --rootfs-tar TAR --state DIR [--name N] [--cpu C]
    python tests/arm64_board.py stop --state DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402
from lab import LabError, NetnsLab, SshServer, find_tool, require_tools  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "arm64_board.sh"
CANNOT_EMULATE = 77  # the script's exit status for "this machine cannot host the board"
BOARD_NAME = "arm64-emu"
DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4
DEVICE_WORKDIR = "/root/edgeq"  # a path on the board (inside the chroot)
CACHE = Path(os.environ.get("EDGEQ_CACHE", Path.home() / ".cache" / "edgeq"))
WHEEL_CACHE = CACHE / "arm64-wheels"


@dataclass(frozen=True)
class BoardKind:
    """One board recipe of scripts/arm64_board.sh (its `--board`) and how the tests boot and name it."""
    board: str  # the script's --board: the recipe (suite, arch, packages)
    name: str  # the device's name in the inventory and the board's hostname
    script: Path  # what `prepare` / `rootfs-path` run
    machine: str  # `uname -m` on the board
    wheel_cache: Path  # where `devices setup --offline` keeps the wheels downloaded for it
    what: str  # for messages: "the emulated arm64 board"
    cpu: str | None = None  # QEMU_CPU for an emulated board; None: the board's binaries run natively
    needs: str = "chroot, network namespaces"  # what root is needed for (in skip messages)

    @property
    def emulated(self) -> bool:
        return self.cpu is not None


ARM64 = BoardKind("arm64", BOARD_NAME, SCRIPT, "aarch64", WHEEL_CACHE, "the emulated arm64 board", DEFAULT_CPU,
                  needs="binfmt_misc, chroot, network namespaces")
BULLSEYE_AMD64 = BoardKind("bullseye-amd64", "bullseye-py39", REPO / "scripts" / "old_python_board.sh", "x86_64",
                           CACHE / "bullseye-amd64-wheels", "the old-Python (Debian bullseye amd64) board")
KINDS = {kind.board: kind for kind in (ARM64, BULLSEYE_AMD64)}


class CannotEmulate(RuntimeError):
    """This machine cannot host the board (a reason to skip, not a failure)."""


def timed(label: str, start: float, board: str = "arm64") -> float:
    took = time.monotonic() - start
    print(f"{board} board: {label}: {took:.1f} s", file=sys.stderr, flush=True)
    return took


def rootfs_tarball(kind: BoardKind = ARM64) -> Path:
    """Where the script caches the rootfs for the current recipe (it may not exist yet)."""
    proc = subprocess.run(["bash", str(kind.script), "rootfs-path"], capture_output=True, text=True, check=True)
    return Path(proc.stdout.strip())


def prepare(timeout: float = 3600, kind: BoardKind = ARM64) -> tuple[Path, float, bool]:
    """Run `<script> prepare` (tools, binfmt for an emulated board, cached rootfs).

    Returns (tarball, seconds it took, whether the rootfs had to be built cold)."""
    start = time.monotonic()
    cold = not rootfs_tarball(kind).exists()
    try:
        proc = subprocess.run(["bash", str(kind.script), "prepare"], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise CannotEmulate(f"bash not found: {exc}") from None
    if proc.returncode == CANNOT_EMULATE:
        raise CannotEmulate(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "exit 77")
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LabError(f"scripts/{kind.script.name} prepare failed ({proc.returncode}):\n{tail}")
    what = "tools, binfmt, " if kind.emulated else "tools, "
    took = timed(f"prepare ({what}" + ("cold rootfs build)" if cold else "cached rootfs)"), start, kind.board)
    return rootfs_tarball(kind), took, cold


def _mounted_below(path: Path) -> list[str]:
    """Mount points at or below path in *this* mount namespace (the board's are private to it)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def extract_rootfs(tarball: Path, dest: Path) -> Path:
    """A fresh, writable copy of the cached rootfs (the board's disk; deleted with the board)."""
    start = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    tar = find_tool("tar") or "tar"
    proc = subprocess.run([tar, "--numeric-owner", "-xf", str(tarball), "-C", str(dest)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise LabError(f"extracting {tarball} failed: {proc.stderr.strip()[-500:]}")
    shadow = dest / "etc" / "shadow"  # sshd refuses keys for a locked ("!") account even as root
    if shadow.exists():
        shadow.write_text(re.sub(r"^root:!\*?:", "root:*:", shadow.read_text(), flags=re.M))
    timed(f"rootfs copy ({tarball.name})", start, tarball.name.split("-rootfs-")[0])
    return dest


class ChrootBoard(SshServer):
    """The rootfs's own sshd, chrooted into `rootfs`, in network namespace `netns`."""

    def __init__(self, rootfs: Path, *, host: str, netns: str, hostname: str, set_env: dict[str, str] | None = None,
                 own_rootfs: bool = True, board: str = "chroot"):
        self.rootfs, self.own_rootfs, self.board = Path(rootfs).resolve(), own_rootfs, board
        super().__init__(self.rootfs / "etc" / "edgeq-board", host=host, port=22, netns=netns,
                         hostname=hostname, set_env=set_env)
        self.user = "root"

    def inside(self, path: Path | str) -> str:
        """A host path below the rootfs as the board sees it."""
        return "/" + str(Path(path).resolve().relative_to(self.rootfs))

    def _write_config(self) -> None:
        super()._write_config()  # host paths under the rootfs: rewritten to board paths
        config = self.dir / "sshd_config"
        text = config.read_text().replace(f"{self.rootfs}/", "/")
        config.write_text(text)

    def _launch_command(self) -> list[str]:
        if not lab.can_unshare():
            raise LabError(f"the {self.board} board needs `unshare --mount --uts` (root, util-linux)")
        root = shlex.quote(str(self.rootfs))
        script = ["#!/bin/sh", "# In sshd's private mount namespace: none of these mounts reach the host.", "set -e",
                  f"R={root}",
                  'mount -t proc proc "$R/proc"',
                  'mount --rbind /dev "$R/dev"',
                  'mount --rbind /sys "$R/sys"',
                  'mount -t tmpfs -o mode=0755 tmpfs "$R/run"',
                  'mkdir -p "$R/run/sshd"',
                  f"echo {shlex.quote(self.hostname)} > /proc/sys/kernel/hostname",
                  f'exec {find_tool("chroot") or "chroot"} "$R" /usr/sbin/sshd -D -e -f {self.inside(self.dir / "sshd_config")}']
        (self.dir / "launch.sh").write_text("\n".join(script) + "\n")
        return [find_tool("ip"), "netns", "exec", self.netns, find_tool("unshare"), "--mount", "--uts",
                "--propagation", "private", "/bin/sh", str(self.dir / "launch.sh")]

    def start(self, timeout: float = 120.0) -> ChrootBoard:
        """sshd under qemu needs a few seconds more than a native one on a busy machine."""
        begin = time.monotonic()
        super().start(timeout)
        timed(f"sshd up on {self.host}" + (f" ({self.set_env['QEMU_CPU']})" if "QEMU_CPU" in self.set_env else ""),
              begin, self.board)
        return self

    def inventory_entry(self) -> dict:
        """[devices.NAME] for this board: no python key, so runs use the venv `devices setup` makes."""
        return {"host": self.host, "port": self.port, "user": self.user, "identity_file": str(self.client_key),
                "known_hosts": str(self.known_hosts), "workdir": DEVICE_WORKDIR}

    def close(self) -> None:
        super().close()
        if self.own_rootfs and self.rootfs.exists():
            mounted = _mounted_below(self.rootfs)
            if mounted:  # never delete through a mount (it could be the host's /dev)
                raise LabError(f"not deleting {self.rootfs}: still mounted here: {mounted}")
            shutil.rmtree(self.rootfs, ignore_errors=True)


class Arm64Board(ChrootBoard):
    """The rootfs's own arm64 sshd, chrooted into `rootfs`, in network namespace `netns`, every
    program emulated as `cpu`."""

    def __init__(self, rootfs: Path, *, host: str, netns: str, hostname: str = BOARD_NAME,
                 cpu: str = DEFAULT_CPU, own_rootfs: bool = True):
        self.cpu = cpu
        super().__init__(rootfs, host=host, netns=netns, hostname=hostname, set_env={"QEMU_CPU": cpu},
                         own_rootfs=own_rootfs, board="arm64")


class BoardLab(NetnsLab):
    """`NetnsLab` whose devices are boards of one kind booted from the cached rootfs tarball."""

    def __init__(self, tarball: Path, n: int = 1, directory: str | Path | None = None, kind: BoardKind = ARM64,
                 cpu: str | None = None):
        super().__init__(n, directory)
        self.tarball, self.kind, self.cpu = Path(tarball), kind, cpu or kind.cpu

    def _make_device(self, x: int):
        device = super()._make_device(x)  # namespace, veth, addresses (and a plain sshd we don't start)
        device.server.close()
        rootfs = extract_rootfs(self.tarball, self.dir / f"{device.name}-rootfs")
        hostname = self.kind.name if self.n == 1 else device.name
        if self.kind.emulated:
            device.server = Arm64Board(rootfs, host=device.address, netns=device.name, hostname=hostname, cpu=self.cpu)
        else:
            device.server = ChrootBoard(rootfs, host=device.address, netns=device.name, hostname=hostname,
                                        board=self.kind.board)
        return device


class Arm64Lab(BoardLab):
    """`NetnsLab` whose devices are emulated arm64 boards booted from the cached rootfs tarball."""

    def __init__(self, tarball: Path, n: int = 1, directory: str | Path | None = None, cpu: str = DEFAULT_CPU):
        super().__init__(tarball, n, directory, kind=ARM64, cpu=cpu)


@dataclass
class BoardHandle:
    """What the tests get: the lab, its one board, and an inventory naming it (`arm64-emu` for arm64)."""
    lab: BoardLab
    board: ChrootBoard
    inventory: Path
    name: str = BOARD_NAME


def write_inventory(path: Path, devices: dict[str, dict]) -> Path:
    lines = []
    for name, entry in devices.items():
        lines.append(f"[devices.{json.dumps(name)}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def skip_reason(kind: BoardKind = ARM64) -> str | None:
    """Why this machine cannot host the board, found without installing anything; None if it may."""
    if sys.platform != "linux":
        return f"{kind.what} needs Linux ({'binfmt_misc' if kind.emulated else 'chroot, network namespaces'}), not {sys.platform}"
    if os.geteuid() != 0:
        return f"{kind.what} needs root ({kind.needs})"
    if not kind.emulated and platform.machine() != kind.machine:
        return f"{kind.what} runs natively and needs a {kind.machine} host, not {platform.machine()}"
    return None


def board_fixture(kind: BoardKind, tmp_path_factory, request):
    """The body of a session fixture: one board of `kind`, skipped with the reason where impossible.

    The timings (prepare: cold build or cache hit; warm start) are printed at the session's end."""
    reason = skip_reason(kind)
    if reason:
        pytest.skip(reason)
    require_tools("ssh-keygen", "ip", "unshare", "tar")
    try:
        tarball, prepare_s, cold = prepare(kind=kind)
    except CannotEmulate as exc:
        pytest.skip(str(exc))
    start = time.monotonic()
    directory = tmp_path_factory.mktemp(f"{kind.board}-board")
    with BoardLab(tarball, 1, directory, kind=kind) as board_lab:
        start_s = timed("warm start (rootfs copy + namespace + sshd)", start, kind.board)
        board = board_lab.devices[0].server
        inventory = write_inventory(directory / "edgeq.toml", {kind.name: board.inventory_entry()})
        yield BoardHandle(board_lab, board, inventory, kind.name)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture:  # out of pytest's capture, so the timings show without -s
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{kind.board} board: prepare {prepare_s:.1f} s "
                                f"({'cold rootfs build' if cold else 'cached rootfs'}), start {start_s:.1f} s "
                                f"(rootfs copy + namespace + sshd{' under qemu' if kind.emulated else ''})")


@pytest.fixture(scope="session")
def arm64_board(tmp_path_factory, request):
    """One emulated Pi-4-class board for the session; skips with the reason where impossible.

    The timings (prepare: cold build or cache hit; warm start) are printed at the session's end."""
    yield from board_fixture(ARM64, tmp_path_factory, request)


# ---- command line: scripts/arm64_board.sh start / stop ---------------------------------------

def _serve(args) -> int:
    """Boot a board and keep it until SIGTERM/SIGINT (run detached by `start`)."""
    state = Path(args.state)
    kind = KINDS[args.board]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    start = time.monotonic()
    with BoardLab(Path(args.rootfs_tar), 1, state / "lab", kind=kind, cpu=args.cpu) as board_lab:
        board = board_lab.devices[0].server
        timed("warm start (rootfs copy + namespace + sshd)", start, kind.board)
        inventory = write_inventory(state / "edgeq.toml.part", {args.name or kind.name: board.inventory_entry()})
        inventory.replace(state / "edgeq.toml")
        while not stop:
            time.sleep(0.5)
    (state / "edgeq.toml").unlink(missing_ok=True)
    return 0


def _start(args) -> int:
    state = Path(args.state)
    kind = KINDS[args.board]
    name, cpu = args.name or kind.name, args.cpu or kind.cpu
    pidfile = state / "pid"
    if pidfile.exists() and lab._alive(int(pidfile.read_text() or 0)):
        print(f"a board is already running (pid {pidfile.read_text().strip()}); its inventory: {state / 'edgeq.toml'}")
        return 1
    lab.cleanup_stale_namespaces()
    shutil.rmtree(state / "lab", ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    (state / "edgeq.toml").unlink(missing_ok=True)
    log = open(state / "board.log", "ab")
    command = [sys.executable, __file__, "serve", "--board", kind.board, "--rootfs-tar", args.rootfs_tar,
               "--state", str(state), "--name", name] + (["--cpu", cpu] if cpu else [])
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + args.timeout
    while not (state / "edgeq.toml").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print((state / "board.log").read_text()[-3000:], file=sys.stderr)
            if proc.poll() is None:
                proc.terminate()
            return 1
        time.sleep(0.5)
    print((state / "board.log").read_text().strip().splitlines()[-1], file=sys.stderr)
    print(f"# board {name} is up (pid {proc.pid}); inventory {state / 'edgeq.toml'}:")
    print((state / "edgeq.toml").read_text(), end="")
    return 0


def _stop(args) -> int:
    state = Path(args.state)
    pidfile = state / "pid"
    if not pidfile.exists():
        print("no board running")
        lab.cleanup_stale_namespaces()
        return 0
    pid = int(pidfile.read_text() or 0)
    if pid and lab._alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while lab._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if lab._alive(pid):
            os.kill(pid, signal.SIGKILL)  # its sshd dies with it (PDEATHSIG); namespaces go below
    lab.cleanup_stale_namespaces()
    pidfile.unlink(missing_ok=True)
    if not _mounted_below(state):  # the board's mounts were private to it; never delete through one
        shutil.rmtree(state / "lab", ignore_errors=True)
    print(f"board stopped (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arm64_board.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--board", choices=sorted(KINDS), default=ARM64.board, help="which recipe the rootfs is")
        p.add_argument("--rootfs-tar", required=True)
        p.add_argument("--state", required=True)
        p.add_argument("--name", default=None, help=f"the device's name (default: {ARM64.name}, {BULLSEYE_AMD64.name})")
        p.add_argument("--cpu", default=None,
                       help="QEMU_CPU of an emulated board: cortex-a72 (Pi 4, default), cortex-a76 (Pi 5)")
        p.add_argument("--timeout", type=float, default=300)
    sub.add_parser("stop").add_argument("--state", required=True)
    args = parser.parse_args(argv)
    if args.command != "stop" and args.cpu and not KINDS[args.board].emulated:
        parser.error(f"--cpu is for an emulated board; {args.board} runs natively")
    return {"start": _start, "serve": _serve, "stop": _stop}[args.command](args)


# --- helpers the board tests share (tests/test_arm64_board.py, tests/test_old_python_board.py) ---

def edgeq(*args) -> tuple[int, str]:
    """The CLI in-process: (exit code, output); an exception that is not an exit is raised."""
    from click.testing import CliRunner

    from edgeq.cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def elf_machine(path) -> int:
    """e_machine of an ELF file (0xb7 = aarch64, 0x3e = x86-64)."""
    with open(path, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def inside(rootfs, path: str):
    """The host path of a board path, following symlinks as the board would (absolute ones stay inside)."""
    current = rootfs / path.lstrip("/")
    for _ in range(40):
        if not current.is_symlink():
            return current
        target = os.readlink(current)
        current = rootfs / target.lstrip("/") if target.startswith("/") else current.parent / target
    raise AssertionError(f"symlink loop at {path}")


def short_soak(board_name: str, inventory, model, inputs, folder) -> dict:
    """A 6-s detached soak on a board (its own process, status files, sampler); its summary, checked."""
    code, output = edgeq("soak", "--device", board_name, "--inventory", inventory, "--model", model, "--inputs",
                         inputs, "--duration", "6s", "--window", "2s", "--warmup", 2, "-o", folder / "soak",
                         "--json", folder / "soak.json", "--no-history")
    assert code == 0, output
    summary = json.loads((folder / "soak.json").read_text())
    assert summary["state"] == "finished" and summary["device"] == board_name and summary["error"] is None
    assert summary["windows"] >= 1 and summary["inferences"] > 0
    assert summary["output_drift"]["mismatched"] == 0
    return summary


if __name__ == "__main__":
    sys.exit(main())
