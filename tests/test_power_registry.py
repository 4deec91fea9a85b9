"""Power backends are one registry: a class with @power_backend is a valid `power` choice everywhere."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from fake_sysfs import FakeSysfs

from device_agents import edgeq_agent
from device_agents.zipapp import build_agent
from device_agents.edgeq_agent import JOB_OPTIONS, POWER_BACKENDS, AgentFailure, check_job
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import AgentError

# One more backend, exactly as a contributor would add it to the agent (its sensors module): one decorated class.
RAIL_BACKEND = '''
@power_backend("test-rail")
class TestRailPower:
    """A test board's rail: <sysfs_root>/test_rail/watts, in watts."""

    def __init__(self, sysfs_root, vcgencmd, sensor=None):
        self.path = os.path.join(sysfs_root, "test_rail", sensor or "watts")
        if not os.path.exists(self.path):
            raise AgentFailure("NoPowerSensor", "power 'test-rail': no %s" % self.path)
        self.describe = {"backend": self.backend, "file": self.path}

    def read(self):
        return _read_number(self.path)

'''


def test_the_registry_lists_the_known_backends_and_is_the_power_choices():
    assert list(POWER_BACKENDS) == ["none", "hwmon", "power_supply", "pi5-pmic"]
    assert POWER_BACKENDS["hwmon"].backend == "hwmon" and POWER_BACKENDS["none"] is None
    assert all(POWER_BACKENDS[name].__doc__ for name in POWER_BACKENDS if name != "none")
    (power,) = [o for o in JOB_OPTIONS if o.name == "power"]
    assert power.choices is POWER_BACKENDS
    for name in POWER_BACKENDS:
        assert check_job({"power": name}, "run")["power"] == name


def test_a_decorated_class_becomes_a_power_choice_for_agent_and_host(monkeypatch, tmp_path):
    import click

    from edgeq.cli.common import job_option
    from edgeq.devices.run import RunSpec, job_values

    monkeypatch.setitem(POWER_BACKENDS, "test-rail", None)  # the registry is as it was after the test
    namespace = {}
    exec(compile(RAIL_BACKEND, "agent", "exec"), edgeq_agent.sensors.__dict__, namespace)
    rail = namespace["TestRailPower"]
    assert POWER_BACKENDS["test-rail"] is rail and rail.backend == "test-rail"
    assert check_job({"power": "test-rail", "duration_s": 60}, "soak")["power"] == "test-rail"
    spec = RunSpec(model=tmp_path / "m.tflite", inputs=tmp_path / "i.npz", power="test-rail")
    assert job_values(spec, "run")["power"] == "test-rail"
    (power,) = [o for o in JOB_OPTIONS if o.name == "power"]

    def measure(**options):
        pass

    choices = click.command()(job_option(power, "run")(measure)).params[0].type.choices
    assert "test-rail" in choices and "device" in choices

    FakeSysfs(tmp_path / "sys").set("test_rail/watts", 2.5)
    reader = edgeq_agent.open_power("test-rail", str(tmp_path / "sys"), None)
    assert reader.read() == 2.5 and reader.describe["backend"] == "test-rail"
    with pytest.raises(AgentFailure, match="power 'test-rail': no"):
        edgeq_agent.open_power("test-rail", str(tmp_path / "nowhere"), None)


def test_an_unknown_backend_is_refused():
    for kind in ("run", "soak"):
        with pytest.raises(AgentFailure, match=r"unknown power backend 'solar' \(choose from none, hwmon, "
                                               r"power_supply, pi5-pmic\)") as failure:
            check_job({"power": "solar", "duration_s": 1}, kind)
        assert failure.value.kind == "BadJob"
    with pytest.raises(AgentFailure, match="unknown power backend 'solar'"):
        edgeq_agent.open_power("solar", "/sys", None)


@pytest.fixture
def agent_with_rail(tmp_path):
    """The agent with the one class added to its sensors module, built and running as a real agent."""
    package = tmp_path / "agent_with_rail" / "edgeq_agent"
    shutil.copytree(edgeq_agent.archive.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / "sensors.py", "a") as handle:
        handle.write("\n\n" + RAIL_BACKEND)
    path = build_agent(tmp_path / "built", source=package)
    with LocalTransport("local") as transport:
        with AgentSession(transport, sys.executable, str(path)) as live:
            yield live


def test_a_run_job_samples_the_new_backend(agent_with_rail, example_tflite, small_inputs, tmp_path):
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.set("test_rail/watts", 3.75)
    sysfs.thermal_zone(0, "cpu-thermal", 50.0)
    job = {"model": str(example_tflite[1]), "inputs": str(small_inputs), "input_arrays": ["x"],
           "out": str(tmp_path / "run"), "power": "test-rail", "sysfs_root": str(sysfs.root), "vcgencmd": "",
           "sample_hz": 50, "idle_s": 0.2, "min_duration_s": 0.3}
    agent_with_rail.request("run", job=job)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["sampling"]["power"] == "test-rail"
    assert meta["sampling"]["power_source"] == {"backend": "test-rail",
                                                "file": str(sysfs.root / "test_rail" / "watts")}
    with np.load(tmp_path / "run" / "sensors.npz") as sensors:
        assert sensors["power_w"].size > 3 and np.allclose(sensors["power_w"], 3.75)
        assert np.allclose(sensors["temp_c"], 50.0)

    with pytest.raises(AgentError, match="NoPowerSensor: power 'test-rail': no"):
        agent_with_rail.request("run", job=dict(job, out=str(tmp_path / "again"), sysfs_root=str(tmp_path)))
    with pytest.raises(AgentError, match="BadJob: unknown power backend 'solar'"):
        agent_with_rail.request("run", job=dict(job, out=str(tmp_path / "solar"), power="solar"))
