"""Issue 9 (items 6, 7, 13, 14, 17): bad labels, paths, a missing extra, malformed run
directories and absurd options are refused with exit 2 and one line naming the thing and
the cause; nothing is written beside a refused path. Real CLI, real models, real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import PROGRESS, one_line_error
from edgeq.cli.main import main
from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL

EDGEQ = [sys.executable, "-m", "edgeq"]


@pytest.fixture
def pair(example_tflite):
    return [str(p) for p in example_tflite]


def example_set(path: Path, y) -> Path:
    """40 samples of the built-in example (10 classes) with the given labels."""
    with np.load(EXAMPLE_DATA) as data:
        np.savez(path, x=data["x"][:40], y=y)
    return path


def evaluate_args(pair, data, tmp_path):
    return ["evaluate", pair[0], "--quant-model", pair[1], "--data", str(data), "-o", str(tmp_path / "out"),
            "--no-history"]


# --- item 6: labels must fit the model's output; gate limits must be finite ---------------

BAD_LABELS = {
    "ten": (np.r_[np.arange(10), 10, np.zeros(29, int)], ["outside 0..9", "from 0 to 10", "10 classes"]),
    "negative": (np.r_[np.arange(10), -1, np.zeros(29, int)], ["outside 0..9", "from -1 to 9"]),
    "float": (np.full(40, 1.5), ["integer", "float64"]),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_labels_that_do_not_fit_the_model_are_refused(pair, tmp_path, case):
    y, needles = BAD_LABELS[case]
    data = example_set(tmp_path / f"{case}.npz", y)
    one_line_error(evaluate_args(pair, data, tmp_path), [f"{case}.npz", "[y]"] + needles)
    assert not (tmp_path / "out" / "runs").exists()  # refused before any device time


def test_inputs_check_and_risky_refuse_labels_the_model_cannot_produce(pair, tmp_path):
    data = example_set(tmp_path / "ten.npz", np.r_[np.arange(10), 10, np.zeros(29, int)])
    one_line_error(["inputs", "check", str(data), "--model", pair[0]], ["ten.npz [y]", "outside 0..9"])
    one_line_error(["inputs", "risky", "--data", str(data), "--model", pair[0], "-o", str(tmp_path / "r.npz")],
                   ["ten.npz [y]", "outside 0..9"])
    assert not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf"])
def test_non_finite_gate_limits_are_refused(pair, small_inputs, tmp_path, limit):
    one_line_error(evaluate_args(pair, small_inputs, tmp_path) + ["--fail-on", f"drop={limit}"],
                   ["--fail-on drop=", "finite", limit])


# --- item 7: output paths ------------------------------------------------------------------

def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name or p.name == "inputs")


def test_inputs_risky_to_a_folder_is_refused_and_writes_nothing(tmp_path):
    target = tmp_path / "suite"
    target.mkdir()
    one_line_error(["inputs", "risky", "--data", str(EXAMPLE_DATA), "-o", str(target)],
                   ["--output", "suite", "is a folder"])
    assert list(target.iterdir()) == [] and leftovers(tmp_path) == []
    one_line_error(["inputs", "risky", "--data", str(EXAMPLE_DATA), "-o", str(tmp_path / "new") + "/"],
                   ["ends with '/'"])


def test_inputs_risky_to_a_file_leaves_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["inputs", "risky", "--data", str(EXAMPLE_DATA), "-o", "file.npz",
                                       "--max-per-category", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.npz"]


@pytest.mark.parametrize("flag", ["--json", "--html"])
def test_compare_json_or_html_to_a_folder_is_refused_up_front(tmp_path, flag):
    folder = tmp_path / "reports"
    folder.mkdir()
    # the runs need not exist: the path is refused before any work
    one_line_error(["compare", str(tmp_path / "a"), str(tmp_path / "b"), flag, str(folder)],
                   [flag, "reports", "is a folder"])
    assert leftovers(tmp_path) == [] and list(folder.iterdir()) == []


def test_json_under_a_file_and_report_to_a_folder_are_refused(pair, small_inputs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(evaluate_args(pair, small_inputs, tmp_path) + ["--json", str(blocker / "r.json")],
                   ["a-file/r.json", "is a file, not a folder"])
    assert not (tmp_path / "out").exists()
    one_line_error(["report", str(tmp_path), "-o", str(tmp_path)], ["--output", "is a folder"])
    one_line_error(["history", "--json", str(tmp_path)], ["--json", "is a folder"])


# --- item 13: no [host] extra ---------------------------------------------------------------

def without(module: str, tmp_path: Path) -> dict:
    """An environment in which ``import MODULE`` fails as it does when it is not installed."""
    fake = tmp_path / "without" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    return dict(os.environ, PYTHONPATH=str(fake.parent))


def cli_error_line(args, env, cwd) -> str:
    run = subprocess.run(EDGEQ + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), run.stderr
    return lines[0]


def test_without_tensorflow_keras_models_say_how_to_install_it(tmp_path):
    env = without("tensorflow", tmp_path)
    for args in (["convert", str(EXAMPLE_MODEL), "-o", "models"],
                 ["evaluate", str(EXAMPLE_MODEL), "--data", str(EXAMPLE_DATA), "-o", "out", "--no-history", "-q"]):
        line = cli_error_line(args, env, tmp_path)
        assert "tensorflow" in line and "pip install 'edgeq[host]'" in line, line
    assert not (tmp_path / "models").exists()


def test_without_the_quantizer_tflite_sources_say_how_to_install_it(pair, tmp_path):
    line = cli_error_line(["convert", pair[0], "-o", "models"], without("ai_edge_quantizer", tmp_path), tmp_path)
    assert "ai_edge_quantizer" in line and "pip install 'edgeq[host]'" in line, line


# --- item 14: malformed run directories, absurd options --------------------------------------

@pytest.fixture
def run_dir(example_tflite, small_inputs, local, tmp_path) -> Path:
    from edgeq.devices.run import RunSpec, run_on_device

    run_on_device(local, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "ref"])
    return tmp_path / "ref"


def _resha(run: Path) -> None:
    """Keep the manifest's checksums true, so only the damage under test is seen."""
    manifest = json.loads((run / "manifest.json").read_text())
    for rel, entry in manifest["files"].items():
        if (run / rel).exists():
            entry["sha256"] = hashlib.sha256((run / rel).read_bytes()).hexdigest()
    (run / "manifest.json").write_text(json.dumps(manifest))


def _unlist(run: Path, rel: str) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"].pop(rel)
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / rel).unlink()


DAMAGE = {
    "manifest-list": (lambda r: (r / "manifest.json").write_text("[]"), ["manifest.json", "JSON object"]),
    "meta-bad-json": (lambda r: ((r / "meta.json").write_text("{bad"), _resha(r)), ["meta.json", "not valid JSON"]),
    "meta-list": (lambda r: ((r / "meta.json").write_text("[1]"), _resha(r)), ["meta.json", "JSON object"]),
    "meta-no-outputs": (lambda r: ((r / "meta.json").write_text("{}"), _resha(r)), ["meta.json", "'outputs'"]),
    "meta-missing": (lambda r: _unlist(r, "meta.json"), ["meta.json", "missing"]),
    "samples-missing": (lambda r: (r / "samples.npz").unlink(), ["samples.npz"]),
    "samples-text": (lambda r: (r / "samples.npz").write_text("hello"), ["samples.npz"]),
    "run-bad-json": (lambda r: (r / "run.json").write_text("{bad"), ["run.json", "not valid JSON"]),
    "run-list": (lambda r: (r / "run.json").write_text("[]"), ["run.json", "JSON object"]),
    "latency-1d": (lambda r: (np.save(r / "latency_ns.npy", np.arange(40)), _resha(r)), ["latency_ns.npy"]),
    "batch-zero": (lambda r: (np.save(r / "batch_sizes.npy", np.zeros(40, np.int64)), _resha(r)),
                   ["batch_sizes.npy", "positive"]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_compare_on_a_malformed_run_directory_is_one_line(run_dir, tmp_path, case):
    damage, needles = DAMAGE[case]
    bad = tmp_path / case
    shutil.copytree(run_dir, bad)
    damage(bad)
    one_line_error(["compare", str(run_dir), str(bad)], [case] + needles)


@pytest.mark.parametrize("option, needles", [
    (["--threads", "1000000"], ["--threads", "1000000"]),
    (["--threads", "0"], ["--threads"]),
    (["--min-duration", "inf"], ["--min-duration", "finite"]),
    (["--min-duration", "nan"], ["--min-duration", "finite"]),
])
def test_absurd_job_options_are_refused_up_front(pair, small_inputs, tmp_path, option, needles):
    one_line_error(["run", "--model", pair[0], "--inputs", str(small_inputs), "-o", str(tmp_path / "r"),
                    "--no-history"] + option, needles)
    assert not (tmp_path / "r").exists()


# --- item 17: messages that say what really happened ------------------------------------------

def test_a_truncated_keras_file_is_not_file_not_found(tmp_path):
    cut = tmp_path / "cut.keras"
    cut.write_bytes(EXAMPLE_MODEL.read_bytes()[:20000])
    one_line_error(["convert", str(cut), "-o", str(tmp_path / "m")], ["cut.keras", "truncated"],
                   absent=["File not found", "file not found"])


@pytest.mark.parametrize("content, needles", [
    (b"hello world\n", ["it is text", "hello world"]),
    (b"", ["empty"]),
    (b"PK\x03\x04" + bytes(100), ["cut short or damaged"]),
])
def test_a_file_that_is_not_npz_is_not_called_pickled(tmp_path, content, needles):
    fake = tmp_path / "data.npz"
    fake.write_bytes(content)
    one_line_error(["inputs", "check", str(fake)], ["data.npz", "not a readable NumPy .npz"] + needles,
                   absent=["pickle"])


def test_policy_float_says_nothing_was_quantized(pair, tmp_path):
    result = CliRunner().invoke(main, ["convert", pair[0], "-o", str(tmp_path / "m"), "--policy", "float"])
    assert result.exit_code == 0, result.output
    assert "nothing quantized" in result.output and "weight tensors quantized" not in result.output
