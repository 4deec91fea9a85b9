"""The agent's infer op: both models kept loaded, batches inline, through the real agent.

On the local device (a subprocess) and over the real SSH test server. Bad requests
(wrong dtype or shape, a batch over the wire limit, broken base64, unknown options)
are one-line errors, and the agent keeps serving afterwards. Nothing asserts speed.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agents.edgeq_agent import INFER_MAX_BYTES
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.batch import DeviceBatch, wire_array
from edgeq.devices.deploy import Deployer
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import AgentError, InputSetError
from edgeq.evaluate import EXAMPLE_DATA
from edgeq.inputs.search import prepare
from edgeq.inputs.search.disagreement import SearchConfig, search
from edgeq.inputs.search.evaluators import HostEvaluator
from edgeq.inputs.search.operators import operators_for


@pytest.fixture(scope="session")
def fragile_pair(fragile_keras, tmp_path_factory):
    from edgeq.models.convert import convert_model

    result = convert_model(fragile_keras, tmp_path_factory.mktemp("fragile_infer"))
    return result.float_path, result.quant_path


@pytest.fixture(scope="session")
def digits():
    with np.load(EXAMPLE_DATA) as data:
        return data["x"]


def test_device_outputs_equal_the_host_evaluators(local, fragile_pair, digits):
    host = HostEvaluator(*fragile_pair)
    with DeviceBatch(local, *fragile_pair) as device:
        for batch in (digits[:1], digits[:37], digits):  # resizes between batch sizes
            f, q = device.evaluate([batch])
            hf, hq = host.evaluate([batch])
            assert np.array_equal(f[0], hf[0]) and np.array_equal(q[0], hq[0])
        assert device.describe()["device"] == "local"


def test_a_batch_larger_than_one_request_is_split(local, fragile_pair, digits):
    with DeviceBatch(local, *fragile_pair) as device:
        device.rows_per_request = 100
        f, q = device.evaluate([digits])
        assert f[0].shape == (540, 10) and device.requests == 6
        assert np.array_equal(f[0], HostEvaluator(*fragile_pair).evaluate([digits])[0][0])


def _search(evaluator, pair, budget=200, seed=1, **config):
    prepared = prepare(pair[0], pair[1], EXAMPLE_DATA)
    operators, _ = operators_for(prepared.data[0].shape[1:])
    return search(evaluator, prepared.data, prepared.spaces, operators,
                  SearchConfig(budget=budget, seed=seed, **config), prepared.output_names, prepared.float_info)


def test_search_through_the_local_agent_finds_what_the_host_finds(local, fragile_pair):
    with DeviceBatch(local, *fragile_pair) as device:
        on_device = _search(device, fragile_pair)
    on_host = _search(HostEvaluator(*fragile_pair), fragile_pair)
    assert on_device.found and all(f.distance <= 0.1 for f in on_device.found)
    assert [(f.seed_index, f.query) for f in on_device.found] == [(f.seed_index, f.query) for f in on_host.found]


def test_two_lanes_in_flight_give_the_host_result_on_the_agent(local, fragile_pair):
    """With a batch in flight while the next is proposed, the device's answers still land in order."""
    with DeviceBatch(local, *fragile_pair) as device:
        on_device = _search(device, fragile_pair, budget=300, lanes=2, pool=4, per_seed=3)
        assert device.requests == 300 // 4
    on_host = _search(HostEvaluator(*fragile_pair), fragile_pair, budget=300, lanes=2, pool=4, per_seed=3)
    assert on_device.queries == on_host.queries == 300 and len(on_device.found) >= 2
    assert [(f.seed_index, f.query) for f in on_device.found] == [(f.seed_index, f.query) for f in on_host.found]
    assert all(np.array_equal(a.arrays[0], b.arrays[0]) for a, b in zip(on_device.found, on_host.found))


def test_a_model_gone_bad_on_the_device_is_pushed_again_with_batches_in_flight(ssh_device, fragile_pair, digits):
    """A stored model that no longer matches its digest is replaced once; every batch in flight is answered.

    Over SSH (loopback), where the device keeps its own copy: the local device uses the host's file."""
    host = HostEvaluator(*fragile_pair)
    with DeviceBatch(ssh_device[0], *fragile_pair) as device:
        stored = Path(device.float_remote)
        assert stored.is_relative_to(ssh_device[0].workdir) and stored != Path(fragile_pair[0])
        stored.write_bytes(stored.read_bytes()[:-64] + b"\0" * 64)  # same size, other bytes
        tickets = [device.submit([digits[k:k + 5]]) for k in (0, 5, 10)]
        for k, ticket in zip((0, 5, 10), tickets):
            f, q = device.collect(ticket)
            hf, hq = host.evaluate([digits[k:k + 5]])
            assert np.array_equal(f[0], hf[0]) and np.array_equal(q[0], hq[0])
        assert device.requests == 3 and device.session.sha256(str(stored)) == device.float_sha


def test_search_over_ssh_finds_flips(ssh_device, fragile_pair):
    device, _ = ssh_device
    with DeviceBatch(device, *fragile_pair) as remote:
        result = _search(remote, fragile_pair, budget=150)
        assert remote.requests >= 1 and remote.describe()["device"] == "pi-loop"
    assert result.found and result.complete and all(f.distance <= 0.1 for f in result.found)


@pytest.mark.parametrize("lanes", [1, 2])
def test_cli_search_on_the_local_device(local, fragile_pair, tmp_path, lanes):
    import json

    from click.testing import CliRunner

    from conftest import write_inventory
    from edgeq.cli.common import EdgeqGroup
    from edgeq.cli.search import search as search_command

    inventory = write_inventory(tmp_path / "edgeq.toml", {"board": {"transport": "local", "python": sys.executable,
                                                                     "workdir": str(tmp_path / "board")}})
    result = CliRunner().invoke(EdgeqGroup(commands={"search": search_command}), [
        "search", "--float", str(fragile_pair[0]), "--quantized", str(fragile_pair[1]), "--data", str(EXAMPLE_DATA),
        "--device", "board", "--inventory", str(inventory), "--budget", "100", "--lanes", str(lanes),
        "--json", "-"])
    assert result.exit_code == 0, result.output
    assert "evaluating on device board (agent" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["config"]["lanes"] == lanes and payload["queries"] == 100 and payload["found"]


@pytest.fixture
def session(local, fragile_pair):
    transport = LocalTransport(local)
    deployer = Deployer(transport, local.workdir)
    agent = AgentSession(transport, sys.executable, deployer.push_agent())
    yield agent, {"float": str(fragile_pair[0]), "quant": str(fragile_pair[1])}
    agent.close()


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_requests_are_one_line_errors_and_the_agent_keeps_serving(session, digits):
    agent, models = session
    good = wire_array(digits[:4])
    bad_cases = [
        (dict(inputs=[wire_array(digits[:4].astype(np.float64))]), InputSetError, "is float64 but model input"),
        (dict(inputs=[wire_array(digits[:4, :10])]), InputSetError, "sample shape [10]"),
        (dict(inputs=[wire_array(np.zeros((INFER_MAX_BYTES // 256 + 1, 64), np.float32))]), InputSetError,
         "more than the 524288 bytes"),
        (dict(inputs=[dict(good, data=good["data"][:-4])]), InputSetError, "must be base64 of 1024 bytes"),
        (dict(inputs=[dict(good, data="!" * len(good["data"]))]), InputSetError, "not base64"),
        (dict(inputs=[dict(good, dtype="object")]), InputSetError, "dtype 'object' is not one of"),
        (dict(inputs=[dict(good, shape=[4, -64])]), InputSetError, "shape must be a list"),
        (dict(inputs=[good, good]), InputSetError, "a list of 1 array"),
        (dict(inputs=[good], threads=0), AgentError, "threads must be at least 1"),
        (dict(inputs=[good], resolver="FAST"), AgentError, "unknown resolver 'FAST'"),
        (dict(inputs=[good], quant=None), AgentError, "infer needs quant"),
        (dict(inputs=[good], float="/no/such/model.tflite"), AgentError, "does not exist on the device"),
    ]
    for params, error, message in bad_cases:
        with pytest.raises(error) as exc:
            agent.request("infer", **{**models, **params})
        assert message in one_line(exc), (message, str(exc.value))
    answer = agent.request("infer", **models, inputs=[good])
    assert answer["rows"] == 4 and len(answer["float"]) == len(answer["quant"]) == 1
    out = answer["float"][0]
    assert out["shape"] == [4, 10] and out["dtype"] == "float32"
    assert len(base64.b64decode(out["data"])) == 4 * 10 * 4


def test_the_pair_stays_loaded_between_requests(session, digits):
    agent, models = session
    first = agent.request("infer", **models, inputs=[wire_array(digits[:2])])
    second = agent.request("infer", **models, inputs=[wire_array(digits[2:5])])
    assert first["loaded"] and not second["loaded"]
    assert first["inputs"][0]["shape_signature"][1:] == [64]
    swapped = agent.request("infer", float=models["quant"], quant=models["float"], inputs=[wire_array(digits[:2])])
    assert swapped["loaded"] and swapped["float"][0]["data"] == first["quant"][0]["data"]


def test_rows_of_a_pushed_npz(session, digits, tmp_path):
    agent, models = session
    path = tmp_path / "set.npz"
    np.savez(path, x=digits[:50])
    answer = agent.request("infer", **models, npz=str(path), input_arrays=["x"], rows=[10, 20])
    inline = agent.request("infer", **models, inputs=[wire_array(digits[10:20])])
    assert answer["float"] == inline["float"] and answer["quant"] == inline["quant"]
    with pytest.raises(InputSetError) as exc:
        agent.request("infer", **models, npz=str(path), input_arrays=["x"], rows=[40, 60])
    assert "past the 50 samples" in one_line(exc)
