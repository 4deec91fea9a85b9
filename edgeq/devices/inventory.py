"""The device inventory: ``edgeq.toml`` (or --inventory / EDGEQ_INVENTORY).

``local`` is always defined: this host, the same agent, run as a subprocess by
the Python that runs edgeq (it has numpy and ai-edge-litert as core dependencies).

A device table is flat; the keys every device has (``COMMON_KEYS``) are read here, the
rest belong to its transport, whose ``SETTINGS`` table checks them.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from edgeq.devices.transport import Settings, transport_class
from edgeq.errors import ConfigError

DEFAULT_INVENTORY = "edgeq.toml"


@dataclass(frozen=True)
class Device:
    """One inventory entry: what every device has, and its transport's own ``settings``.

    The settings' keys and types come from the transport's ``SETTINGS`` table, so a new
    transport changes nothing here; behaviour (connecting) lives in ``connect``.
    """

    name: str
    transport: str = "ssh"
    python: str | None = None  # None: workdir/venv/bin/python if `devices setup` made it, else python3
    workdir: str = "~/.edgeq"
    power: str = "none"
    tags: tuple[str, ...] = field(default_factory=tuple)
    store_mb: int = 2048  # pushed files and run folders kept on the device, least recently used go first
    install_path: str | None = None  # where `edgeq deploy install` puts the model when --to is not given
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self):
        """Settings given as a dict (code, tests) become read-only, so the Device stays hashable."""
        if not isinstance(self.settings, Settings):
            object.__setattr__(self, "settings", Settings(self.settings))

    def as_dict(self) -> dict:
        """The device flat, the way its inventory table lists it: common keys and settings side by side."""
        common = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**common, "tags": list(self.tags), **self.settings}


COMMON_KEYS = {f.name for f in fields(Device)} - {"name", "settings"}


def local_device(workdir: str | None = None) -> Device:
    default = os.environ.get("EDGEQ_LOCAL_WORKDIR", "~/.cache/edgeq/local-device")
    return Device(name="local", transport="local", python=sys.executable, workdir=workdir or default)


def find_inventory(start: Path | None = None) -> Path | None:
    """``edgeq.toml`` in the working folder or the nearest folder above it, as git finds
    its repository: a command run from a project's subfolder uses the project's boards."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / DEFAULT_INVENTORY).is_file():
            return candidate / DEFAULT_INVENTORY
    return None


def load_inventory(path: str | os.PathLike | None = None) -> dict[str, Device]:
    """Read the inventory; no file found just means "only local"."""
    explicit = path or os.environ.get("EDGEQ_INVENTORY")
    inventory_path = Path(explicit) if explicit else find_inventory()
    devices: dict[str, Device] = {}
    if inventory_path is not None and inventory_path.is_file():
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
    return {name: device_from_entry(name, entry, f"{path}: devices.{name}") for name, entry in entries.items()}


def device_from_entry(name: str, entry: Mapping, where: str | None = None) -> Device:
    """A ``[devices.NAME]`` table as a Device: the common keys are read here, the rest by its transport.

    The table stays flat (``host = …`` next to ``workdir = …``), so inventories written before
    transports had settings of their own still read the same.
    """
    where = where or f"devices.{name}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table")
    common = {key: value for key, value in entry.items() if key in COMMON_KEYS}
    _check_common(common, where)
    common["tags"] = tuple(common.get("tags", ()))
    if name == "local":
        common.setdefault("transport", "local")
        common.setdefault("python", sys.executable)
    transport = common.get("transport", Device.transport)
    own = {key: value for key, value in entry.items() if key not in COMMON_KEYS}
    settings = transport_class(transport, where).read_settings(name, own, f"{where} (transport {transport})")
    return Device(name=name, settings=settings, **common)


COMMON_TYPES = {"transport": (str, "a transport name"), "python": (str, "a path"), "workdir": (str, "a path"),
                "power": (str, "a power backend name"), "tags": (list, "a list of names"),
                "store_mb": (int, "a whole number of megabytes, 0 or more"),
                "install_path": (str, "the path the application opens its model from")}


def _check_common(common: dict, where: str) -> None:
    """The keys every device has, typed as the inventory must give them."""
    for key, value in common.items():
        kind, wanted = COMMON_TYPES[key]
        bad = not isinstance(value, kind) or isinstance(value, bool) or (key == "store_mb" and value < 0) or (
            key == "tags" and not all(isinstance(t, str) for t in value))
        if bad:
            raise ConfigError(f"{where}: {key} must be {wanted}, got {value!r}")


SETUP_VENV = "venv"


def device_python(device: Device, transport) -> str:
    """The interpreter to run the agent with, ``~`` expanded the way the device sees it."""
    import posixpath

    if device.python:
        return transport.expand(device.python)
    made_by_setup = posixpath.join(transport.expand(device.workdir), SETUP_VENV, "bin", "python")
    return made_by_setup if transport.exists(made_by_setup) else "python3"


def select_devices(spec: str | None, inventory: dict[str, Device], tag: str | None = None,
                   flag: str = "--device") -> list[Device]:
    """Resolve ``--device a,b`` or ``--tag lab`` against the inventory, naming what is unknown or named twice."""
    if tag:
        tagged = [d for d in inventory.values() if tag in d.tags]
        if not tagged:
            raise ConfigError(f"no device in the inventory has tag {tag!r}")
        return tagged
    names = [n.strip() for n in (spec or "local").split(",") if n.strip()]
    if not names:
        raise ConfigError("--device names no device")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # one board, two jobs: the second would wait for (or fail on) the lock the first holds
        raise ConfigError(f"{flag} {spec}: names {', '.join(twice)} more than once; name each device once")
    unknown = [n for n in names if n not in inventory]
    if unknown:
        known = ", ".join(sorted(inventory))
        raise ConfigError(f"unknown device {', '.join(unknown)} (inventory has: {known})")
    return [inventory[n] for n in names]


def connect(device: Device):
    """Open the transport for a device (looked up in the transport registry)."""
    return transport_class(device.transport, f"device {device.name}").for_device(device)
