"""The boundary category (inputs/risky/boundary.py) on the built-in example's real float model.

The float margins are recomputed here with ai_edge_litert directly (not with the module's
runner): the lowest-margin samples sit below the typical clean margin, the interpolations
sit at the margins their severity asks for (a few % of the median: near zero), on the
first sample's side of the float decision; the cells are reproducible for a seed, written
to a file exactly as built in memory, and left out with a note without a model.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.inputs.risky import build_risky_suite, write_risky_suite
from edgeq.inputs.risky.boundary import LEVELS, LOW_FRACTION, MIN_COUNT, Head


def float_outputs(model_path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(np.float64)


def margins(logits):
    top = np.sort(logits, axis=1)
    return logits.argmax(axis=1), top[:, -1] - top[:, -2]


@pytest.fixture(scope="module")
def digits(example_data):
    with np.load(example_data) as d:
        return d["x"], d["y"]


@pytest.fixture(scope="module")
def suite(example_tflite, digits):
    x, y = digits
    return build_risky_suite({"x": x}, y, seed=5, categories=["clean", "boundary"], model=example_tflite[0])


def cell(suite, severity):
    rows = (suite["category"] == "boundary") & (suite["severity"] == severity)
    return suite["x"][rows], suite["source_index"][rows], suite["y"][rows]


def test_lowest_margin_samples_are_the_least_sure(suite, example_tflite, digits):
    x, y = digits
    pred, clean = margins(float_outputs(example_tflite[0], x))
    low, source, labels = cell(suite, 1)
    assert len(low) == max(MIN_COUNT, int(np.ceil(LOW_FRACTION * len(x))))  # 200 of 540: a tenth is too few
    np.testing.assert_array_equal(low, x[source])  # originals, unchanged
    np.testing.assert_array_equal(labels, y[source])
    _, found = margins(float_outputs(example_tflite[0], low))
    assert found.max() <= np.sort(clean)[len(low) - 1] + 1e-6  # exactly the lowest ones
    assert found.mean() < 0.75 * clean.mean()  # the lowest 200 of 540
    np.testing.assert_allclose(np.sort(found), np.sort(suite.boundary.margins[1]), rtol=1e-5, atol=1e-5)


def test_interpolations_sit_near_the_float_boundary(suite, example_tflite, digits):
    x, y = digits
    pred_clean, clean = margins(float_outputs(example_tflite[0], x))
    typical = np.median(clean)
    assert suite.boundary.typical == pytest.approx(typical, rel=1e-4)
    for severity in (2, 3):
        points, source, labels = cell(suite, severity)
        assert len(points) == 500  # as many as any other cell: max_per_category (500) of the 540
        pred, found = margins(float_outputs(example_tflite[0], points))
        # near zero next to the clean margins, at about the level asked for
        assert np.median(found) < 0.15 * np.mean(clean)
        assert np.median(found) == pytest.approx(LEVELS[severity] * typical, rel=0.2)
        assert np.mean(found >= LEVELS[severity] * typical * 0.999) > 0.9
        # on the first sample's side of the float decision, which the float model gets right
        np.testing.assert_array_equal(pred, pred_clean[source])
        np.testing.assert_array_equal(labels, y[source])
        assert np.all(pred_clean[source] == y[source])
        # new inputs, not copies of the data
        assert np.mean(np.any(points != x[source], axis=1)) > 0.9
        np.testing.assert_allclose(found, suite.boundary.margins[severity], rtol=1e-4, atol=1e-4)
    assert np.median(margins(float_outputs(example_tflite[0], cell(suite, 3)[0]))[1]) < \
        np.median(margins(float_outputs(example_tflite[0], cell(suite, 2)[0]))[1])


def test_the_cells_follow_max_per_category(example_tflite, digits):
    x, y = digits
    small = build_risky_suite({"x": x}, y, seed=5, max_per_category=40, categories=["boundary"],
                              model=example_tflite[0])
    assert [int(np.sum(small["severity"] == s)) for s in (1, 2, 3)] == [40, 40, 40]


def test_reproducible_for_a_seed(suite, example_tflite, digits):
    x, y = digits
    again = build_risky_suite({"x": x}, y, seed=5, categories=["clean", "boundary"], model=example_tflite[0])
    for key in ("x", "y", "category", "severity", "source_index"):
        np.testing.assert_array_equal(suite[key], again[key])
    other = build_risky_suite({"x": x}, y, seed=6, categories=["clean", "boundary"], model=example_tflite[0])
    np.testing.assert_array_equal(cell(other, 1)[0], cell(suite, 1)[0])  # the lowest margins are the lowest
    assert not np.array_equal(cell(other, 2)[0], cell(suite, 2)[0])  # the pairs are drawn


def test_written_file_equals_the_suite_in_memory(suite, example_tflite, digits, tmp_path):
    x, y = digits
    plan = write_risky_suite(tmp_path / "s.npz", {"x": x}, y, seed=5, categories=["clean", "boundary"],
                             model=example_tflite[0])
    assert plan.n == len(suite["x"]) and plan.boundary is not None
    with np.load(tmp_path / "s.npz") as written:
        for key in ("x", "y", "category", "severity", "source_index"):
            np.testing.assert_array_equal(written[key], suite[key])


def test_without_a_model_it_is_left_out_with_the_reason(digits, tmp_path, example_data):
    from edgeq.cli.main import main

    x, y = digits
    plain = build_risky_suite({"x": x[:50]}, y[:50])
    assert "boundary" not in set(plain["category"].tolist()) and plain.boundary is None
    assert "--model" in plain.skipped["boundary"]
    done = CliRunner().invoke(main, ["inputs", "risky", "--data", str(example_data), "-o", str(tmp_path / "s.npz"),
                                     "--max-per-category", "10"])
    assert done.exit_code == 0, done.output
    assert "risky category boundary left out: needs the float model's outputs" in done.output


def test_the_command_with_a_model_adds_boundary_and_says_how(example_tflite, example_data, tmp_path):
    from edgeq.cli.main import main

    done = CliRunner().invoke(main, ["inputs", "risky", "--model", str(example_tflite[0]), "--data",
                                     str(example_data), "-o", str(tmp_path / "s.npz"), "--max-per-category", "30"])
    assert done.exit_code == 0, done.output
    assert "boundary (output 'output_0'; median float margin of the data" in done.output
    assert "boundary 90" in done.output  # 30 per severity
    assert "INFO: Created TensorFlow Lite" not in done.output


def test_quantization_error_weighs_more_near_the_boundary(suite, example_tflite, digits):
    """Why the category exists: the quantized model's logit error is the same size everywhere,
    the margin it has to beat is not. On the example no decision flips at these levels (it is
    robust), but the error takes a far larger share of the margin than on clean data."""
    x, _ = digits
    share = {}
    for severity in (0, 1, 2, 3):
        points = x if severity == 0 else cell(suite, severity)[0]
        f, q = float_outputs(example_tflite[0], points), float_outputs(example_tflite[1], points)
        share[severity] = float(np.median(np.abs(f - q).max(axis=1) / margins(f)[1]))
    assert share[0] < share[1] < share[2] < share[3] and share[3] > 10 * share[0], share


def test_head_reads_classes_and_margins():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15], [np.nan, 0.5, 0.5]])
    pred, margin = Head(0, "p").read(probs)
    np.testing.assert_array_equal(pred, [0, 1, -1])
    np.testing.assert_allclose(margin[:2], [0.5, 0.05])
    assert margin[2] == np.inf
    pred, margin = Head(0, "score", threshold=0.5, scale=2.0).read(np.array([[0.9], [0.45]]))
    np.testing.assert_array_equal(pred, [1, 0])
    np.testing.assert_allclose(margin, [0.8, 0.1])  # |p − (1 − p)|
    pred, margin = Head(0, "logit", threshold=0.0).read(np.array([[-2.0], [0.5]]))
    np.testing.assert_array_equal(pred, [0, 1])
    np.testing.assert_allclose(margin, [2.0, 0.5])


def test_a_lazy_plan_bisects_only_the_pairs_whose_rows_are_made(suite, example_tflite, digits):
    """Planned lazily (adaptive sampling), no pair is bisected up front; making a few rows of the
    interpolation cells bisects exactly their pairs, and every row made equals the eager suite's."""
    from edgeq.inputs.risky import plan_risky_suite

    x, y = digits
    plan = plan_risky_suite({"x": x}, y, seed=5, categories=["clean", "boundary"], model=example_tflite[0],
                            lazy=True)
    edges = plan.boundary
    assert edges.pending is not None and not edges.pending.done.any()
    assert "bisected to the boundary when a round makes its row" in edges.summary()
    clean = len(plan.index)
    at2 = clean + edges.levels[1]  # the first row of severity 2
    pairs = np.array([0, 3, 17, 40])
    rows = np.concatenate([at2 + pairs, at2 + edges.levels[2] + pairs[:2]])  # severity 2 and 3 of some pairs
    made = plan.take("x", rows)
    assert np.flatnonzero(edges.pending.done).tolist() == pairs.tolist()
    np.testing.assert_array_equal(made, suite["x"][rows])
    for severity in (2, 3):
        np.testing.assert_array_equal(edges.t[severity][pairs], suite.boundary.t[severity][pairs])
    everything = np.concatenate(list(plan.parts("x")))  # a whole write bisects the rest
    assert edges.pending is None and np.array_equal(everything, suite["x"])


def test_saved_bisections_restore_the_same_rows_and_only_into_the_same_pairs(suite, example_tflite, digits,
                                                                             tmp_path):
    """What one plan bisected, saved in the host's cache under the suite's identity, is restored by the next plan
    of the same suite: no pair is bisected again and its rows are the eager suite's, byte for byte. A save of
    other pairs (another seed) or with a t outside [0, 1] restores nothing."""
    from edgeq.inputs.risky import plan_risky_suite
    from edgeq.store.bisections import BisectionCache

    x, y = digits

    def lazy(seed=5):
        return plan_risky_suite({"x": x}, y, seed=seed, categories=["clean", "boundary"], model=example_tflite[0],
                                lazy=True)

    first = lazy()
    at2 = len(first.index) + first.boundary.levels[1]
    pairs = np.array([1, 4, 9])
    first.take("x", at2 + pairs)
    cache, key = BisectionCache(tmp_path / "bisections"), "ab" * 32
    cache.save(key, first.boundary.solved())

    again = lazy()
    assert again.boundary.restore(cache.load(key)) == len(pairs)
    assert np.flatnonzero(again.boundary.pending.done).tolist() == pairs.tolist()
    calls = []
    again.boundary.pending.float_model = lambda rows: calls.append(rows)  # any bisection now would be seen
    np.testing.assert_array_equal(again.take("x", at2 + pairs), suite["x"][at2 + pairs])
    assert calls == [] and again.boundary.bisected == len(pairs)

    assert lazy(seed=6).boundary.restore(cache.load(key)) == 0  # other pairs
    bad = dict(cache.load(key), t2=np.full(len(first.boundary.first), 1.5))
    assert lazy().boundary.restore(bad) == 0
    eager = first.boundary
    eager.solve()
    whole = lazy()
    assert whole.boundary.restore(eager.solved()) == len(eager.first) and whole.boundary.pending is None
    np.testing.assert_array_equal(np.concatenate(list(whole.parts("x"))), suite["x"])


def test_the_bisection_cache_keeps_its_newest_entries_and_drops_an_unreadable_one(tmp_path):
    from edgeq.store.bisections import BisectionCache

    said = []
    cache = BisectionCache(tmp_path, keep=2, warn=said.append)
    keys = [f"{k:064x}" for k in range(3)]
    for k, key in enumerate(keys):
        cache.save(key, {"t2": np.full(3, k / 10)})
        os.utime(cache.entry(key), (1_000_000 + k, 1_000_000 + k))
    cache.save(keys[2], {"t2": np.zeros(3)})  # a save evicts beyond keep: the oldest goes
    assert not cache.entry(keys[0]).exists() and cache.load(keys[1])["t2"][0] == 0.1
    cache.entry(keys[1]).write_bytes(b"not an npz")
    assert cache.load(keys[1]) is None and not cache.entry(keys[1]).exists() and "unreadable" in said[0]
    with pytest.raises(ValueError):
        cache.entry("../elsewhere")
