#!/usr/bin/env python3
"""Rebuild the built-in example: a small MLP trained on scikit-learn's digits.

scikit-learn ships the digits data inside the package, so this works offline. The
outputs are committed (edgeq/examples/), so `edgeq evaluate` with no model needs
neither scikit-learn nor a training run. Needs the host and dev extras.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "edgeq" / "examples"


def digits_split(seed: int = 0):
    """70/30 split of the 1797 digits; pixel values stay in their native 0..16 range."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * 0.7)
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def train_mlp(x, y, seed: int = 0, epochs: int = 40):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],), name="pixels"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--outdir", type=Path, default=EXAMPLES)
    args = parser.parse_args()
    (x_train, y_train), (x_test, y_test) = digits_split()
    model = train_mlp(x_train, y_train)
    args.outdir.mkdir(parents=True, exist_ok=True)
    model.save(args.outdir / "digits_mlp.keras")
    np.savez_compressed(args.outdir / "digits.npz", allow_pickle=False, x=x_test, y=y_test)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    print(f"wrote {args.outdir}/digits_mlp.keras and digits.npz ({len(x_test)} samples); "
          f"test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
