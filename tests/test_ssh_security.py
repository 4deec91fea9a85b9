"""Hostile names and hostile devices: nothing injects, nothing unpickles, nothing escapes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.devices.pull import pull_run
from edgeq.results import IncompleteRun, RunResult
from edgeq.devices.inventory import load_inventory
from edgeq.devices.transport.ssh import SshTransport


def nasty(marker) -> str:
    return f"x; touch {marker}; $(touch {marker}) `touch {marker}` 'q' \"d\"\nnext line"


def test_hostile_device_workdir_and_model_names(sshd_session, example_tflite, small_inputs, tmp_path):
    marker = tmp_path / "INJECTED"
    name = "pi " + nasty(marker)
    workdir = tmp_path / ("work dir " + nasty("EDGEQ_INJECTED").replace("\n", " "))  # a name has no '/'
    relative_markers = [Path.home() / "EDGEQ_INJECTED", Path.cwd() / "EDGEQ_INJECTED", tmp_path / "EDGEQ_INJECTED"]
    model = tmp_path / ("m o'd;$(touch " + marker.name + ")`id`.tflite")
    shutil.copyfile(example_tflite[1], model)
    inventory = write_inventory(tmp_path / "edgeq.toml",
                                {name: dict(sshd_session.inventory_entry(), workdir=str(workdir))})
    assert name in load_inventory(inventory)
    result = CliRunner().invoke(main, ["run", "--device", name, "--inventory", str(inventory), "--model",
                                       str(model), "--inputs", str(small_inputs), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert RunResult.load(tmp_path / "run").run["device"] == name
    assert (workdir / "cas").is_dir()
    assert not marker.exists() and not list(tmp_path.glob("**/INJECTED"))
    assert not any(m.exists() for m in relative_markers)


def make_run_dir(path, output: bytes, extra_files: dict | None = None):
    (path / "outputs").mkdir(parents=True)
    files = {"outputs/output_0.npy": output, "latency_ns.npy": _npy(np.ones((1, 2), np.int64)),
             "batch_sizes.npy": _npy(np.ones(2, np.int32)),
             "meta.json": json.dumps({"outputs": [{"name": "out"}], "samples": 2, "inputs_sha256": "x"}).encode()}
    files.update(extra_files or {})
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    manifest = {"complete": True, "files": {rel: {"sha256": hashlib.sha256(d).hexdigest()} for rel, d in files.items()}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    np.savez(path / "samples.npz", y=np.zeros(2, dtype=np.int64))
    (path / "run.json").write_text("{}")


def _npy(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_pickled_outputs_from_a_device_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = np.empty(2, dtype=object)
    evil[0] = Payload()
    import io

    buffer = io.BytesIO()
    np.save(buffer, evil, allow_pickle=True)
    make_run_dir(tmp_path / "run", buffer.getvalue())
    with pytest.raises(IncompleteRun, match="plain .npy"):
        RunResult.load(tmp_path / "run")
    assert not marker.exists()


def test_manifest_escaping_the_run_dir_is_refused_before_any_download(sshd_session, tmp_path):
    remote = tmp_path / "device-run"
    remote.mkdir()
    (tmp_path / "secret").write_text("host file")
    (remote / "manifest.json").write_text(json.dumps(
        {"complete": True, "files": {"../secret": {"sha256": "0" * 64}}}))
    device = load_inventory(write_inventory(tmp_path / "e.toml", {"pi": sshd_session.inventory_entry()}))["pi"]
    local = tmp_path / "pulled" / "run"
    with SshTransport(device) as ssh, pytest.raises(IncompleteRun, match="unsafe path '../secret'"):
        pull_run(ssh, str(remote), local)
    assert not (tmp_path / "pulled" / "secret").exists()
    assert not (local / "manifest.json").exists()
