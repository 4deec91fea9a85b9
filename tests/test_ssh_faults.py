"""Faults against real servers: dropped links, killed agents, full disks. Nothing is lost."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import write_inventory
from lab import AgentKiller, SshServer

from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import load_inventory
from edgeq.errors import AgentError, TransportError
from edgeq.results import IncompleteRun, RunResult
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.transport.base import sha256_file
from edgeq.devices.transport.ssh import SshTransport


def device_for(entry: dict, tmp_path, name="pi", **extra):
    return load_inventory(write_inventory(tmp_path / f"{name}.toml", {name: {**entry, **extra}}))[name]


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "model-8mb.bin"
    path.write_bytes(os.urandom(8_000_000))
    return path


def test_dropped_upload_resumes_and_arrives_whole(sshd_session, tcp_proxy_factory, big_file, tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    device = device_for(proxy.inventory_entry(), tmp_path, workdir=str(tmp_path / "w"), retries=3)
    with SshTransport(device, backoff_s=0.1) as ssh:
        deployer = Deployer(ssh, device.workdir)
        deployer.push_agent()
        proxy.cut_after(3_000_000)
        remote, digest = deployer.push(big_file)
        transfer = deployer.transfers[-1]
        assert proxy.connections >= 2  # the link really was cut and re-opened
        assert 0 < transfer.bytes_moved < big_file.stat().st_size  # resumed, not restarted
        assert ssh.remote_sha256(remote) == digest == sha256_file(big_file)


def test_a_cut_upload_never_looks_whole(sshd_session, tcp_proxy_factory, big_file, tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    device = device_for(proxy.inventory_entry(), tmp_path, workdir=str(tmp_path / "w"), retries=0)
    with SshTransport(device, backoff_s=0.1) as ssh:
        deployer = Deployer(ssh, device.workdir)
        deployer.push_agent()
        proxy.cut_after(2_000_000, refuse_after=True)
        with pytest.raises(TransportError, match="model-8mb.bin"):
            deployer.push(big_file)
    proxy.resume()
    stored = tmp_path / "w" / "cas" / (sha256_file(big_file) + ".bin")
    assert not stored.exists()
    assert len(list(stored.parent.glob(f".{stored.name}.*.part"))) == 1


def test_agent_killed_mid_run_over_ssh(sshd_session, example_tflite, small_inputs, tmp_path):
    device = device_for(sshd_session.inventory_entry(), tmp_path, workdir=str(tmp_path / "w"))
    killer = AgentKiller(str(tmp_path / "w" / "agents"))
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, repeats=100000)
    with pytest.raises(AgentError, match=r"partial results \(40 of 40 samples\)"):
        run_on_device(device, [spec], [tmp_path / "run"], killer)
    assert killer.killed
    assert np.load(tmp_path / "run" / "outputs" / "output_0.npy").shape == (40, 10)
    with pytest.raises(IncompleteRun, match="incomplete run"):
        RunResult.load(tmp_path / "run")


@pytest.fixture
def small_disk_server(tmp_path):
    with SshServer(tmp_path / "sshd", small_disk_mb=2, small_disk_path=tmp_path / "small") as server:
        yield server


def test_remote_disk_full_is_named_before_and_during_a_run(small_disk_server, example_tflite, small_inputs,
                                                           big_file, tmp_path):
    device = device_for(small_disk_server.inventory_entry(), tmp_path, workdir=str(tmp_path / "small" / "edgeq"))
    with SshTransport(device) as ssh:
        deployer = Deployer(ssh, device.workdir)
        with pytest.raises(TransportError, match=r"not enough free space .* for model-8mb.bin"):
            deployer.push(big_file)
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, repeats=20000)  # 6.4 MB of latency records
    with pytest.raises(AgentError, match="no space left on the device"):
        run_on_device(device, [spec], [tmp_path / "run"])
    (ok,) = run_on_device(device, [RunSpec(model=example_tflite[1], inputs=small_inputs)], [tmp_path / "ok"])
    assert ok.n == 40  # the failed run left the device usable
