"""A test model whose quantization failure is rare among shifted inputs but reachable near the data.

``tests/fragile.py`` makes a twin that breaks as soon as one always-0 input element moves:
almost any shift finds that. ``make_band_twin`` makes one that breaks only when *several*
always-0 elements sit together in a narrow band of small values (a pattern no clean sample
has, and which brightness, contrast, impulse, outliers and noise almost never produce,
because they move those elements all the same way, too far, or independently), while a
search that stays within 10 % of the data range can put them there.

How (a Dense classifier with hidden layers h1, h2; in float the twin's outputs are exactly
the original's):

- layer 1 gets, for each always-0 element x_p, four ReLU units ``relu(x_p − a_j)`` at the
  band's corners a < b < c < d. Their signed sum (+1, −1, −1, +1) is a trapezoid: 0 below a
  and above d, ``b − a`` on the plateau [b, c]. With unit gain they never exceed the input
  (≤ 16 on digits, about the largest ordinary h1 activation), so they hardly change how the
  quantized layer 2 rounds its input, and they are exactly 0 on clean data.
- layer 2 gets a pair of identical "watcher" units ``relu(G · (Σ_p trapezoid_p − T))``: they
  switch on once the elements together are more than ``T`` into the band (``ONSET`` plateau's
  worth of the ``len(p)`` elements) and grow with every further element that enters it.
- a new linear layer passes h2 through unchanged (identity weights, which int8 represents
  exactly) and adds the pair with weights +1 and −1 to its first output, so in float they
  cancel exactly. It is there because the converter leaves weight tensors under 1024 elements
  (the 64 × 10 output layer) in float: the pair must feed a layer that is quantized. In the
  quantized model the pair's activation sets that layer's per-row int8 input scale: as it
  grows, the other activations round to coarser steps and then to 0, and the decision
  collapses: gradually, so the quantized margin shrinks on the way (a search has a slope to
  climb), and only once most of the elements are in the band.

The pass-through layer's own rounding (a step of max(h2)/127 on clean data) is the only other
change; the builder's caller should check (as the tests do) that clean data still agrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BAND = (0.3, 0.6, 1.0, 1.3)  # trapezoid corners a < b < c < d, in data units (digits: 0..16)
ONSET = 4.0  # the watchers switch on once the elements add up to this many plateaus
WATCH_GAIN = 2.0e4


def silent_features(x: np.ndarray) -> np.ndarray:
    """Input elements that are exactly 0 in every clean sample."""
    always_zero = np.flatnonzero(np.all(x.reshape(len(x), -1) == 0, axis=0))
    if always_zero.size < 2:
        raise ValueError("data has fewer than 2 elements that are always 0")
    return always_zero


def make_band_twin(model_path: Path, x: np.ndarray, out_path: Path, band=BAND, onset: float = ONSET,
                   gain: float = WATCH_GAIN) -> Path:
    import keras

    base = keras.models.load_model(model_path, compile=False)
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) < 3:
        raise ValueError("the band twin needs a Dense classifier with at least two hidden layers")
    (w1, b1), (w2, b2) = (d.get_weights() for d in dense[:2])
    features = silent_features(x)
    corners = np.asarray(band, dtype=w1.dtype)
    signs = np.array([1.0, -1.0, -1.0, 1.0], dtype=w1.dtype)
    band_units = 4 * len(features)

    extra_in = np.zeros((w1.shape[0], band_units), dtype=w1.dtype)
    extra_bias1 = np.zeros(band_units, dtype=b1.dtype)
    watch_in = np.zeros((band_units, 2), dtype=w2.dtype)
    for i, p in enumerate(features):
        cols = slice(4 * i, 4 * i + 4)
        extra_in[p, cols] = 1.0
        extra_bias1[cols] = -corners
        watch_in[cols, :] = (gain * signs)[:, None]
    plateau = float(corners[1] - corners[0])
    watch_bias = np.full(2, -gain * onset * plateau, dtype=b2.dtype)

    w2_twin = np.zeros((w2.shape[0] + band_units, w2.shape[1] + 2), dtype=w2.dtype)
    w2_twin[:w2.shape[0], :w2.shape[1]] = w2
    w2_twin[w2.shape[0]:, w2.shape[1]:] = watch_in
    passing = np.vstack([np.eye(w2.shape[1], dtype=w2.dtype), np.zeros((2, w2.shape[1]), dtype=w2.dtype)])
    passing[w2.shape[1], 0], passing[w2.shape[1] + 1, 0] = 1.0, -1.0

    twin = keras.Sequential([keras.Input((w1.shape[0],), name="pixels"),
                             keras.layers.Dense(dense[0].units + band_units, activation=dense[0].activation),
                             keras.layers.Dense(dense[1].units + 2, activation=dense[1].activation),
                             keras.layers.Dense(dense[1].units, activation=None)]
                            + [keras.layers.Dense(d.units, activation=d.activation) for d in dense[2:]])
    twin_dense = [layer for layer in twin.layers if isinstance(layer, keras.layers.Dense)]
    twin_dense[0].set_weights([np.hstack([w1, extra_in]), np.concatenate([b1, extra_bias1])])
    twin_dense[1].set_weights([w2_twin, np.concatenate([b2, watch_bias])])
    twin_dense[2].set_weights([passing, np.zeros(w2.shape[1], dtype=b2.dtype)])
    for src, dst in zip(dense[2:], twin_dense[3:]):
        dst.set_weights(src.get_weights())
    twin.save(out_path)
    return out_path
