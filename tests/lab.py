"""Real SSH "devices" for the edgeq tests: OpenSSH servers, network namespaces, a faulty link.

Nothing here is a mock. `SshServer` runs the system's /usr/sbin/sshd with its own keys and
config; `NetnsLab` puts one sshd in each of several Linux network namespaces joined to the
host by veth pairs (10.77.<n>.0/24); `TcpProxy` is a TCP forwarder on 127.0.0.1 that can cut,
delay or drop a connection mid-transfer (this kernel has no `tc netem`).

Use the fixtures from tests/conftest.py (tests/ is on sys.path there); importing a fixture
function into conftest registers it for every test:

    from lab import netns_lab, sshd_server, sshd_session, tcp_proxy_factory  # noqa: F401

If sshd, ssh-keygen or ip is missing the fixtures FAIL, they never skip: CI must have a real
sshd (`bash scripts/setup.sh --tests` installs it). Network namespaces need root.

Host isolation: sshd needs /run/sshd, so it runs under `unshare --mount --propagation private`
with a fresh tmpfs on /run; the host's /run is untouched. `small_disk_mb` mounts a tiny tmpfs
in that same private mount namespace: only processes spawned by that sshd (SSH sessions, the
agent) see the small disk; on the host the path stays an ordinary empty directory.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import getpass
import hashlib
import json
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
_LIVE: set = set()  # servers, labs and proxies still running: closed at exit if a run is interrupted


class LabError(RuntimeError):
    """The test lab could not be set up: a problem of this machine, not of edgeq."""


def find_tool(name: str) -> str | None:
    """Absolute path of a system tool; sbin directories count even when PATH lacks them."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")


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
    """A port that was free a moment ago (SshServer.start retries if someone takes it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_unshare_ok: bool | None = None


def can_unshare() -> bool:
    """Whether private mount + UTS namespaces work here (root, util-linux, no seccomp ban)."""
    global _unshare_ok
    if _unshare_ok is None:
        tool = find_tool("unshare")
        _unshare_ok = bool(tool) and subprocess.run(
            [tool, "--mount", "--uts", "--propagation", "private", "true"],
            capture_output=True).returncode == 0
    return _unshare_ok


# ---- processes (via /proc) -------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """All processes below pid. sshd's per-connection children call setsid(), so a process
    group kill would miss them (and the agent they run)."""
    parents = {int(e.name): _stat(int(e.name)) for e in os.scandir("/proc") if e.name.isdigit()}
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, stat in parents.items() if stat and stat[0] == parent]
        found += kids
        frontier += kids
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
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if pattern in cmdline and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return sorted(pids)


# ---- one sshd --------------------------------------------------------------------------

class SshServer:
    """A real OpenSSH sshd with its own port, host key, client key and config: one lab device."""

    def __init__(self, directory: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, *, netns: str | None = None, hostname: str | None = None,
                 small_disk_mb: int | None = None, small_disk_path: str | Path | None = None,
                 set_env: dict[str, str] | None = None):
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="edgeq-sshd-")).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.netns, self.hostname = host, netns, hostname
        self._auto_port = port is None and netns is None
        self.port = port or (22 if netns else free_port(host))
        if (small_disk_mb is None) != (small_disk_path is None):
            raise ValueError("give small_disk_mb and small_disk_path together")
        self.small_disk_mb, self.small_disk_path = small_disk_mb, small_disk_path
        self.set_env = dict(set_env or {})
        self.user = getpass.getuser()
        self.client_key = self.dir / "client_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.log_path = self.dir / "sshd.log"
        self.workdir = self.dir / "workdir"
        self._proc: subprocess.Popen | None = None
        self._started_once = False
        self._make_keys()
        self._write_files()

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

    def _write_files(self) -> None:
        """sshd_config, known_hosts and the launcher; rewritten if the port changes."""
        d = self.dir
        lines = [f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {d / 'host_ed25519'}",
                 f"AuthorizedKeysFile {d / 'authorized_keys'}", "UsePAM no",
                 "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "StrictModes no", f"PidFile {d / 'sshd.pid'}",
                 "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "MaxStartups 50",
                 "PrintMotd no", "UseDNS no"]
        if self.set_env:  # sshd only honours the first SetEnv line: put every variable on it
            lines.append("SetEnv " + " ".join(f'"{k}={v}"' for k, v in self.set_env.items()))
        (d / "sshd_config").write_text("\n".join(lines) + "\n")
        self.known_hosts.write_text(self.known_hosts_line())
        self.workdir.mkdir(exist_ok=True)
        self._write_launcher()

    def _write_launcher(self) -> None:
        sshd = find_tool("sshd")
        if not sshd:
            raise LabError(f"sshd not found: {SETUP_HINT}")
        script = ["#!/bin/sh", "# Runs in a private mount namespace: these mounts never reach the host.",
                  "set -e"]
        if can_unshare():
            script += ["mount -t tmpfs -o mode=0755 tmpfs /run", "mkdir -p /run/sshd"]
            if self.small_disk_mb:
                Path(self.small_disk_path).mkdir(parents=True, exist_ok=True)
                script.append(f"mount -t tmpfs -o size={int(self.small_disk_mb)}m,mode=0777 tmpfs "
                              f"{shlex.quote(str(self.small_disk_path))}")
            if self.hostname:
                script.append(f"echo {shlex.quote(self.hostname)} > /proc/sys/kernel/hostname")
        elif self.small_disk_mb or self.hostname:
            raise LabError("small_disk/hostname need `unshare --mount --uts` (root, util-linux)")
        script.append(f"exec {sshd} -D -e -f {shlex.quote(str(self.dir / 'sshd_config'))}")
        (self.dir / "launch.sh").write_text("\n".join(script) + "\n")

    def _command(self) -> list[str]:
        cmd = ["/bin/sh", str(self.dir / "launch.sh")]
        if can_unshare():
            cmd = [find_tool("unshare"), "--mount", "--propagation", "private"] + \
                  (["--uts"] if self.hostname else []) + cmd
        else:  # fallback: the one host change we accept, as CI images do
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if self.netns:
            cmd = [find_tool("ip"), "netns", "exec", self.netns] + cmd
        return cmd

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        host, port = host or self.host, port or self.port
        return f"{host if port == 22 else f'[{host}]:{port}'} {self.host_public_key}\n"

    def trust(self, host: str, port: int) -> None:
        """Also trust this host key at another address, e.g. a TcpProxy in front of it."""
        with open(self.known_hosts, "a") as f:
            f.write(self.known_hosts_line(host, port))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> SshServer:
        """Start sshd and wait until it speaks SSH; an auto-picked port taken meanwhile is re-picked."""
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            _LIVE.add(self)
            try:
                self.wait_ready(timeout)
                self._started_once = True
                return self
            except LabError:
                self.stop()
                port_lost = "Address already in use" in self.log_tail()
                if attempt == 2 or not (port_lost and self._auto_port and not self._started_once):
                    raise
                self.port = free_port(self.host)
                self._write_files()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the port answers with an SSH banner. A loaded 2-core box can take seconds:
        each probe gets up to 2 s, the whole wait `timeout` s, and a dead sshd ends it early."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise LabError(f"sshd exited ({code}) before it was ready:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"sshd on {self.host}:{self.port} not ready after {timeout}s:\n{self.log_tail()}")
            if self._banner(min(2.0, remaining)).startswith("SSH-2.0-"):
                return
            time.sleep(0.05)

    def _banner(self, timeout: float) -> str:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                data = b""
                while b"\n" not in data and len(data) < 512:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    data += chunk
                return data.decode("ascii", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no sshd log)"

    def stop(self) -> None:
        """Stop sshd and every session it spawned (agents included), like a device going down."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            kill_all([proc.pid] + descendants(proc.pid))
        proc.wait(timeout=10)
        _LIVE.discard(self)

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
        return self if self.running else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def ssh_config_block(self, alias: str) -> str:
        """A `Host alias` block for an ssh_config file (what `~/.ssh/config` lookup reads)."""
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


def inventory_toml(devices: dict[str, dict]) -> str:
    """Render {name: inventory_entry()} as edgeq.toml text (JSON strings are TOML strings)."""
    out = []
    for name, entry in devices.items():
        out.append(f"[devices.{json.dumps(name)}]")
        out += [f"{k} = {v if isinstance(v, int) else json.dumps(str(v))}" for k, v in entry.items()]
        out.append("")
    return "\n".join(out)


# ---- several devices in network namespaces ---------------------------------------------

@dataclass
class LabDevice:
    """A namespace "device": its sshd listens on port 22 of `address`; the host is `host_address`."""
    name: str  # also the namespace name and the device's hostname
    host_veth: str
    host_address: str
    address: str
    server: SshServer


_NETNS_RE = re.compile(r"^edgeq-t(\d+)-\d+$")


def _delete_netns(ip: str, name: str) -> None:
    pids = [int(p) for p in _run(ip, "netns", "pids", name, check=False).split()]
    kill_all(pids)  # a namespace with processes in it outlives `ip netns del`
    _run(ip, "netns", "del", name, check=False)


def cleanup_stale_namespaces() -> None:
    """Delete edgeq-t<pid>-* namespaces left by test runs whose process is gone (e.g. killed -9)."""
    ip = find_tool("ip")
    for line in _run(ip, "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NETNS_RE.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            _delete_netns(ip, name)


class NetnsLab:
    """N network namespaces joined to the host by veth pairs, each with its own sshd.

    Subnets 10.77.<n>.0/24 are picked free on this host under a file lock, so parallel
    test runs do not collide; n also ends the namespace (edgeq-t<pid>-<n>) and veth names."""

    LOCK = "/tmp/edgeq-netns.lock"

    def __init__(self, n: int = 3, directory: str | Path | None = None, **server_kwargs):
        self.n, self.server_kwargs = n, server_kwargs
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="edgeq-netns-"))
        self.devices: list[LabDevice] = []
        self._namespaces: list[str] = []
        self._veths: list[str] = []
        self.ip, self.tc = find_tool("ip"), find_tool("tc")
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
                for subnet in self._free_subnets():
                    self.devices.append(self._make_device(subnet))
            for device in self.devices:
                device.server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _free_subnets(self) -> list[int]:
        used = {int(x) for x in re.findall(r"inet 10\.77\.(\d+)\.", _run(self.ip, "-o", "-4", "addr", "show"))}
        free = [x for x in range(1, 255) if x not in used][: self.n]
        if len(free) < self.n:
            raise LabError("no free 10.77.<n>.0/24 subnets left")
        return free

    def _make_device(self, x: int) -> LabDevice:
        tag = f"{os.getpid() % 10000:04d}{x:03d}"
        ns, host_veth, dev_veth = f"edgeq-t{os.getpid()}-{x}", f"eqh{tag}", f"eqd{tag}"
        self._namespaces.append(ns)
        _run(self.ip, "netns", "add", ns)
        self._veths.append(host_veth)
        _run(self.ip, "link", "add", host_veth, "type", "veth", "peer", "name", dev_veth, "netns", ns)
        _run(self.ip, "addr", "add", f"10.77.{x}.1/24", "dev", host_veth)
        _run(self.ip, "link", "set", host_veth, "up")
        _run(self.ip, "-n", ns, "addr", "add", f"10.77.{x}.2/24", "dev", dev_veth)
        _run(self.ip, "-n", ns, "link", "set", dev_veth, "up")
        _run(self.ip, "-n", ns, "link", "set", "lo", "up")
        server = SshServer(self.dir / ns, host=f"10.77.{x}.2", port=22, netns=ns, hostname=ns,
                           **self.server_kwargs)
        return LabDevice(ns, host_veth, f"10.77.{x}.1", f"10.77.{x}.2", server)

    def _device(self, device: int | LabDevice) -> LabDevice:
        return self.devices[device] if isinstance(device, int) else device

    def rate_limit(self, device: int | LabDevice, rate: str = "100mbit", burst: str = "256kb",
                   latency: str = "50ms") -> None:
        """tbf on the host end of the veth: shapes host→device traffic (uploads); netem is absent."""
        if not self.tc:
            raise LabError(f"tc not found: {SETUP_HINT}")
        _run(self.tc, "qdisc", "replace", "dev", self._device(device).host_veth, "root",
             "tbf", "rate", rate, "burst", burst, "latency", latency)

    def clear_rate_limit(self, device: int | LabDevice) -> None:
        _run(self.tc, "qdisc", "del", "dev", self._device(device).host_veth, "root", check=False)

    def stop(self) -> None:
        """Stop the servers, delete namespaces and veths; safe after a half-made start."""
        for device in self.devices:
            device.server.close()
        for ns in self._namespaces:
            _delete_netns(self.ip, ns)
        for veth in self._veths:  # normally gone with its namespace
            _run(self.ip, "link", "del", veth, check=False)
        self.devices, self._namespaces, self._veths = [], [], []
        _LIVE.discard(self)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# ---- a link that fails on demand -------------------------------------------------------

def _abort(sock: socket.socket) -> None:
    """Close at once with a RST; shutdown first so threads blocked in recv/send wake up."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Link:
    """One proxied connection; budget = client→server bytes left before it is cut (None: no limit)."""

    def __init__(self, client: socket.socket, upstream: socket.socket, budget: int | None):
        self.client, self.upstream, self.budget, self.closed = client, upstream, budget, False


class TcpProxy:
    """TCP forwarder on 127.0.0.1:<free port> to target; can cut, drop after N bytes, or delay.

    Two daemon threads per connection (at most max_connections) plus one accept thread, all
    blocking (no polling). bytes_forwarded = {"up": client→server, "down": server→client}."""

    def __init__(self, target: SshServer | tuple[str, int], *, delay_s: float = 0.0,
                 max_connections: int = 32):
        self.server = target if isinstance(target, SshServer) else None
        self.target = (target.host, target.port) if self.server else (target[0], int(target[1]))
        self.delay_s, self.max_connections = delay_s, max_connections
        self.bytes_forwarded = {"up": 0, "down": 0}
        self.connections = 0
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._refusing, self._closed = False, False
        self._shared_budget: int | None = None
        self._per_connection_budget: int | None = None
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
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                refuse = self._refusing or len(self._links) >= self.max_connections
                if not refuse:
                    link = _Link(client, upstream, self._per_connection_budget)
                    self._links.add(link)
                    self.connections += 1
            if refuse:
                _abort(client)
                _abort(upstream)
                continue
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(link, src, dst, way), daemon=True).start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                cut = None
                if way == "up":
                    allowed, cut = self._spend(link, len(data))
                    data = data[:allowed]
                if data:
                    dst.sendall(data)
                    with self._lock:
                        self.bytes_forwarded[way] += len(data)
                if cut == "all":
                    self._cut_links()
                if cut:
                    break
        except OSError:
            pass
        finally:
            self._drop(link)  # either side ending ends the connection, as a real drop would

    def _spend(self, link: _Link, n: int) -> tuple[int, str | None]:
        """How many of n upstream bytes may pass, and whether to cut this link or all links."""
        with self._lock:
            if link.budget is not None:
                allowed = min(n, link.budget)
                link.budget -= allowed
                return allowed, "link" if link.budget == 0 else None
            if self._shared_budget is not None:
                allowed = min(n, self._shared_budget)
                self._shared_budget -= allowed
                if self._shared_budget == 0:
                    self._shared_budget = None
                    return allowed, "all"
                return allowed, None
            return n, None

    def _drop(self, link: _Link) -> None:
        with self._lock:
            if link.closed:
                return
            link.closed = True
            self._links.discard(link)
        _abort(link.client)
        _abort(link.upstream)

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

    def cut_after(self, nbytes: int, per_connection: bool = False) -> None:
        """Let nbytes more client→server bytes through, counted from now over all connections,
        then cut every live connection once (new ones are accepted: a retry can succeed).
        per_connection=True: every live and future connection is cut after nbytes of its own
        (a link that always drops) until resume()."""
        with self._lock:
            if per_connection:
                self._per_connection_budget = nbytes
                for link in self._links:
                    link.budget = nbytes
            else:
                self._shared_budget = nbytes

    def resume(self) -> None:
        """Accept and forward normally again (clears cut() and cut_after())."""
        with self._lock:
            self._refusing = False
            self._shared_budget = self._per_connection_budget = None
            for link in self._links:
                link.budget = None

    def close(self) -> None:
        with self._lock:
            self._refusing = self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        self._cut_links()
        _LIVE.discard(self)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@atexit.register
def _close_everything() -> None:
    """Backstop for interrupted runs: no sshd, namespace or veth may outlive the test process."""
    for obj in list(_LIVE):
        try:
            obj.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---- pytest fixtures (import them into conftest.py) ------------------------------------

@pytest.fixture
def sshd_server(tmp_path):
    """A fresh loopback sshd per test (tests may stop, restart or fill it)."""
    require_tools("sshd", "ssh-keygen")
    with SshServer(tmp_path / "sshd") as server:
        yield server


@pytest.fixture(scope="session")
def sshd_session(tmp_path_factory):
    """One loopback sshd shared by the session (tests must not stop it)."""
    require_tools("sshd", "ssh-keygen")
    with SshServer(tmp_path_factory.mktemp("sshd-session")) as server:
        yield server


@pytest.fixture(scope="session")
def netns_lab(tmp_path_factory):
    """Three devices in network namespaces, reachable at lab.devices[i].address:22."""
    require_tools("sshd", "ssh-keygen", "ip", "unshare")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (run the suite as root, e.g. in CI)", pytrace=False)
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
