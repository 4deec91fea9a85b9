"""The image shift families (families/image.py) and image layout detection.

Each family on smooth synthetic colour images: shape and dtype kept, the same draws for
the same generator, graded by a metric of what the family does, HWC and CHW giving
transposed results, values inside the data's range. Then the suite: image categories on
image data with the detected layout in its notes, left out of tables and 2-D grids with
a note, colour cast left out of grey images; and ``edgeq inputs risky`` on a small image
classifier (built here) with ``--model``, which adds the boundary category.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.inputs.risky import build_risky_suite, write_risky_suite
from edgeq.inputs.risky.families import FAMILIES, image_layout, input_kind
from edgeq.inputs.risky.families.image import _DCT, jpeg, quality_table, _LUMA
from edgeq.inputs.risky.observed import DataStats

IMAGE_FAMILIES = ["blur", "jpeg", "pixelate", "haze", "colour-cast", "gamma", "occlusion", "translate"]


def smooth_images(n=16, size=(24, 32), channels=3, seed=0, lo=10.0, hi=200.0):
    """Colour images of a few smooth blobs and edges in [lo, hi] (so a change shows everywhere)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    out = np.empty((n, *size, channels))
    for i in range(n):
        for c in range(channels):
            fy, fx, py, px = rng.uniform(1, 6, 2).tolist() + rng.uniform(0, 6, 2).tolist()
            img = np.sin(fy * np.pi * yy + py) * np.cos(fx * np.pi * xx + px)
            img += (xx > rng.uniform(0.2, 0.8)) * rng.uniform(-1, 1)  # one hard edge
            out[i, ..., c] = img
    out = (out - out.min()) / (out.max() - out.min())
    return lo + (hi - lo) * out


def run(name, x, level=None, seed=3, mode="global"):
    family = FAMILIES[name]
    return family.transform(x, family.levels[1] if level is None else level, DataStats(x, mode),
                            np.random.default_rng(seed))


def chw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


# --- layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, order, hw, channels", [
    ((32, 32, 3), "HWC", (32, 32), 3), ((3, 224, 224), "CHW", (224, 224), 3),
    ((28, 28, 1), "HWC", (28, 28), 1), ((1, 28, 28), "CHW", (28, 28), 1),
    ((64, 48, 4), "HWC", (64, 48), 4), ((4, 4, 3), "HWC", (4, 4), 3), ((3, 4, 4), "CHW", (4, 4), 3),
])
def test_layout_from_the_sample_shape(shape, order, hw, channels):
    layout = image_layout(shape)
    assert (layout.order, (layout.height, layout.width), layout.channels) == (order, hw, channels)
    assert layout.colour == (channels >= 3)
    assert ("colour" if channels >= 3 else "grey") in layout.describe() and order in layout.describe()
    # the rule is symmetric: the transposed sample is read as the transposed layout
    other = image_layout(shape[1:] + shape[:1] if order == "CHW" else shape[-1:] + shape[:-1])
    assert other.order != order and (other.height, other.width, other.channels) == (*hw, channels)


@pytest.mark.parametrize("shape", [(64,), (28, 28), (16, 16, 16), (2, 3, 5, 7)])
def test_no_layout_for_other_kinds(shape):
    assert image_layout(shape) is None and input_kind(shape) != "image"


# --- each family ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_shape_determinism_and_range(name):
    x = smooth_images()
    a, b = run(name, x), run(name, x)
    assert a.shape == x.shape and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x)
    assert a.min() >= x.min() and a.max() <= x.max(), name
    for level in FAMILIES[name].levels:
        out = run(name, x, level)
        assert out.min() >= x.min() and out.max() <= x.max(), (name, level)


def _high_frequency(x):
    return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()


def _metric(name, x, out):
    """How far the family moved the images, in the family's own terms."""
    if name == "blur":  # detail removed
        return _high_frequency(x) - _high_frequency(out)
    if name == "haze":  # contrast lost
        return 1 - out.std(axis=(1, 2, 3)).mean() / x.std(axis=(1, 2, 3)).mean()
    if name == "colour-cast":  # the channels' means moved apart
        return np.abs((out - x).mean(axis=(1, 2))).mean()
    if name == "occlusion":  # pixels covered
        return np.mean(np.any(out != x, axis=-1))
    return np.abs(out - x).mean()


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_severities_are_graded(name):
    x = smooth_images()
    scores = [_metric(name, x, run(name, x, level)) for level in FAMILIES[name].levels]
    assert 0 < scores[0] < scores[1] < scores[2], (name, scores)


@pytest.mark.parametrize("name, channels", [(name, channels) for name in IMAGE_FAMILIES for channels in (3, 1)
                                             if not (name == "colour-cast" and channels == 1)])  # cast needs colour
def test_chw_gives_the_transposed_result(name, channels):
    x = smooth_images(channels=channels)
    hwc, as_chw = run(name, x), run(name, chw(x))
    np.testing.assert_allclose(as_chw, chw(hwc), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_per_channel_ranges_are_kept(name):
    x = smooth_images(n=8)
    x[..., 1] = x[..., 1] * 0.1 + 500.0  # a channel on a scale of its own
    out = run(name, x, mode="channel")
    lo, hi = x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2))
    assert np.all(out.min(axis=(0, 1, 2)) >= lo) and np.all(out.max(axis=(0, 1, 2)) <= hi), name


def test_family_specifics():
    x = smooth_images(n=8)
    lo, span = x.min(), x.max() - x.min()
    # haze is an exact blend towards lo + 0.75 R
    np.testing.assert_allclose(run("haze", x, 0.4), 0.6 * x + 0.4 * (lo + 0.75 * span))
    # gamma keeps the range ends where they are
    ends = np.zeros((3, 4, 4, 3))
    ends[1], ends[2] = 1.0, 0.5
    out = run("gamma", ends, 2.5)
    np.testing.assert_allclose(out[:2], ends[:2])
    assert np.allclose(out[2], 0.5 ** 2.5) or np.allclose(out[2], 0.5 ** 0.4)
    # occlusion: one rectangle of about the area asked for, one grey level
    out = run("occlusion", x, 0.15)
    for a, b in zip(out, x):
        changed = np.any(a != b, axis=-1)
        rows, cols = np.nonzero(changed)
        assert changed.sum() <= 0.15 * 24 * 32 * 1.3
        assert len(np.unique(a[rows.min():rows.max() + 1, cols.min():cols.max() + 1])) == 1
    # colour cast: every pixel's channels move by the same per-sample shift, zero mean over R, G, B,
    # the largest 10 % of the range (away from the range ends, so nothing clips)
    flat = np.full((4, 6, 6, 3), 100.0)
    flat[0, 0, 0], flat[0, 0, 1] = 0.0, 200.0
    out = run("colour-cast", flat, 0.1)
    shift = (out - flat)[:, 3:, 3:].reshape(4, -1, 3)
    assert np.allclose(shift, shift[:, :1]) and np.allclose(shift.sum(axis=2), 0)
    np.testing.assert_allclose(np.abs(shift[:, 0]).max(axis=1), 20.0)
    # pixelate to 25 %: 6×8 blocks of one value each
    out = run("pixelate", x, 0.25)
    assert all(len(np.unique(img[..., 0])) <= 48 for img in out)
    # translate moves the picture: on a ramp along the width, the inside moves by one constant ≤ 12 % of W
    ramp = np.broadcast_to(np.arange(32.0)[None, None, :, None], (6, 24, 32, 3)).copy()
    out = run("translate", ramp, 0.12)
    inside = (out - ramp)[:, 6:-6, 6:-6]
    assert np.allclose(inside, inside[:, :1, :1]) and np.abs(inside).max() <= 0.12 * 32 + 1e-9
    assert np.abs(inside[:, 0, 0, 0]).max() > 0


def test_jpeg_is_a_real_jpeg_quantizer():
    """The DCT is orthonormal, quality 50 is the standard table, quality 100 is nearly lossless,
    and on a grey image the result is the block DCT rounded by the table."""
    np.testing.assert_allclose(_DCT @ _DCT.T, np.eye(8), atol=1e-12)
    np.testing.assert_array_equal(quality_table(_LUMA, 50), _LUMA)
    assert quality_table(_LUMA, 100).max() == 1 and quality_table(_LUMA, 10).min() > _LUMA.min()
    x = smooth_images(n=4, size=(16, 16), channels=1, lo=0.0, hi=255.0)
    data = DataStats(x, "global")
    assert np.abs(jpeg(x, 100, data, None) - np.round(x)).max() <= 1.0
    out = jpeg(x, 25, data, None)
    table = quality_table(_LUMA, 25)
    block = np.round(x[0, :8, :8, 0]) - 128.0
    coef = np.round(_DCT @ block @ _DCT.T / table) * table
    expected = np.clip(np.round(_DCT.T @ coef @ _DCT + 128.0), 0, 255)
    np.testing.assert_allclose(out[0, :8, :8, 0], expected)


# --- the suite -----------------------------------------------------------------------------------


def test_suite_on_images_has_image_cells_and_says_the_layout():
    x = smooth_images(n=10).astype(np.float32)
    suite = build_risky_suite({"x": x}, np.arange(10) % 2, seed=1)
    cats = set(suite["category"].tolist())
    assert set(IMAGE_FAMILIES) <= cats
    assert suite.layouts["x"].startswith("read as HWC colour images (24×32×3")
    assert suite["x"].dtype == np.float32
    for name in IMAGE_FAMILIES:
        for severity in (1, 2, 3):
            rows = (suite["category"] == name) & (suite["severity"] == severity)
            assert rows.sum() == 10
    again = build_risky_suite({"x": x}, np.arange(10) % 2, seed=1)
    np.testing.assert_array_equal(suite["x"], again["x"])
    # CHW data: the same cells, transposed
    transposed = build_risky_suite({"x": chw(x)}, np.arange(10) % 2, seed=1)
    assert transposed.layouts["x"].startswith("read as CHW colour images (3×24×32")
    for name in IMAGE_FAMILIES:
        mine = transposed["x"][transposed["category"] == name]
        np.testing.assert_allclose(mine, chw(suite["x"][suite["category"] == name]), atol=1e-5)


def test_uint8_images_stay_uint8_and_in_range():
    x = np.rint(smooth_images(n=6, lo=20, hi=230)).astype(np.uint8)
    suite = build_risky_suite({"x": x}, seed=0, categories=["clean", *IMAGE_FAMILIES])
    assert suite["x"].dtype == np.uint8
    assert suite["x"].min() >= 20 and suite["x"].max() <= 230


def test_tables_grids_and_grey_images_leave_families_out_with_a_reason():
    table = build_risky_suite({"x": np.random.default_rng(0).random((20, 6))})
    for name in IMAGE_FAMILIES:
        assert table.skipped[name] == "fits none of the inputs (features)"
        assert name not in set(table["category"].tolist())
    assert table.layouts == {"x": "samples of 6 read as a row of tabular features (features, from the sample shape)"}
    grid = build_risky_suite({"x": np.random.default_rng(0).random((20, 28, 28))})
    assert all(grid.skipped[name] == "fits none of the inputs (grid)" for name in IMAGE_FAMILIES)
    assert "2-D grid (28×28)" in grid.layouts["x"] and "image families do not apply" in grid.layouts["x"]
    grey = build_risky_suite({"x": smooth_images(n=6, channels=1)})
    sensors = {"sentinel", "stuck", "scaled", "offset", "dropout-zero", "dropout-mean"}  # pixels are no features
    assert set(grey.skipped) == {"colour-cast", "channel-order", "boundary"} | sensors
    assert grey.skipped["colour-cast"].startswith("needs colour images (3 or 4 channels); the inputs are HWC grey")
    assert {"blur", "jpeg", "translate"} <= set(grey["category"].tolist())


def test_image_families_touch_only_image_arrays():
    img, meta = smooth_images(n=5), np.random.default_rng(1).random((5, 7))
    suite = build_risky_suite({"img": img, "meta": meta}, seed=2)
    blurred = suite["category"] == "blur"
    np.testing.assert_array_equal(suite["meta"][blurred], np.tile(meta, (3, 1)))
    assert not np.array_equal(suite["img"][blurred][:5], img)


def test_written_suite_equals_the_one_in_memory(tmp_path):
    x = smooth_images(n=12).astype(np.float32)
    plan = write_risky_suite(tmp_path / "s.npz", {"x": x}, seed=4)
    assert plan.layouts["x"].startswith("read as HWC colour")
    with np.load(tmp_path / "s.npz") as written:
        here = build_risky_suite({"x": x}, seed=4)
        np.testing.assert_array_equal(written["x"], here["x"])
        np.testing.assert_array_equal(written["category"], here["category"])


# --- a real image classifier through the command ---------------------------------------------------


@pytest.fixture(scope="module")
def image_model(tmp_path_factory, example_data):
    """A small CNN on the digits drawn as 16×16 colour images (tinted per sample), converted."""
    import keras

    from edgeq.models.convert import convert_model

    out = tmp_path_factory.mktemp("image_model")
    with np.load(example_data) as d:
        digits, y = d["x"].reshape(-1, 8, 8) / 16.0, d["y"]
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(digits, 2, axis=1), 2, axis=2)
    tint = rng.uniform(0.5, 1.0, size=(len(y), 1, 1, 3))
    x = (big[..., None] * tint).astype(np.float32)
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                              L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model.save(out / "cnn.keras")
    np.savez(out / "images.npz", x=x, y=y)
    conversion = convert_model(out / "cnn.keras", out / "models")
    return conversion.float_path, out / "images.npz"


def test_inputs_risky_on_an_image_model(image_model, tmp_path):
    from edgeq.cli.main import main

    float_path, data = image_model
    built = CliRunner().invoke(main, ["inputs", "risky", "--model", str(float_path), "--data", str(data),
                                      "-o", str(tmp_path / "s.npz"), "--max-per-category", "40"])
    assert built.exit_code == 0, built.output
    assert "input 'x': read as HWC colour images (16×16×3: 16×16 pixels, 3 channel(s)); image families apply" \
        in built.output
    assert "risky families sentinel, stuck, scaled, offset, dropout-zero, dropout-mean left out: fits none of the " \
           "inputs (image)" in built.output
    assert "not deciding it (stress): boundary, channel-order, normalization, outlier, value-scale" in built.output
    with np.load(tmp_path / "s.npz") as suite:
        cats = set(suite["category"].tolist())
        boundary = suite["severity"][suite["category"] == "boundary"]
    assert set(IMAGE_FAMILIES) <= cats and "boundary" in cats
    assert sorted(set(boundary.tolist())) == [1, 2, 3]


def test_inputs_risky_on_a_table_says_what_it_left_out(tmp_path):
    from edgeq.cli.main import main

    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).random((30, 5)).astype(np.float32))
    built = CliRunner().invoke(main, ["inputs", "risky", "--data", str(tmp_path / "t.npz"), "-o",
                                      str(tmp_path / "s.npz")])
    assert built.exit_code == 0, built.output
    assert ("risky families blur, jpeg, pixelate, haze, colour-cast, gamma, occlusion, translate, value-scale, "
            "channel-order, normalization left out: fits none of the inputs (features)") in built.output
    assert "risky category boundary left out: needs the float model's outputs" in built.output
    assert "samples of 5 read as a row of tabular features (features, from the sample shape)" in built.output


def test_evaluate_keeps_the_layout_in_the_report_notes(image_model, tmp_path, monkeypatch):
    from edgeq.cli.main import main

    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    float_path, data = image_model
    quant = next(float_path.parent.glob("*.dynamic-range.tflite"))
    done = CliRunner().invoke(main, ["evaluate", str(float_path), "--quant-model", str(quant), "--data", str(data),
                                     "-o", str(tmp_path / "eval"), "--max-per-category", "30", "-q"])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(IMAGE_FAMILIES) | {"boundary"} <= set(report["categories"])
    assert any(note.startswith("input 'x': read as HWC colour images") for note in report["notes"])
    for name in IMAGE_FAMILIES:
        assert name in report["category_descriptions"]
