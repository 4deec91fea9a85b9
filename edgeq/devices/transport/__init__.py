"""Transports move bytes and run commands on a device: one class per way of reaching it.

An inventory's ``transport = NAME`` is found, in order, in ``TRANSPORTS`` (the built-in
ones), in a module ``edgeq/devices/transport/NAME.py`` that sets ``TRANSPORT = ItsClass``,
or in an ``edgeq.transports`` entry point of another package: a new way of reaching
boards (adb, labgrid) is one module with a ``Transport`` subclass (its ``SETTINGS``
table names the inventory keys it reads) and nothing else. Classes load only when a
device uses them (paramiko only for SSH).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from importlib.metadata import entry_points

from edgeq.devices.transport.base import Process, Result, Transfer, Transport
from edgeq.devices.transport.settings import Setting, Settings
from edgeq.errors import ConfigError

__all__ = ["Process", "Result", "Setting", "Settings", "Transfer", "Transport", "TRANSPORTS", "transport_class"]

ENTRY_POINT_GROUP = "edgeq.transports"
TRANSPORTS = {  # name -> "module:Class"
    "local": "edgeq.devices.transport.local:LocalTransport",
    "ssh": "edgeq.devices.transport.ssh:SshTransport",
}


def transport_class(name: str, where: str = "transport") -> type:
    """The Transport subclass for ``name``: registered, a module of that name here, or an entry point."""
    target = TRANSPORTS.get(name) or _module_target(name) or _entry_point_target(name)
    if target is None:
        raise ConfigError(f"{where}: unknown transport {name!r} (known: {', '.join(known_transports())})")
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def known_transports() -> list[str]:
    found = set(TRANSPORTS) | {m.name for m in pkgutil.iter_modules(__path__) if _module_target(m.name)}
    return sorted(found | {point.name for point in entry_points(group=ENTRY_POINT_GROUP)})


def _module_target(name: str) -> str | None:
    """``edgeq.devices.transport.NAME:TRANSPORT`` when that module exists and names its class."""
    if not name.isidentifier() or importlib.util.find_spec(f"{__name__}.{name}") is None:
        return None
    module = importlib.import_module(f"{__name__}.{name}")
    return f"{__name__}.{name}:TRANSPORT" if hasattr(module, "TRANSPORT") else None


def _entry_point_target(name: str) -> str | None:
    point = next((p for p in entry_points(group=ENTRY_POINT_GROUP) if p.name == name), None)
    return None if point is None else point.value
