"""Transports move bytes and run commands on a device: one class per way of reaching it.

``TRANSPORTS`` is the registry an inventory's ``transport = NAME`` is looked up in; a new
way of reaching boards (adb, labgrid) is one module with a ``Transport`` subclass (its
``SETTINGS`` table names the inventory keys it reads) and one line here. Classes load only
when a device uses them (paramiko only for SSH).
"""

import importlib

from edgeq.devices.transport.base import Process, Result, Transfer, Transport
from edgeq.devices.transport.settings import Setting, Settings
from edgeq.errors import ConfigError

__all__ = ["Process", "Result", "Setting", "Settings", "Transfer", "Transport", "TRANSPORTS", "transport_class"]

TRANSPORTS = {  # name -> "module:Class"
    "local": "edgeq.devices.transport.local:LocalTransport",
    "ssh": "edgeq.devices.transport.ssh:SshTransport",
}


def transport_class(name: str, where: str = "transport") -> type:
    """The Transport subclass registered under ``name``."""
    target = TRANSPORTS.get(name)
    if target is None:
        raise ConfigError(f"{where}: unknown transport {name!r} (known: {', '.join(sorted(TRANSPORTS))})")
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)
