"""The agent reads input sets a block of rows at a time and writes outputs in place.

Every run here is the real agent (a subprocess speaking its JSON-lines protocol through
the local transport) on a real .tflite; references are computed in this process with
the same interpreter and the same batches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agents.edgeq_agent import BLOCK_BYTES
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import AGENT_SOURCE
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import InputSetError


@pytest.fixture
def agent():
    with LocalTransport("local") as transport:
        with AgentSession(transport, sys.executable, str(AGENT_SOURCE)) as live:
            yield live


def run(agent, model, inputs, out, names=("x",), **options) -> tuple[dict, list[np.ndarray]]:
    """One run job; (meta, outputs) as the agent wrote them."""
    job = dict(model=str(model), inputs=str(inputs), input_arrays=list(names), out=str(out), warmup=1, **options)
    agent.request("run", job=job)
    meta = json.loads((Path(out) / "meta.json").read_text())
    return meta, [np.load(Path(out) / "outputs" / f"output_{k}.npy") for k in range(len(meta["outputs"]))]


def reference(model, arrays, batch) -> list[np.ndarray]:
    """The outputs of a bare interpreter fed the same batches, in this process."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    rows, count, shape = [[] for _ in outs], len(arrays[0]), None
    for lo in range(0, count, batch):
        part = [a[lo:lo + batch] for a in arrays]
        if shape != len(part[0]):
            for detail, array in zip(ins, part):
                interpreter.resize_tensor_input(detail["index"], list(array.shape))
            interpreter.allocate_tensors()
            shape = len(part[0])
        for detail, array in zip(ins, part):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        for found, detail in zip(rows, outs):
            found.append(interpreter.get_tensor(detail["index"]))
    return [np.concatenate(found) for found in rows]


@pytest.fixture(scope="module")
def digits(example_data) -> np.ndarray:
    """~100k digit samples (25 MB of float32): several 8 MiB blocks."""
    with np.load(example_data) as data:
        x = data["x"].astype(np.float32)
    return np.resize(x, (100_003,) + x.shape[1:])


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_stored_and_compressed_sets_give_the_reference_outputs(agent, example_tflite, digits, tmp_path, batch):
    x = digits if batch > 1 else digits[:5_000]  # batch 1 is an invoke per sample: keep it short
    assert batch == 1 or (BLOCK_BYTES // x[0].nbytes) % batch  # the agent cuts its blocks to whole batches
    stored, packed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, x=x)
    np.savez_compressed(packed, x=x)
    expected = reference(example_tflite[1], [x], batch)
    for path in (stored, packed):
        meta, (out,) = run(agent, example_tflite[1], path, tmp_path / path.stem, batch_size=batch)
        assert meta["samples"] == len(x) and out.shape == expected[0].shape
        assert np.array_equal(out, expected[0]), path.name
        assert np.load(tmp_path / path.stem / "latency_ns.npy").shape == (1, -(-len(x) // batch))


def test_repeats_and_min_duration_reread_every_pass(agent, example_tflite, digits, tmp_path):
    np.savez_compressed(tmp_path / "packed.npz", x=digits[:40_000])
    meta, (out,) = run(agent, example_tflite[1], tmp_path / "packed.npz", tmp_path / "run", batch_size=128,
                       repeats=2, min_duration_s=0.5)
    latency = np.load(tmp_path / "run" / "latency_ns.npy")
    assert meta["passes"] >= 2 and latency.shape == (meta["passes"], 313) and (latency > 0).all()
    assert np.array_equal(out, reference(example_tflite[1], [digits[:40_000]], 128)[0])


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory) -> Path:
    """A float model with two inputs of different dtypes and widths: a (float32 x6), b (int32 x3)."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="a"),
                                  tf.TensorSpec([None, 3], tf.int32, name="b")])
    def model(a, b):
        return tf.concat([tf.tanh(tf.matmul(a, weights)), tf.cast(b, tf.float32) * 0.5], axis=1)

    path = tmp_path_factory.mktemp("two_inputs") / "two.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()]).convert())
    return path


def test_a_two_input_model_reads_both_arrays_block_by_block(agent, two_input_model, tmp_path):
    rng = np.random.default_rng(1)
    count = 400_001  # 36 bytes a row: two blocks and a bit
    a = rng.normal(size=(count, 6)).astype(np.float32)
    b = rng.integers(-50, 50, size=(count, 3)).astype(np.int32)
    np.savez_compressed(tmp_path / "two.npz", b=b, a=a)  # stored in the other order than the model's
    meta, (out,) = run(agent, two_input_model, tmp_path / "two.npz", tmp_path / "run", names=("a", "b"),
                       batch_size=100)
    assert out.shape == (count, 7)
    assert np.array_equal(out, reference(two_input_model, [a, b], 100)[0])
    assert np.array_equal(out[:, 4:], b * 0.5)
    with pytest.raises(InputSetError, match=r"array b is int32 but model input a wants float32"):
        run(agent, two_input_model, tmp_path / "two.npz", tmp_path / "swapped", names=("b", "a"))


def test_peak_rss_is_recorded_and_does_not_grow_with_the_set(agent, example_tflite, digits, tmp_path):
    small, big = tmp_path / "small.npz", tmp_path / "big.npz"
    np.savez(small, x=digits[:1000])
    np.savez(big, x=np.resize(digits, (512 * 1024, digits.shape[1])))  # 128 MiB of inputs
    size = big.stat().st_size
    small_meta, _ = run(agent, example_tflite[1], small, tmp_path / "small", batch_size=512)
    big_meta, (out,) = run(agent, example_tflite[1], big, tmp_path / "big", batch_size=512)
    assert small_meta["peak_rss_kb"] > 0 and out.shape == (512 * 1024, 10)
    assert big_meta["peak_rss_kb"] * 1024 < size  # loading the set would take at least its size
    assert (big_meta["peak_rss_kb"] - small_meta["peak_rss_kb"]) * 1024 < size / 4


def test_a_truncated_set_is_refused_naming_the_file(agent, example_tflite, digits, tmp_path):
    cut = tmp_path / "cut.npz"
    np.savez(cut, x=digits[:1000])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(InputSetError, match=r"cut\.npz is not a readable \.npz archive"):
        run(agent, example_tflite[1], cut, tmp_path / "run")
    assert not (tmp_path / "run" / "outputs" / "output_0.npy").exists()  # refused before any inference


def test_corrupt_compressed_data_is_bad_inputs_naming_the_file(agent, example_tflite, digits, tmp_path):
    damaged = tmp_path / "damaged.npz"
    np.savez_compressed(damaged, x=digits[:50_000])
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputSetError, match=r"damaged\.npz.* (is damaged|cannot read)"):
        run(agent, example_tflite[1], damaged, tmp_path / "run", batch_size=64)
