"""Searching for failures instead of listing them: disagreement search and worst distributions.

``disagreement`` grows inputs near the user's data until float and quantized models
disagree (``edgeq inputs search``); ``worst`` finds the shift of the inputs (risky family
× continuous strength, and pairs) with the largest accuracy drop / flip rate
(``edgeq inputs worst``). Both run candidates through an evaluator (``evaluators``): this
host's interpreter, or a device's agent in batches. ``prepare`` reads the models and the
data once for either; ``write_found`` writes what a search found as an input set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError
from edgeq.inputs.search.settings import DISTANCE

SEARCH_CATEGORY = "search"


@dataclass
class Prepared:
    """The models' facts and the data, in model input order, with the spaces the search moves in."""

    float_info: object
    quant_info: object
    input_names: list[str]  # the data's array names, one per model input
    data: list[np.ndarray]
    labels: np.ndarray | None
    spaces: list
    range_modes: dict
    output_names: list[str]

    @property
    def n(self) -> int:
        return len(self.data[0])


def prepare(float_model: Path, quant_model: Path, data_path: Path, epsilon: float = DISTANCE,
            norm: str = "linf") -> Prepared:
    """Check the pair and the data (exit 2 on a mismatch) and build each input's search space."""
    from edgeq.inputs.inputset import input_specs, load_inputset, match_model_inputs
    from edgeq.inputs.risky.observed import DataStats
    from edgeq.inputs.risky.ranges import resolve_range_modes
    from edgeq.inputs.search.evaluators import check_pair
    from edgeq.inputs.search.operators import Space
    from edgeq.models.modelinfo import read_model

    float_info, quant_info = read_model(float_model), read_model(quant_model)
    check_pair(float_info, quant_info)
    dataset = load_inputset(data_path, what="data")
    names = match_model_inputs(dataset, input_specs(float_info))
    data = [np.asarray(dataset.arrays[name][:]) for name in names]
    if len(data[0]) == 0:
        raise ConfigError(f"{data_path}: no samples to start from")
    modes = resolve_range_modes(dict(zip(names, data)), "auto")
    spaces = [Space(name, DataStats(x, modes[name][0]), epsilon, norm) for name, x in zip(names, data)]
    labels = None if dataset.y is None else np.asarray(dataset.y[:])
    return Prepared(float_info, quant_info, names, data, labels, spaces, modes,
                    [t.name for t in float_info.outputs])


def write_found(path: Path, prepared: Prepared, found: list) -> Path | None:
    """The found inputs as an input set: ``category`` = search, ``source_index`` and ``seed_index`` = the data
    row each was grown from, ``distance`` from it (relative to the data range); None when nothing was found
    (an input set may not be empty)."""
    from edgeq.inputs.inputset import write_npz
    from edgeq.inputs.risky import category_array

    if not found:
        return None
    payload = {name: np.stack([f.arrays[k] for f in found]) for k, name in enumerate(prepared.input_names)}
    seeds = np.array([f.seed_index for f in found], dtype=np.int64)
    if prepared.labels is not None:
        payload["y"] = prepared.labels[seeds]
    payload.update(category=category_array([SEARCH_CATEGORY] * len(found)),
                   severity=np.zeros(len(found), dtype=np.int32), source_index=seeds, seed_index=seeds,
                   distance=np.array([f.distance for f in found], dtype=np.float64))
    write_npz(Path(path), payload)
    return Path(path)
