"""The device inventory: ``edgeq.toml`` (or --inventory / EDGEQ_INVENTORY).

``local`` is always defined: this host, the same agent, run as a subprocess by
the Python that runs edgeq (it has numpy and ai-edge-litert as core dependencies).
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ConfigError

DEFAULT_INVENTORY = "edgeq.toml"
KNOWN_KEYS = {"host", "port", "user", "identity_file", "python", "workdir", "known_hosts",
              "power", "tags", "transport", "connect_timeout", "retries"}


@dataclass(frozen=True)
class Device:
    """One inventory entry; behaviour (connecting) lives in ``connect``."""

    name: str
    transport: str = "ssh"
    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    python: str | None = None  # None: workdir/venv/bin/python if `devices setup` made it, else python3
    workdir: str = "~/.edgeq"
    known_hosts: str | None = None
    power: str = "none"
    tags: tuple[str, ...] = field(default_factory=tuple)
    connect_timeout: float = 10.0
    retries: int = 3


def local_device(workdir: str | None = None) -> Device:
    default = os.environ.get("EDGEQ_LOCAL_WORKDIR", "~/.cache/edgeq/local-device")
    return Device(name="local", transport="local", host="localhost", python=sys.executable,
                  workdir=workdir or default)


def load_inventory(path: str | os.PathLike | None = None) -> dict[str, Device]:
    """Read the inventory; a missing default file just means "only local"."""
    explicit = path or os.environ.get("EDGEQ_INVENTORY")
    inventory_path = Path(explicit or DEFAULT_INVENTORY)
    devices: dict[str, Device] = {}
    if inventory_path.exists():
        devices.update(_parse_inventory(inventory_path))
    elif explicit:
        raise ConfigError(f"{inventory_path}: inventory file not found")
    devices.setdefault("local", local_device())
    return devices


def _parse_inventory(path: Path) -> dict[str, Device]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read inventory: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("devices", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: [devices] must be a table of device tables")
    return {name: _device_from_entry(path, name, entry) for name, entry in entries.items()}


def _device_from_entry(path: Path, name: str, entry) -> Device:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: devices.{name} must be a table")
    unknown = set(entry) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{path}: devices.{name} has unknown keys: {', '.join(sorted(unknown))}")
    values = dict(entry)
    values["tags"] = tuple(values.get("tags", ()))
    if name == "local":
        values.setdefault("transport", "local")
        values.setdefault("python", sys.executable)
    values.setdefault("host", name)
    from edgeq.devices.transport import TRANSPORTS

    if values.get("transport", "ssh") not in TRANSPORTS:
        raise ConfigError(f"{path}: devices.{name}: unknown transport {values['transport']!r} "
                          f"(known: {', '.join(sorted(TRANSPORTS))})")
    try:
        return Device(name=name, **values)
    except TypeError as exc:
        raise ConfigError(f"{path}: devices.{name}: {exc}") from None


SETUP_VENV = "venv"


def device_python(device: Device, transport) -> str:
    """The interpreter to run the agent with, ``~`` expanded the way the device sees it."""
    import posixpath

    if device.python:
        return transport.expand(device.python)
    made_by_setup = posixpath.join(transport.expand(device.workdir), SETUP_VENV, "bin", "python")
    return made_by_setup if transport.exists(made_by_setup) else "python3"


def select_devices(spec: str | None, inventory: dict[str, Device], tag: str | None = None) -> list[Device]:
    """Resolve ``--device a,b`` or ``--tag lab`` against the inventory, naming what is unknown."""
    if tag:
        tagged = [d for d in inventory.values() if tag in d.tags]
        if not tagged:
            raise ConfigError(f"no device in the inventory has tag {tag!r}")
        return tagged
    names = [n.strip() for n in (spec or "local").split(",") if n.strip()]
    if not names:
        raise ConfigError("--device names no device")
    unknown = [n for n in names if n not in inventory]
    if unknown:
        known = ", ".join(sorted(inventory))
        raise ConfigError(f"unknown device {', '.join(unknown)} (inventory has: {known})")
    return [inventory[n] for n in names]


def connect(device: Device):
    """Open the transport for a device (looked up in the transport registry)."""
    from edgeq.devices.transport import transport_class

    return transport_class(device.transport, f"device {device.name}").for_device(device)
