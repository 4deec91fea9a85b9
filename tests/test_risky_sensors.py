"""Tests for the sensor families, the auto range mode and the tabular sentinel failure.

Each family is checked against a calculation written here from the family's
definition (not by calling the family's helpers), on data whose statistics are
known; the last test trains a tabular model that holds a -999 missing code and its
normal twin and checks, with ai_edge_litert directly, that the sentinel family
finds the collapse and the twin is robust.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.inputs.inputset import InputSet, load_inputset
from edgeq.inputs.risky import ALL_CATEGORIES, CATEGORIES, SEVERITIES, build_risky_suite, choose_range_mode
from edgeq.inputs.risky import describe_categories
from edgeq.inputs.risky import category_array
from edgeq.inputs.risky.families import FAMILIES
from edgeq.inputs.risky.ranges import value_range
from tabular import MISSING_CODE, make_tabular_data, make_tabular_model

SENSOR_FAMILIES = ["sentinel", "stuck", "scaled", "offset", "dropout-zero", "dropout-mean"]
OLD_FAMILIES = ["brightness+", "brightness-", "contrast+", "contrast-", "noise", "impulse", "outlier"]
IMAGE_FAMILIES = ["blur", "jpeg", "pixelate", "haze", "colour-cast", "gamma", "occlusion", "translate"]
MISTAKES = ["value-scale", "channel-order", "normalization"]  # preprocessing mistakes: images only, one level
TABULAR = [c for c in CATEGORIES if c not in IMAGE_FAMILIES + MISTAKES]  # what a table's suite holds


def loaded_boundary(inputset) -> int:
    return int(np.count_nonzero(np.asarray(inputset.category) == "boundary"))


def _cell(suite, category, severity):
    mask = (suite["category"] == category) & (suite["severity"] == severity)
    return suite["x"][mask], suite["source_index"][mask]


def _table(n=40, seed=0):
    """Continuous features with different scales and no zeros, so every change is visible."""
    rng = np.random.default_rng(seed)
    return np.c_[1 + rng.random((n, 3)), 50 + 10 * rng.random((n, 2)), -5 - rng.random((n, 1))]


def _extremity(x):
    """The sentinel rule from its definition: farthest observed value from the median, in floored IQRs."""
    med = np.median(x, axis=0)
    iqr = np.percentile(x, 75, axis=0) - np.percentile(x, 25, axis=0)
    floor = 0.1 * np.median(iqr[iqr > 0])
    far = np.maximum(np.abs(x.min(axis=0) - med), np.abs(x.max(axis=0) - med))
    return far / np.maximum(iqr, floor)


# --- registry and table ---------------------------------------------------------------------------


def test_registry_matches_table_and_keeps_old_positions():
    assert CATEGORIES == ("clean", *OLD_FAMILIES, *SENSOR_FAMILIES, *IMAGE_FAMILIES, *MISTAKES)
    assert list(FAMILIES) == list(SEVERITIES) == list(CATEGORIES[1:])
    for name, family in FAMILIES.items():
        assert family.levels == SEVERITIES[name] and len(family.levels) == (1 if name in MISTAKES else 3)
        assert family.transform.__doc__, name
    assert SEVERITIES["sentinel"] == SEVERITIES["stuck"] == (1, 2, 4)
    assert SEVERITIES["scaled"] == (10.0, 100.0, 1000.0)
    assert SEVERITIES["offset"] == (0.5, 1.0, 2.0)
    assert SEVERITIES["dropout-zero"] == SEVERITIES["dropout-mean"] == (0.1, 0.25, 0.5)


def test_describe_categories_has_a_line_per_new_family():
    desc = describe_categories()
    assert set(desc) == set(ALL_CATEGORIES)
    assert "1/2/4" in desc["sentinel"] and "-999" in desc["sentinel"]
    assert "×10/×100/×1000" in desc["scaled"]
    assert "0.5/1/2" in desc["offset"]
    assert "10%/25%/50%" in desc["dropout-zero"] and "mean" in desc["dropout-mean"]
    assert all("\n" not in line for line in desc.values())


# --- sentinel ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tabular():
    return make_tabular_data(0)


def test_sentinel_finds_the_missing_code_feature(tabular):
    x, feature = tabular.x, tabular.sentinel_feature
    suite = build_risky_suite({"x": x}, seed=0, categories=["sentinel"], max_per_category=300)
    score = _extremity(x.astype(np.float64))
    order = np.argsort(-score, kind="stable")
    assert order[0] == feature
    for severity, count in zip((1, 2, 3), (1, 2, 4)):
        out, src = _cell(suite, "sentinel", severity)
        changed_cols = np.flatnonzero(np.any(out != x[src], axis=0))
        assert set(changed_cols) <= set(order[:count])
        assert feature in changed_cols
        for col in order[:count]:
            farthest = x[np.argmax(np.abs(x[:, col] - np.median(x[:, col]))), col]
            assert np.all(out[:, col] == farthest), (severity, col)
        untouched = np.setdiff1d(np.arange(x.shape[1]), order[:count])
        np.testing.assert_array_equal(out[:, untouched], x[src][:, untouched])
    assert np.all(_cell(suite, "sentinel", 1)[0][:, feature] == MISSING_CODE)


def test_sentinel_uses_the_full_data_not_the_subsample():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    x[7, 3] = -999.0
    suite = build_risky_suite({"x": x}, seed=2, categories=["sentinel"], max_per_category=20)
    out, src = _cell(suite, "sentinel", 1)
    assert 7 not in src
    assert np.all(out[:, 3] == -999.0)


def test_sentinel_prefers_a_code_over_a_rare_one_hot_and_ignores_constants():
    rng = np.random.default_rng(2)
    x = np.c_[rng.normal(size=(300, 4)), np.zeros(300), np.full(300, 3.0), rng.normal(size=300)]
    x[::50, 4] = 1.0  # a one-hot flag: IQR 0, rare 1
    x[5, 6] = -999.0
    suite = build_risky_suite({"x": x}, categories=["sentinel"], max_per_category=None)
    out = _cell(suite, "sentinel", 1)[0]
    assert np.all(out[:, 6] == -999.0)
    np.testing.assert_array_equal(np.delete(out, 6, axis=1), np.delete(x, 6, axis=1))
    four = _cell(suite, "sentinel", 3)[0]
    np.testing.assert_array_equal(four[:, 5], 3.0)  # the constant column is never "extreme"


def test_sensor_faults_never_touch_pixels_audio_or_grids():
    """A pixel, an audio sample or a spectrogram cell is no sensor of its own: the faults are left out, saying so."""
    from edgeq.inputs.risky import plan_risky_suite

    for x in (np.full((30, 4, 4, 1), 100, dtype=np.uint8), np.zeros((5, 16000), np.float32),
              np.zeros((5, 40, 49), np.float32)):
        plan = plan_risky_suite({"x": x}, max_per_category=5)
        assert set(SENSOR_FAMILIES) <= set(plan.skipped), plan.skipped
        assert not set(SENSOR_FAMILIES) & set(plan.families)


def test_sentinel_on_a_sensor_window_given_as_features_works_per_element_position():
    """Rows read as features (``input_kinds``) get the sensor faults, at each element position."""
    x = np.full((30, 16), 100, dtype=np.uint8)
    x += np.random.default_rng(3).integers(0, 5, size=x.shape, dtype=np.uint8)
    x[2, 13] = 250  # a spike seen once
    suite = build_risky_suite({"x": x}, categories=["sentinel"], input_kinds="features")
    out = _cell(suite, "sentinel", 1)[0]
    assert out.dtype == np.uint8
    assert np.all(out[:, 13] == 250)
    rest = np.ones(x.shape[1:], bool)
    rest[13] = False
    np.testing.assert_array_equal(out[:, rest], x[:, rest])


# --- stuck, scaled, offset, dropout ---------------------------------------------------------------


def test_stuck_sets_count_features_to_observed_min_or_max():
    x = _table(n=60)
    suite = build_risky_suite({"x": x}, seed=4, categories=["stuck"], max_per_category=25)
    lo, hi = x.min(axis=0), x.max(axis=0)  # full data, not the subsample
    for severity, count in zip((1, 2, 3), (1, 2, 4)):
        out, src = _cell(suite, "stuck", severity)
        changed = out != x[src]
        # a position may already hold its min or max; never more than count change
        assert np.all(changed.sum(axis=1) <= count) and changed.any()
        rows, cols = np.nonzero(changed)
        assert np.all((out[rows, cols] == lo[cols]) | (out[rows, cols] == hi[cols]))
        at_end = (out == lo) | (out == hi)
        assert np.all(at_end.sum(axis=1) >= count)
    high = (_cell(suite, "stuck", 3)[0] == hi).sum()
    low = (_cell(suite, "stuck", 3)[0] == lo).sum()
    assert high > 10 and low > 10  # both ends are used


def test_scaled_multiplies_exactly_one_feature_per_sample():
    x = _table()
    suite = build_risky_suite({"x": x}, seed=1, categories=["scaled"], max_per_category=None)
    for severity, factor in zip((1, 2, 3), (10, 100, 1000)):
        out = _cell(suite, "scaled", severity)[0]
        changed = out != x
        assert np.all(changed.sum(axis=1) == 1)
        np.testing.assert_allclose(out[changed], x[changed] * factor)
    # the feature is drawn per sample
    assert len(set(np.nonzero(_cell(suite, "scaled", 1)[0] != x)[1])) > 1


def test_offset_shifts_one_feature_by_its_observed_span():
    x = _table(n=50)
    suite = build_risky_suite({"x": x}, seed=3, categories=["offset"], max_per_category=30)
    span = x.max(axis=0) - x.min(axis=0)
    signs = set()
    for severity, level in zip((1, 2, 3), (0.5, 1.0, 2.0)):
        out, src = _cell(suite, "offset", severity)
        diff = out - x[src]
        rows, cols = np.nonzero(diff)
        assert np.array_equal(rows, np.arange(len(src)))
        np.testing.assert_allclose(np.abs(diff[rows, cols]), level * span[cols])
        signs |= set(np.sign(diff[rows, cols]))
    assert signs == {-1.0, 1.0}


# features set per sample at 10/25/50 %: rounded, at least one (3 features: 0.3 → 1, 1.5 → 2)
DROPOUT_COUNTS = {3: (1, 1, 2), 12: (1, 3, 6), 40: (4, 10, 20)}


@pytest.mark.parametrize("family", ["dropout-zero", "dropout-mean"])
@pytest.mark.parametrize("features", [3, 12, 40])
def test_dropout_fraction_and_values(family, features):
    rng = np.random.default_rng(features)
    x = 1.0 + rng.random((50, features))
    suite = build_risky_suite({"x": x}, seed=5, categories=[family], max_per_category=20)
    mean = x.mean(axis=0)  # full data
    for severity, fraction in zip((1, 2, 3), (0.1, 0.25, 0.5)):
        out, src = _cell(suite, family, severity)
        expected = DROPOUT_COUNTS[features][severity - 1]
        changed = out != x[src]
        assert np.all(changed.sum(axis=1) == expected), (severity, changed.sum(axis=1))
        rows, cols = np.nonzero(changed)
        target = np.zeros_like(cols, dtype=float) if family == "dropout-zero" else mean[cols]
        np.testing.assert_allclose(out[rows, cols], target)


def test_sensor_families_are_graded():
    x = _table(n=80)
    suite = build_risky_suite({"x": x}, seed=0, categories=SENSOR_FAMILIES, max_per_category=None)
    for family in SENSOR_FAMILIES:
        dist = [np.abs(_cell(suite, family, s)[0] - x).mean() for s in (1, 2, 3)]
        assert dist[0] < dist[1] < dist[2], (family, dist)


# --- determinism and dtypes -----------------------------------------------------------------------


def test_seeded_like_the_other_families():
    x = _table(n=30)
    a = build_risky_suite({"x": x}, seed=7, categories=SENSOR_FAMILIES)
    b = build_risky_suite({"x": x}, seed=7, categories=SENSOR_FAMILIES)
    c = build_risky_suite({"x": x}, seed=8, categories=SENSOR_FAMILIES)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for family in ("stuck", "scaled", "offset", "dropout-zero", "dropout-mean"):
        mask = a["category"] == family
        assert not np.array_equal(a["x"][mask], c["x"][mask]), family
    sentinel = a["category"] == "sentinel"
    np.testing.assert_array_equal(a["x"][sentinel], c["x"][sentinel])
    # generator from [seed, CATEGORIES.index(category), severity]
    from edgeq.inputs.risky.families import FAMILIES as registry
    from edgeq.inputs.risky.observed import DataStats

    rng = np.random.default_rng([7, CATEGORIES.index("stuck"), 2])
    direct = registry["stuck"].transform(x.astype(np.float64), 2, DataStats(x, "global"), rng)
    np.testing.assert_array_equal(_cell(a, "stuck", 2)[0], direct)
    # selecting families never changes the others
    alone = build_risky_suite({"x": x}, seed=7, categories=["offset"])
    np.testing.assert_array_equal(alone["x"][alone["category"] == "offset"], a["x"][a["category"] == "offset"])


def test_uint8_features_keep_dtype_and_clip():
    rng = np.random.default_rng(6)
    x = rng.integers(10, 200, size=(20, 108)).astype(np.uint8)
    suite = build_risky_suite({"x": x}, seed=1, categories=SENSOR_FAMILIES)
    assert suite["x"].dtype == np.uint8
    scaled = _cell(suite, "scaled", 3)[0].reshape(20, -1)
    assert np.all((scaled == 255).sum(axis=1) >= 1)  # ×1000 saturates at the dtype's max
    mean = x.reshape(20, -1).mean(axis=0)
    out = _cell(suite, "dropout-mean", 1)[0].reshape(20, -1).astype(int)
    changed = out != x.reshape(20, -1)
    np.testing.assert_array_equal(out[changed], np.rint(mean[np.nonzero(changed)[1]]))


def test_float16_keeps_dtype_and_stays_finite():
    x = (np.random.default_rng(7).normal(size=(30, 5)) * 300).astype(np.float16)
    x[3, 1] = -999
    suite = build_risky_suite({"x": x}, categories=SENSOR_FAMILIES, max_per_category=None)
    assert suite["x"].dtype == np.float16
    assert np.all(np.isfinite(suite["x"]))
    assert np.all(_cell(suite, "sentinel", 1)[0][:, 1] == np.float16(-999))
    big = np.abs(_cell(suite, "scaled", 3)[0].astype(np.float64)).max()
    assert big == np.finfo(np.float16).max  # clipped to the largest finite float16, not inf


# --- auto range mode ------------------------------------------------------------------------------


def test_auto_keeps_digits_global(example_data):
    with np.load(example_data) as data:
        x = data["x"]
    assert x.shape[1:] == (64,) and x.min() >= 0 and x.max() <= 16
    mode, reason = choose_range_mode({"x": x})["x"]
    assert mode == "global"
    assert "share one scale" in reason and "1.07" in reason


def test_auto_makes_tables_with_unlike_features_per_feature(tabular):
    rng = np.random.default_rng(8)
    standard = rng.normal(size=(500, 8))
    thousands = np.c_[standard, 3000 + 500 * rng.normal(size=500)]
    offsets = standard + np.arange(8) * 20.0  # same spans, medians far apart
    found = choose_range_mode({"missing": tabular.x, "thousands": thousands, "offsets": offsets,
                               "standard": standard, "image": rng.random((20, 4, 4, 3)),
                               "few": thousands[:5], "single": standard[:, :1]})
    for name in ("missing", "thousands", "offsets"):
        mode, reason = found[name]
        assert mode == "channel", name
        assert reason.startswith("tabular: per-feature ranges"), reason
    assert found["standard"][0] == "global" and "share one scale" in found["standard"][1]
    assert found["image"] == ("global", found["image"][1]) and "not a row of features" in found["image"][1]
    assert found["few"][0] == "global" and "too few" in found["few"][1]
    assert found["single"][0] == "global" and "one feature" in found["single"][1]


def test_auto_is_the_default_and_reported_per_array(tabular):
    img = np.random.default_rng(9).random((len(tabular.x), 3, 3, 1))
    suite = build_risky_suite({"table": tabular.x, "img": img}, tabular.y, categories=["brightness+"],
                              max_per_category=50)
    assert suite.range_modes["table"][0] == "channel" and suite.range_modes["img"][0] == "global"
    assert suite.families == ["brightness+"]
    assert set(suite.arrays) == {"table", "img"} and set(suite.tags) == {"y", "category", "severity", "source_index"}
    # per-feature: each feature is shifted by a fraction of its OWN range
    vr = value_range(tabular.x, "channel")
    out, src = (suite["table"][suite["severity"] == 1], suite["source_index"][suite["severity"] == 1])
    expected = np.clip(tabular.x[src].astype(np.float64) + 0.1 * vr.span, vr.lo, vr.hi).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    explicit = build_risky_suite({"table": tabular.x}, range_mode="global", categories=["clean"])
    assert explicit.range_modes["table"] == ("global", "one range for the whole array, as requested")
    flat = build_risky_suite({"v": np.arange(12.0)}, range_mode="channel", categories=["clean"])
    assert flat.range_modes["v"][0] == "global"


def test_evaluate_build_suite_keeps_the_range_modes(tabular, tmp_path):
    from edgeq.evaluate import EvaluateOptions
    from edgeq.suites import build_suite

    data = InputSet(arrays={"x": tabular.x}, y=tabular.y)
    path = build_suite(EvaluateOptions(outdir=tmp_path, max_per_category=10), data)
    assert data.extra["range_modes"]["x"][0] == "channel"
    loaded = load_inputset(path)
    assert set(loaded.arrays) == {"x"} and loaded.n == 10 * (1 + 3 * (len(TABULAR) - 1)) + loaded_boundary(loaded)


# --- category names -------------------------------------------------------------------------------


def test_long_category_names_survive_a_round_trip(tmp_path):
    names = ["clean", "a-category-name-longer-than-sixteen", "dropout-mean"]
    category = np.repeat(category_array(names), 2)
    assert category.dtype == np.dtype(f"<U{len(names[1])}")
    saved = InputSet(arrays={"x": np.zeros((6, 2), np.float32)}, category=category).save(tmp_path / "s.npz")
    loaded = load_inputset(saved)
    assert list(loaded.category) == [n for n in names for _ in range(2)]
    suite = build_risky_suite({"x": _table()}, categories=["clean", "dropout-zero", "dropout-mean"])
    assert suite["category"].dtype == np.dtype("<U12") and "dropout-mean" in set(suite["category"])


# --- the tabular sentinel failure, end to end with ai_edge_litert --------------------------------


def _predict(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()  # hybrid kernels quantize each row alone: one batch = per-sample runs
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).argmax(axis=1)


def _cell_drops(conversion, x, y):
    suite = build_risky_suite({"x": x}, y, seed=0)
    pf, pq = _predict(conversion.float_path, suite["x"]), _predict(conversion.quant_path, suite["x"])
    cells = {}
    for category in dict.fromkeys(suite["category"]):
        for severity in sorted(set(suite["severity"][suite["category"] == category])):
            mask = (suite["category"] == category) & (suite["severity"] == severity)
            f, q = np.mean(pf[mask] == suite["y"][mask]), np.mean(pq[mask] == suite["y"][mask])
            cells[(str(category), int(severity))] = (float(f), float(q), float(f - q))
    return suite, cells


@pytest.fixture(scope="module")
def tabular_models(tabular, tabular_keras, tmp_path_factory):
    from edgeq.models.convert import convert_model

    out = tmp_path_factory.mktemp("tabular")
    found = {}
    for name, x in (("sentinel", tabular.x), ("twin", tabular.x_twin)):
        keras_path = tabular_keras[name][0]
        conversion = convert_model(keras_path, out / name)
        assert conversion.card["weights"]["quantized"] >= 2  # both big Dense layers are int8
        found[name] = _cell_drops(conversion, x, tabular.y)
    return found


def test_sentinel_code_collapses_the_quantized_model_only(tabular_models):
    suite, cells = tabular_models["sentinel"]
    assert suite.range_modes["x"][0] == "channel"
    float_acc, quant_acc, drop = cells[("sentinel", 1)]
    assert float_acc >= 0.8, cells[("sentinel", 1)]  # the float model learned to ignore -999
    assert drop >= 0.10, cells[("sentinel", 1)]
    assert max(cells[("sentinel", s)][2] for s in (1, 2, 3)) >= 0.10


def test_normal_twin_is_robust_in_every_cell(tabular_models):
    suite, cells = tabular_models["twin"]
    assert len(cells) == 1 + 3 * (len(TABULAR) - 1) + len({c for c in cells if c[0] == "boundary"})
    bad = {cell: v for cell, v in cells.items() if v[2] >= 0.02}
    assert not bad, bad


# --- sensor windows (time × channels): a fault hits one channel for the whole window -----------------------


def test_sensor_faults_on_a_window_hit_whole_channels():
    rng = np.random.default_rng(11)
    n, steps, channels = 30, 64, 6
    x = rng.normal(size=(n, steps, channels)) * np.array([1, 1, 1, 50, 50, 50]) + np.array([0, 0, 9.8, 0, 0, 0])
    x[4, 10, 5] = -999.0  # a "missing" code one gyro channel reported once
    plan_kinds = build_risky_suite({"x": x}, max_per_category=n, categories=["clean"]).layouts["x"]
    assert "sensor-window" in plan_kinds
    suite = build_risky_suite({"x": x}, seed=2, max_per_category=n, categories=SENSOR_FAMILIES)
    sentinel = _cell(suite, "sentinel", 1)[0]
    np.testing.assert_array_equal(sentinel[..., 5], -999.0)  # the channel, at every step of every window
    np.testing.assert_array_equal(sentinel[..., :5], x[..., :5])
    lo, hi = x.reshape(-1, channels).min(axis=0), x.reshape(-1, channels).max(axis=0)
    for severity, count in zip((1, 2, 3), (1, 2, 4)):
        stuck, src = _cell(suite, "stuck", severity)
        changed = np.any(stuck != x[src], axis=1)  # (windows, channels)
        assert np.all(changed.sum(axis=1) == count)
        for w, c in zip(*np.nonzero(changed)):
            assert np.all(stuck[w, :, c] == stuck[w, 0, c]) and stuck[w, 0, c] in (lo[c], hi[c])
    scaled, src = _cell(suite, "scaled", 1)
    ratio = np.divide(scaled, x[src], out=np.ones_like(scaled), where=x[src] != 0)
    assert np.all(np.isclose(ratio, 10.0).all(axis=1).sum(axis=1) == 1)  # one channel ×10 for the whole window
    dead, src = _cell(suite, "dropout-zero", 3)
    assert np.all((dead == 0).all(axis=1).sum(axis=1) == 3)  # half of 6 channels dead across the window
