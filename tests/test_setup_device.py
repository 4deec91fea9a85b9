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
from edgeq.devices.setup_device import platform_tags, wheel_fits


def test_platform_tags_follow_the_device_glibc():
    tags = platform_tags("aarch64", ["glibc", "2.36"])
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_27_aarch64" in tags and "manylinux2014_aarch64" in tags
    with pytest.raises(ConfigError, match="musl"):
        platform_tags("x86_64", ["musl", "1.2"])


def test_only_the_boards_own_wheels_are_pushed():
    pi = {"python": "3.11.2", "machine": "aarch64", "libc": ["glibc", "2.36"]}
    assert wheel_fits("numpy-2.0.2-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", pi)
    assert wheel_fits("click-8.1.7-py3-none-any.whl", pi)
    assert wheel_fits("cryptography-43.0.0-cp39-abi3-manylinux_2_28_aarch64.whl", pi)  # stable ABI, older Python
    assert not wheel_fits("numpy-2.0.2-cp311-cp311-manylinux_2_17_x86_64.whl", pi)  # another board's
    assert not wheel_fits("numpy-2.0.2-cp39-cp39-manylinux_2_17_aarch64.whl", pi)  # another Python
    assert not wheel_fits("numpy-2.0.2-cp311-cp311-manylinux_2_38_aarch64.whl", pi)  # a newer glibc
    assert not wheel_fits("cryptography-43.0.0-cp312-abi3-manylinux_2_28_aarch64.whl", pi)
    assert not wheel_fits("notes.txt", pi)


@pytest.mark.parametrize("offline", [False, True], ids=["network", "air-gapped"])
def test_setup_then_runs_use_the_venv(sshd_session, example_tflite, small_inputs, tmp_path, offline):
    entry = dict(sshd_session.inventory_entry(), workdir=str(tmp_path / "pi"))
    del entry["python"]  # like a fresh board: only the system python3
    inventory = write_inventory(tmp_path / "edgeq.toml", {"fresh-pi": entry})
    args = ["devices", "setup", "fresh-pi", "--inventory", str(inventory), "--base-python", sys.executable,
            "--json", str(tmp_path / "setup.json")] + (["--offline", "--wheels", str(tmp_path / "wheels")] if offline else [])
    foreign = "numpy-2.0.2-cp311-cp311-manylinux_2_17_s390x.whl"  # a folder shared with other kinds of board
    if offline:
        (tmp_path / "wheels").mkdir()
        (tmp_path / "wheels" / foreign).write_bytes(b"not for this board")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "pi" / "wheels" / foreign).exists()
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
