"""Transports are looked up in one registry: a new way of reaching a board is one class."""

from __future__ import annotations

import pytest

from edgeq.devices.inventory import Device, connect, load_inventory
from edgeq.devices.transport import TRANSPORTS, Transport, transport_class
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import ConfigError


class RecordingTransport(Transport):
    """A stand-in transport (what an adb or labgrid module would add)."""

    opened: list = []

    @classmethod
    def for_device(cls, device):
        cls.opened.append(device.name)
        return cls(device.name)

    def _run_impl(self, argv, stdin, timeout):
        raise NotImplementedError

    _start_impl = _put_impl = _get_impl = exists = makedirs = read_from = expand = _run_impl


def test_registered_transports_open_from_the_registry(monkeypatch):
    assert transport_class("local") is LocalTransport
    assert isinstance(connect(Device(name="here", transport="local")), LocalTransport)
    monkeypatch.setitem(TRANSPORTS, "recording", f"{__name__}:RecordingTransport")
    opened = connect(Device(name="board-7", transport="recording"))
    assert isinstance(opened, RecordingTransport) and RecordingTransport.opened == ["board-7"]


def test_unknown_transports_are_named_with_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown transport 'adb' \(known: labgrid, local, ssh\)"):
        connect(Device(name="phone", transport="adb"))
    inventory = tmp_path / "edgeq.toml"
    inventory.write_text('[devices.phone]\ntransport = "adb"\n')
    with pytest.raises(ConfigError, match="devices.phone: unknown transport 'adb'"):
        load_inventory(inventory)
