"""Tabular test data and models with known behaviour under dynamic-range quantization.

``make_tabular_data`` makes standardized sensor-like features with 4 classes and one
auxiliary feature whose "missing" entries carry the code -999 in ~2 % of the rows,
as real exports do; its normal twin has those entries imputed with the feature's
mean instead. ``make_tabular_model`` trains a small MLP whose first Dense layer is
big enough (12×128 ≥ 1024 weights) for the converter to quantize it.

A float model trained on the rows with -999 learns to ignore the code. Quantized
with dynamic-range int8, a row holding -999 gets an input scale of about 999/127 ≈ 7.9
(asymmetric: ~1003/255 ≈ 3.9), every standardized feature rounds to the zero point,
and the model sees only the code: the quantized model collapses while the float one
stays accurate. The twin never sees such a value and stays robust. Pure functions;
the test session builds and trains them (a few seconds each on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MISSING_CODE = -999.0
N_SAMPLES = 2000
N_INFORMATIVE = 11
N_CLASSES = 4
MISSING_RATE = 0.02


@dataclass(frozen=True)
class TabularData:
    x: np.ndarray          # float32 (N, 12): 11 standardized features + aux with -999 codes
    y: np.ndarray          # int64 labels in [0, N_CLASSES)
    x_twin: np.ndarray     # the same rows with the codes imputed by the aux feature's mean
    sentinel_feature: int  # column that carries the code
    missing: np.ndarray    # bool (N,): rows holding the code


def make_tabular_data(seed: int = 0) -> TabularData:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(N_CLASSES, N_INFORMATIVE))
    y = rng.integers(0, N_CLASSES, size=N_SAMPLES)
    informative = centers[y] + rng.normal(0.0, 0.9, size=(N_SAMPLES, N_INFORMATIVE))
    aux = rng.normal(0.0, 1.0, size=(N_SAMPLES, 1))  # carries no label information
    raw = np.hstack([informative, aux])
    x = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    missing = np.zeros(N_SAMPLES, dtype=bool)
    missing[rng.choice(N_SAMPLES, size=int(MISSING_RATE * N_SAMPLES), replace=False)] = True
    feature = N_INFORMATIVE
    twin = x.copy()
    twin[missing, feature] = x[~missing, feature].mean()
    x[missing, feature] = MISSING_CODE
    return TabularData(x=x.astype(np.float32), y=y.astype(np.int64), x_twin=twin.astype(np.float32),
                       sentinel_feature=feature, missing=missing)


def make_tabular_model(x: np.ndarray, y: np.ndarray, path: Path, seed: int = 0, epochs: int = 20) -> Path:
    """Train 12→128→64→classes (ReLU, softmax) and save it as .keras (about 3 s on 2 cores).

    L1 on the first layer and a cosine learning-rate decay let the float model learn
    to ignore the -999 code from the ~40 rows that hold it (accuracy with the code in
    EVERY row: 0.91-0.95 over data seeds 0-3; without them 0.25-0.57 on seed 0).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],), name="features"),
        keras.layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L1(1e-3)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
    ])
    batch = 128
    steps = epochs * int(np.ceil(len(x) / batch))
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, shuffle=True)
    model.save(path)
    return Path(path)
