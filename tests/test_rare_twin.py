"""The rare twin (tests/fragile_rare.py): its one designed failure is the only way its two models differ.

The search benchmark's claim rests on it: a flip found on the rare twin is the trap (an
outlier that rescales the one quantized layer's input row), never ordinary rounding, and the
trap is reachable inside the search's 10 % ball from the data, while random draws there
seldom reach it. Real models, the real converter and interpreter; no timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.evaluate import EXAMPLE_DATA
from edgeq.inputs.search.evaluators import HostEvaluator


@pytest.fixture(scope="session")
def rare_pair(tmp_path_factory):
    from conftest import converted_twin
    from fragile_rare import make_rare_twin

    return converted_twin(make_rare_twin, tmp_path_factory.mktemp("rare"), "rare")


@pytest.fixture(scope="session")
def digits():
    with np.load(EXAMPLE_DATA) as data:
        return data["x"].astype(np.float32), data["y"]


def test_clean_data_agrees_exactly_and_keeps_the_examples_accuracy(rare_pair, digits, example_tflite):
    x, y = digits
    f, q = HostEvaluator(*rare_pair).evaluate([x])
    assert np.array_equal(f[0], q[0])  # no rounding error anywhere on clean data
    example, _ = HostEvaluator(*example_tflite).evaluate([x])
    assert np.array_equal(f[0].argmax(1), example[0].argmax(1))  # the same classifier
    assert (f[0].argmax(1) == y).mean() > 0.95


def test_ball_draws_differ_only_where_the_trap_is_on(rare_pair, digits):
    """Uniform draws in the 10 % ball: outputs are identical below the onset; every flip is above it."""
    from fragile_rare import ONSET, pattern_signal

    x, _ = digits
    rng = np.random.default_rng(7)
    rows = x[rng.integers(len(x), size=4000)]
    drawn = np.clip(rows + rng.uniform(-1.6, 1.6, size=rows.shape), 0.0, 16.0).astype(np.float32)
    f, q = HostEvaluator(*rare_pair).evaluate([drawn])
    on = pattern_signal(drawn) > ONSET
    assert np.array_equal(f[0][~on], q[0][~on])
    flips = f[0].argmax(1) != q[0].argmax(1)
    assert not flips[~on].any() and flips.sum() < 20  # rare: ~1 in 4,000 such draws


def test_the_trap_is_reachable_in_the_ball_from_most_rows(rare_pair, digits):
    """Left edge +10 % of the range, right edge −10 %: most rows the float model does not put in class 0
    flip (the designed direction exists inside the search's bound)."""
    from fragile_rare import LEFT, RIGHT

    x, _ = digits
    moved = x.copy()
    moved[:, LEFT] += 1.6
    moved[:, RIGHT] -= 1.6
    moved = np.clip(moved, 0.0, 16.0).astype(np.float32)
    f, q = HostEvaluator(*rare_pair).evaluate([moved])
    fc, qc = f[0].argmax(1), q[0].argmax(1)
    eligible = fc != 0
    assert (qc[eligible] != fc[eligible]).mean() > 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_finds_the_trap_within_its_bound(rare_pair, seed):
    """Where random draws need thousands of queries, the search climbs to the trap; the boundary crossings
    it saw carried no quantization error, so it moved its lineages towards climbing."""
    from fragile_rare import ONSET, pattern_signal

    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.disagreement import SearchConfig, search
    from edgeq.inputs.search.operators import operators_for

    prepared = prepare(rare_pair[0], rare_pair[1], EXAMPLE_DATA, 0.1, "linf")
    operators, _ = operators_for(prepared.data[0].shape[1:])
    result = search(HostEvaluator(*rare_pair), prepared.data, prepared.spaces, operators,
                    SearchConfig(budget=1500, seed=seed, stop_at_first=True), prepared.output_names,
                    prepared.float_info)
    assert result.found and result.queries <= 1500
    first = result.found[0]
    assert first.distance <= 0.1 and pattern_signal(first.arrays[0][None])[0] > ONSET
    strategy = result.strategy
    assert strategy["flat_crossings"] > strategy["crossings_with_gap"] and strategy["seek_share"] < 0.5
