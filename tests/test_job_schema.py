"""One job schema: the agent's JOB_OPTIONS is the only place a run/soak option is defined.

Click options, RunSpec defaults, the host's checks and the agent's checks all come from
it, so they cannot drift apart (they had: sample_hz had two defaults, warmup five copies).
"""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from device_agents.edgeq_agent import JOB_OPTIONS, AgentFailure, check_job, job_options
from edgeq.cli.main import main
from edgeq.devices.run import RunSpec, job_values
from edgeq.errors import ConfigError


def params(command_name: str) -> dict:
    command = main.get_command(None, command_name)
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("command, kind", [("run", "run"), ("evaluate", "run"), ("soak", "soak")])
def test_cli_options_come_from_the_schema(command, kind):
    found = params(command)
    for option in job_options(kind):
        if option.flag is None or (command == "soak" and option.name not in found):
            continue
        param = found[option.name]
        assert option.flag in param.opts
        assert param.default == option.default_for(kind), option.name


def test_runspec_defaults_are_the_schema_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(RunSpec)}
    for option in job_options("run"):
        assert fields[option.name] == option.default_for("run")
    assert check_job({}, "run")["sample_hz"] == 20.0
    assert check_job({"duration_s": 1}, "soak")["sample_hz"] == 20.0  # one default: a soak samples like a run


@pytest.mark.parametrize("bad, needle", [
    ({"threads": 0}, "threads must be at least 1"), ({"resolver": "FAST"}, "unknown resolver"),
    ({"sample_hz": 0}, "sample_hz must be above 0"), ({"sample_hz": 2000}, "at most 1000"),
    ({"min_duration_s": -1}, "at least 0"), ({"power": "solar"}, "unknown power"),
    ({"warmup": 1.5}, "whole number"), ({"idle_s": float("nan")}, "finite"),
])
def test_host_and_agent_refuse_the_same_values_with_the_same_words(bad, needle, tmp_path):
    with pytest.raises(AgentFailure, match=needle):
        check_job(bad, "run")
    spec = RunSpec(model=tmp_path / "m.tflite", inputs=tmp_path / "i.npz", **bad)
    with pytest.raises(ConfigError, match=needle):
        job_values(spec, "run")


def test_a_soak_needs_its_duration_and_takes_the_device_power_key(tmp_path):
    from edgeq.devices.inventory import Device

    with pytest.raises(AgentFailure, match="duration_s"):
        check_job({}, "soak")
    spec = RunSpec(model=tmp_path / "m.tflite", inputs=tmp_path / "i.npz", power="device", sample_hz=2.0)
    pi = Device(name="pi", transport="local", power="hwmon")
    job = job_values(spec, "soak", pi, duration_s=60, window_s=5)
    assert job["power"] == "hwmon" and job["window_s"] == 5 and "repeats" not in job


def test_every_option_has_help_and_a_type():
    for option in JOB_OPTIONS:
        assert option.help and option.kind in (int, float, str), option.name


def test_bad_cli_value_is_exit_2_before_any_device_work():
    result = CliRunner().invoke(main, ["run", "--model", "m.tflite", "--inputs", "i.npz", "-o", "out",
                                       "--sample-hz", "0"])
    assert result.exit_code == 2 and "sample-hz" in result.output
