"""``edgeq devices check`` and ``trust``: what a device has, and pinning its host key."""

from __future__ import annotations

import os
from pathlib import Path

from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import Device, connect, device_python
from edgeq.errors import ConfigError, EdgeqError, TransportError


def probe_device(device: Device) -> dict:
    """Facts about the device, with ok=False and the failing stage instead of raising."""
    facts: dict = {"ok": False, "reachable": False, "auth": False}
    try:
        with connect(device) as transport:
            workdir = transport.expand(device.workdir)
            transport.makedirs(workdir)
            facts.update(reachable=True, auth=True, workdir=workdir)
            agent = Deployer(transport, device.workdir).push_agent()
            with AgentSession(transport, device_python(device, transport), agent) as session:
                facts.update(session.request("hello", timeout=120))
                facts["disk"] = session.request("df", path=workdir, timeout=60)
    except EdgeqError as exc:
        facts["error"] = str(exc)
        facts["stage"] = _stage(exc, facts)
        return facts
    facts["ok"] = "runtime_error" not in facts
    if not facts["ok"]:
        facts["error"], facts["stage"] = facts["runtime_error"], "runtime"
    return facts


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


def pin_host_key(target, key) -> Path:
    """Append the key to the target's first known_hosts file (the inventory's wins), created 0600 if needed."""
    path = Path(target.known_hosts[0])
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{target.known_hosts_key} {key.get_name()} {key.get_base64()}\n"
    existing = path.read_text() if path.exists() else ""
    if line not in existing:
        with open(path, "a") as handle:
            if existing and not existing.endswith("\n"):
                handle.write("\n")
            handle.write(line)
        os.chmod(path, 0o600)
    return path
