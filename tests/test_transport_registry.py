"""Transports are looked up in one registry: a new way of reaching a board is one class."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import AGENT_SOURCE
from edgeq.devices.inventory import Device, connect, load_inventory
from edgeq.devices.transport import TRANSPORTS, Process, Transport, transport_class
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


class FileObjectsProcess(Process):
    """A plugin's process written before ``read_some``/``write_some``/``write_all``: file objects only."""

    def __init__(self, popen: subprocess.Popen):
        self.popen, self.stdin, self.stdout = popen, popen.stdin, popen.stdout

    def stderr_tail(self, limit=4000):
        return ""

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def kill(self):
        self.popen.kill()
        self.popen.wait()


class FileObjectsTransport(LocalTransport):
    def _start_impl(self, argv):
        return FileObjectsProcess(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL))


def test_a_transport_giving_file_objects_only_still_carries_the_agent(tmp_path):
    with AgentSession(FileObjectsTransport("old-plugin"), sys.executable, str(AGENT_SOURCE)) as session:
        assert session.hello()["python"]
        ids = [session.send("df", path=str(tmp_path)) for _ in range(3)]  # kept in flight, answered in order
        assert all(session.receive(i, "df", timeout=600)["free"] > 0 for i in ids)
