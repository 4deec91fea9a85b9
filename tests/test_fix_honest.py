"""An honest ``edgeq fix``: the float model is no fix, the drops are measured with the target's kernels,
and only field conditions set the target. Real models, the real interpreter and the real local agent.

``lone``: a digits classifier whose *only* quantized op is its culprit (the fragile twin's
cancelling pair, watched by a layer too small to quantize, feeds the one layer big enough to
be quantized), so keeping that op float gives the float model back: no quantized variant can
meet a target the quantized model misses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main

BUILTIN = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def make_lone_culprit(x: np.ndarray, y: np.ndarray, out_path: Path, seed: int = 0) -> Path:
    """pixels → ``amp`` (Dense 2, 128 weights: left float) watching an always-0 pixel with a huge gain,
    concatenated with the pixels → ``culprit`` (Dense 32, the only layer with ≥ 1024 weights) which
    adds the two amp units with +1 and −1 (they cancel in float) → ``head`` (Dense 10, left float)."""
    import keras

    from fragile import AMPLIFIER_GAIN, silent_feature

    keras.utils.set_random_seed(seed)
    plain = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    plain.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, epochs=30, batch_size=32, verbose=0)
    (w1, b1), (w2, b2) = plain.layers[0].get_weights(), plain.layers[1].get_weights()
    pixels = keras.Input((x.shape[1],), name="pixels")
    amp = keras.layers.Dense(2, activation="relu", name="amp")(pixels)
    joined = keras.layers.Concatenate(name="join")([pixels, amp])
    culprit = keras.layers.Dense(32, activation="relu", name="culprit")(joined)
    model = keras.Model(pixels, keras.layers.Dense(10, name="head")(culprit))
    w_amp = np.zeros((x.shape[1], 2), np.float32)
    w_amp[silent_feature(x), :] = AMPLIFIER_GAIN
    model.get_layer("amp").set_weights([w_amp, np.zeros(2, np.float32)])
    extra = np.zeros((2, w1.shape[1]), np.float32)
    extra[0, 0], extra[1, 0] = 1.0, -1.0
    model.get_layer("culprit").set_weights([np.vstack([w1, extra]), b1])
    model.get_layer("head").set_weights([w2, b2])
    model.save(out_path)
    return out_path


@pytest.fixture(scope="module")
def lone(tmp_path_factory, example_data):
    from fragile_layers import scaled_digits

    out = tmp_path_factory.mktemp("lone")
    with np.load(example_data) as d:
        x, y = d["x"], d["y"]
    data = scaled_digits(x, y, out / "flat.npz")
    with np.load(data) as d:
        model = make_lone_culprit(d["x"], d["y"], out / "lone.keras")
    return model, data


def run(args, code: int | None = 0):
    """The command's result; ``code`` None: a gate may fail (0 or 1), never an error."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in ((0, 1) if code is None else (code,)), (result.output, result.exception)
    return result


def run_evaluate(args, out: Path, workdir: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEQ_LOCAL_WORKDIR", str(workdir))
        result = CliRunner().invoke(main, ["evaluate", *map(str, args), "-o", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "report.json").read_text())


# --- the float model is no fix ------------------------------------------------------------------------------


def test_when_only_the_float_model_meets_the_target_nothing_is_called_fixed(lone, tmp_path):
    model, data = lone
    result = run(["fix", model, "--data", data, "-o", tmp_path, "--json", tmp_path / "out.json"], code=1)
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["status"] == "no-quantized-variant", report.get("reason")
    assert [c["layer"] for c in report["localize"]["candidates"]] == ["culprit"]  # one op: float is the only way
    assert not list(tmp_path.glob("*.fixed.tflite")) and "fixed" not in report and "recipe" not in report
    assert json.loads((tmp_path / "lone.fix.json").read_text())["status"] == "no-quantized-variant"
    # the best partial variant (an op still quantized): here the whole rebuild, nothing kept float
    best = report["best"]
    assert best["kept_float"] == [] and best["ops"] == []
    assert best["int8_weights"] >= 1 and best["quantized"] and 0 < best["size_vs_float"] < 1
    assert best["worst_drop"] > report["target_drop"]
    assert best["conditions"][best["worst"]]["best"] == best["worst_drop"]
    assert "only keeping every quantized op float does" in report["reason"]
    printed = " ".join(result.stdout.split())
    assert printed.startswith("no-quantized-variant: no quantized variant keeps every field condition under 0.02")
    assert f"best partial variant: keeps no op float, worst field condition {best['worst']} drops " \
           f"{best['worst_drop']:.3f}, {1 / best['size_vs_float']:.2f}× smaller than float" in printed
    assert "gate failed" in result.stderr
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("/")) <= 80


def test_a_fixed_model_holds_int8_weights_and_the_float_model_does_not(lone, tmp_path):
    """The check a fix must pass, on real files: the float model is not a quantized variant."""
    from edgeq.models.convert import convert_model
    from edgeq.repair.fix import model_facts

    model, _ = lone
    converted = convert_model(model, tmp_path)
    as_float = model_facts(converted.float_path, converted.float_path)
    assert as_float["int8_weights"] == 0 and as_float["size_vs_float"] == 1.0 and not as_float["quantized"]
    shipped = model_facts(converted.quant_path, converted.float_path)
    assert shipped["int8_weights"] == 1 and shipped["quantized"] and shipped["bytes"] < shipped["float_bytes"]


# --- only field conditions set the target ------------------------------------------------------------------


def test_a_stress_condition_does_not_set_the_fix_target(lone, tmp_path):
    """A suite whose only breaking condition is ``boundary`` (stress: a selection / synthetic points,
    not a field population): the fix has nothing to do, and says which stress condition broke."""
    from fragile import silent_feature

    model, data = lone
    with np.load(data) as d:
        x, y = d["x"], d["y"]
    lit = x.copy()
    lit[:, silent_feature(x)] = 1.0  # what breaks the quantized model
    suite = tmp_path / "suite.npz"
    np.savez(suite, x=np.concatenate([x[:200], lit[:200]]), y=np.concatenate([y[:200], y[:200]]),
             category=np.array(["clean"] * 200 + ["boundary"] * 200), severity=np.array([0] * 200 + [1] * 200))
    result = run(["fix", model, "--inputs", suite, "-o", tmp_path / "out", "--json", tmp_path / "fix.json"])
    report = json.loads((tmp_path / "fix.json").read_text())
    assert report["status"] == "nothing-to-fix", report
    located = report["localize"]
    assert located["drops"]["rebuilt"]["boundary/1"]["drop"] > 0.3  # it does break there
    assert located["condition_roles"]["boundary/1"]["role"] == "stress"
    assert located["condition_roles"]["clean"]["role"] == "field"
    assert "stress condition boundary/1" in report["reason"]
    assert result.stdout.startswith("nothing to fix") and not list((tmp_path / "out").glob("*.fixed.tflite"))


# --- the same kernels as evaluate ---------------------------------------------------------------------------


def evaluate_cell(report: dict, condition: str) -> dict:
    """evaluate's figures for one suite condition ('brightness+/2' or 'clean')."""
    category, _, severity = condition.rpartition("/") if "/" in condition else (condition, "", "")
    figures = report["categories"][category]
    return figures["severities"][severity] if severity else figures


def same_drops(fix_drops: dict, report: dict) -> list[str]:
    """The conditions where the fix's float/quantized accuracy or flip rate is not evaluate's, to the last bit."""
    differ = []
    for condition, d in fix_drops.items():
        cell = evaluate_cell(report, condition)
        assert d["n"] == cell["n"], condition
        if (d["accuracy_float"], d["accuracy_quantized"], d["flip_rate"]) != \
                (cell["float_accuracy"], cell["quant_accuracy"], cell["flip_rate"]):
            differ.append(condition)
        else:  # the drop itself: k/n here, a difference of two k/n there
            assert d["drop"] == pytest.approx(cell["accuracy_drop"], abs=1e-12), condition
    return differ


@pytest.fixture(scope="module")
def rebuilt_pair(lone, tmp_path_factory):
    """(float .tflite, its ai-edge-quantizer dynamic-range model): the kind of model whose drops differ
    between XNNPACK and the built-in kernels (DESIGN.md), so agreeing with evaluate is not luck."""
    from edgeq.models.convert import convert_model

    model, _ = lone
    out = tmp_path_factory.mktemp("lone_aeq")
    float_path = convert_model(model, out / "keras").float_path
    quant = convert_model(float_path, out / "aeq").quant_path
    return float_path, quant


@pytest.fixture(scope="module")
def evaluated(lone, rebuilt_pair, tmp_path_factory):
    """``evaluate --fix`` of that pair on the local device with the default resolver (AUTO)."""
    _, data = lone
    float_path, quant = rebuilt_pair
    out = tmp_path_factory.mktemp("lone_eval")
    report = run_evaluate([float_path, "--quant-model", quant, "--data", data, "--max-per-category", "60", "--fix",
                           "--sampling", "fixed"],
                          out / "eval", out / "device")
    return report, out / "eval"


def test_evaluate_fix_measures_with_evaluates_resolver_and_agrees_with_it(evaluated):
    report, _ = evaluated
    assert report["device"]["resolver"] == "AUTO"
    fix = report["fix"]
    assert fix["resolver"] == "AUTO" and fix["analysis_resolver"] == BUILTIN
    assert "resolver AUTO" in fix["measured_on"] and BUILTIN in fix["analysis_on"]
    shipped = fix["localize"]["drops"]["shipped"]
    assert len(shipped) >= 10 and same_drops(shipped, report) == []
    assert max(d["drop"] for d in shipped.values()) > 0.1  # the conditions compared include ones that break
    assert any("resolver AUTO" in n for n in report["notes"] if n.startswith("fix: drop target"))


def test_fix_agrees_with_evaluate_under_the_same_resolver_only(lone, evaluated, rebuilt_pair, tmp_path):
    """``edgeq fix`` on evaluate's own suite and models: under AUTO (the default) every condition's
    numbers are evaluate's; under BUILTIN_WITHOUT_DEFAULT_DELEGATES some are not (the kernels matter),
    and they are those of an evaluate run with that resolver. The option is recorded and printed."""
    report, out = evaluated
    float_path, quant = rebuilt_pair
    suite = out / "inputs" / "risky.npz"
    run(["fix", float_path, "--quantized", quant, "--inputs", suite, "-o", tmp_path / "auto",
         "--json", tmp_path / "auto.json"], code=None)
    auto = json.loads((tmp_path / "auto.json").read_text())
    assert auto["resolver"] == "AUTO" and same_drops(auto["localize"]["drops"]["shipped"], report) == []
    assert auto["localize"]["condition_roles"]["boundary/2"]["role"] == "stress"

    result = run(["fix", float_path, "--quantized", quant, "--inputs", suite, "-o", tmp_path / "builtin",
                  "--resolver", BUILTIN, "--json", tmp_path / "builtin.json"], code=None)
    builtin = json.loads((tmp_path / "builtin.json").read_text())
    assert builtin["resolver"] == BUILTIN and builtin["analysis_resolver"] == BUILTIN
    assert f"resolver {BUILTIN}" in builtin["measured_on"] and builtin["localize"]["resolver"] == BUILTIN
    assert "flip_share_note" not in builtin and "flip_share_note" in auto  # one set of kernels, or two
    printed = " ".join(result.stdout.split())
    assert f"drops and latencies measured on host: ai_edge_litert, resolver {BUILTIN}" in printed
    assert f"per-op analysis on host: ai_edge_litert, resolver {BUILTIN}" in printed
    shipped = builtin["localize"]["drops"]["shipped"]
    assert same_drops(shipped, report)  # the built-in kernels give other numbers than evaluate's AUTO run

    again = run_evaluate([float_path, "--quant-model", quant, "--data", lone[1], "--max-per-category", "60",
                          "--resolver", BUILTIN, "--sampling", "fixed"], tmp_path / "eval", tmp_path / "device")
    assert again["device"]["resolver"] == BUILTIN
    assert same_drops(shipped, again) == []


def test_evaluate_fix_does_not_call_the_float_model_a_fix(lone, tmp_path):
    model, data = lone
    report = run_evaluate([model, "--data", data, "--max-per-category", "60", "--fix",
                           "--sampling", "fixed"], tmp_path / "eval",
                          tmp_path / "device")
    fix = report["fix"]
    assert fix["status"] == "no-quantized-variant" and fix["best"]["int8_weights"] >= 1
    assert fix["resolver"] == "AUTO" and same_drops(fix["localize"]["drops"]["shipped"], report) == []
    assert not list((tmp_path / "eval" / "models").glob("*.fixed.tflite"))
    assert any(n.startswith("fix: no-quantized-variant:") for n in report["notes"])
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "no quantized variant meets the target" in page and ">Best partial variant (not written)<" in page


@pytest.mark.parametrize("command", ["fix", "localize"])
def test_an_unknown_resolver_is_bad_input(lone, command):
    model, data = lone
    result = run([command, model, "--data", data, "--resolver", "GPU"], code=2)
    assert "GPU" in result.stderr and "AUTO" in result.stderr


def test_on_a_device_the_agent_runs_the_resolver_given(lone, tmp_path):
    """``--device local --resolver …``: every model runs on the device's agent under that resolver
    (its pulled runs say so), and the report names it."""
    from conftest import write_inventory

    model, data = lone
    inventory = write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(tmp_path / "local device")}})
    out = tmp_path / "out"
    result = run(["fix", model, "--data", data, "-o", out, "--device", "local", "--inventory", inventory,
                  "--resolver", BUILTIN, "--json", tmp_path / "fix.json"], code=1)
    report = json.loads((tmp_path / "fix.json").read_text())
    assert report["resolver"] == BUILTIN and report["device"]["resolver"] == BUILTIN
    assert f"resolver {BUILTIN}" in report["measured_on"] and report["status"] == "no-quantized-variant"
    runs = sorted((out / "work" / "device" / "device-runs").iterdir())
    assert runs and all(json.loads((r / "meta.json").read_text())["resolver"] == BUILTIN for r in runs)  # the agent's
    assert f"resolver {BUILTIN}" in " ".join(result.stdout.split())
