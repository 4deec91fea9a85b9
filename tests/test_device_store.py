"""The store on a device stays bounded: pulled runs go, old files go first, nothing is kept twice."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from device_agents.edgeq_agent import record_made
from edgeq.cli.main import main
from edgeq.devices.inventory import device_from_entry
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.errors import ConfigError


def _spec(model, inputs, label="run"):
    return RunSpec(model=model, inputs=inputs, label=label, warmup=0)


def test_pulled_runs_leave_the_device_and_the_local_device_copies_nothing(
        local, example_tflite, small_inputs, tmp_path):
    runs = run_on_device(local, [_spec(example_tflite[0], small_inputs, "float"),
                                 _spec(example_tflite[1], small_inputs, "quant")],
                         [tmp_path / "f", tmp_path / "q"])
    workdir = Path(local.workdir)
    assert list((workdir / "runs").iterdir()) == []  # both pulled, verified, dropped
    assert all(Path(r.path / "manifest.json").is_file() for r in runs)  # the host keeps them
    assert not (workdir / "cas").exists()  # the local device reads the host's files where they are
    assert runs[1].meta["job"]["inputs"] == str(small_inputs.resolve())


def test_the_least_recently_used_files_go_when_the_store_is_over_budget(ssh_device, example_tflite, small_inputs,
                                                                         tmp_path):
    device, _ = ssh_device
    cas = Path(device.workdir) / "cas"
    cas.mkdir(parents=True)
    old, recent = cas / ("a" * 64 + ".npz"), cas / ("b" * 64 + ".npz")
    old.write_bytes(b"x" * 3_000_000)
    recent.write_bytes(b"y" * 3_000_000)
    for pushed in (old, recent):  # as if pushed by an earlier run: edgeq's records name them
        record_made(str(pushed))
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    tiny = dataclasses.replace(device, store_mb=1)
    run_on_device(tiny, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
    assert not old.exists()  # over budget and unused for two hours
    assert recent.exists()  # used in the last hour: maybe another job's, kept
    assert (cas / (run_sha(tmp_path / "r", "inputs") + ".npz")).exists()  # in use by this run: kept


def run_sha(rundir: Path, what: str) -> str:
    import json

    return json.loads((rundir / "run.json").read_text())[what]["sha256"]


def test_devices_clean_empties_the_store_but_keeps_the_agent(ssh_device, example_tflite, small_inputs, tmp_path):
    device, inventory = ssh_device
    run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
    assert list((Path(device.workdir) / "cas").iterdir())
    result = CliRunner().invoke(main, ["devices", "clean", "pi-loop", "--inventory", str(inventory)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pi-loop: freed ") and "MB kept" in result.output
    workdir = Path(device.workdir)
    assert list((workdir / "cas").iterdir()) == [] and list((workdir / "agents").iterdir())


def test_runs_over_ssh_leave_no_run_folder_on_the_board(ssh_device, example_tflite, small_inputs, tmp_path):
    device, _ = ssh_device
    (run,) = run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
    assert not Path(run.run["remote_dir"]).exists()
    assert run.n == 40


@pytest.mark.parametrize("value", [-1, "2GB", 1.5, True])
def test_a_bad_store_budget_is_refused(value):
    with pytest.raises(ConfigError, match="store_mb must be a whole number of megabytes"):
        device_from_entry("pi", {"host": "pi", "store_mb": value})


def test_a_corrupted_stored_copy_on_the_device_is_replaced(ssh_device, example_tflite, small_inputs, tmp_path):
    from edgeq.devices.transport.base import sha256_file

    device, _ = ssh_device
    run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "a"])
    stored = Path(device.workdir) / "cas" / (sha256_file(example_tflite[1]) + ".tflite")
    stored.write_bytes(b"bit rot")
    (again,) = run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "b"])
    assert again.n == 40 and sha256_file(stored) == sha256_file(example_tflite[1])
