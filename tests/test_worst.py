"""Worst input-distribution search on a model built to break under one family.

``make_gated_twin`` is the fragile twin (tests/fragile.py) with a gate: its amplifier
pair watches the sum of the digits' seven always-zero pixels and only fires when that
sum passes 7 × GATE (a brightness shift of more than GATE / 16 of the range, i.e.
severity ≈ 2.75 of brightness+). In float the pair cancels; in the quantized model it
takes the next layer's int8 scale and the model collapses. Nothing else in the suite
lifts all seven pixels that far, so brightness+ must come first, and the bisected
strength must bracket the catastrophic threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.analysis.compare import THRESHOLDS
from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
from edgeq.inputs.search import prepare
from edgeq.inputs.search.evaluators import HostEvaluator
from edgeq.inputs.search.worst import WorstConfig, worst_distributions

GATE = 7.0
GAIN = 1.0e4


def make_gated_twin(model_path: Path, x: np.ndarray, out_path: Path, gate: float = GATE) -> Path:
    import keras

    base = keras.models.load_model(model_path, compile=False)
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    (w1, b1), (w2, b2) = dense[0].get_weights(), dense[1].get_weights()
    silent = np.flatnonzero(np.all(x.reshape(len(x), -1) == 0, axis=0))
    extra_in = np.zeros((w1.shape[0], 2), dtype=w1.dtype)
    extra_in[silent, :] = GAIN
    extra_bias = np.full(2, -GAIN * gate * len(silent), dtype=b1.dtype)
    extra_out = np.zeros((2, w2.shape[1]), dtype=w2.dtype)
    extra_out[0, 0], extra_out[1, 0] = 1.0, -1.0
    twin = keras.Sequential([keras.Input((w1.shape[0],), name="pixels")]
                            + [keras.layers.Dense(dense[0].units + 2, activation=dense[0].activation)]
                            + [keras.layers.Dense(d.units, activation=d.activation) for d in dense[1:]])
    twin_dense = [layer for layer in twin.layers if isinstance(layer, keras.layers.Dense)]
    twin_dense[0].set_weights([np.hstack([w1, extra_in]), np.concatenate([b1, extra_bias])])
    twin_dense[1].set_weights([np.vstack([w2, extra_out]), b2])
    for src, dst in zip(dense[2:], twin_dense[2:]):
        dst.set_weights(src.get_weights())
    twin.save(out_path)
    return out_path


@pytest.fixture(scope="session")
def gated_pair(tmp_path_factory):
    from edgeq.models.convert import convert_model

    with np.load(EXAMPLE_DATA) as data:
        x = data["x"]
    folder = tmp_path_factory.mktemp("gated")
    result = convert_model(make_gated_twin(EXAMPLE_MODEL, x, folder / "gated.keras"), folder)
    return result.float_path, result.quant_path


def worst(pair, **options):
    prepared = prepare(pair[0], pair[1], EXAMPLE_DATA)
    config = WorstConfig(**{"budget": 6000, "samples": 64, "seed": 0, **options})
    return worst_distributions(HostEvaluator(*pair), prepared.data, prepared.spaces, config, prepared.output_names,
                               prepared.labels, prepared.float_info)


def test_the_family_that_breaks_the_model_comes_first(gated_pair):
    result = worst(gated_pair)
    assert result.complete and result.metric == "accuracy_drop"
    assert result.clean.rate < THRESHOLDS["degraded"]
    ranked = result.ranked()
    assert ranked[0].parts[0][0] == "brightness+" and ranked[0].rate >= THRESHOLDS["catastrophic"]
    singles = [c for c in ranked if len(c.parts) == 1]
    assert singles[0].parts[0][0] == "brightness+"
    lo, hi = ranked[0].ci95
    assert lo <= ranked[0].rate <= hi
    assert result.queries <= 6000


def test_the_bisected_strength_brackets_the_threshold(gated_pair):
    result = worst(gated_pair, tolerance=0.05)
    crossing = result.crossings["brightness+"]
    assert crossing["crosses"]
    threshold = THRESHOLDS["catastrophic"]
    assert crossing["value_below"] < threshold <= crossing["value_above"]
    assert 0 < crossing["above"] - crossing["below"] <= 0.05
    # the gate opens between 2 and 3: a shift of GATE/16 of the range is severity 2.75
    assert 2.0 < crossing["below"] < crossing["above"] <= 3.0
    assert "brightness+ at severity" in crossing["description"]


def test_same_seed_same_figures_and_the_budget_holds(gated_pair):
    a, b = worst(gated_pair, budget=700), worst(gated_pair, budget=700)
    assert [c.to_dict() for c in a.ranked()] == [c.to_dict() for c in b.ranked()]
    assert a.queries <= 700 and not a.complete and a.stopped == "budget"
    assert any("budget ran out" in note for note in a.notes)


def test_cli_worst_reports_the_top_conditions(gated_pair, tmp_path):
    from edgeq.cli.common import EdgeqGroup, add_verbosity_options
    from edgeq.cli.search import worst as worst_command

    cli = add_verbosity_options(EdgeqGroup(commands={"worst": worst_command}))
    out = tmp_path / "worst.json"
    result = CliRunner().invoke(cli, ["worst", "--float", str(gated_pair[0]), "--quantized", str(gated_pair[1]),
                                      "--data", str(EXAMPLE_DATA), "--budget", "6000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["worst"][0]["families"][0] == "brightness+" and payload["worst"][0]["band"] == "catastrophic"
    assert payload["crossings"]["brightness+"]["crosses"]
    assert "brightness+: crosses 0.1 between severity" in result.output
    result = CliRunner().invoke(cli, ["worst", "--float", str(gated_pair[0]), "--quantized", str(gated_pair[1]),
                                      "--data", str(EXAMPLE_DATA), "--family", "no-such-family"])
    assert result.exit_code == 2 and "unknown risky family" in result.output
