"""Small, real test models for each output kind edgeq judges.

Every ``make_*`` builder trains (a few seconds, tiny synthetic data) or loads data
for a small Keras model, saves it as ``<dir>/<name>.keras`` and the evaluation data as
``<dir>/<name>.npz`` (``x`` float32, samples first; ``y`` int64 only where the model
has a class-label output), and returns ``(keras_path, data_npz_path)``. Ground truth
that does not fit edgeq's int ``y`` (masks, boxes, multi-hot labels, landmark
coordinates) goes to a sidecar ``<dir>/<name>_truth.npz``; read it with
:func:`load_truth`. All files are written with ``np.savez`` (no pickles).

Builds are deterministic for a given ``seed`` (``keras.utils.set_random_seed`` plus
a numpy ``default_rng``; CPU float reductions may still differ in the last bits).
Every model's big layers have >= 1024 weights, so dynamic-range quantization
quantizes them; small heads (< 1024 weights) stay float, as in real models.

Output naming in the converted ``.tflite``: the models return a dict of named
outputs. ``tf.lite.TFLiteConverter.from_keras_model`` (what ``edgeq convert`` uses)
keeps those names only in the ``serving_default`` signature; the output *tensors*
are called ``StatefulPartitionedCall_1:K`` where K is the position of the dict key
in sorted (alphabetical) order. ``Interpreter.get_output_details()`` lists them in
its own order, documented per builder below (it is the same for the float and the
dynamic-range file). ``OUTPUTS[name]`` records, per builder, the signature names,
tensor names, per-sample shapes and producing ops in ``get_output_details()`` order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE = 32  # every image model takes 32x32x3
GRID = 8  # detector anchor grid (8x8 = 64 anchors, stride 4 px)
STRIDE = IMAGE // GRID
ANCHORS = GRID * GRID

# get_output_details() order: (signature name, tensor name, per-sample shape, op producing it as
# ModelInfo.output_producers names it: the op computing the values, seen through reshapes)
OUTPUTS = {
    "detector": [("classificators", "StatefulPartitionedCall_1:0", (64, 1), "CONV_2D"),  # behind a RESHAPE
                 ("regressors", "StatefulPartitionedCall_1:1", (64, 8), "CONV_2D")],
    "segmenter": [("mask", "StatefulPartitionedCall_1:0", (32, 32, 1), "LOGISTIC")],
    "multiclass_segmenter": [("segmentation", "StatefulPartitionedCall_1:0", (32, 32, 4), "SOFTMAX")],
    "multilabel": [("labels", "StatefulPartitionedCall_1:0", (12,), "LOGISTIC")],
    "landmarks": [("presence", "StatefulPartitionedCall_1:2", (1,), "LOGISTIC"),
                  ("landmarks", "StatefulPartitionedCall_1:1", (42,), "FULLY_CONNECTED"),
                  ("handedness", "StatefulPartitionedCall_1:0", (1,), "LOGISTIC")],
    "classifier_with_aux": [("embedding", "StatefulPartitionedCall_1:0", (16,), "FULLY_CONNECTED"),
                            ("probs", "StatefulPartitionedCall_1:1", (10,), "SOFTMAX")],
}


def truth_path(data_path: str | os.PathLike) -> Path:
    data_path = Path(data_path)
    return data_path.with_name(f"{data_path.stem}_truth.npz")


def load_truth(data_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The sidecar ground truth written next to a builder's data .npz."""
    with np.load(truth_path(data_path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _start(directory, seed: int):
    import keras

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    return directory, np.random.default_rng(seed), keras


def _save(model, directory: Path, name: str, data: dict, truth: dict | None = None) -> tuple[Path, Path]:
    keras_path, data_path = directory / f"{name}.keras", directory / f"{name}.npz"
    model.save(keras_path)
    np.savez(data_path, **data)
    if truth:
        np.savez(truth_path(data_path), **truth)
    return keras_path, data_path


# --- 1. SSD-like detector ------------------------------------------------------------------------

def anchor_centers() -> np.ndarray:
    """(64, 2) anchor centres (x, y) in pixels, row-major over the 8x8 grid: anchor
    ``row * 8 + col`` sits at ``(4 * col + 2, 4 * row + 2)``."""
    c = np.arange(GRID) * STRIDE + STRIDE / 2
    ax, ay = np.meshgrid(c, c)
    return np.stack([ax.ravel(), ay.ravel()], axis=1).astype(np.float32)


def _square_images(rng, n: int):
    """Dark images in [-1, 1] with 0-3 non-overlapping bright squares (side 6-12 px).

    Returns x (n,32,32,3), boxes (n,3,4) as x0,y0,side,valid, and the per-anchor
    training targets: scores (n,64) 0/1 and regressors (n,64,8)."""
    x = rng.uniform(-1.0, -0.8, size=(n, IMAGE, IMAGE, 3)).astype(np.float32)
    boxes = np.zeros((n, 3, 4), np.float32)
    anchors = anchor_centers()
    scores = np.zeros((n, ANCHORS), np.float32)
    regress = np.zeros((n, ANCHORS, 8), np.float32)
    for i in range(n):
        taken = np.zeros((IMAGE, IMAGE), bool)
        count = rng.integers(0, 4)
        for k in range(count):
            for _ in range(20):  # rejection-sample a free spot (1 px margin between squares)
                s = int(rng.integers(6, 13))
                x0, y0 = (int(v) for v in rng.integers(0, IMAGE - s + 1, size=2))
                if not taken[max(y0 - 1, 0):y0 + s + 1, max(x0 - 1, 0):x0 + s + 1].any():
                    break
            else:
                continue
            taken[y0:y0 + s, x0:x0 + s] = True
            x[i, y0:y0 + s, x0:x0 + s, :] = rng.uniform(0.6, 1.0, size=3)
            boxes[i, k] = (x0, y0, s, 1)
            inside = ((anchors[:, 0] > x0) & (anchors[:, 0] < x0 + s)
                      & (anchors[:, 1] > y0) & (anchors[:, 1] < y0 + s))
            cx, cy = x0 + s / 2, y0 + s / 2
            kps = np.array([x0 + s / 3, y0 + s / 3, x0 + 2 * s / 3, y0 + s / 3], np.float32)
            scores[i, inside] = 1.0
            for a in np.flatnonzero(inside):
                ax, ay = anchors[a]
                regress[i, a] = (cx - ax, cy - ay, s, s,
                                 kps[0] - ax, kps[1] - ay, kps[2] - ax, kps[3] - ay)
    x += rng.normal(0, 0.03, size=x.shape).astype(np.float32)
    return np.clip(x, -1, 1), boxes, scores, regress


def make_detector(directory, seed: int = 0, train: int = 512, evaluate: int = 128,
                  epochs: int = 6) -> tuple[Path, Path]:
    """MediaPipe-face-detection-like two-head SSD: ``detector.keras`` + ``detector.npz``.

    Input ``image`` (32, 32, 3) float32 in [-1, 1]: dark background (about -0.9) with
    0-3 bright squares (side 6-12 px, channels 0.6..1.0).

    64 anchors on an 8x8 grid (stride 4 px, centres from :func:`anchor_centers`, index
    ``row * 8 + col``); an anchor is positive when its centre lies strictly inside a
    square. Outputs, in ``get_output_details()`` order:

    * ``StatefulPartitionedCall_1:0`` (signature ``classificators``), shape (1, 64, 1):
      raw logits, score = sigmoid(logit). Last op: RESHAPE of a 1x1 CONV_2D (32
      weights, stays float).
    * ``StatefulPartitionedCall_1:1`` (signature ``regressors``), shape (1, 64, 8):
      per anchor ``cx - ax, cy - ay, w, h, kp0x - ax, kp0y - ay, kp1x - ax, kp1y - ay``
      in pixels (box centre offset from the anchor centre, box width/height, and two
      "eye" keypoints at (x0+s/3, y0+s/3) and (x0+2s/3, y0+s/3)); trained only on
      positive anchors (meaningless elsewhere). Last op: RESHAPE of a 3x3 CONV_2D
      (2304 weights, quantized).

    Data ``detector.npz``: ``x`` (evaluate, 32, 32, 3), no ``y``. Truth sidecar
    ``detector_truth.npz``: ``boxes`` (n, 3, 4) as x0, y0, side, valid; ``scores``
    (n, 64) 0/1 positive anchors; ``regressors`` (n, 64, 8) targets.
    """
    directory, rng, keras = _start(directory, seed)
    L = keras.layers
    image = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(image)  # 432 w: float
    h = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="down")(h)  # 4608 w
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="block1")(h)  # 9216 w
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="block2")(h)  # 9216 w
    reg = L.Conv2D(8, 3, padding="same", name="box_head")(h)  # 2304 w
    cls = L.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(-2.0), name="score_head")(h)  # 32 w: float
    outputs = {"regressors": L.Reshape((ANCHORS, 8), name="regressors")(reg),
               "classificators": L.Reshape((ANCHORS, 1), name="classificators")(cls)}
    model = keras.Model(image, outputs, name="detector")
    x, boxes, scores, regress = _square_images(rng, train + evaluate)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss={"regressors": keras.losses.Huber(delta=1.0),
                        "classificators": keras.losses.BinaryCrossentropy(from_logits=True)},
                  loss_weights={"regressors": 0.2, "classificators": 1.0})
    t = slice(0, train)
    model.fit(x[t], {"regressors": regress[t], "classificators": scores[t, :, None]},
              sample_weight={"regressors": scores[t], "classificators": np.ones((train, ANCHORS), np.float32)},
              epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    e = slice(train, train + evaluate)
    return _save(model, directory, "detector", {"x": x[e]},
                 {"boxes": boxes[e], "scores": scores[e], "regressors": regress[e]})


# --- 2. segmenters -------------------------------------------------------------------------------

def _blob_images(rng, n: int, classes: int):
    """Images in [0, 1]: dim noisy background, 1-2 bright ellipses.

    classes == 1: any bright colour, labels 0/1. classes == 3: each blob is mostly red
    (label 1), green (2) or blue (3); labels 0..3 per pixel (later blobs on top)."""
    yy, xx = np.mgrid[0:IMAGE, 0:IMAGE] + 0.5
    x = rng.uniform(0.0, 0.3, size=(n, IMAGE, IMAGE, 3)).astype(np.float32)
    x += rng.uniform(0.0, 0.15, size=(n, 1, 1, 3)).astype(np.float32)  # background tint
    labels = np.zeros((n, IMAGE, IMAGE), np.int64)
    for i in range(n):
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(4, IMAGE - 4, size=2)
            rx, ry = rng.uniform(3, 9, size=2)
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            if classes == 1:
                label, colour = 1, rng.uniform(0.7, 1.0, size=3)
            else:
                label = int(rng.integers(1, 4))
                colour = rng.uniform(0.0, 0.3, size=3)
                colour[label - 1] = rng.uniform(0.75, 1.0)
            x[i, inside] = colour + rng.normal(0, 0.04, size=(inside.sum(), 3))
            labels[i, inside] = label
    return np.clip(x, 0, 1).astype(np.float32), labels


def _segmenter(keras, channels: int, activation: str, name: str):
    L = keras.layers
    image = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)  # 432 w: float
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)  # 4608 w
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(h)  # 9216 w
    out = L.Conv2D(channels, 1, activation=activation, name=name)(h)  # 32 / 128 w: float
    return keras.Model(image, {name: out}, name=f"{name}_model")


def make_segmenter(directory, seed: int = 0, train: int = 192, evaluate: int = 64,
                   epochs: int = 3) -> tuple[Path, Path]:
    """Binary segmenter: ``segmenter.keras`` + ``segmenter.npz``.

    Input ``image`` (32, 32, 3) float32 in [0, 1]: dim noisy background (< 0.45) with
    1-2 bright ellipses (radii 3-9 px, channels 0.7..1.0). One output:

    * ``StatefulPartitionedCall_1:0`` (signature ``mask``), shape (1, 32, 32, 1):
      foreground probability in (0, 1); last op LOGISTIC (after a 1x1 CONV_2D with 32
      weights that stays float).

    Data ``segmenter.npz``: ``x`` (evaluate, 32, 32, 3), no ``y``. Truth sidecar
    ``segmenter_truth.npz``: ``mask`` (n, 32, 32) uint8 0/1.
    """
    directory, rng, keras = _start(directory, seed)
    model = _segmenter(keras, 1, "sigmoid", "mask")
    x, labels = _blob_images(rng, train + evaluate, 1)
    mask = (labels > 0).astype(np.float32)[..., None]
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"mask": "binary_crossentropy"})
    model.fit(x[:train], {"mask": mask[:train]}, epochs=epochs, batch_size=16, verbose=0)
    return _save(model, directory, "segmenter", {"x": x[train:]},
                 {"mask": (labels[train:] > 0).astype(np.uint8)})


def make_multiclass_segmenter(directory, seed: int = 0, train: int = 256, evaluate: int = 64,
                              epochs: int = 3) -> tuple[Path, Path]:
    """4-class segmenter: ``multiclass_segmenter.keras`` + ``multiclass_segmenter.npz``.

    Input ``image`` (32, 32, 3) float32 in [0, 1]: dim noisy background with 1-2
    ellipses, each mostly red, green or blue. Classes: 0 background, 1 red, 2 green,
    3 blue. One output:

    * ``StatefulPartitionedCall_1:0`` (signature ``segmentation``), shape
      (1, 32, 32, 4): per-pixel class probabilities (sum 1 over the last axis); last
      op SOFTMAX (after a 1x1 CONV_2D with 128 weights that stays float).

    Data ``multiclass_segmenter.npz``: ``x`` (evaluate, 32, 32, 3), no ``y`` (labels
    are per pixel). Truth sidecar ``multiclass_segmenter_truth.npz``: ``labels``
    (n, 32, 32) int64 0..3.
    """
    directory, rng, keras = _start(directory, seed)
    model = _segmenter(keras, 4, "softmax", "segmentation")
    x, labels = _blob_images(rng, train + evaluate, 3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss={"segmentation": "sparse_categorical_crossentropy"})
    model.fit(x[:train], {"segmentation": labels[:train]}, epochs=epochs, batch_size=16, verbose=0)
    return _save(model, directory, "multiclass_segmenter", {"x": x[train:]}, {"labels": labels[train:]})


# --- 3. multi-label tabular ----------------------------------------------------------------------

def make_multilabel(directory, seed: int = 0, train: int = 2000, evaluate: int = 256,
                    epochs: int = 15) -> tuple[Path, Path]:
    """Tabular multi-label model: ``multilabel.keras`` + ``multilabel.npz``.

    Input ``features`` (20,) float32, standard normal. Label j of 12 is on when a
    fixed random quadratic-plus-linear score of the features passes a per-label
    threshold (label frequencies about 10-50 %). One output:

    * ``StatefulPartitionedCall_1:0`` (signature ``labels``), shape (1, 12):
      independent probabilities in (0, 1); last op LOGISTIC (after a 128x12
      FULLY_CONNECTED, 1536 weights, quantized).

    Data ``multilabel.npz``: ``x`` (evaluate, 20), no ``y`` (multi-hot labels do not
    fit edgeq's int ``y``). Truth sidecar ``multilabel_truth.npz``: ``y_multi``
    (n, 12) int64 0/1.
    """
    directory, rng, keras = _start(directory, seed)
    L = keras.layers
    n = train + evaluate
    x = rng.normal(size=(n, 20)).astype(np.float32)
    w = rng.normal(size=(20, 12)) / np.sqrt(20)
    pairs = rng.integers(0, 20, size=(12, 2))
    score = x @ w + 0.5 * x[:, pairs[:, 0]] * x[:, pairs[:, 1]]
    quantile = np.linspace(0.5, 0.9, 12)  # label frequency 50 % .. 10 %
    thresholds = np.array([np.quantile(score[:train, j], q) for j, q in enumerate(quantile)])
    y_multi = (score > thresholds).astype(np.int64)
    features = keras.Input((20,), name="features")
    h = L.Dense(64, activation="relu", name="hidden1")(features)  # 1280 w
    h = L.Dense(128, activation="relu", name="hidden2")(h)  # 8192 w
    out = L.Dense(12, activation="sigmoid", name="labels")(h)  # 1536 w
    model = keras.Model(features, {"labels": out}, name="multilabel")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"labels": "binary_crossentropy"})
    model.fit(x[:train], {"labels": y_multi[:train].astype(np.float32)}, epochs=epochs,
              batch_size=64, verbose=0)
    return _save(model, directory, "multilabel", {"x": x[train:]}, {"y_multi": y_multi[train:]})


# --- 4. hand-landmark-like -----------------------------------------------------------------------

def hand_landmarks(x0, y0, s) -> np.ndarray:
    """21 (x, y) points in pixels for a "hand" square at (x0, y0) of side s: the wrist
    at the middle of the bottom edge, then 5 fingers x 4 joints, finger f at
    x0 + (f + 0.5) s / 5, joint j (1..4) at y0 + s - j s / 4. Flattened x0,y0,x1,y1..."""
    points = [(x0 + s / 2, y0 + s)]
    points += [(x0 + (f + 0.5) * s / 5, y0 + s - j * s / 4) for f in range(5) for j in range(1, 5)]
    return np.asarray(points, np.float32).ravel()


def make_landmarks(directory, seed: int = 0, train: int = 1000, evaluate: int = 128,
                   epochs: int = 8) -> tuple[Path, Path]:
    """Hand-landmark-like three-head model: ``landmarks.keras`` + ``landmarks.npz``.

    Input ``image`` (32, 32, 3) float32 in [0, 1]: dim noise, and in 80 % of the
    images one bright "hand" square (side 10-22 px), red-dominant (right hand) or
    blue-dominant (left hand). Outputs, in ``get_output_details()`` order:

    * ``StatefulPartitionedCall_1:2`` (signature ``presence``), shape (1, 1):
      probability a hand is present; last op LOGISTIC (64-weight FC, float).
    * ``StatefulPartitionedCall_1:1`` (signature ``landmarks``), shape (1, 42):
      21 (x, y) points (see :func:`hand_landmarks`) in pixels, about 0..32; linear,
      last op FULLY_CONNECTED (64x42, 2688 weights, quantized). Meaningless when no
      hand is present (not trained there).
    * ``StatefulPartitionedCall_1:0`` (signature ``handedness``), shape (1, 1):
      probability of a right (red) hand; last op LOGISTIC (64-weight FC, float).

    Data ``landmarks.npz``: ``x`` (evaluate, 32, 32, 3), no ``y``. Truth sidecar
    ``landmarks_truth.npz``: ``landmarks`` (n, 42) float32 (zeros without a hand),
    ``presence`` (n,) int64, ``handedness`` (n,) int64 (1 = right/red).
    """
    directory, rng, keras = _start(directory, seed)
    L = keras.layers
    n = train + evaluate
    x = rng.uniform(0.0, 0.3, size=(n, IMAGE, IMAGE, 3)).astype(np.float32)
    landmarks = np.zeros((n, 42), np.float32)
    presence = (rng.uniform(size=n) < 0.8).astype(np.int64)
    handedness = np.zeros(n, np.int64)
    for i in np.flatnonzero(presence):
        s = int(rng.integers(10, 23))
        x0, y0 = (int(v) for v in rng.integers(0, IMAGE - s + 1, size=2))
        right = int(rng.integers(0, 2))
        colour = np.array([rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.5)])
        x[i, y0:y0 + s, x0:x0 + s] = colour if right else colour[::-1]
        handedness[i] = right
        landmarks[i] = hand_landmarks(x0, y0, s)
    x = np.clip(x + rng.normal(0, 0.03, size=x.shape), 0, 1).astype(np.float32)
    image = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(image)  # 216 w: float
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(h)  # 1152 w
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(64, activation="relu", name="hidden")(h)  # 65536 w
    outputs = {
        "landmarks": L.Dense(42, name="landmarks",
                             bias_initializer=keras.initializers.Constant(16.0))(h),  # 2688 w
        "presence": L.Dense(1, activation="sigmoid", name="presence")(h),
        "handedness": L.Dense(1, activation="sigmoid", name="handedness")(h),
    }
    model = keras.Model(image, outputs, name="landmarks_model")
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss={"landmarks": keras.losses.Huber(delta=2.0), "presence": "binary_crossentropy",
                        "handedness": "binary_crossentropy"})
    t = slice(0, train)
    present = presence[t].astype(np.float32)
    model.fit(x[t], {"landmarks": landmarks[t], "presence": present,
                     "handedness": handedness[t].astype(np.float32)},
              sample_weight={"landmarks": present, "presence": np.ones(train, np.float32),
                             "handedness": present},
              epochs=epochs, batch_size=32, verbose=0)
    e = slice(train, n)
    return _save(model, directory, "landmarks", {"x": x[e]},
                 {"landmarks": landmarks[e], "presence": presence[e], "handedness": handedness[e]})


# --- 5. classifier + embedding -------------------------------------------------------------------

def digits_split(seed: int = 0):
    """scripts/make_example.py's 70/30 split of sklearn digits (imported from there, so the two never drift)."""
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_example.py"
    spec = importlib.util.spec_from_file_location("edgeq_make_example", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.digits_split(seed)


def make_classifier_with_aux(directory, seed: int = 0, epochs: int = 20) -> tuple[Path, Path]:
    """Digits classifier plus an embedding head: ``classifier_with_aux.keras`` + ``.npz``.

    Input ``pixels`` (64,) float32 in 0..16 (sklearn digits). Shared trunk
    64 -> 128 -> 128 (ReLU), then two heads. Outputs, in ``get_output_details()`` order:

    * ``StatefulPartitionedCall_1:0`` (signature ``embedding``), shape (1, 16): linear,
      NOT L2-normalised; trained to regress a fixed random 16-d prototype per class
      (entries ~N(0, 1), norms about 2-6), so same-digit samples cluster. Last op
      FULLY_CONNECTED (128x16, 2048 weights, quantized).
    * ``StatefulPartitionedCall_1:1`` (signature ``probs``), shape (1, 10): softmax
      class probabilities; last op SOFTMAX (after a 128x10 FC, 1280 weights, quantized).
      ``y`` belongs to this output.

    Data ``classifier_with_aux.npz``: ``x`` (540, 64) float32 and ``y`` (540,) int64,
    the same test split as the built-in example. Truth sidecar
    ``classifier_with_aux_truth.npz``: ``prototypes`` (10, 16) float32.
    """
    directory, rng, keras = _start(directory, seed)
    L = keras.layers
    (x_train, y_train), (x_test, y_test) = digits_split()
    prototypes = rng.normal(size=(10, 16)).astype(np.float32)
    pixels = keras.Input((64,), name="pixels")
    h = L.Rescaling(1 / 16, name="scale")(pixels)
    h = L.Dense(128, activation="relu", name="hidden1")(h)  # 8192 w
    h = L.Dense(128, activation="relu", name="hidden2")(h)  # 16384 w
    outputs = {"probs": L.Dense(10, activation="softmax", name="probs")(h),  # 1280 w
               "embedding": L.Dense(16, name="embedding")(h)}  # 2048 w
    model = keras.Model(pixels, outputs, name="classifier_with_aux")
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss={"probs": "sparse_categorical_crossentropy", "embedding": "mse"},
                  loss_weights={"probs": 1.0, "embedding": 0.5})
    model.fit(x_train, {"probs": y_train, "embedding": prototypes[y_train]}, epochs=epochs,
              batch_size=32, verbose=0)
    return _save(model, directory, "classifier_with_aux", {"x": x_test, "y": y_test},
                 {"prototypes": prototypes})


BUILDERS = {
    "detector": make_detector,
    "segmenter": make_segmenter,
    "multiclass_segmenter": make_multiclass_segmenter,
    "multilabel": make_multilabel,
    "landmarks": make_landmarks,
    "classifier_with_aux": make_classifier_with_aux,
}
