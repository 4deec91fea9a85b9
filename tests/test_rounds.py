"""Rounds: runs on chosen rows of one pushed input set, in one locked session, merged into one run.

Real agent, real models, on the local device and over the loopback sshd (and a cutting proxy).
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_inventory

from device_agents.edgeq_agent import inputsets
from edgeq.analysis.compare import compare_runs
from edgeq.devices import deploy, rounds as rounds_module, run as run_module
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import AGENT_SOURCE
from edgeq.devices.inventory import load_inventory
from edgeq.devices.rounds import open_rounds
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.session import open_session
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import AgentError, ConfigError, DeviceBusy, TransportError
from edgeq.inputs.inputset import InputSet
from edgeq.reports.report import build_report
from edgeq.results import IncompleteRun, RunResult
from edgeq.rows import merge_rounds, run_rows

N = 300
ROUND_ONE = np.arange(0, N, 3)  # 100 rows
ROUND_TWO = np.setdiff1d(np.arange(1, N, 7), ROUND_ONE)  # 29 rows, none of round one's


@pytest.fixture(scope="module")
def suite(tmp_path_factory, example_data) -> Path:
    """300 labelled samples in three categories, with severities and source indices."""
    with np.load(example_data) as data:
        x, y = data["x"][:N].copy(), data["y"][:N]
    x[100:200] = np.clip(x[100:200] + 4.0, 0, 16)
    category = np.array(["clean"] * 100 + ["bright"] * 100 + ["noise"] * 100)
    x[200:] += np.random.default_rng(0).normal(0, 2, x[200:].shape).astype(np.float32)
    return InputSet(arrays={"x": x}, y=y, category=category, severity=np.repeat([0, 1, 2], 100).astype(np.int32),
                    source_index=np.arange(N, dtype=np.int64) % 50).save(tmp_path_factory.mktemp("suite") / "suite.npz")


@pytest.fixture(params=["local", "ssh"])
def device(request):
    return request.getfixturevalue("local") if request.param == "local" else request.getfixturevalue("ssh_device")[0]


def pair(example_tflite, inputs, **options) -> list[RunSpec]:
    return [RunSpec(model=example_tflite[0], inputs=inputs, label="float", **options),
            RunSpec(model=example_tflite[1], inputs=inputs, label="quant", **options)]


def hash_counter(monkeypatch) -> list[str]:
    """Every file the host hashes while pushing, in order."""
    hashed = []

    def counting(path, *args, **kwargs):
        hashed.append(str(path))
        return real(path, *args, **kwargs)

    real = deploy.sha256_file
    for module in (deploy, rounds_module, run_module):
        monkeypatch.setattr(module, "sha256_file", counting)
    return hashed


def test_two_rounds_merge_to_the_full_run_bit_for_bit(device, example_tflite, suite, tmp_path, monkeypatch):
    specs = pair(example_tflite, suite)
    hashed = hash_counter(monkeypatch)
    with open_rounds(device, specs, tmp_path / "rounds") as rounds:
        hashed_at_open = list(hashed)
        one = rounds.run(ROUND_ONE)
        two = rounds.run(ROUND_TWO)
        transfers = list(rounds.opened.deployer.transfers)
    # the input set was hashed once on the host and sent once, at open; the rounds only checked it is there
    assert hashed_at_open.count(str(suite)) == 1 and hashed.count(str(suite)) == 1
    pushes = [t for t in transfers if t.source == str(suite)]
    assert len(pushes) == 5  # open, then float and quant in each round
    assert [t.skipped for t in pushes] == [device.transport == "local"] + [True] * 4  # local: read where it is
    assert len(two.transfers) == 6 and [t.skipped for t in two.transfers].count(False) == (
        0 if device.transport == "local" else 1)  # the round's rows file, sent once for both models
    assert two.device_s > 0 and two.agent_s > 0 and two.wall_s > 0
    assert two.costs()["rows"] == len(ROUND_TWO) and rounds.device_s == one.device_s + two.device_s
    full = run_on_device(device, specs, [tmp_path / "full" / s.label for s in specs])

    rows = np.union1d(ROUND_ONE, ROUND_TWO)
    merged = []
    for k, spec in enumerate(specs):
        for done, taken in ((one, ROUND_ONE), (two, ROUND_TWO)):
            assert done[k].path == tmp_path / "rounds" / spec.label / f"round-{done.index}"
            assert np.array_equal(run_rows(done[k]), taken) and done[k].n == len(taken)
            assert done[k].meta["rows_file"]["count"] == len(taken) and done[k].meta["rows_file"]["of"] == N
            assert np.asarray(done[k].outputs[0]).tobytes() == np.asarray(full[k].outputs[0])[taken].tobytes()
        result = merge_rounds([two[k], one[k]], tmp_path / "merged" / spec.label)  # any order of rounds
        again = RunResult.load(result.path)
        merged.append(again)
        assert again.n == len(rows) and again.meta["rows"] == rows.tolist()
        assert np.array_equal(run_rows(again), rows)
        assert np.asarray(again.outputs[0]).tobytes() == np.asarray(full[k].outputs[0])[rows].tobytes()
        for tag in ("y", "category", "severity", "source_index"):
            assert np.array_equal(np.asarray(again.samples[tag]), np.asarray(full[k].samples[tag])[rows]), tag
        assert again.latency_ns.shape == (1, len(rows)) and again.batch_sizes.tolist() == [1] * len(rows)
        by_row = dict(zip(ROUND_ONE.tolist(), np.asarray(one[k].latency_ns)[0].tolist()))
        by_row.update(zip(ROUND_TWO.tolist(), np.asarray(two[k].latency_ns)[0].tolist()))
        assert again.latency_ns[0].tolist() == [by_row[r] for r in rows.tolist()]  # column j: sample j's latency
        assert [r["samples"] for r in again.meta["rounds"]] == [len(ROUND_TWO), len(ROUND_ONE)]

    comparison = compare_runs(merged[0], merged[1])
    assert comparison["overall"] == compare_runs(*(_restricted(run, rows) for run in full))["overall"]
    report = build_report(comparison, merged[0], merged[1])
    assert report["latency_ms"]["quant"]["n"] == len(rows)
    if device.transport == "ssh":  # every round's run folder and rows file was dropped from the device's store
        workdir = Path(device.workdir)
        assert not [p for p in (workdir / "runs").iterdir() if p.name != ".edgeq-made"]
        assert not list((workdir / "cas").glob("*.npy"))


def _restricted(run: RunResult, rows: np.ndarray):
    """A full run cut down to ``rows`` in memory: what a comparison of the merged rounds must equal."""
    from types import SimpleNamespace

    from edgeq.rows import take_rows

    return SimpleNamespace(path=run.path, meta=dict(run.meta, samples=len(rows)), run=run.run, sensors=None,
                           outputs=[np.asarray(o)[rows] for o in run.outputs], n=len(rows),
                           samples={k: take_rows(v, rows) for k, v in run.samples.items()})


def test_the_merged_run_is_a_run_directory_edgeq_compare_reads(local, example_tflite, suite, tmp_path):
    from click.testing import CliRunner

    from edgeq.cli.main import main

    specs = pair(example_tflite, suite)
    with open_rounds(local, specs, tmp_path / "rounds") as rounds:
        done = [rounds.run(ROUND_ONE[:30]), rounds.run(ROUND_TWO)]
    for k, spec in enumerate(specs):
        merge_rounds([d[k] for d in done], tmp_path / spec.label)
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "float"), str(tmp_path / "quant"),
                                       "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c.json").read_text())["overall"]["n"] == 30 + len(ROUND_TWO)


def test_rounds_that_overlap_or_mix_models_do_not_merge(local, example_tflite, suite, tmp_path):
    specs = pair(example_tflite, suite)
    with open_rounds(local, specs, tmp_path / "rounds") as rounds:
        one, two = rounds.run(ROUND_ONE[:10]), rounds.run(ROUND_ONE[5:15])
    with pytest.raises(ConfigError, match=f"overlap: row {ROUND_ONE[5]} was run in two"):
        merge_rounds([one[0], two[0]], tmp_path / "m")
    with pytest.raises(ConfigError, match="differ in model_sha256"):
        merge_rounds([one[0], two[1]], tmp_path / "m")
    with pytest.raises(ConfigError, match="a folder of its own"):
        merge_rounds([one[0]], one[0].path)
    assert merge_rounds([one[0]], tmp_path / "alone").meta["job"].get("rows_file") is None


BAD_ROWS = {  # a rows file, and what the one line says of it
    "unsorted": (np.array([3, 1, 2], np.int64), "must be sorted ascending, but row 1 (position 1) follows row 3"),
    "duplicate": (np.array([1, 2, 2], np.int64), "row 2 appears twice"),
    "out of range": (np.array([0, N], np.int64), f"row {N} is out of range: the input set has {N} rows"),
    "negative": (np.array([-1, 0], np.int64), "row -1 is negative"),
    "int32": (np.array([0, 1], np.int32), "must be a 1-D int64 array of row indices, not int32"),
    "float": (np.array([0.0, 1.0]), "must be a 1-D int64 array of row indices, not float64"),
    "2-D": (np.array([[0, 1]], np.int64), "not int64 of shape [1, 2]"),
    "empty": (np.array([], np.int64), "names no rows"),
    "pickled": (np.array([1, None], dtype=object), "holds pickled/object data"),
    "a pickle": (b"pickle", "is not a .npy array"),
}


def write_rows(path: Path, rows) -> Path:
    if isinstance(rows, bytes):
        path.write_bytes(pickle.dumps([0, 1, 2]))
    else:
        np.save(path, rows, allow_pickle=True)
    return path


@pytest.fixture
def agent():
    with LocalTransport("local") as transport:
        with AgentSession(transport, sys.executable, str(AGENT_SOURCE)) as live:
            yield live


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_rows_file_is_refused_in_one_line(case, agent, example_tflite, suite, tmp_path):
    rows, needle = BAD_ROWS[case]
    path = write_rows(tmp_path / "rows.npy", rows)
    job = dict(model=str(example_tflite[0]), inputs=str(suite), input_arrays=["x"], out=str(tmp_path / "out"),
               rows_file=str(path))
    with pytest.raises(AgentError) as found:
        agent.request("run", job=job)
    assert found.value.kind == "BadJob" and needle in str(found.value) and "\n" not in str(found.value)
    assert str(path) in str(found.value)
    # the host reads a rows file with the agent's own reader: the same words, before any device work
    spec = RunSpec(model=example_tflite[0], inputs=suite, rows_file=str(path))
    with pytest.raises(ConfigError) as host:
        run_module.prepare(spec, tmp_path / "host")
    assert needle in str(host.value) and "\n" not in str(host.value)


@pytest.mark.parametrize("rows, needle", [
    ([2, 1], "must be sorted ascending"), ([4, 4], "appears twice"), ([0, N + 5], "out of range"),
    ([0.0, 2.0], "whole row indices, not float64"), ([], "names no rows"), (np.array([0, 1], np.uint8) > 0, "not bool"),
])
def test_rows_given_to_the_host_are_checked_by_the_same_rule(local, example_tflite, suite, tmp_path, rows, needle):
    specs = pair(example_tflite, suite)
    with pytest.raises(ConfigError, match=needle):
        run_on_device(local, [RunSpec(model=example_tflite[0], inputs=suite, rows=np.asarray(rows))], [tmp_path / "r"])
    with open_rounds(local, specs, tmp_path / "rounds") as rounds:
        with pytest.raises(ConfigError, match=needle):
            rounds.run(rows)
        taken = rounds.run(np.array([0, 5], np.int32))  # any whole numbers, as int64 on the device
    assert taken[0].n == 2 and taken.index == 1  # a refused round takes no folder


def test_a_spec_run_alone_on_rows(local, example_tflite, suite, tmp_path):
    """run_on_device takes rows too: the rows file is pushed and recorded with the run."""
    spec = RunSpec(model=example_tflite[1], inputs=suite, rows=ROUND_TWO)
    (found,) = run_on_device(local, [spec], [tmp_path / "r"])
    assert np.array_equal(run_rows(found), ROUND_TWO) and found.run["rows"]["count"] == len(ROUND_TWO)
    assert found.samples["category"].tolist() == np.repeat(["clean", "bright", "noise"], 100)[ROUND_TWO].tolist()
    with pytest.raises(ConfigError, match="rows or rows_file, not both"):
        run_on_device(local, [RunSpec(model=example_tflite[1], inputs=suite, rows=ROUND_TWO,
                                      rows_file=str(tmp_path / "r" / "rows.npy"))], [tmp_path / "r2"])


def test_rows_keep_whole_batches(device, example_tflite, suite, tmp_path):
    specs = pair(example_tflite, suite, batch_size=4)
    full = run_on_device(device, specs, [tmp_path / "full" / s.label for s in specs])
    with open_rounds(device, specs, tmp_path / "rounds") as rounds:
        one, two = rounds.run(ROUND_ONE), rounds.run(ROUND_TWO)
    assert one[0].batch_sizes.tolist() == [4] * 25 and two[0].batch_sizes.tolist() == [4] * 7 + [1]
    rows = np.union1d(ROUND_ONE, ROUND_TWO)
    for k, spec in enumerate(specs):
        merged = merge_rounds([one[k], two[k]], tmp_path / "merged" / spec.label)
        assert int(merged.batch_sizes.sum()) == len(rows) and merged.latency_ns.shape == (1, 33)
        # the hybrid kernels quantize each batch row by itself: other batch neighbours, the same numbers
        assert np.asarray(merged.outputs[0]).tobytes() == np.asarray(full[k].outputs[0])[rows].tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_rows_are_read_block_by_block_from_stored_and_compressed_sets(agent, example_tflite, example_data, tmp_path,
                                                                      compressed):
    """A set of several read blocks (100,003 × 64 float32: 25 MB, 8 MiB a block): scattered rows, runs of
    consecutive rows and the last row give the bare interpreter's outputs for those rows, in order."""
    from ai_edge_litert.interpreter import Interpreter

    with np.load(example_data) as data:
        x = np.resize(data["x"].astype(np.float32), (100_003, 64))
    x += (np.arange(len(x), dtype=np.float32) % 7)[:, None] / 7  # every row its own
    path = tmp_path / "big.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x)
    rng = np.random.default_rng(2)
    rows = np.unique(np.concatenate([rng.choice(len(x), 3000, replace=False), np.arange(32700, 32900),
                                     np.arange(65530, 65540), [0, len(x) - 1]]))
    rows_path = write_rows(tmp_path / "rows.npy", rows)
    job = dict(model=str(example_tflite[1]), inputs=str(path), input_arrays=["x"], out=str(tmp_path / "out"),
               rows_file=str(rows_path), warmup=1, batch_size=3)
    agent.request("run", job=job)
    found = np.load(tmp_path / "out" / "outputs" / "output_0.npy")
    assert np.array_equal(np.load(tmp_path / "out" / "rows.npy"), rows)
    interpreter = Interpreter(model_path=str(example_tflite[1]), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    expected = []
    for row in rows:
        interpreter.set_tensor(inp["index"], x[row:row + 1])
        interpreter.invoke()
        expected.append(interpreter.get_tensor(out["index"])[0])
    assert found.shape == (len(rows), 10) and found.tobytes() == np.stack(expected).tobytes()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["samples"] == len(rows) and meta["rows_file"]["of"] == len(x)


@pytest.fixture(scope="module")
def fixed_batch_model(tmp_path_factory) -> Path:
    """A float model whose input fixes the batch at 1 (shape signature [1, 64])."""
    import tensorflow as tf

    weights = np.random.default_rng(1).normal(0, 0.3, (64, 10)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def model(x):
        return tf.nn.softmax(tf.matmul(x, weights))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    path = tmp_path_factory.mktemp("fixed") / "fixed.tflite"
    path.write_bytes(converter.convert())
    return path


def test_the_fixed_batch_rule_holds_with_rows(local, fixed_batch_model, suite, agent, tmp_path):
    spec = RunSpec(model=fixed_batch_model, inputs=suite, label="float", batch_size=2)
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        with open_rounds(local, [spec], tmp_path / "rounds"):
            pass
    assert not Path(local.workdir).exists()  # refused before any session
    rows = write_rows(tmp_path / "rows.npy", ROUND_TWO)
    job = dict(model=str(fixed_batch_model), inputs=str(suite), input_arrays=["x"], out=str(tmp_path / "out"),
               rows_file=str(rows), batch_size=2)
    with pytest.raises(AgentError, match="fixed batch of 1"):
        agent.request("run", job=job)
    with open_rounds(local, [RunSpec(model=fixed_batch_model, inputs=suite, label="float")], tmp_path / "ok") as r:
        (found,) = r.run(ROUND_TWO)
    assert found.batch_sizes.tolist() == [1] * len(ROUND_TWO)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(fixed_batch_model), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = np.load(suite)["x"]
    expected = []
    for row in ROUND_TWO:
        interpreter.set_tensor(inp["index"], x[row:row + 1])
        interpreter.invoke()
        expected.append(interpreter.get_tensor(out["index"])[0])
    assert np.asarray(found.outputs[0]).tobytes() == np.stack(expected).tobytes()


def test_the_lock_is_held_across_rounds_and_released_after(device, example_tflite, suite, tmp_path):
    with open_rounds(device, pair(example_tflite, suite), tmp_path / "rounds") as rounds:
        rounds.run(ROUND_ONE[:10])
        for _ in range(2):  # between rounds, and again after the next
            with pytest.raises(DeviceBusy, match="device busy"):
                with open_session(device, lock=True, wait_s=0, on_wait=None):
                    pass
            rounds.run(ROUND_TWO[:5])
    with open_session(device, lock=True, wait_s=10, on_wait=None) as opened:
        assert opened.lock["acquired"]
    with pytest.raises(ConfigError, match="these rounds are closed"):
        rounds.run(ROUND_ONE[:3])


def test_ctrl_c_between_rounds_keeps_what_was_pulled_and_frees_the_device(local, example_tflite, suite, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with open_rounds(local, pair(example_tflite, suite), tmp_path / "rounds") as rounds:
            rounds.run(ROUND_ONE[:10])
            raise KeyboardInterrupt
    assert RunResult.load(tmp_path / "rounds" / "quant" / "round-1").n == 10
    with open_session(local, lock=True, wait_s=10, on_wait=None) as opened:
        assert opened.lock["acquired"]
    with pytest.raises(ConfigError, match="already holds rounds"):  # a new session never overwrites a round
        with open_rounds(local, pair(example_tflite, suite), tmp_path / "rounds"):
            pass


def test_a_device_dropping_in_round_two_keeps_round_one(sshd_session, tcp_proxy_factory, example_tflite, suite,
                                                        tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    entry = dict(proxy.inventory_entry(), workdir=str(tmp_path / "w"), retries=0)
    device = load_inventory(write_inventory(tmp_path / "pi.toml", {"pi": entry}))["pi"]
    armed, cut = [], []

    def progress(label, done, total):
        if armed and done and not cut:
            cut.append(label)
            proxy.cut()

    specs = pair(example_tflite, suite, min_duration_s=1.0)  # long enough for progress events
    with pytest.raises(TransportError) as failed:
        with open_rounds(device, specs, tmp_path / "rounds", progress=progress) as rounds:
            rounds.run(ROUND_ONE[:20])
            armed.append(True)
            rounds.run(ROUND_TWO[:20])
    assert cut == ["float"]  # mid-run, in round two
    assert str(failed.value).startswith("pi: ") and "\n" not in str(failed.value)
    for label in ("float", "quant"):
        assert RunResult.load(tmp_path / "rounds" / label / "round-1").n == 20
    with pytest.raises(IncompleteRun):
        RunResult.load(tmp_path / "rounds" / "float" / "round-2")
    proxy.resume()
    with open_session(device, lock=True, wait_s=30, on_wait=None) as opened:  # the dropped agent let the lock go
        assert opened.lock["acquired"]


def test_the_agent_hashes_an_unchanged_file_once_per_session(tmp_path, monkeypatch):
    hashed = []
    real = inputsets.sha256_file
    monkeypatch.setattr(inputsets, "sha256_file", lambda path: hashed.append(path) or real(path))
    monkeypatch.setattr(inputsets, "_HASHED", {})
    path = tmp_path / "set.npz"
    path.write_bytes(b"a" * 1000)
    first = inputsets.file_sha256(str(path))
    assert inputsets.file_sha256(str(path)) == first and len(hashed) == 1
    path.write_bytes(b"b" * 1000)  # same size, rewritten in place: its change time moves
    assert inputsets.file_sha256(str(path)) != first and len(hashed) == 2
