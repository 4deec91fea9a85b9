"""Tests for the basic risky input suite (edgeq.inputs.risky)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.errors import InputSetError
from edgeq.inputs.risky import ALL_CATEGORIES, CATEGORIES, SEVERITIES, build_risky_suite, describe_categories
from edgeq.inputs.risky.families import FAMILIES as REGISTRY

IMAGE = (6, 5, 3)  # the sample shape of ``_images``: sensor faults do not apply to it (pixels are no features)


def families_for(*shapes) -> list[str]:
    return [c for c in CATEGORIES if c != "clean" and any(REGISTRY[c].applies_to_shape(s) for s in shapes)]


def cells_for(*shapes) -> list[tuple[str, int]]:
    return [(c, s) for c in families_for(*shapes) for s in REGISTRY[c].severities]


FAMILIES = families_for(IMAGE)
GRADED = [c for c in FAMILIES if len(REGISTRY[c].levels) == 3]  # the preprocessing mistakes have one level
# families that leave the data range on purpose (an outlier, a unit change, a calibration
# drift, a dead channel reading 0 below the data, a preprocessing mistake); every other family stays inside it
MISTAKES = ("value-scale", "normalization", "channel-order")
LEAVE_RANGE = ("outlier", "scaled", "offset", "dropout-zero", *MISTAKES)
IN_RANGE = [c for c in CATEGORIES if c not in LEAVE_RANGE]


def present(suite, categories) -> list[str]:
    return [c for c in categories if np.any(suite["category"] == c)]
# families anchored at the value 0 (a unit change multiplies around it, a dead channel reads it),
# so they do not move with an affine rescaling of the data
ZERO_ANCHORED = ("scaled", "dropout-zero")


def _images(n=12, shape=(6, 5, 3), seed=1):
    """Float data in [0.2, 0.7] so neither range end is 0 or 1 by accident."""
    rng = np.random.default_rng(seed)
    return (0.2 + 0.5 * rng.random((n, *shape))).astype(np.float64)


def _rows(suite, category, severity):
    return (suite["category"] == category) & (suite["severity"] == severity)


@pytest.fixture(scope="module")
def data():
    x = _images()
    y = np.arange(len(x)) % 3
    return x, y, build_risky_suite({"x": x}, y, seed=3)


def test_counts_order_and_metadata(data):
    x, y, suite = data
    n = len(x)
    cells = cells_for(IMAGE)
    total = n * (1 + len(cells))
    for key in ("x", "y", "category", "severity", "source_index"):
        assert len(suite[key]) == total, key
    assert suite["category"].dtype.kind == "U"
    assert suite["severity"].dtype == np.int32
    assert suite["source_index"].dtype == np.int64
    assert suite["y"].dtype == np.int64
    assert np.count_nonzero(suite["category"] == "clean") == n
    assert set(suite["severity"][suite["category"] == "clean"]) == {0}
    for cat, sev in cells:
        assert np.count_nonzero(_rows(suite, cat, sev)) == n, (cat, sev)
    blocks = suite["category"][::n]
    assert list(blocks) == ["clean"] + [c for c, _ in cells]
    assert list(suite["severity"][::n]) == [0] + [s for _, s in cells]
    np.testing.assert_array_equal(suite["y"], y[suite["source_index"]])


def test_clean_is_exact_input(data):
    x, _, suite = data
    clean = suite["category"] == "clean"
    np.testing.assert_array_equal(suite["x"][clean], x)
    np.testing.assert_array_equal(suite["source_index"][clean], np.arange(len(x)))


def test_every_family_changes_data(data):
    x, _, suite = data
    for cat, sev in cells_for(IMAGE):
        assert not np.array_equal(suite["x"][_rows(suite, cat, sev)], x), (cat, sev)


def test_stays_in_range_except_outlier(data):
    x, _, suite = data
    lo, hi = x.min(), x.max()
    for cat in present(suite, IN_RANGE):
        sel = suite["x"][suite["category"] == cat]
        assert sel.min() >= lo and sel.max() <= hi, cat


def test_outlier_exceeds_in_exactly_one_element(data):
    x, _, suite = data
    lo, hi = x.min(), x.max()
    span = hi - lo
    for sev, mult in zip((1, 2, 3), SEVERITIES["outlier"]):
        out = suite["x"][_rows(suite, "outlier", sev)].reshape(len(x), -1)
        over = out > hi
        assert np.all(over.sum(axis=1) == 1), sev
        np.testing.assert_allclose(out[over], hi + mult * span)
        # everything else is untouched
        np.testing.assert_array_equal(out[~over], x.reshape(len(x), -1)[~over])


def test_severities_are_graded(data):
    x, _, suite = data
    for cat in GRADED:
        dist = [np.abs(suite["x"][_rows(suite, cat, s)] - x).mean() for s in (1, 2, 3)]
        assert dist[0] < dist[1] < dist[2], (cat, dist)


def test_impulse_sets_fraction_to_range_ends(data):
    x, _, suite = data
    lo, hi = x.min(), x.max()
    size = x[0].size
    for sev, frac in zip((1, 2, 3), SEVERITIES["impulse"]):
        out = suite["x"][_rows(suite, "impulse", sev)].reshape(len(x), -1)
        changed = out != x.reshape(len(x), -1)
        assert np.all(np.isin(out[changed], [lo, hi]))
        expected = max(1, round(frac * size))
        # a position may already hold lo/hi; it must never be more than the count
        assert np.all(changed.sum(axis=1) <= expected)
        assert np.all(changed.sum(axis=1) >= 1)
        assert np.all(np.isin(out, [lo, hi]).sum(axis=1) >= expected)


def test_brightness_and_contrast_values(data):
    x, _, suite = data
    lo, hi = x.min(), x.max()
    span = hi - lo
    s = SEVERITIES["brightness+"][1]
    np.testing.assert_allclose(suite["x"][_rows(suite, "brightness+", 2)], np.clip(x + s * span, lo, hi))
    s = SEVERITIES["brightness-"][0]
    np.testing.assert_allclose(suite["x"][_rows(suite, "brightness-", 1)], np.clip(x - s * span, lo, hi))
    k = SEVERITIES["contrast-"][2]
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(suite["x"][_rows(suite, "contrast-", 3)], np.clip(m + k * (x - m), lo, hi))


def test_noise_std_scales_with_severity(data):
    x, _, suite = data
    span = x.max() - x.min()
    for sev, sigma in zip((1, 2), SEVERITIES["noise"][:2]):
        diff = suite["x"][_rows(suite, "noise", sev)] - x
        # clipping shrinks the spread a little; never enlarges it
        assert 0.6 * sigma * span < diff.std() <= 1.05 * sigma * span


def test_range_scales_with_data():
    x = _images()
    a = build_risky_suite({"x": x}, seed=5)
    b = build_risky_suite({"x": x * 255.0 + 10.0}, seed=5)
    np.testing.assert_array_equal(a["category"], b["category"])
    keep = ~np.isin(a["category"], ZERO_ANCHORED + MISTAKES)  # a mistake's direction depends on the data's scale
    np.testing.assert_allclose((b["x"][keep] - 10.0) / 255.0, a["x"][keep], rtol=1e-9, atol=1e-9)


def test_float32_keeps_dtype_and_range():
    x = _images().astype(np.float32)
    suite = build_risky_suite({"x": x}, seed=0)
    assert suite["x"].dtype == np.float32
    keep = ~np.isin(suite["category"], LEAVE_RANGE)
    assert suite["x"][keep].min() >= x.min() and suite["x"][keep].max() <= x.max()


def test_float16_outlier_stays_finite():
    x = np.array([[0.0, 60000.0], [100.0, 2.0]], dtype=np.float16)
    suite = build_risky_suite({"x": x}, categories=["outlier"])
    assert suite["x"].dtype == np.float16
    assert np.all(np.isfinite(suite["x"]))


def test_uint8_stays_uint8_and_in_range():
    rng = np.random.default_rng(2)
    x = rng.integers(20, 201, size=(10, 8, 8, 3)).astype(np.uint8)
    lo, hi = int(x.min()), int(x.max())
    suite = build_risky_suite({"x": x}, seed=1)
    assert suite["x"].dtype == np.uint8
    keep = ~np.isin(suite["category"], LEAVE_RANGE)
    assert suite["x"][keep].min() >= lo and suite["x"][keep].max() <= hi
    # the outlier saturates at the dtype's max, still beyond the data's range
    out = suite["x"][suite["category"] == "outlier"].reshape(30, -1).astype(int)
    assert np.all((out > hi).sum(axis=1) == 1)
    assert out.max() == 255
    np.testing.assert_array_equal(suite["x"][suite["category"] == "clean"], x)


def test_int8_rounds_not_truncates():
    x = np.array([[-100, 0, 1, 100], [-50, 10, 20, 30]], dtype=np.int8)
    suite = build_risky_suite({"x": x}, categories=["brightness+"])
    assert suite["x"].dtype == np.int8
    span = 200
    expected = np.clip(np.rint(x.astype(float) + 0.25 * span), -100, 100)
    np.testing.assert_array_equal(suite["x"][suite["severity"] == 2], expected)


def test_reproducible_and_seed_dependent():
    x = _images()
    a = build_risky_suite({"x": x}, seed=7)
    b = build_risky_suite({"x": x}, seed=7)
    c = build_risky_suite({"x": x}, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    noise = a["category"] == "noise"
    assert not np.array_equal(a["x"][noise], c["x"][noise])
    # deterministic families do not depend on the seed
    bright = a["category"] == "brightness+"
    np.testing.assert_array_equal(a["x"][bright], c["x"][bright])


def test_selecting_categories_does_not_change_them():
    x = _images()
    full = build_risky_suite({"x": x}, seed=4)
    part = build_risky_suite({"x": x}, seed=4, categories=["outlier", "noise"])
    assert list(dict.fromkeys(part["category"])) == ["noise", "outlier"]
    for cat in ("noise", "outlier"):
        np.testing.assert_array_equal(part["x"][part["category"] == cat], full["x"][full["category"] == cat])


def test_subsample_shared_across_categories():
    x = _images(n=40)
    suite = build_risky_suite({"x": x}, seed=9, max_per_category=10)
    clean_idx = suite["source_index"][suite["category"] == "clean"]
    assert len(clean_idx) == 10 and np.all(np.diff(clean_idx) > 0)
    for cat, sev in cells_for(IMAGE):
        np.testing.assert_array_equal(suite["source_index"][_rows(suite, cat, sev)], clean_idx)
    np.testing.assert_array_equal(suite["x"][suite["category"] == "clean"], x[clean_idx])
    assert len(suite["x"]) == 10 * (1 + len(cells_for(IMAGE)))
    other = build_risky_suite({"x": x}, seed=10, max_per_category=10)
    assert not np.array_equal(other["source_index"][:10], clean_idx)
    unlimited = build_risky_suite({"x": x}, max_per_category=None, categories=["clean"])
    assert len(unlimited["x"]) == 40


def test_channel_range_mode_uses_per_channel_ranges():
    rng = np.random.default_rng(3)
    # channel 0 in [0, 1], channel 1 in [100, 300]
    x = np.stack([rng.random((8, 4, 4)), 100 + 200 * rng.random((8, 4, 4))], axis=-1)
    lo, hi = x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2))
    span = hi - lo
    ch = build_risky_suite({"x": x}, range_mode="channel", seed=0)
    gl = build_risky_suite({"x": x}, range_mode="global", seed=0)
    for cat in present(ch, IN_RANGE):
        sel = ch["x"][ch["category"] == cat]
        for c in range(2):
            assert sel[..., c].min() >= lo[c] and sel[..., c].max() <= hi[c], (cat, c)
    # the shift is a fraction of each channel's own range
    s = SEVERITIES["brightness+"][0]
    np.testing.assert_allclose(ch["x"][_rows(ch, "brightness+", 1)], np.clip(x + s * span, lo, hi))
    # global mode lets channel 0 reach values only channel 1 has
    assert gl["x"][gl["category"] == "noise"][..., 0].max() > hi[0]
    out = ch["x"][_rows(ch, "outlier", 1)].reshape(8, -1, 2)
    over = out > hi
    assert np.all(over.sum(axis=(1, 2)) == 1)
    np.testing.assert_allclose(out[over], (hi + span)[np.nonzero(over)[2]])


def test_constant_data_still_moves():
    x = np.full((3, 4), 5.0)
    suite = build_risky_suite({"x": x}, categories=["brightness+", "outlier"])
    # R = max(|hi|, 1) = 5; brightness clips back to the (constant) range
    np.testing.assert_array_equal(suite["x"][suite["category"] == "brightness+"], 5.0)
    out = suite["x"][_rows(suite, "outlier", 1)]
    assert np.all((out == 10.0).sum(axis=1) == 1)


def test_multiple_arrays_transformed_together():
    x1 = _images(n=6)
    x2 = np.random.default_rng(0).integers(0, 50, size=(6, 7)).astype(np.int16)
    suite = build_risky_suite({"img": x1, "meta": x2}, np.zeros(6, int), seed=1)
    total = 6 * (1 + len(cells_for(x1.shape[1:], x2.shape[1:])))  # sensor faults for the features, not the pixels
    assert suite["img"].shape == (total, *x1.shape[1:])
    assert suite["meta"].shape == (total, 7) and suite["meta"].dtype == np.int16
    sentinel = suite["category"] == "sentinel"
    np.testing.assert_array_equal(suite["img"][sentinel], np.tile(x1, (3, 1, 1, 1)))
    np.testing.assert_array_equal(suite["meta"][suite["category"] == "clean"], x2)
    assert np.all((suite["meta"][_rows(suite, "outlier", 3)] > x2.max()).sum(axis=1) == 1)


def test_describe_categories_covers_all():
    desc = describe_categories()
    assert set(desc) == set(ALL_CATEGORIES)
    assert all(isinstance(v, str) and v and "\n" not in v for v in desc.values())
    assert "25%" in desc["brightness+"]


@pytest.mark.parametrize(
    "arrays, kwargs, array_name, words",
    [
        ({}, {}, None, "no input"),
        ({"x": np.zeros((3, 2)), "z": np.zeros((4, 2))}, {}, "z", "samples"),
        ({"x": np.zeros((0, 2))}, {}, "x", "no samples"),
        ({"x": np.array([["a", "b"]])}, {}, "x", "numeric"),
        ({"x": np.zeros((2, 2), dtype=bool)}, {}, "x", "numeric"),
        ({"x": np.array([[1.0, np.nan]])}, {}, "x", "non-finite"),
        ({"x": np.array([[1.0, np.inf]], dtype=np.float32)}, {}, "x", "non-finite"),
        ({"x": np.zeros((2, 2))}, {"categories": ["clean", "fog"]}, "category", "fog"),
        ({"x": np.zeros((2, 2))}, {"range_mode": "pixel"}, None, "range_mode"),
        ({"x": np.zeros((2, 2))}, {"y": np.zeros(3, int)}, "y", "labels"),
        ({"x": np.zeros((2, 2))}, {"y": np.array([0.5, 1.0])}, "y", "integers"),
        ({"y": np.zeros((2, 2))}, {}, "y", "reserved"),
        ({"x": np.zeros((2, 2))}, {"max_per_category": 0}, None, "max_per_category"),
        ({"x": np.zeros((2, 2))}, {"seed": -1}, None, "seed"),
    ],
)
def test_validation_errors(arrays, kwargs, array_name, words):
    with pytest.raises(InputSetError) as info:
        build_risky_suite(arrays, **kwargs)
    assert info.value.array == array_name
    assert words in str(info.value)
    if array_name:
        assert f"[{array_name}]" in str(info.value)


@pytest.mark.parametrize("shape", [(64,), (32, 32, 3), (224, 224, 3)])
def test_a_plan_makes_any_rows_exactly_as_the_whole_suite_holds_them(shape):
    """``SuitePlan.take`` (what a round of adaptive sampling runs) gives, for any rows, the bytes a whole build
    writes there, with their tags: tabular blocks, image blocks and 224×224×3 rows made one at a time."""
    from edgeq.inputs.risky import plan_risky_suite, transform_rows

    rng = np.random.default_rng(7)
    x = rng.random((12,) + shape).astype(np.float32)
    y = rng.integers(0, 3, 12)
    whole = build_risky_suite({"x": x}, y, max_per_category=8)
    plan = plan_risky_suite({"x": x}, y, max_per_category=8)
    rows = np.sort(rng.choice(plan.n, size=60, replace=False))
    assert np.array_equal(plan.take("x", rows), whole["x"][rows])
    for tag, values in plan.tags(rows).items():
        assert np.array_equal(values, whole[tag][rows]), tag
    assert (transform_rows(shape) == 1) == (shape == (224, 224, 3))


def test_rounds_of_a_plan_transform_each_block_once_and_get_the_same_rows(monkeypatch):
    """Rounds take a few rows of every cell at a time: a cell's block (500 tabular samples) is transformed once,
    kept read-only between rounds, and the rows are the whole suite's; a block over the plan's limit is not kept."""
    from edgeq.inputs.risky import SuitePlan, plan_risky_suite
    from edgeq.inputs.risky.blocks import MadeBlocks

    rng = np.random.default_rng(3)
    x = rng.random((500, 64)).astype(np.float32)
    whole = build_risky_suite({"x": x}, None, max_per_category=500)
    plan = plan_risky_suite({"x": x}, None, max_per_category=500)
    made = []
    real = SuitePlan._make_block
    monkeypatch.setattr(SuitePlan, "_make_block", lambda self, *key: made.append(key) or real(self, *key))
    order = rng.permutation(plan.n)
    for lo, hi in ((0, 400), (400, 1200), (1200, plan.n)):  # three rounds
        rows = np.sort(order[lo:hi])
        assert np.array_equal(plan.take("x", rows), whole["x"][rows])
    assert len(made) == len(set(made)) == len(plan.cells)  # one block per cell, made once
    kept = MadeBlocks(limit=100)
    small = kept.get("a", lambda: np.zeros(10, np.int8))
    assert kept.get("a", lambda: None) is small and not small.flags.writeable
    kept.get("b", lambda: np.zeros(101, np.int8))
    assert kept.get("b", lambda: np.ones(101, np.int8))[0] == 1  # too large to keep: made again
