"""The SSH transport against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import load_inventory
from edgeq.errors import RemoteCommandFailed, TransportError
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.transport.ssh import SshTransport, UnknownHostKey
from edgeq.devices.transport.base import sha256_file

NASTY = "a b; $(touch {m}) `touch {m}` 'q' \"d\" \n line & | > {m} *"


def test_run_quotes_every_argument(ssh_device, tmp_path):
    device, _ = ssh_device
    marker = tmp_path / "injected"
    nasty = NASTY.format(m=marker)
    with SshTransport(device) as ssh:
        result = ssh.run(["printf", "%s", nasty])
        assert result.stdout == nasty and result.ok
        assert ssh.run(["cat"], stdin=b"from stdin").stdout == "from stdin"
        with pytest.raises(RemoteCommandFailed) as failed:
            ssh.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 3"])
    assert not marker.exists()
    message = str(failed.value)
    assert "exited 3" in message and "last words" in message and "sh -c" in message


def test_put_get_are_atomic_and_verified(ssh_device, tmp_path):
    device, _ = ssh_device
    payload = tmp_path / "blob.bin"
    payload.write_bytes(os.urandom(3_000_000))
    with SshTransport(device) as ssh:
        workdir = ssh.expand(device.workdir)
        ssh.makedirs(workdir)
        sent = ssh.put(payload, f"{workdir}/blob.bin")
        assert sent.sha256 == sha256_file(payload) and sent.bytes_moved == 3_000_000
        assert not any(name.endswith(".part") for name in ssh.sftp.listdir(workdir))
        back = ssh.get(f"{workdir}/blob.bin", tmp_path / "back" / "blob.bin")
        assert back.sha256 == sent.sha256
        assert ssh.expand("~/x").startswith("/") and ssh.exists(f"{workdir}/blob.bin")


def test_run_over_ssh_matches_local_bit_for_bit(ssh_device, local, example_tflite, small_inputs, tmp_path):
    device, _ = ssh_device
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs)
    (remote,) = run_on_device(device, [spec], [tmp_path / "ssh"])
    (here,) = run_on_device(local, [spec], [tmp_path / "local"])
    assert np.array_equal(remote.outputs[0], here.outputs[0])
    assert remote.run["device"] == "pi-loop" and remote.meta["device"]["runtime"]["name"] == "ai_edge_litert"
    with SshTransport(device) as ssh:
        deployer = Deployer(ssh, device.workdir)
        deployer.push_agent()
        deployer.push(example_tflite[1])
        deployer.push(small_inputs)
    assert [t.bytes_moved for t in deployer.transfers] == [0, 0, 0]


def test_evaluate_over_ssh_reports_device_vs_host(ssh_device, example_tflite, small_inputs, tmp_path, monkeypatch):
    device, inventory = ssh_device
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "host-device"))
    result = CliRunner().invoke(main, ["evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]),
                                       "--data", str(small_inputs), "--device", "pi-loop", "--inventory",
                                       str(inventory), "-o", str(tmp_path / "out"), "--max-per-category", "10"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["device"]["name"] == "pi-loop"
    for which in ("float", "quant"):  # same CPU, same runtime: the device matches the host exactly
        assert report["device_vs_host"][which]["flip_rate"] == 0.0
        assert report["device_vs_host"][which]["max_abs_error"] == 0.0


def test_names_from_ssh_config_resolve(sshd_session, example_tflite, small_inputs, tmp_path, monkeypatch):
    config = tmp_path / "ssh_config"
    config.write_text(sshd_session.ssh_config_block("bench-pi"))
    monkeypatch.setenv("EDGEQ_SSH_CONFIG", str(config))
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi": {"host": "bench-pi", "python": os.sys.executable,
                                                                 "workdir": str(tmp_path / "w")}})
    device = load_inventory(inventory)["pi"]
    with SshTransport(device) as ssh:
        assert ssh.target.port == sshd_session.port and ssh.target.user == sshd_session.user
        assert ssh.run(["echo", "via config"]).stdout.strip() == "via config"


def test_unknown_host_key_is_refused_then_trusted(sshd_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    entry = dict(sshd_server.inventory_entry(), known_hosts=str(empty), workdir=str(tmp_path / "w"))
    inventory = write_inventory(tmp_path / "edgeq.toml", {"new-pi": entry})
    device = load_inventory(inventory)["new-pi"]
    with pytest.raises(UnknownHostKey) as refused:
        SshTransport(device).run(["true"])
    assert sshd_server.host_key_fingerprint in str(refused.value) and "devices trust new-pi" in str(refused.value)
    runner = CliRunner()
    wrong = runner.invoke(main, ["devices", "trust", "new-pi", "--inventory", str(inventory),
                                 "--fingerprint", "SHA256:not-the-key"])
    assert wrong.exit_code == 3 and empty.read_text() == ""
    pinned = runner.invoke(main, ["devices", "trust", "new-pi", "--inventory", str(inventory),
                                  "--fingerprint", sshd_server.host_key_fingerprint])
    assert pinned.exit_code == 0, pinned.output
    assert sshd_server.host_key_fingerprint in pinned.output
    with SshTransport(device) as ssh:
        assert ssh.run(["echo", "ok"]).stdout.strip() == "ok"


def test_changed_host_key_and_bad_login_are_refused(sshd_server, sshd_session, tmp_path):
    impostor = tmp_path / "known_hosts"
    impostor.write_text(sshd_session.known_hosts_line(sshd_server.host, sshd_server.port) + "\n")
    entry = dict(sshd_server.inventory_entry(), known_hosts=str(impostor))
    device = load_inventory(write_inventory(tmp_path / "a.toml", {"pi": entry}))["pi"]
    with pytest.raises(TransportError, match="HOST KEY CHANGED"):
        SshTransport(device).run(["true"])
    entry = dict(sshd_server.inventory_entry(), identity_file=str(sshd_session.client_key))
    device = load_inventory(write_inventory(tmp_path / "b.toml", {"pi": entry}))["pi"]
    with pytest.raises(TransportError, match="authentication failed"):
        SshTransport(device).run(["true"])


def test_unreachable_device_is_exit_3_after_retries(sshd_server, example_tflite, small_inputs, tmp_path):
    entry = dict(sshd_server.inventory_entry(), retries=1, connect_timeout=2.0)
    inventory = write_inventory(tmp_path / "edgeq.toml", {"gone": entry})
    sshd_server.stop()
    result = CliRunner().invoke(main, ["run", "--device", "gone", "--inventory", str(inventory), "--model",
                                       str(example_tflite[0]), "--inputs", str(small_inputs), "-o", str(tmp_path / "r")])
    assert result.exit_code == 3
    assert "gone: cannot reach" in result.output and "tried 2 times" in result.output


def test_wrong_python_on_an_ssh_device(ssh_device, example_tflite, small_inputs, tmp_path):
    device, _ = ssh_device
    broken = dataclasses.replace(device, python="/usr/bin/python9.9")
    with pytest.raises(TransportError, match=r"cannot run python '/usr/bin/python9.9'"):
        run_on_device(broken, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "r"])


def test_proxyjump_from_ssh_config(sshd_session, sshd_server, tmp_path, monkeypatch):
    config = tmp_path / "ssh_config"
    config.write_text(sshd_session.ssh_config_block("jumpbox")
                      + sshd_server.ssh_config_block("behind") + "    ProxyJump jumpbox\n")
    monkeypatch.setenv("EDGEQ_SSH_CONFIG", str(config))
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi-behind": {"host": "behind"}})
    device = load_inventory(inventory)["pi-behind"]
    logins_on_jump = sshd_session.log_tail(10000).count("Accepted publickey")
    with SshTransport(device) as ssh:
        assert ssh.target.proxy_jump == "jumpbox"
        assert ssh.run(["echo", "through the jump host"]).stdout.strip() == "through the jump host"
    assert sshd_session.log_tail(10000).count("Accepted publickey") == logins_on_jump + 1
    assert "Accepted publickey" in sshd_server.log_tail(50)


def test_python_without_numpy_is_explained(ssh_device, example_tflite, small_inputs, tmp_path):
    import subprocess

    bare = tmp_path / "bare-venv"
    subprocess.run([os.sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    device, _ = ssh_device
    broken = dataclasses.replace(device, python=str(bare / "bin" / "python"))
    with pytest.raises(TransportError, match=r"numpy is not installed for .*bare-venv.*devices setup pi-loop"):
        run_on_device(broken, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "r"])


def test_ssh_agent_authentication_and_command_timeout(sshd_session, tmp_path, monkeypatch):
    import subprocess

    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            import time

            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", str(sshd_session.client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys: only the agent can log in
        entry = dict(sshd_session.inventory_entry())
        del entry["identity_file"]
        device = load_inventory(write_inventory(tmp_path / "edgeq.toml", {"pi": entry}))["pi"]
        with SshTransport(device) as ssh:
            assert ssh.run(["echo", "agent auth"]).stdout.strip() == "agent auth"
            with pytest.raises(TransportError, match="did not finish in 1.0 s"):
                ssh.run(["sleep", "30"], timeout=1.0)
    finally:
        agent.terminate()
        agent.wait()
