"""Issue 23: what runs on a device is what edgeq verified; what edgeq deletes is what it made; what a device
says is checked; a broken last answer is noticed in seconds.

1. A module planted beside the agent (its folder is first on a script's sys.path), or named by PYTHONPATH or
   the user site, never runs inside it: the agent starts isolated (``python -I``), locally and over SSH.
2. With ``workdir`` set to a folder that already holds a ``runs/`` or ``cas/`` of the user's, neither the tidy
   after ``edgeq run`` nor ``edgeq devices clean`` deletes the user's files: only what edgeq's records say it made.
3. A lying device (malformed ``infer`` answers) is exit 3 naming the device, one line, no traceback; NaN from the
   float model makes a candidate unusable (counted, reported), never a disagreement.
4. A malformed last answer of a run (or an agent that exits instead) ends the run in seconds, "incomplete" with
   its cause, the partial results kept on disk, exit 3.

Devices that lie are the real agent with one method patched, started through an inventory whose ``python`` is a
small script (so every check of the real path runs: the pushed agent's sha, hello, lock), on the local device
and over the real loopback sshd. Timeouts bound hangs; the only time asserted is "seconds, not the 600 s wait".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_inventory
from device_agents.edgeq_agent import made_by_edgeq, record_made, tidy_store
from edgeq.devices.agent_client import LINE_STALL_S, AgentSession
from edgeq.devices.deploy import AGENT_SOURCE, Deployer
from edgeq.devices.run import RunSpec, job_values, run_on_device
from edgeq.devices.transport.local import LocalTransport
from edgeq.errors import AgentError
from edgeq.evaluate import EXAMPLE_DATA

TWO_HOURS_AGO = time.time() - 7200


def edgeq(*args, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """The real command line, in a process of its own (exit code, stderr as a user sees them), and its time."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edgeq", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - start


def one_error_line(done: subprocess.CompletedProcess, *words: str) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("edgeq: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def device_entry(where: str, request, workdir: Path, **extra) -> dict:
    """An inventory entry: this host's local transport, or the session's loopback sshd."""
    if where == "local":
        entry = {"transport": "local", "python": sys.executable}
    else:
        entry = request.getfixturevalue("sshd_session").inventory_entry()
    return {**entry, "workdir": str(workdir), **extra}


# ----------------------------------------------------------------------------- 1. nothing planted runs


PLANTED = '''
import os, sys
with open({marker!r}, "a") as handle:
    handle.write("planted %s ran in pid %d\\n" % (__file__, os.getpid()))
# then step aside so the program still works: the real module from the standard library
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
del sys.modules[__name__]
import {name} as _real
sys.modules[__name__] = _real
'''


def plant(folder: Path, marker: Path, name: str = "json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(PLANTED.format(marker=str(marker), name=name))
    return folder


def planted_runs_without_isolation(folder: Path, marker: Path, python: str = sys.executable, env=None) -> None:
    """The control: a script in ``folder`` that imports json runs the planted module (so the tests below
    would see it if the agent were not isolated)."""
    (folder / "control.py").write_text("import json\n")
    subprocess.run([python, str(folder / "control.py")], check=True, timeout=60, env=env)
    assert marker.exists(), "the planted module did not run in the control: the test proves nothing"
    marker.unlink()
    (folder / "control.py").unlink()


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_a_module_planted_beside_the_agent_never_runs_in_it(where, request, tmp_path, example_tflite, small_inputs):
    from edgeq.devices.inventory import device_from_entry

    device = device_from_entry("board", device_entry(where, request, tmp_path / "board"))
    marker = tmp_path / "planted-ran.txt"
    agents = plant(Path(device.workdir) / "agents", marker)
    planted_runs_without_isolation(agents, marker)
    (run,) = run_on_device(device, [RunSpec(model=example_tflite[1], inputs=small_inputs, warmup=0)],
                           [tmp_path / "run"])
    assert run.n == 40
    assert not marker.exists(), marker.read_text()


def test_pythonpath_and_the_user_site_inject_nothing(tmp_path, monkeypatch):
    """PYTHON* variables (set in the host's environment for the local device, by sshd's SetEnv over SSH) and the
    user's site-packages are ignored. A Python outside any venv (the venv's base) has a user site to plant in."""
    from lab import SshServer

    from edgeq.devices.inventory import device_from_entry
    from edgeq.devices.transport.ssh import SshTransport

    python = getattr(sys, "_base_executable", None) or sys.executable
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
    marker = tmp_path / "planted-ran.txt"
    pythonpath = plant(tmp_path / "pythonpath", marker)
    userbase = tmp_path / "userbase"
    user_site = userbase / "lib" / f"python{version}" / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "usercustomize.py").write_text(f"open({str(marker)!r}, 'a').write('usercustomize ran\\n')\n")
    env = {"PYTHONPATH": str(pythonpath), "PYTHONUSERBASE": str(userbase)}
    for variables in ({"PYTHONPATH": env["PYTHONPATH"]}, {"PYTHONUSERBASE": env["PYTHONUSERBASE"]}):
        subprocess.run([python, "-c", "import json"], check=True, timeout=60, env={**os.environ, **variables})
        assert marker.exists(), f"the control with {variables} ran nothing: the test proves nothing"
        marker.unlink()

    def ask(transport, workdir: str) -> None:
        agent = Deployer(transport, workdir).push_agent()
        with AgentSession(transport, python, agent) as session:  # df: no numpy needed on this bare Python
            assert session.request("df", path=str(tmp_path), timeout=120)["free"] > 0

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with LocalTransport("local") as transport:
        ask(transport, str(tmp_path / "local-board"))
    assert not marker.exists(), marker.read_text()
    for key in env:
        monkeypatch.delenv(key)
    with SshServer(tmp_path / "sshd", set_env=env) as server:
        device = device_from_entry("env-board", {**server.inventory_entry(), "workdir": str(tmp_path / "ssh-board")})
        with SshTransport(device) as transport:
            control = transport.run([python, "-c", "import json"], timeout=60)
            assert control.ok and marker.exists(), "sshd's SetEnv did not reach the session: the test proves nothing"
            marker.unlink()
            ask(transport, device.workdir)
    assert not marker.exists(), marker.read_text()


# ----------------------------------------------------------------------------- 2. only what edgeq made goes


def users_files(workdir: Path) -> dict[Path, bytes]:
    """Files of the user's in a runs/ and a cas/ that were there before edgeq (old: least recently used)."""
    files = {workdir / "runs" / "notes.txt": b"my notes",
             workdir / "runs" / "experiment-1" / "result.csv": b"a,b\n1,2\n",
             workdir / "cas" / "dataset.npz": b"not edgeq's",
             workdir / "cas" / ("c" * 64 + ".tflite"): b"named like a pushed file, still mine"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for path in [*files, workdir / "runs" / "experiment-1"]:
        os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    return files


def intact(files: dict[Path, bytes]) -> None:
    for path, content in files.items():
        assert path.is_file() and path.read_bytes() == content, path


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_run_and_devices_clean_delete_only_what_edgeq_made(where, request, tmp_path, example_tflite,
                                                           small_inputs):
    workdir = tmp_path / "my project"
    files = users_files(workdir)
    # store_mb 0: the tidy after the run evicts all it may (the user's files are two hours old: fair game to LRU)
    inventory = write_inventory(tmp_path / "edgeq.toml", {"board": device_entry(where, request, workdir,
                                                                                 store_mb=0)})
    done, _ = edgeq("run", "--device", "board", "--inventory", inventory, "--model", example_tflite[1],
                    "--inputs", small_inputs, "-o", tmp_path / "run", "--no-history")
    assert done.returncode == 0, done.stderr[-3000:]
    intact(files)
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == ["experiment-1", "notes.txt"]  # its run: gone
    pushed = [p for p in (workdir / "cas").iterdir() if p.is_file() and p.suffix in (".tflite", ".npz")
              and p.name not in ("dataset.npz", "c" * 64 + ".tflite")]
    assert len(pushed) == (0 if where == "local" else 2)  # the local device reads the host's files where they are
    assert all(made_by_edgeq(str(p)) for p in pushed) and not any(made_by_edgeq(str(p)) for p in files)

    done, _ = edgeq("devices", "clean", "board", "--inventory", inventory)
    assert done.returncode == 0, done.stderr[-3000:]
    intact(files)
    assert sorted(p.name for p in (workdir / "cas").iterdir()) == sorted(["dataset.npz", "c" * 64 + ".tflite"])
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == ["experiment-1", "notes.txt"]
    assert list((workdir / "agents").iterdir())  # the agent stays


def test_a_record_names_the_very_file_edgeq_made(tmp_path):
    cas = tmp_path / "cas"
    cas.mkdir()
    pushed, other = cas / ("a" * 64 + ".npz"), tmp_path / "other.npz"
    pushed.write_bytes(b"pushed")
    record_made(str(pushed))
    assert made_by_edgeq(str(pushed))
    other.write_bytes(b"the user's, moved over it later")
    os.replace(other, pushed)  # same name, another file
    assert not made_by_edgeq(str(pushed))
    tidied = tidy_store(str(tmp_path), 0, [], [], protect_s=0)
    assert pushed.read_bytes() == b"the user's, moved over it later"
    assert tidied["removed"] == 0 and tidied["foreign"] == 1 and not (cas / ".edgeq-made").exists()


def test_a_run_never_writes_into_a_folder_edgeq_did_not_make(tmp_path, example_tflite, small_inputs):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text("my own manifest")  # a run would have removed it as stale
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs)
    job = {"model": str(spec.model), "inputs": str(spec.inputs), "input_arrays": ["x"], "out": str(out),
           **job_values(spec, "run")}
    with LocalTransport("local") as transport:
        agent = Deployer(transport, str(tmp_path / "board")).push_agent()
        with AgentSession(transport, sys.executable, agent) as session:
            with pytest.raises(AgentError, match=r"mine already exists and was not made by edgeq"):
                session.request("run", job=job, timeout=600)
    assert [p.name for p in out.iterdir()] == ["manifest.json"] and (out / "manifest.json").read_text() == \
        "my own manifest"


# ----------------------------------------------------------------------------- 3, 4. a device that lies

LIAR = r'''
import base64, json, os, sys
sys.path.insert(0, {agent_dir!r})
import edgeq_agent as agent
import numpy as np

mode = {mode!r}


def values(item):
    return np.frombuffer(base64.b64decode(item["data"]), dtype=item["dtype"]).reshape(item["shape"])


plain_infer = agent.InferPair.infer


def infer(self, batches):
    answer = plain_infer(self, batches)
    first = values(answer["float"][0])
    if mode == "timings":
        answer["invoke_ns"] = {{"float": "fast", "quant": [1]}}
    elif mode == "shape":
        answer["float"][0] = agent._wire_array(first[:, :5])
    elif mode == "dtype":
        answer["float"][0] = agent._wire_array(first.astype(np.float64))
    elif mode == "empty":
        answer["float"][0] = agent._wire_array(first[:, :0])
    elif mode == "refuse":
        raise agent.AgentFailure("BadInputs", "inputs[0]: not what I like")
    elif mode == "nan":
        answer["float"][0] = agent._wire_array(np.full_like(first, np.nan))
    return answer


agent.InferPair.infer = infer
plain_emit = agent.Agent.emit


def emit(self, request_id, payload):
    result = payload.get("result")
    if mode.startswith("run-") and payload.get("ok") is True and isinstance(result, dict) \
            and "manifest_sha256" in result:  # the final answer of a run
        line = json.dumps(dict(payload, id=request_id))
        if mode == "run-not-json":
            self.stdout.write(line[:len(line) // 2] + "\n")  # then keeps serving, as if nothing happened
        elif mode in ("run-cut", "run-cut-exit"):
            self.stdout.write(line[:len(line) // 2])  # no newline: run-cut then waits for requests forever
        self.stdout.flush()
        if mode in ("run-cut-exit", "run-exit"):
            os._exit(0)
        return
    plain_emit(self, request_id, payload)


agent.Agent.emit = emit
sys.exit(agent.main(sys.argv[1:]))
'''


def lying_python(tmp_path: Path, mode: str) -> str:
    """An inventory ``python`` that runs the real agent (a byte-identical copy: its sha256 checks pass) with one
    method patched, whatever it is asked to start."""
    folder = tmp_path / f"liar-{mode}"
    (folder / "agent").mkdir(parents=True)
    (folder / "agent" / "edgeq_agent.pyz").write_bytes(AGENT_SOURCE.read_bytes())
    (folder / "liar.py").write_text(LIAR.format(agent_dir=str(folder / "agent" / "edgeq_agent.pyz"), mode=mode))
    script = folder / "python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {folder / 'liar.py'}\n")
    script.chmod(0o755)
    return str(script)


def search_on(tmp_path, inventory, pair, budget: int = 16):
    out = tmp_path / "search.json"
    done, _ = edgeq("inputs", "search", "--float", pair[0], "--quantized", pair[1], "--data", EXAMPLE_DATA,
                    "--device", "liar", "--inventory", inventory, "--budget", budget, "--json", out)
    return done, (json.loads(out.read_text()) if out.exists() else None)


BROKEN_ANSWERS = {
    "timings": "malformed timings",
    "shape": "float output 0 (StatefulPartitionedCall_1:0) has rows of shape [5], but the model's are [10]",
    "dtype": "float output 0 (StatefulPartitionedCall_1:0) is float64, but the model's output is float32",
    "empty": "float output 0 (StatefulPartitionedCall_1:0) has rows of shape [0], but the model's are [10]",
    "refuse": "the agent refused a batch the host had checked",
}


@pytest.mark.parametrize("where", ["local", "ssh"])
@pytest.mark.parametrize("mode", sorted(BROKEN_ANSWERS))
def test_a_malformed_infer_answer_is_the_devices_fault(where, mode, request, tmp_path, example_tflite):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"liar": device_entry(
        where, request, tmp_path / "board", python=lying_python(tmp_path, mode))})
    done, payload = search_on(tmp_path, inventory, example_tflite)
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])
    one_error_line(done, "liar:", BROKEN_ANSWERS[mode])
    assert payload is not None and payload["complete"] is False and payload["found"] == 0


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_nan_from_the_float_model_is_an_unusable_candidate_not_a_disagreement(where, request, tmp_path,
                                                                             example_tflite):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"liar": device_entry(
        where, request, tmp_path / "board", python=lying_python(tmp_path, "nan"))})
    done, payload = search_on(tmp_path, inventory, example_tflite, budget=24)
    assert done.returncode == 0, done.stderr[-3000:]
    assert payload["found"] == 0 and payload["queries"] == 24 and payload["unusable"] == 24
    assert "24 of 24 candidates were unusable: the float model gave NaN or Inf" in done.stderr


def test_some_unusable_candidates_leave_the_rest_of_the_search_as_it_was(example_tflite):
    """In process: NaN on every other float row; those rows are counted, never found, and the search goes on."""
    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.disagreement import SearchConfig, search
    from edgeq.inputs.search.evaluators import HostEvaluator
    from edgeq.inputs.search.operators import operators_for

    class NanOnOddRows:
        def __init__(self):
            self.inner, self.spoilt, self.queries, self.batches = HostEvaluator(*example_tflite), set(), 0, 0

        def evaluate(self, batch):  # queries are numbered in the order they are sent (one lane)
            f, q = self.inner.evaluate(batch)
            f[0][1::2, self.batches % 10] = np.inf if self.batches % 2 else np.nan
            self.spoilt.update(self.queries + i + 1 for i in range(1, len(batch[0]), 2))
            self.batches, self.queries = self.batches + 1, self.queries + len(batch[0])
            return f, q

    prepared = prepare(*example_tflite, EXAMPLE_DATA)
    operators, _ = operators_for(prepared.data[0].shape[1:])
    evaluator = NanOnOddRows()
    result = search(evaluator, prepared.data, prepared.spaces, operators,
                    SearchConfig(budget=400, epsilon=0.5, per_seed=4), prepared.output_names, prepared.float_info)
    assert result.complete and result.queries == 400 and result.unusable == len(evaluator.spoilt) > 100
    assert result.found and not any(f.query in evaluator.spoilt for f in result.found)
    assert result.summary()["unusable"] == result.unusable and any("unusable" in n for n in result.notes)


FINAL_ANSWERS = {  # mode -> the cause the error names
    "run-not-json": "a line that is not JSON",
    "run-cut": "a line cut off",
    "run-cut-exit": "agent exited (code 0)",
    "run-exit": "agent exited (code 0)",
}


@pytest.mark.parametrize("where,mode", [("local", m) for m in sorted(FINAL_ANSWERS)]
                         + [("ssh", "run-not-json"), ("ssh", "run-cut")])
def test_a_malformed_last_answer_ends_the_run_in_seconds_marked_incomplete(where, mode, request, tmp_path,
                                                                           example_tflite, small_inputs):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"liar": device_entry(
        where, request, tmp_path / "board", python=lying_python(tmp_path, mode))})
    rundir = tmp_path / "run"
    try:
        done, took = edgeq("run", "--device", "liar", "--inventory", inventory, "--model", example_tflite[1],
                           "--inputs", small_inputs, "-o", rundir, "--no-history", timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the host waited for the broken answer (the request's 600 s deadline) instead of noticing it")
    assert done.returncode == 3, done.stderr[-3000:]
    one_error_line(done, "liar:", FINAL_ANSWERS[mode], "partial results (40 of 40 samples) kept in",
                   "marked incomplete")
    assert took < LINE_STALL_S + 60, f"{took:.0f} s: noticed late"
    run = json.loads((rundir / "run.json").read_text())
    assert run["complete"] is False and FINAL_ANSWERS[mode] in run["error"]
    assert np.load(rundir / "outputs" / "output_0.npy").shape == (40, 10)
    assert not (rundir / "manifest.json").exists()
