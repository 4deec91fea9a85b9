"""Multi-layer test models whose dynamic-range culprit is known, and a plain small CNN.

``make_layered_fragile``: pixels → ``wide`` (Dense 256) → concat with the pixels →
``mix`` (Dense 64 + 2) → ``culprit`` (Dense 128) → ``head`` (Dense 10). The two extra
units of ``mix`` watch a pixel that is always 0 in clean data with a huge gain, and
``culprit`` adds them with +1 and -1, so in float they cancel. When that pixel lights
up (brightness, lower contrast, noise) they become the largest values of
``culprit``'s input row, its int8 scale stretches and the rest of the row rounds to
zero: the break happens at ``culprit`` (the third of four FULLY_CONNECTED ops) and
nowhere else. ``wide`` and ``mix`` hold most of the weights, so keeping only
``culprit`` float leaves the model much smaller than float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fragile import AMPLIFIER_GAIN, silent_feature

CULPRIT = "culprit"


def _layers(x, y, seed: int, units: int):
    import keras

    keras.utils.set_random_seed(seed)
    pixels = keras.Input((x.shape[1],), name="pixels")
    wide = keras.layers.Dense(256, activation="relu", name="wide")(pixels)
    joined = keras.layers.Concatenate(name="join")([wide, pixels])
    mix = keras.layers.Dense(units, activation="relu", name="mix")(joined)
    culprit = keras.layers.Dense(128, activation="relu", name=CULPRIT)(mix)
    head = keras.layers.Dense(10, name="head")(culprit)
    return keras.Model(pixels, head)


def make_layered_fragile(x: np.ndarray, y: np.ndarray, out_path: Path, seed: int = 0) -> Path:
    """Train the plain model, then rebuild it with the two cancelling units in ``mix``."""
    import keras

    x = x.astype(np.float32) / 16.0
    plain = _layers(x, y, seed, 64)
    plain.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, epochs=30, batch_size=32, verbose=0)
    twin = _layers(x, y, seed, 66)
    for name in ("wide", "head"):
        twin.get_layer(name).set_weights(plain.get_layer(name).get_weights())
    (wm, bm), (wc, bc) = plain.get_layer("mix").get_weights(), plain.get_layer(CULPRIT).get_weights()
    extra_in = np.zeros((wm.shape[0], 2), dtype=wm.dtype)
    extra_in[256 + silent_feature(x), :] = AMPLIFIER_GAIN  # the pixel part of the joined input
    twin.get_layer("mix").set_weights([np.hstack([wm, extra_in]), np.concatenate([bm, np.zeros(2, bm.dtype)])])
    extra_out = np.zeros((2, wc.shape[1]), dtype=wc.dtype)
    extra_out[0, 0], extra_out[1, 0] = 1.0, -1.0
    twin.get_layer(CULPRIT).set_weights([np.vstack([wc, extra_out]), bc])
    twin.save(out_path)
    return out_path


def scaled_digits(x: np.ndarray, y: np.ndarray, out_path: Path, image: bool = False) -> Path:
    """The digits as the layered models see them: 0..1, flat or as 8×8×1 images."""
    x = x.astype(np.float32) / 16.0
    np.savez(out_path, x=x.reshape(len(x), 8, 8, 1) if image else x, y=y)
    return out_path


def make_small_cnn(x: np.ndarray, y: np.ndarray, out_path: Path, seed: int = 0) -> Path:
    """A plain trained CNN: two convolutions (the second quantized), a dense layer and a head."""
    import keras

    keras.utils.set_random_seed(seed)
    x = x.astype(np.float32).reshape(len(x), 8, 8, 1) / 16.0
    model = keras.Sequential([keras.Input((8, 8, 1), name="image"),
                              keras.layers.Conv2D(16, 3, activation="relu", name="conv_a"),
                              keras.layers.Conv2D(32, 3, activation="relu", name="conv_b"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(64, activation="relu", name="dense_a"),
                              keras.layers.Dense(10, name="logits")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    model.save(out_path)
    return out_path


_BUILT: dict[str, tuple[Path, Path]] = {}


def layered_files(tmp_path_factory, data_path: Path) -> tuple[Path, Path]:
    """(keras, data .npz) of ``make_layered_fragile``, built once per test session for every module."""
    if "layered" not in _BUILT:
        out = tmp_path_factory.mktemp("layered")
        with np.load(data_path) as d:
            x, y = d["x"], d["y"]
        _BUILT["layered"] = (make_layered_fragile(x, y, out / "layered.keras"),
                             scaled_digits(x, y, out / "flat.npz"))
    return _BUILT["layered"]
