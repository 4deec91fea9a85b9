"""The test lab itself, checked against real OpenSSH servers with paramiko and OpenSSH's ssh."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import paramiko
import pytest

import lab
from lab import NetnsLab, SshServer, agent_processes  # fixtures come from conftest.py


def run(client: paramiko.SSHClient, command: str, timeout: float = 20) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=timeout)
    return out.channel.recv_exit_status(), out.read().decode(), err.read().decode()


def test_exec_with_known_hosts_and_reject_policy(sshd_server):
    with sshd_server.connect() as client:
        assert run(client, "echo hi") == (0, "hi\n", "")
        key = client.get_transport().get_remote_server_key()
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    assert fingerprint == sshd_server.host_key_fingerprint
    assert sshd_server.known_hosts.read_text() == \
        f"[127.0.0.1]:{sshd_server.port} {sshd_server.host_public_key}\n"
    if lab.can_unshare():  # sshd lives in its own mount namespace: the host's /run is untouched
        assert os.readlink(f"/proc/{sshd_server._proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def test_unknown_host_key_is_rejected(sshd_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    client = paramiko.SSHClient()
    client.load_host_keys(str(empty))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(sshd_server.host, sshd_server.port, username=sshd_server.user,
                       key_filename=str(sshd_server.client_key), allow_agent=False, look_for_keys=False)
    client.close()


def test_sftp_round_trip(sshd_server, tmp_path):
    payload = os.urandom(1_000_000)
    (tmp_path / "up.bin").write_bytes(payload)
    remote = str(sshd_server.workdir / "up.bin")
    with sshd_server.connect() as client, client.open_sftp() as sftp:
        sftp.put(str(tmp_path / "up.bin"), remote)
        sftp.get(remote, str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_openssh_client_with_config_block(sshd_server, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(sshd_server.ssh_config_block("pi-test"))
    proc = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "pi-test", "echo", "hi"],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr


def test_inventory_entry_fits_edgeq_toml(sshd_server):
    entry = sshd_server.inventory_entry()
    text = "[devices.pi-test]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    assert tomllib.loads(text)["devices"]["pi-test"] == entry
    assert entry["python"] == sys.executable and entry["port"] == sshd_server.port
    assert Path(entry["identity_file"]).exists() and Path(entry["workdir"]).is_dir()


def test_small_disk_and_set_env_only_inside_sshd(tmp_path):
    disk = tmp_path / "disk"
    with SshServer(tmp_path / "sshd", small_disk_mb=1, small_disk_path=disk,
                   set_env={"QEMU_CPU": "cortex-a72", "EDGEQ_LAB": "two words"}) as server:
        with server.connect() as client:
            code, _, err = run(client, f"head -c 3000000 /dev/zero > {disk}/f")
            assert code != 0 and "No space left" in err
            assert run(client, 'echo "$QEMU_CPU|$EDGEQ_LAB"')[1] == "cortex-a72|two words\n"
        assert not os.path.ismount(disk)  # the host never sees the small disk


def test_stop_kills_sessions_and_restart_keeps_identity(sshd_server):
    marker = f"edgeq_agent_test_{uuid.uuid4().hex}"
    client = sshd_server.connect()
    client.exec_command(f"{sys.executable} -c 'import time; time.sleep(60)' {marker}")
    deadline = time.monotonic() + 10
    while not agent_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent_processes(marker)  # the session (its shell may not have exec'd python yet)
    sshd_server.stop()
    assert agent_processes(marker) == []
    client.close()
    port, fingerprint = sshd_server.port, sshd_server.host_key_fingerprint
    sshd_server.start()
    assert (sshd_server.port, sshd_server.host_key_fingerprint) == (port, fingerprint)
    with sshd_server.connect() as again:
        assert run(again, "echo back")[1] == "back\n"


def test_dead_sshd_fails_fast_with_its_log(tmp_path):
    server = SshServer(tmp_path / "sshd")
    (server.dir / "sshd_config").write_text("NoSuchOption yes\n")
    started = time.monotonic()
    with pytest.raises(lab.LabError, match="NoSuchOption|Bad configuration"):
        server.start()
    assert time.monotonic() - started < 12  # well before the 15 s start timeout: it noticed sshd died
    server.close()


def test_missing_tool_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setattr(lab, "find_tool", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="scripts/setup.sh --tests"):
        lab.require_tools("sshd")


def test_proxy_forwards_then_cut_breaks_the_session(sshd_server, tcp_proxy_factory):
    proxy = tcp_proxy_factory(sshd_server)
    client = sshd_server.connect(port=proxy.port)
    assert run(client, "echo hi")[1] == "hi\n"
    assert proxy.bytes_forwarded["up"] > 0 and proxy.bytes_forwarded["down"] > 0
    proxy.cut()
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        run(client, "echo again")
    client.close()
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        sshd_server.connect(port=proxy.port, timeout=5, banner_timeout=5)
    proxy.resume()
    with sshd_server.connect(port=proxy.port) as client:
        assert run(client, "echo resumed")[1] == "resumed\n"


def test_proxy_cut_after_drops_an_upload_midway(sshd_server, tcp_proxy_factory, tmp_path):
    proxy = tcp_proxy_factory(sshd_server)
    (tmp_path / "big.bin").write_bytes(os.urandom(1_000_000))
    remote = sshd_server.workdir / "big.bin"
    client = sshd_server.connect(port=proxy.port)
    sftp = client.open_sftp()
    before = proxy.bytes_forwarded["up"]
    proxy.cut_after(200_000)
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        sftp.put(str(tmp_path / "big.bin"), str(remote))
    client.close()
    assert proxy.bytes_forwarded["up"] - before == 200_000
    assert remote.stat().st_size < 200_000  # the server got a partial file
    with sshd_server.connect(port=proxy.port) as client:  # one-shot: a retry goes through
        assert run(client, "echo retry")[1] == "retry\n"


def test_proxy_delay_slows_every_chunk(sshd_server, tcp_proxy_factory):
    proxy = tcp_proxy_factory(sshd_server, delay_s=0.1)
    started = time.monotonic()
    with sshd_server.connect(port=proxy.port) as client:
        assert run(client, "echo slow")[1] == "slow\n"
    assert time.monotonic() - started > 0.5  # handshake + auth + exec: several delayed round trips


def test_netns_devices_are_distinct_and_reachable(netns_lab):
    assert len(netns_lab.devices) == 3
    seen = set()
    for device in netns_lab.devices:
        assert device.server.host == device.address and device.address.endswith(".2")
        with device.server.connect() as client:
            code, out, _ = run(client, "hostname; ip -4 -o addr show")
        hostname, addresses = out.split("\n", 1)
        assert code == 0 and hostname == device.name
        assert f"inet {device.address}/24" in addresses and "10.77." not in addresses.replace(device.address, "")
        seen.add((hostname, device.address))
    assert len(seen) == 3


def test_netns_lab_rate_limit_and_cleanup(tmp_path):
    ip = lab.find_tool("ip")
    with NetnsLab(1, tmp_path / "lab") as small:
        device = small.devices[0]
        small.rate_limit(device, rate="4mbit", burst="32kb")
        assert "tbf" in subprocess.run(["tc", "qdisc", "show", "dev", device.host_veth],
                                       capture_output=True, text=True).stdout
        (tmp_path / "half.bin").write_bytes(os.urandom(500_000))
        with device.server.connect() as client, client.open_sftp() as sftp:
            started = time.monotonic()
            sftp.put(str(tmp_path / "half.bin"), str(device.server.workdir / "half.bin"))
            assert time.monotonic() - started > 0.6  # 4 Mbit/s: 500 kB takes ~1 s
        small.clear_rate_limit(device)
    namespaces = subprocess.run([ip, "netns", "list"], capture_output=True, text=True).stdout
    assert device.name not in namespaces
    assert subprocess.run([ip, "link", "show", device.host_veth], capture_output=True).returncode != 0
