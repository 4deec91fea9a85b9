"""`edgeq evaluate` with adaptive sampling (the default), end to end on the real agent: the suite
in rounds on the `local` device and over a real sshd, the same verdict as every row at a
fraction of the inferences, outputs that are the suite rows they say, cells with no flip stopped
early, `--until verdict` stopping at a firm catastrophe, and `--budget` stopping on time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.inputs.inputset import load_inputset


def evaluate(*args) -> dict:
    out = args[args.index("-o") + 1]
    result = CliRunner().invoke(main, ["evaluate", *map(str, args), "--no-history", "-q"])
    assert result.exit_code in (0, 1), result.output
    with open(f"{out}/report.json") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def fragile(fragile_keras, example_data, tmp_path_factory):
    """The fragile twin evaluated both ways: (fixed report, adaptive report, adaptive outdir)."""
    root = tmp_path_factory.mktemp("adaptive")
    common = [fragile_keras, "--data", example_data, "--max-per-category", "500"]
    fixed = evaluate(*common, "-o", root / "fixed", "--sampling", "fixed")
    adaptive = evaluate(*common, "-o", root / "adaptive")
    return fixed, adaptive, root / "adaptive"


def test_the_same_verdict_from_a_fraction_of_the_inferences(fragile):
    fixed, adaptive, _ = fragile
    assert fixed["verdict"] == adaptive["verdict"] == "catastrophic"
    s = adaptive["sampling"]
    assert s["sampling"] == "adaptive" and s["interval_method"] == adaptive["interval_method"] != "wilson"
    assert s["rows_run"] == adaptive["overall"]["n"] < 0.75 * s["suite_rows"]
    assert fixed["sampling"]["sampling"] == "fixed" and fixed["interval_method"] == "wilson"
    assert adaptive["verdict_confidence"]["level"] == "firm"


def test_merged_outputs_are_the_suite_rows_they_say(fragile):
    """An independent run of the float model on the rows the report names, taken from the whole suite a
    fixed-n evaluation wrote, gives its outputs: the lazily built rows are the suite's rows."""
    from ai_edge_litert.interpreter import Interpreter

    _, adaptive, out = fragile
    rows = np.load(out / "runs" / "float" / "rows.npy")
    outputs = np.load(out / "runs" / "float" / "outputs" / "output_0.npy")
    whole = load_inputset(out.parent / "fixed" / "inputs" / "risky.npz")
    assert len(rows) == len(outputs) == adaptive["overall"]["n"] and np.all(np.diff(rows) > 0)
    interpreter = Interpreter(model_path=str(next((out / "models").glob("*.float.tflite"))))
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    for k in np.random.default_rng(0).choice(len(rows), 25, replace=False):
        interpreter.set_tensor(inp, np.asarray(whole.arrays["x"][rows[k]:rows[k] + 1], np.float32))
        interpreter.invoke()
        assert np.allclose(interpreter.get_tensor(outp)[0], outputs[k], atol=1e-5)
    category = np.asarray(whole.category)[rows]
    assert adaptive["categories"]["clean"]["n"] == int(np.sum(category == "clean"))


def test_the_suite_is_built_lazily_and_holds_the_rows_run(fragile):
    """Adaptive sampling makes only the rows its rounds run: OUTDIR/inputs/risky.npz holds those rows, each
    tagged with its suite row, byte for byte the rows of the whole suite; no round file is left behind."""
    fixed, adaptive, out = fragile
    kept = load_inputset(out / "inputs" / "risky.npz")
    whole = load_inputset(out.parent / "fixed" / "inputs" / "risky.npz")
    rows = np.load(out / "runs" / "float" / "rows.npy")
    assert np.array_equal(kept.extra["suite_row"], rows) and kept.n == rows.size < whole.n
    assert np.array_equal(kept.arrays["x"], np.asarray(whole.arrays["x"])[rows])
    assert np.array_equal(kept.category, np.asarray(whole.category)[rows])
    assert np.array_equal(kept.positions(rows[[7, 3]]), [7, 3])
    assert {"boundary", "clean"} <= set(kept.category.tolist())  # made lazily too: interpolations bisected on demand
    built = adaptive["sampling"]["suite_built"]
    assert built["rows"] == rows.size and built["of"] == whole.n == adaptive["inputs"]["suite_rows"]
    assert adaptive["inputs"]["suite_sha256"] != adaptive["inputs"]["sha256"]
    assert not list((out / "rounds" / "suite").glob("*.npz"))
    assert any("built lazily" in note for note in adaptive["notes"])


def test_a_cell_without_flips_stops_early_and_the_report_says_which(fragile):
    _, adaptive, _ = fragile
    s = adaptive["sampling"]
    assert "clean" in s["decided_early"]
    assert s["groups"]["clean"]["rows"] < s["groups"]["clean"]["of"]
    assert adaptive["categories"]["clean"]["accuracy_drop"] == 0.0
    assert s["stop_reason"] == "every cell decided or at its cap" and s["undecided"] == []


def test_until_verdict_stops_once_a_cell_is_firmly_catastrophic(fragile_keras, example_data, tmp_path):
    report = evaluate(fragile_keras, "--data", example_data, "--max-per-category", "300", "-o", tmp_path / "v",
                      "--until", "verdict")
    s = report["sampling"]
    assert report["verdict"] == "catastrophic" and report["verdict_confidence"]["level"] == "firm"
    assert "firmly catastrophic" in s["stop_reason"] and len(s["rounds"]) <= 2
    assert s["rows_run"] < 0.3 * s["suite_rows"]


@pytest.fixture(params=["local", "ssh"])
def device_args(request, tmp_path):
    if request.param == "local":
        return ["--device", "local"]
    _, inventory = request.getfixturevalue("ssh_device")
    return ["--device", "pi-loop", "--inventory", inventory]


def test_a_budget_stops_on_time_and_names_what_it_left(device_args, example_tflite, tmp_path):
    """A budget far below what the suite needs: the loop never starts a round once it is spent
    (so it overshoots by at most its last round), and the undecided cells are named."""
    from edgeq.evaluate import EXAMPLE_DATA

    budget_s = 0.002
    report = evaluate(example_tflite[0], "--quant-model", example_tflite[1], "--data", EXAMPLE_DATA,
                      "-o", tmp_path / "b", "--budget", f"{budget_s}s", *device_args)
    s = report["sampling"]
    assert s["budget_s"] == budget_s and s["stop_reason"] == "budget spent"
    assert s["device_s"] - s["round_costs"][-1]["device_s"] < budget_s
    assert s["rows_run"] < s["suite_rows"] and s["undecided"]
    assert report["verdict"] in ("robust", "degraded", "catastrophic")


def test_a_budget_needs_adaptive_sampling(example_tflite, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]),
                                       "--sampling", "fixed", "--budget", "1m", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--budget needs --sampling adaptive" in result.output


def test_over_ssh_each_rounds_rows_are_pushed_alone_and_dropped_after_it(ssh_device, example_tflite, tmp_path):
    """Over a real sshd: every round sends its own small input set (the whole suite never leaves the host, nor is
    it written), and the device's store keeps none of them once the evaluation is done."""
    from edgeq.evaluate import EXAMPLE_DATA

    device, inventory = ssh_device
    report = evaluate(example_tflite[0], "--quant-model", example_tflite[1], "--data", EXAMPLE_DATA,
                      "-o", tmp_path / "s", "--device", "pi-loop", "--inventory", inventory)
    s = report["sampling"]
    assert len(s["rounds"]) >= 2 and s["suite_built"]["rows"] == s["rows_run"] < s["suite_rows"]
    kept = load_inputset(tmp_path / "s" / "inputs" / "risky.npz")
    assert kept.n == s["rows_run"] and np.array_equal(kept.extra["suite_row"],
                                                      np.load(tmp_path / "s" / "runs" / "quant" / "rows.npy"))
    assert list(Path(device.workdir).rglob("*.tflite"))  # the store is where the models went ...
    stored = [p for p in Path(device.workdir).rglob("*.npz") if p.is_file()]
    assert stored == [], stored  # ... and every round's input set was dropped after its round


def test_a_run_over_the_kept_rows_compares_with_the_evaluations_run(fragile, tmp_path):
    """`edgeq run` over OUTDIR/inputs/risky.npz (the rows run, each with its suite row and the suite's identity)
    gives a run named by those suite rows: `edgeq compare` pairs it with the evaluation's own quantized run
    sample by sample, and the same model on the same device gives the same outputs."""
    _, adaptive, out = fragile
    quant = next((out / "models").glob("*.dynamic-range.tflite"))
    result = CliRunner().invoke(main, ["run", "--device", "local", "--model", str(quant), "--inputs",
                                       str(out / "inputs" / "risky.npz"), "-o", str(tmp_path / "again"), "-q"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "again" / "rows.npy"), np.load(out / "runs" / "quant" / "rows.npy"))
    result = CliRunner().invoke(main, ["compare", str(out / "runs" / "quant"), str(tmp_path / "again"),
                                       "--json", str(tmp_path / "cmp.json"), "-q"])
    assert result.exit_code in (0, 1), result.output
    overall = json.loads((tmp_path / "cmp.json").read_text())["overall"]
    assert overall["n"] == adaptive["overall"]["n"] and overall["max_abs_error"] == 0


@pytest.mark.parametrize("bad", ["short", "tag-without-rows"])
def test_a_set_that_names_a_suite_wrongly_is_refused_in_one_line(fragile, tmp_path, bad):
    """A `suite_sha256` that is not one sha256, or one without a `suite_row` per sample, would name runs after
    a suite they are not rows of: refused with one line naming the file and the array."""
    from conftest import one_line_error

    _, _, out = fragile
    kept = dict(np.load(out / "inputs" / "risky.npz"))
    if bad == "short":
        kept["suite_sha256"] = np.array("abc123")
    else:
        del kept["suite_row"]
    np.savez(tmp_path / "named.npz", **kept)
    one_line_error(["inputs", "check", tmp_path / "named.npz"], ["named.npz", "suite_sha256", "64 hex digits"])
