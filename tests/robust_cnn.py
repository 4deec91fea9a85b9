"""A small CNN that dynamic-range quantization does not hurt in the field, yet that flips near its boundary.

Issue 21's first public case, rebuilt so the suite can keep it: a classifier of 32×32 digit
images whose quantized model loses under 2 accuracy points in every real shift (brightness,
contrast, noise, blur, JPEG, occlusion, …), while its quantized decisions leave the float
ones on a good share of the synthetic near-boundary interpolations (``boundary`` severity
3: points whose float margin is only 3 % of the data's median margin). A verdict decided
by field cells must call it robust; one decided by the worst cell of any kind called it
catastrophic.

Data: scikit-learn's 8×8 digits (1,797 images, 0..16), upscaled to 32×32 (bilinear, half-pixel
centres), scaled to [0, 1], one grey channel (HWC, so edgeq reads them as images and applies
the image families; grey, so colour-cast is left out). A seeded 70/30 split (the built-in
example's: ``scripts/make_example.py``): 1,257 training images, 540 evaluation images (``x``
float32 (540, 32, 32, 1), ``y`` int64).

Model (``robust_cnn.keras``; the converter quantizes a weight tensor only when it has ≥ 1024
elements):

====================  ==========================  ===========  =========
layer                 output                      weights      converted
====================  ==========================  ===========  =========
``clip``              ReLU(max 1): x in [0, 1]    —            float op
``conv1`` 3×3, 16     32×32×16, ReLU              144          float
``pool1``             16×16×16 (max)              —
``conv2`` 3×3, 32     16×16×32, ReLU              4,608        int8
``pool2``             8×8×32 (max)                —
``conv3`` 3×3, 32     8×8×32, ReLU                9,216        int8
``gap``               32 (global average)         —
``dense``             64, ReLU                    2,048        int8
``embed``             64, linear                  4,096        int8
``probs``             10, softmax                 640          float
====================  ==========================  ===========  =========

Trained 30 epochs (Adam 3e-3, batch 64) on the training images plus one mildly shifted copy
of each (brightness ±0.15, contrast ×0.7–1.3, Gaussian noise σ ≤ 0.08, clipped): ≈ 11 s here.
Deterministic for a seed (two builds gave the same report).

Why it is robust in the field: the input is clipped to the range the data comes in (as a
real preprocessing step does), so no shifted, noisy or outlying pixel can stretch the
activation rows that dynamic-range quantization scales per input: every quantized layer
sees activations of the range it sees on clean data; and the training shifts keep the float
model working on most shifted cells (a cell where the float model fails says nothing about
quantization).

Why it still flips near the boundary: nothing had to be tuned for that. The interpolations
of ``boundary`` severity 3 sit where the float softmax margin is 3 % of the data's median
margin (median ≈ 1.0, so top-1 − top-2 ≈ 0.03 in probability, a few hundredths of a logit),
and the int8 rounding of four quantized layers moves the logits by more than that on a large
share of them. Measured with edgeq's HEAD code (seed 0 unless said; clean float accuracy,
worst drop in a non-boundary cell with float accuracy > 50 %, boundary/2, boundary/3 flips):

- this model: 98.1 %, 0.6 points (contrast-/2), 10.2 %, 28.7 %; seed 1: 96.5 %, 0.9, 16.9 %,
  40.4 %; seed 2: 96.9 %, 0.7, 8.7 %, 37.0 %;
- without ``embed`` (dense 64 → softmax): 94.8 %, 2.2 points (dropout-mean/3: over the line),
  15.4 %, 46.9 % — so the second quantized dense layer stays (more accurate, larger margins);
- a 4-wide linear bottleneck in place of ``embed`` (a narrow layer before the logits): 94.1 %,
  1.5 points, 22.8 %, 39.8 %; 8-wide: 94.1 %, 0.7, 2.8 %, 28.3 %: not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
SEED = 0


def digits_images(seed: int = SEED):
    """((x_train, y_train), (x_test, y_test)): digits as 32×32×1 float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = upscale(digits.images.astype(np.float32) / 16.0)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * 0.7)
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def upscale(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, h, w) → (N, size, size, 1), bilinear with half-pixel centres (edges repeated)."""
    n, h, w = images.shape

    def axis(src: int):
        pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, src - 1), (pos - lo).astype(np.float32)

    (y0, y1, wy), (x0, x1, wx) = axis(h), axis(w)
    rows = images[:, y0] * (1 - wy)[None, :, None] + images[:, y1] * wy[None, :, None]
    out = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
    return np.clip(out, 0.0, 1.0)[..., None].astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild field shifts for training: brightness ±0.15, contrast ×0.7–1.3, noise σ ≤ 0.08, clipped."""
    n = len(x)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    gain = rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.15, 0.15, (n, 1, 1, 1)).astype(np.float32)
    sigma = rng.uniform(0.0, 0.08, (n, 1, 1, 1)).astype(np.float32)
    out = (x - mean) * gain + mean + shift + sigma * rng.standard_normal(x.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def build_model(keras):
    L = keras.layers
    image = keras.Input((SIZE, SIZE, 1), name="image")
    h = L.ReLU(max_value=1.0, name="clip")(image)
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(h)        # 144 w: float
    h = L.MaxPooling2D(name="pool1")(h)
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)        # 4608 w
    h = L.MaxPooling2D(name="pool2")(h)
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(h)        # 9216 w
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(64, activation="relu", name="dense")(h)                            # 2048 w
    h = L.Dense(64, name="embed")(h)                                               # 4096 w, linear
    out = L.Dense(10, activation="softmax", name="probs")(h)                       # 640 w: float
    return keras.Model(image, out, name="robust_cnn")


def make_robust_cnn(directory, seed: int = SEED, epochs: int = 30) -> tuple[Path, Path]:
    """Train the model (≈ 10–20 s on 2 cores), save ``robust_cnn.keras`` and the evaluation data
    ``robust_cnn.npz`` (x, y) in ``directory``; return both paths."""
    import keras

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    (x_train, y_train), (x_test, y_test) = digits_images(seed)
    model = build_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x_fit = np.concatenate([x_train, augment(x_train, rng)])
    y_fit = np.concatenate([y_train, y_train])
    model.fit(x_fit, y_fit, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    keras_path, data_path = directory / "robust_cnn.keras", directory / "robust_cnn.npz"
    model.save(keras_path)
    np.savez(data_path, x=x_test, y=y_test)
    return keras_path, data_path
