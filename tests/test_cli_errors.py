"""Bad input: one line naming the thing and the cause, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import one_line_error


@pytest.fixture
def pair(example_tflite):
    return [str(p) for p in example_tflite]


def evaluate_args(pair, data, tmp_path, model=None):
    return ["evaluate", model or pair[0], "--quant-model", pair[1], "--data", str(data), "-o", str(tmp_path / "out")]


def write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_truncated_model(pair, small_inputs, tmp_path):
    cut = tmp_path / "cut.tflite"
    data = open(pair[0], "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    one_line_error(evaluate_args(pair, small_inputs, tmp_path, str(cut)), ["cut.tflite", "truncated"])


def test_not_a_tflite_file(pair, small_inputs, tmp_path):
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"GIF89a" + bytes(200))
    one_line_error(evaluate_args(pair, small_inputs, tmp_path, str(fake)), ["fake.tflite", "not a TFLite model"])


def test_data_shape_does_not_fit_the_model(pair, tmp_path):
    data = write(tmp_path, "narrow.npz", x=np.zeros((5, 63), dtype=np.float32))
    one_line_error(evaluate_args(pair, data, tmp_path), ["narrow.npz", "sample shape [63]", "[64]"])


def test_data_dtype_does_not_fit_the_model(pair, tmp_path):
    data = write(tmp_path, "f64.npz", x=np.zeros((5, 64)))
    one_line_error(evaluate_args(pair, data, tmp_path), ["f64.npz", "dtype float64"])


@pytest.mark.parametrize("arrays, needles", [
    ({"x": np.array([None, 1], dtype=object)}, ["pickled/object data", "[x]"]),
    ({"x": np.full((3, 64), np.nan, dtype=np.float32)}, ["NaN/Inf", "[x]"]),
    ({"x": np.zeros((3, 64), dtype=np.float32), "y": np.zeros(4, dtype=np.int64)}, ["different numbers of samples"]),
    ({"x": np.zeros((0, 64), dtype=np.float32)}, ["zero samples"]),
    ({"x": np.zeros((3, 64), dtype=np.float32), "y": np.array([0.5, 1, 2])}, ["[y]", "integers"]),
])
def test_bad_input_sets(pair, tmp_path, arrays, needles):
    data = write(tmp_path, "bad.npz", **arrays)
    one_line_error(evaluate_args(pair, data, tmp_path), ["bad.npz"] + needles)


def test_pickle_file_as_data_is_never_unpickled(pair, tmp_path):
    marker = tmp_path / "pwned"
    data = tmp_path / "data.npz"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data.write_bytes(pickle.dumps(Payload()))
    one_line_error(evaluate_args(pair, data, tmp_path), ["data.npz", "pickled"])
    assert not marker.exists()


def test_missing_files(pair, small_inputs, tmp_path):
    one_line_error(evaluate_args(pair, tmp_path / "nope.npz", tmp_path), ["nope.npz", "file not found"])
    one_line_error(["convert", str(tmp_path / "gone.keras"), "-o", str(tmp_path)], ["gone.keras", "file not found"])
    one_line_error(["evaluate", str(tmp_path / "gone.keras"), "--data", str(small_inputs), "-o",
                    str(tmp_path / "o")], ["gone.keras", "file not found"])


def test_unwritable_output_folder(pair, small_inputs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["evaluate", pair[0], "--quant-model", pair[1], "--data", str(small_inputs), "-o", str(blocker / "out")]
    one_line_error(args, ["a-file/out", "not writable"])


def test_model_needs_data_and_unknown_device(pair, small_inputs, tmp_path):
    one_line_error(["evaluate", pair[0], "-o", str(tmp_path)], ["--data NPZ is required"])
    one_line_error(evaluate_args(pair, small_inputs, tmp_path) + ["--device", "pi-404"],
                   ["unknown device pi-404", "local"])


def test_incomplete_run_directory(tmp_path):
    (tmp_path / "half").mkdir()
    one_line_error(["compare", str(tmp_path / "half"), str(tmp_path / "half")], ["half", "incomplete run"])


def test_bad_gate_is_a_usage_error(pair, small_inputs, tmp_path):
    one_line_error(evaluate_args(pair, small_inputs, tmp_path) + ["--fail-on", "speed=1"], ["unknown gate"])


DYING_PYTHON = """#!{python}
# Stands in for the device's python: runs the real agent, dies when the 2nd run starts.
import subprocess, sys
agent = subprocess.Popen([{python!r}] + sys.argv[1:], stdin=subprocess.PIPE)
runs = 0
for line in sys.stdin:
    runs += '"op": "run"' in line
    if runs == 2:
        agent.kill()
        sys.exit(137)
    agent.stdin.write(line.encode())
    agent.stdin.flush()
"""


def device_that_dies_on_second_run(local, tmp_path):
    import dataclasses
    import os

    wrapper = tmp_path / "dying-python"
    wrapper.write_text(DYING_PYTHON.format(python=sys.executable))
    os.chmod(wrapper, 0o755)
    return dataclasses.replace(local, python=str(wrapper))


def test_results_gathered_so_far_stay_on_disk(example_tflite, small_inputs, tmp_path, local):
    """The device fails during the second run: the first run's results stay whole and loadable."""
    from edgeq.errors import AgentError
    from edgeq.results import RunResult
    from edgeq.devices.run import RunSpec, run_on_device

    good = RunSpec(model=example_tflite[0], inputs=small_inputs)
    doomed = RunSpec(model=example_tflite[1], inputs=small_inputs, resolver="BUILTIN")
    with pytest.raises(AgentError, match="exited"):
        run_on_device(device_that_dies_on_second_run(local, tmp_path), [good, doomed],
                      [tmp_path / "first", tmp_path / "second"])
    assert RunResult.load(tmp_path / "first").n == 40
    assert not (tmp_path / "second" / "manifest.json").exists()


def test_help_does_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from edgeq.cli.main import main; "
            "r = CliRunner().invoke(main, ['evaluate', '--help']); "
            "import edgeq.devices.run, edgeq.analysis.compare, edgeq.evaluate, edgeq.reports.report; "
            "print(r.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False", "False"]
