"""Real SSH "devices" for the edgeq tests: OpenSSH servers, network namespaces, a faulty link.

Nothing here is a mock. `SshServer` runs the system's /usr/sbin/sshd with its own keys and
config; `NetnsLab` puts one sshd in each of several network namespaces joined to the host by
veth pairs (10.77.<n>.0/24); `TcpProxy` forwards TCP on 127.0.0.1 and can cut, delay or drop
a connection mid-transfer (this kernel has no `tc netem`).

In tests/conftest.py (tests/ is on sys.path there), importing the fixtures registers them:

    from lab import netns_lab, sshd_server, sshd_session, tcp_proxy_factory  # noqa: F401

If sshd, ssh-keygen or ip is missing the fixtures FAIL, never skip: CI must have a real sshd
(`bash scripts/setup.sh --tests` installs it). Network namespaces need root.

Host isolation: sshd needs /run/sshd, so it runs under `unshare --mount --propagation private`
with a fresh tmpfs on /run; the host's /run is untouched. `small_disk_mb` mounts a tiny tmpfs
in that same private mount namespace: only processes spawned by that sshd (SSH sessions, the
agent) see the small disk; on the host the path stays an ordinary empty directory.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import fcntl
import getpass
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SETUP_HINT = "install them with `bash scripts/setup.sh --tests`"
_LIVE: set = set()  # servers, labs, proxies still open: closed at exit if a run is interrupted


class LabError(RuntimeError):
    """The test lab could not be set up: a problem of this machine, not of edgeq."""


def find_tool(name: str) -> str | None:
    """Absolute path of a system tool; sbin directories count even when PATH lacks them."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def require_tools(*names: str) -> None:
    """Fail (never skip) when a tool is missing: where CI must have sshd, a skip would hide it."""
    missing = [name for name in names if not find_tool(name)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {SETUP_HINT}", pytrace=False)


def _run(*cmd: str, check: bool = True) -> str:
    """Run a short system command; a failure carries its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (SshServer.start re-picks if someone takes it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_unshare_ok: list[bool] = []


def can_unshare() -> bool:
    """Whether private mount + UTS namespaces work here (root, util-linux, no seccomp ban)."""
    if not _unshare_ok:
        cmd = [find_tool("unshare") or "unshare", "--mount", "--uts", "--propagation", "private", "true"]
        _unshare_ok.append(subprocess.run(cmd, capture_output=True).returncode == 0)
    return _unshare_ok[0]


# ---- processes, read from /proc ----------------------------------------------------------

def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2:].split()[:2]
    return int(ppid), state


def _alive(pid: int) -> bool:
    return (_stat(pid) or (0, "X"))[1] not in ("Z", "X")


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """All processes below pid. sshd's per-connection children call setsid(), so a process
    group kill would miss them and the agents they run."""
    parent_of = {p: (_stat(p) or (0, ""))[0] for p in _pids()}
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == parent]
        found, frontier = found + kids, frontier + kids
    return found


def kill_all(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever still lives after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(map(_alive, pids)):
            return


def agent_processes(pattern: str = "edgeq_agent") -> list[int]:
    """PIDs of live processes whose command line contains pattern (to kill the agent mid-run)."""
    found = []
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if pattern in cmdline and pid != os.getpid() and _alive(pid):
            found.append(pid)
    return found


def _die_with_parent():
    """preexec_fn: SIGTERM the child when this test process dies, even by kill -9 (Linux
    PR_SET_PDEATHSIG survives exec). Main thread only: the signal follows the forking thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


# ---- one device: a real sshd ---------------------------------------------------------------

class AgentKiller:
    """A run's progress callback that SIGKILLs the agent at its first progress event.

    ``marker`` is a string in the agent's command line (its device workdir); ``killed``
    lists the PIDs it killed, so a test can check the fault really happened.
    """

    def __init__(self, marker: str):
        self.marker, self.killed = marker, []

    def __call__(self, label, done, total) -> None:
        if not self.killed and done:
            for pid in agent_processes(self.marker):
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)


class SshServer:
    """A real OpenSSH sshd with its own port, host key, client key and config: one lab device.

    netns: run inside that network namespace (host must be an address there, port 22 default).
    hostname: the device's own hostname (a private UTS namespace). set_env: sshd `SetEnv`."""

    def __init__(self, directory: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, *, netns: str | None = None, hostname: str | None = None,
                 small_disk_mb: int | None = None, small_disk_path: str | Path | None = None,
                 set_env: dict[str, str] | None = None):
        if (small_disk_mb is None) != (small_disk_path is None):
            raise ValueError("give small_disk_mb and small_disk_path together")
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="edgeq-sshd-")).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.netns, self.hostname, self.set_env = host, netns, hostname, dict(set_env or {})
        self.small_disk_mb, self.small_disk_path = small_disk_mb, small_disk_path
        self._auto_port = port is None and netns is None
        self.port = port or (22 if netns else free_port(host))
        self.user = getpass.getuser()
        self.client_key, self.known_hosts = self.dir / "client_ed25519", self.dir / "known_hosts"
        self.log_path, self.workdir = self.dir / "sshd.log", self.dir / "workdir"
        self._proc: subprocess.Popen | None = None
        self._make_keys()
        self._write_config()

    def _make_keys(self) -> None:
        keygen = find_tool("ssh-keygen")
        if not keygen:
            raise LabError(f"ssh-keygen not found: {SETUP_HINT}")
        for key in (self.dir / "host_ed25519", self.client_key):
            if not key.exists():
                _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"edgeq-lab-{key.name}", "-f", str(key))
        (self.dir / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        self.host_public_key = " ".join((self.dir / "host_ed25519.pub").read_text().split()[:2])
        digest = hashlib.sha256(base64.b64decode(self.host_public_key.split()[1])).digest()
        self.host_key_fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def _write_config(self) -> None:
        """sshd_config and known_hosts (rewritten if start() has to re-pick the port)."""
        d = self.dir
        lines = [f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {d / 'host_ed25519'}",
                 f"AuthorizedKeysFile {d / 'authorized_keys'}", "UsePAM no", "PermitRootLogin prohibit-password",
                 "PasswordAuthentication no", "KbdInteractiveAuthentication no", "StrictModes no",
                 f"PidFile {d / 'sshd.pid'}", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
                 "MaxStartups 50", "PrintMotd no", "UseDNS no"]
        if self.set_env:  # sshd honours only the first SetEnv line: every variable goes on it
            lines.append("SetEnv " + " ".join(f'"{k}={v}"' for k, v in self.set_env.items()))
        (d / "sshd_config").write_text("\n".join(lines) + "\n")
        self.known_hosts.write_text(self.known_hosts_line())
        self.workdir.mkdir(exist_ok=True)

    def _launch_command(self) -> list[str]:
        """Write launch.sh (mounts private to sshd, then exec sshd) and return how to run it."""
        sshd = find_tool("sshd")
        if not sshd:
            raise LabError(f"sshd not found: {SETUP_HINT}")
        script = ["#!/bin/sh", "# Runs in a private mount namespace: these mounts never reach the host.", "set -e"]
        cmd = ["/bin/sh", str(self.dir / "launch.sh")]
        if can_unshare():
            script += ["mount -t tmpfs -o mode=0755 tmpfs /run", "mkdir -p /run/sshd"]
            if self.small_disk_mb:
                Path(self.small_disk_path).mkdir(parents=True, exist_ok=True)
                script.append(f"mount -t tmpfs -o size={int(self.small_disk_mb)}m,mode=0777 tmpfs "
                              f"{shlex.quote(str(self.small_disk_path))}")
            if self.hostname:
                script.append(f"echo {shlex.quote(self.hostname)} > /proc/sys/kernel/hostname")
            cmd = [find_tool("unshare"), "--mount", "--propagation", "private"] + ["--uts"] * bool(self.hostname) + cmd
        elif self.small_disk_mb or self.hostname:
            raise LabError("small_disk/hostname need `unshare --mount --uts` (root, util-linux)")
        else:  # fallback: the one host change we accept, as CI images do
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        script.append(f"exec {sshd} -D -e -f {shlex.quote(str(self.dir / 'sshd_config'))}")
        (self.dir / "launch.sh").write_text("\n".join(script) + "\n")
        return ([find_tool("ip"), "netns", "exec", self.netns] if self.netns else []) + cmd

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        host, port = host or self.host, port or self.port
        return f"{host if port == 22 else f'[{host}]:{port}'} {self.host_public_key}\n"

    def trust(self, host: str, port: int) -> None:
        """Also trust this host key at another address, e.g. a TcpProxy in front of it."""
        with open(self.known_hosts, "a") as f:
            f.write(self.known_hosts_line(host, port))

    def start(self, timeout: float = 15.0) -> SshServer:
        """Start sshd and wait until it speaks SSH; an auto-picked port taken meanwhile is re-picked."""
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(self._launch_command(), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              preexec_fn=_die_with_parent())
            _LIVE.add(self)
            try:
                self.wait_ready(timeout)
                self._auto_port = False  # from now on the port is part of the device's identity
                return self
            except LabError:
                self.stop()
                if attempt == 2 or not self._auto_port or "Address already in use" not in self.log_tail():
                    raise
                self.port = free_port(self.host)
                self._write_config()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the port answers with an SSH banner. A loaded 2-core box can take seconds:
        each probe gets up to 2 s, the whole wait `timeout` s; a dead sshd ends it at once."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc and self._proc.returncode
                raise LabError(f"sshd exited ({code}) before it was ready:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"sshd on {self.host}:{self.port} not ready after {timeout}s:\n{self.log_tail()}")
            if self._banner(min(2.0, remaining)).startswith("SSH-2.0-"):
                return
            time.sleep(0.05)

    def _banner(self, timeout: float) -> str:
        data = b""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                while b"\n" not in data and len(data) < 512:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            pass
        return data.decode("ascii", "replace")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no sshd log)"

    def stop(self) -> None:
        """Stop sshd and every session it spawned (agents included), like a device going down."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            tree = [proc.pid]
            try:
                tree += descendants(proc.pid)
            finally:
                kill_all(tree)
        if proc is not None:
            proc.wait(timeout=10)

    def restart(self) -> SshServer:
        """Same port, same keys: known_hosts stays valid (a device reboot)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        _LIVE.discard(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self if self._proc and self._proc.poll() is None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def ssh_config_block(self, alias: str) -> str:
        """A `Host alias` block for an ssh_config file (what edgeq's ~/.ssh/config lookup reads)."""
        return (f"Host {alias}\n    HostName {self.host}\n    Port {self.port}\n    User {self.user}\n"
                f"    IdentityFile {self.client_key}\n    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts}\n    StrictHostKeyChecking yes\n")

    def inventory_entry(self) -> dict:
        """The fields of an edgeq.toml [devices.NAME] table for this server."""
        return {"host": self.host, "port": self.port, "user": self.user,
                "identity_file": str(self.client_key), "known_hosts": str(self.known_hosts),
                "python": sys.executable, "workdir": str(self.workdir)}

    def connect(self, host: str | None = None, port: int | None = None, **kwargs):
        """A paramiko SSHClient that trusts only known_hosts (RejectPolicy), as edgeq must."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        options = dict(username=self.user, key_filename=str(self.client_key), allow_agent=False,
                       look_for_keys=False, timeout=10, banner_timeout=10, auth_timeout=10)
        client.connect(host or self.host, port or self.port, **{**options, **kwargs})
        return client


# ---- several devices in network namespaces -------------------------------------------------

@dataclass
class LabDevice:
    """A namespace "device": sshd on `address`:22; the host's end of the veth is `host_address`."""
    name: str  # also the namespace name and the device's hostname
    host_veth: str
    host_address: str
    address: str
    server: SshServer


def _delete_netns(name: str) -> None:
    ip = find_tool("ip")
    kill_all([int(p) for p in _run(ip, "netns", "pids", name, check=False).split()])
    _run(ip, "netns", "del", name, check=False)  # a namespace with processes would outlive this


def cleanup_stale_namespaces() -> None:
    """Delete edgeq-t<pid>-* namespaces left by test runs whose process is gone (killed -9)."""
    for line in _run(find_tool("ip"), "netns", "list", check=False).splitlines():
        match = re.match(r"(edgeq-t(\d+)-\d+)\b", line)
        if match and int(match.group(2)) != os.getpid() and not _alive(int(match.group(2))):
            _delete_netns(match.group(1))


class NetnsLab:
    """N network namespaces joined to the host by veth pairs, each with its own sshd.

    Free subnets 10.77.<n>.0/24 are picked under a file lock, so parallel test runs do not
    collide; n also names the namespace (edgeq-t<pid>-<n>) and the veths (eqh/eqd<pid><n>)."""

    LOCK = "/tmp/edgeq-netns.lock"

    def __init__(self, n: int = 3, directory: str | Path | None = None, **server_kwargs):
        self.n, self.server_kwargs = n, server_kwargs
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="edgeq-netns-"))
        self.devices: list[LabDevice] = []
        self._made: list[tuple[str, str]] = []  # ("netns"|"link", name): what stop() must delete
        self.ip = find_tool("ip")
        if not self.ip:
            raise LabError(f"ip not found: {SETUP_HINT}")

    @property
    def servers(self) -> list[SshServer]:
        return [device.server for device in self.devices]

    def start(self) -> NetnsLab:
        _LIVE.add(self)
        try:
            cleanup_stale_namespaces()
            with open(self.LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                used = {int(x) for x in re.findall(r"inet 10\.77\.(\d+)\.", _run(self.ip, "-o", "-4", "addr"))}
                free = [x for x in range(1, 255) if x not in used][: self.n]
                if len(free) < self.n:
                    raise LabError("no free 10.77.<n>.0/24 subnet left")
                self.devices = [self._make_device(x) for x in free]
            for device in self.devices:
                device.server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _make_device(self, x: int) -> LabDevice:
        tag = f"{os.getpid() % 10000:04d}{x:03d}"
        ns, host_veth, dev_veth = f"edgeq-t{os.getpid()}-{x}", f"eqh{tag}", f"eqd{tag}"
        self._made += [("netns", ns), ("link", host_veth)]
        for cmd in (f"netns add {ns}", f"link add {host_veth} type veth peer name {dev_veth} netns {ns}",
                    f"addr add 10.77.{x}.1/24 dev {host_veth}", f"link set {host_veth} up",
                    f"-n {ns} addr add 10.77.{x}.2/24 dev {dev_veth}", f"-n {ns} link set {dev_veth} up",
                    f"-n {ns} link set lo up"):
            _run(self.ip, *cmd.split())
        server = SshServer(self.dir / ns, host=f"10.77.{x}.2", port=22, netns=ns, hostname=ns, **self.server_kwargs)
        return LabDevice(ns, host_veth, f"10.77.{x}.1", f"10.77.{x}.2", server)

    def rate_limit(self, device: int | LabDevice, rate: str = "100mbit", burst: str = "256kb",
                   latency: str = "50ms") -> None:
        """tbf on the host end of the veth: shapes host→device traffic (uploads). No netem here."""
        device = self.devices[device] if isinstance(device, int) else device
        _run(find_tool("tc") or "tc", "qdisc", "replace", "dev", device.host_veth, "root",
             "tbf", "rate", rate, "burst", burst, "latency", latency)

    def clear_rate_limit(self, device: int | LabDevice) -> None:
        device = self.devices[device] if isinstance(device, int) else device
        _run(find_tool("tc") or "tc", "qdisc", "del", "dev", device.host_veth, "root", check=False)

    def stop(self) -> None:
        """Stop the servers, delete namespaces and veths; also safe after a half-made start."""
        for device in self.devices:
            device.server.close()
        for kind, name in self._made:
            _delete_netns(name) if kind == "netns" else _run(self.ip, "link", "del", name, check=False)
        self.devices, self._made = [], []
        _LIVE.discard(self)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# ---- a link that fails on demand ------------------------------------------------------------

def _abort(sock: socket.socket) -> None:
    """Close at once with a RST; shutdown first so threads blocked in recv/send wake up."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    """TCP forwarder on 127.0.0.1:<free port> to target; can cut, drop after N bytes, delay.

    Blocking daemon threads, no polling: one accepts, two per connection (max_connections).
    bytes_forwarded = {"up": client→server, "down": server→client}; `connections` = accepted."""

    def __init__(self, target: SshServer | tuple[str, int], *, delay_s: float = 0.0, max_connections: int = 32):
        self.server = target if isinstance(target, SshServer) else None
        self.target = (target.host, target.port) if self.server else (target[0], int(target[1]))
        self.delay_s, self.max_connections = delay_s, max_connections
        self.bytes_forwarded, self.connections = {"up": 0, "down": 0}, 0
        self._links: set[tuple[socket.socket, socket.socket]] = set()  # (client, upstream)
        self._lock = threading.Lock()
        self._refusing = self._refuse_after = False
        self._budget: int | None = None  # client→server bytes left before cut_after() cuts
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        if self.server:
            self.server.trust(self.host, self.port)
        threading.Thread(target=self._accept_loop, daemon=True, name=f"tcpproxy-{self.port}").start()
        _LIVE.add(self)

    @property
    def live_connections(self) -> int:
        return len(self._links)

    def inventory_entry(self) -> dict:
        """The target server's inventory entry, pointed at the proxy."""
        return {**self.server.inventory_entry(), "host": self.host, "port": self.port}

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            link = self._open_link(client)
            if link:
                for (src, dst), way in ((link, "up"), (link[::-1], "down")):
                    threading.Thread(target=self._pump, args=(link, src, dst, way), daemon=True).start()

    def _open_link(self, client: socket.socket) -> tuple[socket.socket, socket.socket] | None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            return _abort(client)
        with self._lock:
            if not self._refusing and len(self._links) < self.max_connections:
                self._links.add((client, upstream))
                self.connections += 1
                return client, upstream
        _abort(client)
        _abort(upstream)
        return None

    def _pump(self, link, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(65536):
                if self.delay_s:
                    time.sleep(self.delay_s)
                allowed, cut = self._spend(len(data)) if way == "up" else (len(data), False)
                if allowed:
                    dst.sendall(data[:allowed])
                    with self._lock:
                        self.bytes_forwarded[way] += allowed
                if cut:
                    self._cut_links()
                    break
        except OSError:
            pass
        finally:
            self._drop(link)  # either side ending ends the connection, as a real drop would

    def _spend(self, n: int) -> tuple[int, bool]:
        """How many of n client→server bytes may pass, and whether the budget ran out."""
        with self._lock:
            if self._budget is None:
                return n, False
            allowed = min(n, self._budget)
            self._budget -= allowed
            if self._budget:
                return allowed, False
            self._budget, self._refusing = None, self._refusing or self._refuse_after
            return allowed, True

    def _drop(self, link) -> None:
        with self._lock:
            if link not in self._links:
                return
            self._links.discard(link)
        for sock in link:
            _abort(sock)

    def _cut_links(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            self._drop(link)

    def cut(self) -> None:
        """Close every live connection now (both directions) and refuse new ones until resume()."""
        with self._lock:
            self._refusing = True
        self._cut_links()

    def cut_after(self, nbytes: int, refuse_after: bool = False) -> None:
        """Forward nbytes more client→server (counted from now, over all connections, live and
        new), then cut every live connection. New connections are accepted afterwards (a
        retry can succeed) unless refuse_after=True (then until resume())."""
        with self._lock:
            self._budget, self._refuse_after = nbytes, refuse_after

    def resume(self) -> None:
        """Accept and forward normally again (clears cut() and cut_after())."""
        with self._lock:
            self._refusing, self._budget = False, None

    def close(self) -> None:
        with self._lock:
            self._refusing = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        self._cut_links()
        _LIVE.discard(self)



@atexit.register
def _close_everything() -> None:
    """Backstop for interrupted runs: no sshd, namespace or veth may outlive the test process."""
    for obj in list(_LIVE):
        try:
            obj.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---- pytest fixtures: import them into conftest.py ------------------------------------------

@pytest.fixture
def sshd_server(tmp_path):
    """A fresh loopback sshd per test (tests may stop, restart or fill it)."""
    require_tools("sshd", "ssh-keygen")
    with SshServer(tmp_path / "sshd") as server:
        yield server


@pytest.fixture(scope="session")
def sshd_session(tmp_path_factory):
    """One loopback sshd for the whole session (tests must not stop it)."""
    require_tools("sshd", "ssh-keygen")
    with SshServer(tmp_path_factory.mktemp("sshd-session")) as server:
        yield server


@pytest.fixture(scope="session")
def netns_lab(tmp_path_factory):
    """Three devices in network namespaces: lab.devices[i].server listens on .address:22."""
    require_tools("sshd", "ssh-keygen", "ip", "unshare")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (run the suite as root, as CI does)", pytrace=False)
    with NetnsLab(3, tmp_path_factory.mktemp("netns-lab")) as lab:
        yield lab


@pytest.fixture
def tcp_proxy_factory():
    """make(target, delay_s=..., max_connections=...) -> TcpProxy; all closed after the test."""
    proxies: list[TcpProxy] = []

    def make(target, **kwargs) -> TcpProxy:
        proxies.append(TcpProxy(target, **kwargs))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
