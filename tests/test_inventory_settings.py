"""Transport settings: each transport's own inventory keys, read and checked by its SETTINGS table."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.devices.inventory import Device, connect, load_inventory
from edgeq.devices.transport import TRANSPORTS, Setting, Transport
from edgeq.devices.transport.ssh import SshTransport
from edgeq.devices.transport.ssh_target import SshTarget
from edgeq.errors import ConfigError


class SerialTransport(Transport):
    """A transport only this test knows (what an adb or labgrid module would add)."""

    SETTINGS = (
        Setting("serial", str, None, "the board's serial number"),
        Setting("baud", int, 115200, "console speed", low=1),
    )

    def __init__(self, device: str, settings):
        super().__init__(device)
        self.settings = settings

    @classmethod
    def for_device(cls, device):
        return cls(device.name, cls.settings_of(device))

    def _run_impl(self, argv, stdin, timeout):
        raise NotImplementedError

    _start_impl = _put_impl = _get_impl = exists = makedirs = read_from = expand = _run_impl


@pytest.fixture
def serial(monkeypatch):
    """SerialTransport in the registry for one test (monkeypatch takes it out again)."""
    monkeypatch.setitem(TRANSPORTS, "serial", f"{__name__}:SerialTransport")


@pytest.fixture(autouse=True)
def no_ssh_config(monkeypatch, tmp_path):
    """The developer's ~/.ssh/config must not change what these tests resolve."""
    monkeypatch.setenv("EDGEQ_SSH_CONFIG", str(tmp_path / "no-ssh-config"))


def inventory(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgeq.toml"
    path.write_text(text)
    return path


def test_a_new_transport_reads_its_own_keys_from_the_inventory(serial, tmp_path):
    found = load_inventory(inventory(tmp_path, '[devices.board]\ntransport = "serial"\nserial = "A1B2"\n'
                                               'workdir = "/data/edgeq"\ntags = ["bench"]\n'))
    board = found["board"]
    assert (board.workdir, board.tags) == ("/data/edgeq", ("bench",))
    assert dict(board.settings) == {"serial": "A1B2", "baud": 115200}
    opened = connect(board)
    assert isinstance(opened, SerialTransport) and opened.settings == board.settings
    listed = CliRunner().invoke(main, ["devices", "list", "--inventory", str(tmp_path / "edgeq.toml")])
    assert listed.exit_code == 0 and "serial=A1B2" in listed.output


def test_a_new_transport_refuses_ssh_keys_and_bad_values(serial, tmp_path):
    with pytest.raises(ConfigError, match=r"devices.board \(transport serial\): unknown key 'host' "
                                          r"\(known: baud, serial\)"):
        load_inventory(inventory(tmp_path, '[devices.board]\ntransport = "serial"\nhost = "pi"\n'))
    with pytest.raises(ConfigError, match="baud must be a whole number of at least 1, got 0"):
        load_inventory(inventory(tmp_path, '[devices.board]\ntransport = "serial"\nbaud = 0\n'))


def test_unknown_ssh_key_is_refused_naming_device_key_and_known_keys(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_inventory(inventory(tmp_path, '[devices.pi]\nhost = "pi.lab"\nhostname = "pi.lab"\n'))
    message = str(refused.value)
    assert "devices.pi (transport ssh): unknown key 'hostname'" in message
    assert "(known: connect_timeout, host, identity_file, known_hosts, port, retries, user)" in message


@pytest.mark.parametrize("line, needle", [
    ('port = "22"', "port must be a whole number from 1 to 65535, got '22'"),
    ("port = 70000", "port must be a whole number from 1 to 65535, got 70000"),
    ("port = 22.0", "port must be a whole number"),
    ("connect_timeout = 0", "connect_timeout must be a number above 0, got 0"),
    ("connect_timeout = nan", "connect_timeout must be a number above 0, got nan"),
    ("retries = -1", "retries must be a whole number of at least 0, got -1"),
    ("retries = true", "retries must be a whole number of at least 0, got True"),
    ("user = 1000", "user must be text, got 1000"),
])
def test_bad_ssh_values_are_refused(tmp_path, line, needle):
    with pytest.raises(ConfigError, match=f"devices.pi \\(transport ssh\\): {needle}"):
        load_inventory(inventory(tmp_path, f'[devices.pi]\nhost = "pi.lab"\n{line}\n'))


def test_local_takes_no_ssh_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"devices.local \(transport local\): unknown key 'host' \(known: none\)"):
        load_inventory(inventory(tmp_path, '[devices.local]\nhost = "localhost"\n'))
    assert load_inventory(inventory(tmp_path, '[devices.local]\nworkdir = "/w"\n'))["local"].settings == {}


def test_existing_ssh_inventories_reach_the_same_target(tmp_path):
    """The flat table of before: the same host, port, user, key and known_hosts."""
    path = inventory(tmp_path, '[devices.pi]\nhost = "10.0.0.7"\nport = 2222\nuser = "pi"\n'
                               'identity_file = "~/.ssh/lab"\nknown_hosts = "/etc/edgeq/known_hosts"\n'
                               'connect_timeout = 5\nretries = 0\nworkdir = "/w"\npower = "hwmon"\n'
                               '[devices.rpi4]\n')
    found = load_inventory(path)
    ssh = SshTransport(found["pi"])  # connects lazily: nothing is reached here
    assert ssh.target == SshTarget(device="pi", hostname="10.0.0.7", port=2222, user="pi",
                                   identity_files=(str(Path("~/.ssh/lab").expanduser()),),
                                   known_hosts=("/etc/edgeq/known_hosts",))
    assert (ssh.connect_timeout, ssh.retries) == (5.0, 0)
    assert (found["pi"].workdir, found["pi"].power) == ("/w", "hwmon")
    bare = SshTransport(found["rpi4"])
    assert (bare.target.hostname, bare.target.port, bare.target.user) == ("rpi4", 22, getpass.getuser())
    assert bare.target.known_hosts == (str(Path("~/.ssh/known_hosts").expanduser()),)
    assert (bare.connect_timeout, bare.retries) == (10.0, 3)


def test_devices_stay_frozen_hashable_and_list_flat(tmp_path):
    device = load_inventory(inventory(tmp_path, '[devices.pi]\nport = 2200\n'))["pi"]
    built = Device(name="pi", settings=dict(device.settings))
    assert built == device and hash(built) == hash(device)
    with pytest.raises(TypeError):
        device.settings["port"] = 22
    assert device.as_dict()["port"] == 2200 and device.as_dict()["host"] == "pi"
    assert SshTransport.settings_of(Device(name="jump"))["host"] == "jump"
