"""Input-set rules: bad files get one clear error naming the file and the array."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from edgeq.errors import InputSetError
from edgeq.inputs.inputset import InputSet, load_inputset, match_model_inputs

MODEL_INPUT = [{"name": "serving_default_pixels:0", "shape": [1, 64], "dtype": "float32",
                "shape_signature": [-1, 64]}]


def save(tmp_path, name="set.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_round_trip_keeps_tags(tmp_path):
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    original = InputSet(arrays={"x": x}, y=np.arange(5), category=np.array(list("aabbc")),
                        severity=np.array([0, 1, 1, 2, 2]))
    loaded = load_inputset(original.save(tmp_path / "s.npz"))
    assert np.array_equal(loaded.arrays["x"], x)
    assert loaded.category.tolist() == list("aabbc")
    assert loaded.severity.tolist() == [0, 1, 1, 2, 2]
    assert match_model_inputs(loaded, MODEL_INPUT) == ["x"]


@pytest.mark.parametrize("arrays, needle, array", [
    ({"x": np.array([[1.0, np.nan]])}, "NaN/Inf", "x"),
    ({"x": np.array([[1.0, np.inf]], dtype=np.float32)}, "NaN/Inf", "x"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(4, dtype=int)}, "different numbers of samples", None),
    ({"x": np.zeros((0, 2))}, "zero samples", None),
    ({"x": np.array([["a", "b"]])}, "must be numeric", "x"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "integers", "y"),
    ({"x": np.zeros((2, 2)), "category": np.array([1, 2])}, "unicode", "category"),
    ({"y": np.zeros(2, dtype=int)}, "no input array", None),
    ({"x": np.float32(3.0)}, "scalar", "x"),
])
def test_bad_arrays_are_refused(tmp_path, arrays, needle, array):
    path = save(tmp_path, **arrays)
    with pytest.raises(InputSetError) as info:
        load_inputset(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.array == array


def test_nonfinite_allowed_when_the_set_says_so(tmp_path):
    path = save(tmp_path, x=np.array([[np.nan, 1.0]]), allow_nonfinite=np.array(True))
    assert load_inputset(path).allow_nonfinite


def test_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputSetError, match="pickled/object data") as info:
        load_inputset(path)
    assert info.value.array == "x"


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "evil.npz"

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(InputSetError, match="pickled"):
        load_inputset(path)


def test_missing_folder_and_garbage_files(tmp_path):
    with pytest.raises(InputSetError, match="file not found"):
        load_inputset(tmp_path / "nope.npz")
    with pytest.raises(InputSetError, match="is a folder"):
        load_inputset(tmp_path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputSetError, match="not a readable NumPy"):
        load_inputset(garbage)


def test_truncated_npz_is_refused(tmp_path):
    path = save(tmp_path, x=np.zeros((100, 64), dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputSetError):
        load_inputset(path)


@pytest.mark.parametrize("x, needle", [
    (np.zeros((3, 64), dtype=np.float64), "dtype float64 does not match model input 'pixels'"),
    (np.zeros((3, 63), dtype=np.float32), "sample shape [63] does not match model input 'pixels' [64]"),
    (np.zeros((3, 8, 8), dtype=np.float32), "sample shape [8, 8]"),
])
def test_mismatch_with_the_model_is_named(tmp_path, x, needle):
    loaded = load_inputset(save(tmp_path, x=x))
    with pytest.raises(InputSetError) as info:
        match_model_inputs(loaded, MODEL_INPUT)
    assert needle in str(info.value)


def test_multi_input_sets_match_by_input_name(tmp_path):
    specs = [{"name": "serving_default_a:0", "shape": [1, 2], "dtype": "float32"},
             {"name": "serving_default_b:0", "shape": [1, 3], "dtype": "int32"}]
    loaded = load_inputset(save(tmp_path, b=np.zeros((4, 3), dtype=np.int32), a=np.zeros((4, 2), dtype=np.float32)))
    assert match_model_inputs(loaded, specs) == ["a", "b"]
    missing = load_inputset(save(tmp_path, "m.npz", a=np.zeros((4, 2), dtype=np.float32)))
    with pytest.raises(InputSetError, match="no array for model input 'b'"):
        match_model_inputs(missing, specs)


def test_search_tags_are_not_model_inputs(tmp_path):
    """seed_index/distance say where a found input came from; a two-input model must not see them as inputs."""
    from edgeq.inputs.inputset import load_inputset

    n = 4
    path = tmp_path / "found.npz"
    np.savez(path, a=np.zeros((n, 3), np.float32), b=np.ones((n, 2), np.float32), category=np.array(["search"] * n),
             seed_index=np.arange(n), distance=np.full(n, 0.05))
    found = load_inputset(path)
    assert sorted(found.arrays) == ["a", "b"] and found.extra["seed_index"].tolist() == [0, 1, 2, 3]
    np.savez(path, x=np.zeros((n, 3), np.float32), seed_index=np.arange(n + 1))
    with pytest.raises(InputSetError, match="different numbers of samples"):
        load_inputset(path)
    np.savez(path, x=np.zeros((n, 3), np.float32), distance=np.array(["far"] * n))
    with pytest.raises(InputSetError, match="floats"):
        load_inputset(path)
