"""Disagreement search (edgeq.inputs.search) on real .tflite pairs, in-process on the host.

The fragile twin (tests/fragile.py) loses nothing on clean data and collapses when a
silent input element becomes non-zero: a search within 10 % of the data range must
find it. The float model paired with itself can never disagree: the search must say
so without error. Nothing here asserts speed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.common import EdgeqGroup, add_verbosity_options
from edgeq.cli.search import search, worst
from edgeq.errors import TransportError
from edgeq.evaluate import EXAMPLE_DATA
from edgeq.inputs.search import prepare
from edgeq.inputs.search.disagreement import SearchConfig, relative_distance
from edgeq.inputs.search.disagreement import search as run_search
from edgeq.inputs.search.evaluators import HostEvaluator
from edgeq.inputs.search.operators import operators_for

CLI = add_verbosity_options(EdgeqGroup(commands={"search": search, "worst": worst}))


@pytest.fixture(scope="session")
def fragile_pair(fragile_keras, tmp_path_factory):
    from edgeq.models.convert import convert_model

    result = convert_model(fragile_keras, tmp_path_factory.mktemp("fragile_tflite"))
    return result.float_path, result.quant_path


def run(pair, budget=400, seed=0, epsilon=0.1, norm="linf", evaluator=None, **extra):
    prepared = prepare(pair[0], pair[1], EXAMPLE_DATA, epsilon, norm)
    operators, _ = operators_for(prepared.data[0].shape[1:])
    config = SearchConfig(budget=budget, epsilon=epsilon, norm=norm, seed=seed, **extra)
    evaluator = evaluator or HostEvaluator(*pair)
    return prepared, run_search(evaluator, prepared.data, prepared.spaces, operators, config,
                                prepared.output_names, prepared.float_info)


def test_clean_data_shows_no_failure(fragile_pair):
    """The premise: the fragile twin agrees with its quantized self on every clean sample."""
    prepared, _ = run(fragile_pair, budget=1)
    f, q = HostEvaluator(*fragile_pair).evaluate(prepared.data)
    assert np.array_equal(f[0].argmax(1), q[0].argmax(1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_search_finds_flips_within_budget_and_distance(fragile_pair, norm):
    prepared, result = run(fragile_pair, budget=300, norm=norm)
    assert result.found and result.queries <= 300 and result.complete
    x = prepared.data[0]
    span = prepared.spaces[0].span
    for f in result.found:
        assert f.distance <= 0.1
        assert relative_distance(f.arrays[0], x[f.seed_index], span, norm) <= 0.1
        assert f.arrays[0].dtype == x.dtype
        assert x.min() <= f.arrays[0].min() and f.arrays[0].max() <= x.max()  # inside the data range
    # every reported input really flips, evaluated afresh
    found = np.stack([f.arrays[0] for f in result.found])
    fo, qo = HostEvaluator(*fragile_pair).evaluate([found])
    assert (fo[0].argmax(1) != qo[0].argmax(1)).all()


def test_same_seed_same_result_and_budget_is_exact(fragile_pair):
    _, a = run(fragile_pair, budget=157, seed=3)
    _, b = run(fragile_pair, budget=157, seed=3)
    assert a.queries == b.queries == 157
    assert [(f.seed_index, f.query) for f in a.found] == [(f.seed_index, f.query) for f in b.found]
    assert all(np.array_equal(x.arrays[0], y.arrays[0]) for x, y in zip(a.found, b.found))
    assert a.operators == b.operators


def test_a_model_paired_with_itself_gives_none_without_error(fragile_pair, tmp_path):
    out = tmp_path / "found.npz"
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--quantized", str(fragile_pair[0]),
                                      "--data", str(EXAMPLE_DATA), "--budget", "120", "-o", str(out),
                                      "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "no disagreement found within 120 queries" in result.output
    assert not out.exists()
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["found"] == 0 and payload["queries"] == 120 and payload["output"] is None


def test_the_normal_model_yields_few_flips(example_tflite):
    _, result = run(example_tflite, budget=200)
    assert len(result.found) <= 0.05 * result.queries


def test_the_budget_is_spent_when_seeds_run_out(example_tflite):
    """Three seeds and no flip to retire them: they are searched again until the budget is spent."""
    _, result = run(example_tflite, budget=300, max_seeds=3)
    assert result.queries == 300 and result.stopped == "budget" and result.seeds_tried == 3


def test_seeds_done_with_their_flips_are_not_searched_again(fragile_pair):
    _, result = run(fragile_pair, budget=2000, max_seeds=2, per_seed=1)
    assert result.stopped == "seeds" and result.queries < 2000
    assert sorted(f.seed_index for f in result.found) == sorted({f.seed_index for f in result.found})
    assert len(result.found) == 2


def test_cli_writes_an_input_set_that_edgeq_run_accepts(fragile_pair, local, tmp_path):
    from edgeq.devices.run import RunSpec, run_on_device
    from edgeq.inputs.inputset import load_inputset

    out = tmp_path / "found.npz"
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--quantized", str(fragile_pair[1]),
                                      "--data", str(EXAMPLE_DATA), "--budget", "200", "--distance", "0.05",
                                      "-o", str(out), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["found"] >= 1 and payload["output"] == str(out)
    assert payload["choices"]["distance"]["bound"] == 0.05 and payload["evaluator"]["where"].startswith("host")
    assert any("operators:" in line for line in payload["notes"])
    with np.load(out) as saved:
        assert set(saved.files) >= {"x", "y", "category", "severity", "source_index", "seed_index", "distance"}
        assert (saved["category"] == "search").all() and (saved["distance"] <= 0.05).all()
        assert np.array_equal(saved["seed_index"], saved["source_index"])
    dataset = load_inputset(out)
    assert dataset.n == payload["found"]
    (run_result,) = run_on_device(local, [RunSpec(model=fragile_pair[0], inputs=out)], [tmp_path / "run"])
    assert run_result.n == payload["found"]


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "--budget must be a positive"),
    (["--budget", "-5"], "--budget must be a positive"),
    (["--distance", "0"], "--distance must be above 0"),
    (["--distance", "-0.1"], "--distance must be above 0"),
    (["--time-budget", "0"], "--time-budget must be a positive"),
])
def test_bad_budgets_and_distances_are_exit_2_in_one_line(fragile_pair, args, message):
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--quantized", str(fragile_pair[1]),
                                      "--data", str(EXAMPLE_DATA), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0


def test_empty_data_and_mismatched_pairs_are_exit_2(fragile_pair, tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 64), np.float32))
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--quantized", str(fragile_pair[1]),
                                      "--data", str(empty)])
    assert result.exit_code == 2 and "zero samples" in result.output

    other = _tiny_tflite(tmp_path)
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--quantized", str(other),
                                      "--data", str(EXAMPLE_DATA)])
    assert result.exit_code == 2 and "different input signatures" in result.output
    result = CliRunner().invoke(CLI, ["search", "--float", str(fragile_pair[0]), "--data", str(EXAMPLE_DATA)])
    assert result.exit_code == 2 and "--quantized" in result.output


def _tiny_tflite(tmp_path):
    import keras

    from edgeq.models.convert import convert_model

    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64)])
    model.save(tmp_path / "tiny.keras")
    return convert_model(tmp_path / "tiny.keras", tmp_path / "tiny").float_path


class LosesTheDevice:
    """An evaluator whose device goes away after a few batches."""

    def __init__(self, pair, after):
        self.inner, self.left = HostEvaluator(*pair), after

    def evaluate(self, batch):
        if self.left == 0:
            raise TransportError("pi: connection lost")
        self.left -= 1
        return self.inner.evaluate(batch)


def test_a_lost_device_keeps_what_was_found_marked_incomplete(fragile_pair):
    _, full = run(fragile_pair, budget=400)
    _, cut = run(fragile_pair, budget=400, evaluator=LosesTheDevice(fragile_pair, after=5))
    assert not cut.complete and cut.stopped == "interrupted" and "connection lost" in str(cut.error)
    done = 5 * SearchConfig().pool  # 5 batches evaluated; the 6th failed (the 7th, in flight, is dropped)
    assert cut.queries == done and cut.found
    assert [f.query for f in cut.found] == [f.query for f in full.found if f.query <= done]


def test_time_budget_stops_the_search(fragile_pair):
    _, result = run(fragile_pair, budget=10 ** 6, time_budget_s=0.5, per_seed=10 ** 6, max_seeds=4)
    assert result.stopped in ("time", "seeds") and result.queries < 10 ** 6


@pytest.fixture(scope="session")
def band_pair(tmp_path_factory):
    """The band twin (tests/fragile_search.py): breaks only when several always-0 pixels sit in a narrow band."""
    from conftest import converted_twin
    from fragile_search import make_band_twin

    return converted_twin(make_band_twin, tmp_path_factory.mktemp("band"), "band")


def _ball_draws_flip(pair, prepared, budget, seed, epsilon=0.1, batch=8) -> bool:
    """Random draws uniform in the same L∞ ball around random data rows: any flip within ``budget``?"""
    from edgeq.inputs.search.disagreement import project

    x, space = prepared.data[0], prepared.spaces[0]
    bound = epsilon * np.broadcast_to(space.span[0], x.shape[1:])
    rng = np.random.default_rng([seed, 0xBA11])
    evaluator, done = HostEvaluator(*pair), 0
    while done < budget:
        rows = []
        for _ in range(min(batch, budget - done)):
            row = x[int(rng.integers(len(x)))].astype(np.float64)
            rows.append(project(row + rng.uniform(-1.0, 1.0, size=row.shape) * bound, row, space, x.dtype))
        f, q = evaluator.evaluate([np.stack(rows)])
        if (f[0].argmax(1) != q[0].argmax(1)).any():
            return True
        done += len(rows)
    return False


def test_band_twin_agrees_on_clean_data(band_pair):
    prepared, _ = run(band_pair, budget=1)
    f, q = HostEvaluator(*band_pair).evaluate(prepared.data)
    assert np.array_equal(f[0].argmax(1), q[0].argmax(1))


def test_search_beats_random_ball_draws_on_the_band_twin(band_pair):
    """Where flips are rare near the data, the search finds one within a budget in which as many random draws
    from the same distance ball (same seed) find none."""
    prepared, result = run(band_pair, budget=100, seed=0, stop_at_first=True)
    assert result.found and result.first_flip_query <= 100
    assert all(f.distance <= 0.1 for f in result.found)
    assert not _ball_draws_flip(band_pair, prepared, budget=100, seed=0)
