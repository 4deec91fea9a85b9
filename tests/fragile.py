"""Test models with known behaviour under dynamic-range quantization.

``make_fragile_twin`` takes a trained Dense classifier and adds a pair of hidden
units that watch one input element which is always 0 in clean data. In float the
pair cancels exactly, so predictions do not change. When that element becomes
non-zero (brightness up, noise, lower contrast), the pair's huge activations set the
per-row int8 scale of the next layer's input, every other activation rounds to
zero, and the quantized model collapses to one class. This is the failure edgeq
exists to find, made on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

AMPLIFIER_GAIN = 1.0e4


def silent_feature(x: np.ndarray) -> int:
    """An input element that is exactly 0 in every clean sample."""
    always_zero = np.flatnonzero(np.all(x.reshape(len(x), -1) == 0, axis=0))
    if always_zero.size == 0:
        raise ValueError("data has no element that is always 0")
    return int(always_zero[0])


def make_fragile_twin(model_path: Path, x: np.ndarray, out_path: Path) -> Path:
    import keras

    base = keras.models.load_model(model_path, compile=False)
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    (w1, b1), (w2, b2) = dense[0].get_weights(), dense[1].get_weights()
    feature = silent_feature(x)
    extra_in = np.zeros((w1.shape[0], 2), dtype=w1.dtype)
    extra_in[feature, :] = AMPLIFIER_GAIN
    extra_out = np.zeros((2, w2.shape[1]), dtype=w2.dtype)
    extra_out[0, 0], extra_out[1, 0] = 1.0, -1.0
    twin = keras.Sequential([keras.Input((w1.shape[0],), name="pixels")]
                            + [keras.layers.Dense(dense[0].units + 2, activation=dense[0].activation)]
                            + [keras.layers.Dense(d.units, activation=d.activation) for d in dense[1:]])
    twin_dense = [layer for layer in twin.layers if isinstance(layer, keras.layers.Dense)]
    twin_dense[0].set_weights([np.hstack([w1, extra_in]), np.concatenate([b1, np.zeros(2, b1.dtype)])])
    twin_dense[1].set_weights([np.vstack([w2, extra_out]), b2])
    for src, dst in zip(dense[2:], twin_dense[2:]):
        dst.set_weights(src.get_weights())
    twin.save(out_path)
    return out_path
