"""``edgeq devices check`` and ``trust``: what a device has, and pinning its host key."""

from __future__ import annotations

import os
from pathlib import Path

from edgeq.devices.inventory import Device, connect
from edgeq.devices.lock import status as lock_status
from edgeq.devices.session import open_session
from edgeq.errors import EXIT_BAD_INPUT, ConfigError, EdgeqError, TransportError
from edgeq.files import write_text


def probe_device(device: Device) -> dict:
    """Facts about the device, with ok=False and the failing stage instead of raising."""
    facts: dict = {"ok": False, "reachable": False, "auth": False}
    try:
        with connect(device) as transport:
            workdir = transport.expand(device.workdir)
            transport.makedirs(workdir)
            facts.update(reachable=True, auth=True, workdir=workdir)
            # a check only looks (it never takes the lock) and reports a missing runtime as a fact: its own hello
            with open_session(device, transport=transport, lock=False, hello=False) as opened:
                facts.update(opened.session.request("hello", timeout=120))
                facts["disk"] = opened.session.request("df", path=workdir, timeout=60)
                facts["lock"] = lock_status(opened.session, workdir)
    except EdgeqError as exc:
        if exc.exit_code == EXIT_BAD_INPUT:  # a bad setting (known_hosts a folder, …) is the user's to fix: exit 2
            raise
        facts["error"] = str(exc)
        facts["stage"] = _stage(exc, facts)
        return facts
    facts["ok"] = "runtime_error" not in facts
    if not facts["ok"]:
        facts["error"], facts["stage"] = facts["runtime_error"], "runtime"
    return facts


def probe_lock(device: Device) -> dict:
    """Who holds the board ({"held", "holder"}), or {"error"}: for ``devices list --locks``."""
    try:
        with connect(device) as transport:
            workdir = transport.expand(device.workdir)
            transport.makedirs(workdir)
            with open_session(device, transport=transport, lock=False, hello=False) as opened:
                return lock_status(opened.session, workdir)
    except EdgeqError as exc:
        return {"error": str(exc)}


def _stage(exc: EdgeqError, facts: dict) -> str:
    text = str(exc)
    if facts["reachable"]:
        return "python" if "python" in text else "agent"
    if "authentication failed" in text:
        facts["reachable"] = True
        return "auth"
    if "host key" in text.lower():
        facts["reachable"] = True
        return "host key"
    return "connect"


def fetch_host_key(device: Device):
    """The key an SSH device presents, read before any authentication."""
    import socket

    import paramiko

    from edgeq.devices.transport.ssh import SshTransport
    from edgeq.devices.transport.ssh_target import resolve_target

    if device.transport != "ssh":
        raise ConfigError(f"{device.name}: transport {device.transport} has no host key to trust")
    target = resolve_target(device.name, SshTransport.settings_of(device))
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=10)
    except OSError as exc:
        raise TransportError(f"{device.name}: cannot reach {target.hostname}:{target.port}: {exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        return target, transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise TransportError(f"{device.name}: SSH handshake with {target.hostname}:{target.port} failed: {exc}") from None
    finally:
        transport.close()


def pinned_keys(target) -> list[tuple[Path, str]]:
    """(known_hosts file, key as ``type base64``) of every key pinned for the target's host."""
    found = []
    for name in target.known_hosts:
        path = Path(name)
        if path.is_file():
            found += [(path, key) for line in _lines(path) if (key := _key_for(line, target.known_hosts_key))]
    return found


def pin_host_key(target, key) -> Path:
    """Make ``key`` the only key pinned for the target's host; returns the file it is pinned in.

    Old keys of that host are dropped from every known_hosts file the target reads (a stale
    one left anywhere would still fail the check); the new line goes to the first file (the
    inventory's wins). Files are rewritten atomically, 0600, in a 0700 folder when edgeq
    makes it.
    """
    first = Path(target.known_hosts[0])
    for path in {Path(name) for name in target.known_hosts[1:]}:
        if path != first and path.is_file() and _entries_of(path, target.known_hosts_key):
            _write_private(path, _without_host(path, target.known_hosts_key))
    lines = _without_host(first, target.known_hosts_key) if first.is_file() else []
    _write_private(first, lines + [f"{target.known_hosts_key} {key.get_name()} {key.get_base64()}"])
    return first


def _key_for(line: str, host: str) -> str | None:
    """``type base64`` of a known_hosts line that names ``host`` (also hashed names), else None."""
    fields = line.split()
    if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
        return None
    return " ".join(fields[1:3]) if _names_host(fields[0], host) else None


def _names_host(patterns: str, host: str) -> bool:
    from paramiko.hostkeys import HostKeys

    for pattern in patterns.split(","):
        if pattern == host or (pattern.startswith("|1|") and HostKeys.hash_host(host, pattern) == pattern):
            return True
    return False


def _entries_of(path: Path, host: str) -> list[str]:
    return [line for line in _lines(path) if _key_for(line, host)]


def _without_host(path: Path, host: str) -> list[str]:
    return [line for line in _lines(path) if not _key_for(line, host)]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pinned host keys: {exc.strerror or exc}") from None


def _write_private(path: Path, lines: list[str]) -> None:
    """Replace ``path`` with ``lines``, mode 0600, through a temporary file beside it (a symlink's target)."""
    path = Path(os.path.realpath(path))
    _make_private_dirs(path.parent)
    try:
        write_text(path, "".join(line + "\n" for line in lines), perms=0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write pinned host keys: {exc.strerror or exc}") from None


def _make_private_dirs(folder: Path) -> None:
    """Create the missing folders of ``folder`` 0700 (pinned keys are per-user); existing ones are left as they are."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)  # the umask can only take bits away from 0700
        except FileExistsError:  # made meanwhile by someone else: theirs to keep as it is
            pass
        except OSError as exc:
            raise ConfigError(f"{made}: cannot create folder for pinned host keys: {exc.strerror or exc}") from None
