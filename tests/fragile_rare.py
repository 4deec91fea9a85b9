"""A test model whose only quantization error is a rare, designed failure with a slope towards it.

The band twin (``fragile_search.py``) keeps the digits MLP's quantized layers, so most flips a
random draw finds there are the MLP's own boundary flips, not the designed failure. The rare twin
has no ordinary rounding error at all, so every flip is the designed one, and that one is rare
for random draws but has a margin to climb.

- **No natural flips.** The base classifier is the example model itself, each Dense layer split
  into column blocks under 1024 weights: the converter keeps tensors that small in float, so both
  twins compute the very same logits (clean data agrees exactly). Reusing the model rather than
  training a small one needs no seeding, keeps its accuracy, and keeps its decision boundaries, so
  figures compare directly with the example's own.
- **The outlier.** A pattern unit reads the image's left and right edge columns through clipped
  ramps ``min(relu(x), RAMP)``: ``D = Σ left − Σ right``, large only when the left edge glows
  faintly while the right edge stays dark. The clip caps what one pixel adds, so an outlier, a unit
  change or an impulse in one pixel cannot trigger it; brightness and contrast move both edges alike
  and cancel; noise lights the edges at random, so only heavy noise rarely lights the left alone.
  Uniform draws in the 10 % ball seldom brighten all eight left pixels at once; a search in the
  ball can (each may move by 1.6, the clip is at 1.5). The outlier ``T = GAIN · relu(D − ONSET)``
  is exactly 0 on clean data and on most shifted inputs.
- **The failure.** ``T`` and a companion ``V = T / 1024`` sit in one int8 input row of a quantized
  Dense layer, with the hidden activations (as an outlier channel would in a real model). The row's
  step is at least ``T / 255``, so ``V`` is under half a step and rounds to 0 however large ``T``
  grows: the quantized model loses ``V``. Its quantized copy is subtracted from a float copy and the
  difference added to class ``collapse``'s logit: 0 in float, exactly; in the quantized model class
  ``collapse`` gains ``BOOST`` logits per unit of ``D`` past ``ONSET``.
- **The slope.** That gain is linear in ``D``: once class ``collapse`` is the runner-up, the float
  class's quantized margin shrinks steadily as the left edge brightens, until it flips. ``ONSET``
  and ``BOOST`` set the rarity: about 1 in 4,000 uniform ball draws and 1 in 7,000 risky-suite draws
  (nearly all heavy noise) flip. ``pattern_signal(x) > ONSET`` is the only way the twins can disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 8  # the digits are 8 × 8 images, flattened row by row
LEFT, RIGHT = np.arange(0, 64, SIDE), np.arange(SIDE - 1, 64, SIDE)  # the edge columns
RAMP = 1.5  # a pixel adds at most this much to D (data units, digits: 0..16)
ONSET = 4.5  # D at which the outlier switches on (clean digits: D ≤ 2.5)
BOOST = 6.0  # logits class `collapse` gains in the quantized model per unit of D past ONSET
GAIN = 1.0e3  # T per unit of D past ONSET: an outlier against hidden activations of ≤ ~30
COMPANION = 1.0 / 1024  # V / T: under half an int8 step (1/510 of the row's max), so V rounds to 0
LIMIT = 1024  # the converter keeps weight tensors with fewer elements float


def pattern_signal(x: np.ndarray) -> np.ndarray:
    """D per sample: the clipped left edge minus the clipped right edge."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    ramp = np.clip(flat, 0.0, RAMP)
    return ramp[:, LEFT].sum(axis=1) - ramp[:, RIGHT].sum(axis=1)


def _split_dense(inputs, w: np.ndarray, b: np.ndarray, activation, name: str):
    """``activation(inputs @ w + b)`` as Dense blocks of whole columns, each under LIMIT weights."""
    import keras

    width = max(1, (LIMIT - 1) // w.shape[0])
    blocks = []
    for start in range(0, w.shape[1], width):
        layer = keras.layers.Dense(min(width, w.shape[1] - start), activation=activation, name=f"{name}_{start}")
        blocks.append(layer(inputs))
        layer.set_weights([w[:, start:start + width], b[start:start + width]])
    return blocks[0] if len(blocks) == 1 else keras.layers.Concatenate(name=name)(blocks)


def make_rare_twin(model_path: Path, x: np.ndarray, out_path: Path, onset: float = ONSET, boost: float = BOOST,
                   collapse: int = 0) -> Path:
    import keras

    if pattern_signal(x).max() >= onset:
        raise ValueError(f"clean data already reaches the onset D = {onset}: the twin would not agree on it")
    base = keras.models.load_model(model_path, compile=False)
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    *hidden, head = dense
    if x.reshape(len(x), -1).shape[1] != SIDE * SIDE or len(hidden) < 1:
        raise ValueError("the rare twin needs a Dense classifier on 8 × 8 images (64 features)")
    f32 = np.float32
    pixels = keras.Input((SIDE * SIDE,), name="pixels")
    h = pixels
    for i, layer in enumerate(hidden):
        h = _split_dense(h, *layer.get_weights(), layer.activation, f"hidden{i}")
    w_head, b_head = head.get_weights()
    logits = _split_dense(h, w_head, b_head, None, "head")

    edges = np.concatenate([LEFT, RIGHT])
    w_ramp = np.zeros((SIDE * SIDE, 2 * len(edges)), f32)  # relu(x_p) and relu(x_p − RAMP) per edge pixel
    pair = 2 * np.arange(len(edges))
    w_ramp[edges, pair] = w_ramp[edges, pair + 1] = 1.0
    b_ramp = np.tile(np.array([0.0, -RAMP], f32), len(edges))
    ramps = _split_dense(pixels, w_ramp, b_ramp, "relu", "edge_ramps")
    side = np.where(np.arange(len(edges)) < len(LEFT), 1.0, -1.0)
    signal = np.stack([side, -side], axis=1).reshape(-1).astype(f32)  # D = Σ ±(relu(x) − relu(x − RAMP))
    w_out = np.stack([GAIN * signal, GAIN * COMPANION * signal], axis=1)
    b_out = np.array([-GAIN * onset, -GAIN * COMPANION * onset], f32)
    outlier = _split_dense(ramps, w_out, b_out, "relu", "outlier")  # [T, V]

    row = keras.layers.Concatenate(name="row")([h, outlier])
    width = int(row.shape[-1])
    copies = -(-LIMIT // width)  # enough outputs for LIMIT weights, so the converter quantizes the layer
    w_q = np.zeros((width, copies), f32)
    w_q[width - 1, :] = 1.0  # every output copies V (the row's last element)
    quantized = keras.layers.Dense(copies, use_bias=False, name="trap")
    lost = quantized(row)
    quantized.set_weights([w_q])
    w_f = np.zeros((2, copies), f32)
    w_f[1, :] = 1.0
    kept = _split_dense(outlier, w_f, np.zeros(copies, f32), None, "kept")
    gap = keras.layers.Subtract(name="gap")([kept, lost])  # 0 in float; V in the quantized model
    w_gap = np.zeros((copies, w_head.shape[1]), f32)
    w_gap[:, collapse] = boost / (GAIN * COMPANION * copies)
    shift = _split_dense(gap, w_gap, np.zeros(w_head.shape[1], f32), None, "collapse")
    twin = keras.Model(pixels, keras.layers.Add(name="logits")([logits, shift]))
    twin.save(out_path)
    return out_path
