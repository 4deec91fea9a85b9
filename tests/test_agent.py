"""The real device agent, run as a subprocess through the local transport."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import AGENT_SOURCE, Deployer
from edgeq.errors import AgentError, ModelError
from edgeq.results import IncompleteRun, RunResult, checked_manifest
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.devices.transport.local import LocalTransport


def host_outputs(model_path, x, resolver="AUTO"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model_path), num_threads=1,
                              experimental_op_resolver_type=getattr(OpResolverType, resolver))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(rows)


@pytest.fixture
def runs(local, example_tflite, small_inputs, tmp_path):
    float_path, quant_path = example_tflite
    specs = [RunSpec(model=float_path, inputs=small_inputs, label="float"),
             RunSpec(model=quant_path, inputs=small_inputs, label="quant", warmup=2)]
    return run_on_device(local, specs, [tmp_path / "float", tmp_path / "quant"])


def test_outputs_match_a_bare_interpreter_bit_for_bit(runs, example_tflite, small_inputs):
    x = np.load(small_inputs)["x"]
    for run, model in zip(runs, example_tflite):
        assert run.outputs[0].shape == (40, 10)
        assert np.array_equal(run.outputs[0], host_outputs(model, x))


def test_run_records_timing_and_provenance(runs, example_tflite):
    from edgeq.devices.transport.base import sha256_file

    run = runs[1]
    assert run.latency_ns.shape == (1, 40) and (run.latency_ns > 0).all()
    assert run.meta["load_ns"] > 0 and run.meta["first_inference_ns"] > 0
    assert run.meta["resolver"] == "AUTO" and run.meta["threads"] == 1 and run.meta["warmup"] == 2
    device = run.meta["device"]
    assert device["runtime"]["name"] == "ai_edge_litert" and device["runtime"]["version"]
    assert device["arch"] and device["os"] and device["python"] and device["numpy"]
    assert device["agent_sha256"] == sha256_file(AGENT_SOURCE)
    assert run.meta["model_sha256"] == sha256_file(example_tflite[1])
    assert run.samples["category"].tolist() == ["clean"] * 20 + ["shifted"] * 20
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"outputs/output_0.npy", "latency_ns.npy", "batch_sizes.npy", "meta.json"}


def test_batched_run_matches_per_sample(local, example_tflite, small_inputs, tmp_path, runs):
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, batch_size=16)
    (batched,) = run_on_device(local, [spec], [tmp_path / "batched"])
    assert batched.batch_sizes.tolist() == [16, 16, 8]
    assert batched.latency_ms_per_sample().shape == (3,)
    np.testing.assert_allclose(batched.outputs[0], runs[1].outputs[0], rtol=1e-5, atol=1e-5)


def test_unchanged_files_are_not_pushed_again(local, example_tflite, small_inputs, tmp_path):
    spec = RunSpec(model=example_tflite[0], inputs=small_inputs)
    run_on_device(local, [spec], [tmp_path / "a"])
    with LocalTransport("local") as transport:
        deployer = Deployer(transport, local.workdir)
        deployer.push_agent()
        deployer.push(example_tflite[0])
    assert all(t.skipped and t.bytes_moved == 0 for t in deployer.transfers)


def test_resolver_choice_is_recorded(local, example_tflite, small_inputs, tmp_path):
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, resolver="BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    (run,) = run_on_device(local, [spec], [tmp_path / "builtin"])
    assert run.meta["resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    x = np.load(small_inputs)["x"]
    assert np.array_equal(run.outputs[0], host_outputs(example_tflite[1], x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"))


def test_runtime_fallback_to_tensorflow_lite(local, example_tflite, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_AGENT_RUNTIME", "tensorflow")
    (run,) = run_on_device(local, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "tf"])
    assert run.meta["device"]["runtime"]["name"] == "tensorflow"


@pytest.fixture
def session(local):
    with LocalTransport("local") as transport:
        agent = Deployer(transport, local.workdir).push_agent()
        with AgentSession(transport, sys.executable, agent) as live:
            yield live


def test_hello_reports_the_device(session):
    facts = session.request("hello")
    assert facts["runtime"]["name"] == "ai_edge_litert"
    assert facts["agent_version"] == "1"


def test_agent_refuses_unknown_ops_and_keeps_serving(session):
    with pytest.raises(AgentError, match="unknown op"):
        session.request("format_disk")
    assert session.request("hello")["python"]


def test_agent_names_a_model_it_cannot_load(session, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="bad.tflite"):
        session.request("load", model=str(bad))


def test_a_dead_agent_is_an_agent_error(tmp_path):
    with LocalTransport("local") as transport:
        script = tmp_path / "dies.py"
        script.write_text("import sys; sys.stderr.write('boom: no numpy here\\n'); sys.exit(7)\n")
        live = AgentSession(transport, sys.executable, str(script))
        with pytest.raises(AgentError, match=r"exited \(code 7\).*boom: no numpy here"):
            live.request("hello", timeout=30)


def test_missing_manifest_marks_the_run_incomplete(runs):
    (runs[0].path / "manifest.json").unlink()
    with pytest.raises(IncompleteRun, match="incomplete run"):
        RunResult.load(runs[0].path)


def test_tampered_output_fails_its_checksum(runs):
    path = runs[1].path / "outputs" / "output_0.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IncompleteRun, match="sha256"):
        RunResult.load(runs[1].path)


@pytest.mark.parametrize("name", ["../escape.npy", "/etc/passwd", "outputs/../../x", "a\\b"])
def test_manifest_paths_outside_the_run_are_refused(name):
    with pytest.raises(IncompleteRun, match="unsafe path"):
        checked_manifest({"complete": True, "files": {name: {"sha256": "0" * 64}}}, "test")


@pytest.fixture
def old_device(local, tflite214_python):
    """The local device, but its Python has only tflite-runtime 2.14 and numpy 1.x."""
    import dataclasses

    return dataclasses.replace(local, python=tflite214_python)


def test_agent_runs_on_tflite_runtime_214_with_a_target_runtime_model(old_device, example_keras, small_inputs,
                                                                      tmp_path, local):
    from edgeq.models.convert import convert_model

    old = convert_model(example_keras, tmp_path / "m", target_runtime="tflite-runtime-2.14")
    spec = RunSpec(model=old.quant_path, inputs=small_inputs)
    (on_old,) = run_on_device(old_device, [spec], [tmp_path / "old"])
    assert on_old.meta["device"]["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert on_old.meta["device"]["numpy"].startswith("1.")
    (on_new,) = run_on_device(local, [spec], [tmp_path / "new"])
    # same model, two runtimes: predictions agree, logits may differ by kernel rounding
    old, new = np.asarray(on_old.outputs[0]), np.asarray(on_new.outputs[0])  # run outputs are read from disk
    assert np.mean(old.argmax(1) == new.argmax(1)) >= 0.95


def test_old_runtime_refuses_a_default_dynamic_range_model(old_device, example_tflite, small_inputs, tmp_path):
    """The preflight explains it before anything is pushed; the agent's own load agrees."""
    from edgeq.errors import IncompatibleRuntime

    with pytest.raises(IncompatibleRuntime, match=r"FULLY_CONNECTED v12 .*tflite_runtime 2\.14\.0: convert with "
                                                  r"--target-runtime tflite-runtime-2\.14"):
        run_on_device(old_device, [RunSpec(model=example_tflite[1], inputs=small_inputs)], [tmp_path / "r"])
    assert not list((tmp_path / "device").glob("cas/*.tflite"))
    with LocalTransport("local") as transport:
        agent = Deployer(transport, old_device.workdir).push_agent()
        with AgentSession(transport, old_device.python, agent) as old_session:
            with pytest.raises(IncompatibleRuntime, match=r"tflite_runtime 2\.14\.0 cannot load .*'FULLY_CONNECTED' "
                                                          r"version '12'"):
                old_session.request("load", model=str(example_tflite[1]))


def test_wrong_python_on_the_device_is_named(local, example_tflite, small_inputs, tmp_path):
    import dataclasses

    broken = dataclasses.replace(local, python="/opt/no-such/python3")
    with pytest.raises(AgentError, match=r"cannot run python '/opt/no-such/python3' on the device.*devices setup"):
        run_on_device(broken, [RunSpec(model=example_tflite[0], inputs=small_inputs)], [tmp_path / "r"])


def test_agent_killed_mid_run_keeps_what_exists_marked_incomplete(local, example_tflite, small_inputs, tmp_path):
    from lab import AgentKiller

    from edgeq.errors import AgentError

    killer = AgentKiller(str(tmp_path / "device" / "agents"))
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, repeats=100000)
    with pytest.raises(AgentError, match=r"partial results \(40 of 40 samples\) kept in .*run, marked incomplete"):
        run_on_device(local, [spec], [tmp_path / "run"], killer)
    assert killer.killed
    partial = np.load(tmp_path / "run" / "outputs" / "output_0.npy")
    assert np.array_equal(partial, host_outputs(example_tflite[1], np.load(small_inputs)["x"]))
    assert not (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(IncompleteRun, match="40 of 40 samples done"):
        RunResult.load(tmp_path / "run")


def test_a_file_missing_from_a_run_is_named(runs):
    (runs[0].path / "latency_ns.npy").unlink()
    with pytest.raises(IncompleteRun, match="latency_ns.npy: listed in the run's manifest but missing"):
        RunResult.load(runs[0].path)
