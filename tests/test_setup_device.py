"""edgeq devices setup against a real sshd: a venv from the network, and from pushed wheels."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.errors import ConfigError
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.setup_device import platform_tags


def test_platform_tags_follow_the_device_glibc():
    tags = platform_tags("aarch64", ["glibc", "2.36"])
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_27_aarch64" in tags and "manylinux2014_aarch64" in tags
    with pytest.raises(ConfigError, match="musl"):
        platform_tags("x86_64", ["musl", "1.2"])


@pytest.mark.parametrize("offline", [False, True], ids=["network", "air-gapped"])
def test_setup_then_runs_use_the_venv(sshd_session, example_tflite, small_inputs, tmp_path, offline):
    entry = dict(sshd_session.inventory_entry(), workdir=str(tmp_path / "pi"))
    del entry["python"]  # like a fresh board: only the system python3
    inventory = write_inventory(tmp_path / "edgeq.toml", {"fresh-pi": entry})
    args = ["devices", "setup", "fresh-pi", "--inventory", str(inventory), "--base-python", sys.executable,
            "--json", str(tmp_path / "setup.json")] + (["--offline", "--wheels", str(tmp_path / "wheels")] if offline else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ready = json.loads((tmp_path / "setup.json").read_text())["ready"]["fresh-pi"]
    venv_python = str(tmp_path / "pi" / "venv" / "bin" / "python")
    assert ready["python_path"] == venv_python and ready["runtime"]["name"] == "ai_edge_litert"
    if offline:
        assert list((tmp_path / "wheels").glob("ai_edge_litert-*.whl"))
        assert list((tmp_path / "pi" / "wheels").glob("numpy-*.whl"))
    from edgeq.devices.inventory import load_inventory

    device = load_inventory(inventory)["fresh-pi"]
    (run,) = run_on_device(device, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "run"])
    assert run.meta["device"]["python_executable"] == venv_python
