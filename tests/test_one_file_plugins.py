"""Adding a risky family, an output kind or a transport is one new file (no registry, table or
CLI edit), and a run option one line in the agent's job table plus its use (no host edit).

The tests copy the edgeq package to a temporary folder, add one module and run the
real code from that copy. The new family (with a name far longer than the old
16-character category limit) is in the suite at its own three levels, seeded apart
from every built-in family and described; an image-only family is left out of
tabular data with a note saying why. The new output kind judges an output through
``--output NAME=KIND``; the new transport is named by an inventory and reads its own
settings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgeq
from edgeq.inputs.risky import CATEGORIES, build_risky_suite

LONG_NAME = "quantised-sensor-glitch-with-a-long-name"

NEW_FAMILY = f'''
"""A test family: every feature multiplied by its level (one file, registers itself)."""

from edgeq.inputs.risky.families import Family, register


def glitch(x, level, data, rng):
    return x * level


def tile_swap(x, level, data, rng):
    return x[:, ::-1]


register(Family("{LONG_NAME}", glitch, lambda s: f"features multiplied by {{s}}", levels=(2.0, 3.0, 5.0)))
register(Family("tile-swap", tile_swap, lambda s: "image tiles swapped", levels=(1, 2, 3),
                applies_to={{"image"}}))
'''


NEW_KIND = '''
"""A test kind: a sample fails when the sign of its first value changes."""

import numpy as np

from edgeq.analysis.kinds import OutputKind, flat, rate, register


class FirstSign(OutputKind):
    name = "first-sign"
    metric = "sign_flip_rate"
    description = "the sign of the first value"

    def evidence(self, ref, cand, plan, labels):
        return {"flip": np.sign(flat(ref["output"])[:, 0]) != np.sign(flat(cand["output"])[:, 0])}

    def summarize(self, ev, labels, plan):
        n, flips = len(ev["flip"]), int(ev["flip"].sum())
        return {"n": n, "value": rate(flips, n), "events": flips, "trials": n, "flip_rate": rate(flips, n)}


register(FirstSign())
'''

NEW_TRANSPORT = '''
"""A test transport: the local one, reached under another name with a setting of its own."""

from edgeq.devices.transport.local import LocalTransport
from edgeq.devices.transport.settings import Setting


class LoopTransport(LocalTransport):
    SETTINGS = (Setting("lane", int, 1, "which lane", low=1),)


TRANSPORT = LoopTransport
'''


@pytest.fixture(scope="module")
def edgeq_copy(tmp_path_factory) -> Path:
    """A copy of the installed edgeq package (and the agent) with one new file per registry."""
    root = tmp_path_factory.mktemp("plugin")
    source = Path(edgeq.__file__).parent
    shutil.copytree(source, root / "edgeq", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source.parent / "device_agents", root / "device_agents",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "edgeq" / "inputs" / "risky" / "families" / "glitch.py").write_text(textwrap.dedent(NEW_FAMILY))
    (root / "edgeq" / "analysis" / "kinds" / "first_sign.py").write_text(textwrap.dedent(NEW_KIND))
    (root / "edgeq" / "devices" / "transport" / "loop.py").write_text(textwrap.dedent(NEW_TRANSPORT))
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq", *args], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_one_new_file_adds_a_family_to_the_suite(edgeq_copy, tmp_path):
    x = np.random.default_rng(0).uniform(1.0, 2.0, (30, 6)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(30) % 3)
    done = _run(edgeq_copy, "inputs", "risky", "--data", str(tmp_path / "data.npz"), "-o", str(tmp_path / "s.npz"))
    assert done.returncode == 0, done.stderr
    assert f"{LONG_NAME} 90" in done.stdout  # 30 samples × 3 severities, the whole name
    left_out = [line for line in done.stderr.splitlines() if "left out: fits none of the inputs (features)" in line]
    assert len(left_out) == 1 and "tile-swap" in left_out[0], done.stderr  # with the built-in image families
    with np.load(tmp_path / "s.npz") as suite:
        category, severity, out = suite["category"], suite["severity"], suite["x"]
    assert LONG_NAME in set(category.tolist()) and "tile-swap" not in set(category.tolist())
    for level, factor in zip((1, 2, 3), (2.0, 3.0, 5.0)):
        cell = out[(category == LONG_NAME) & (severity == level)]
        np.testing.assert_allclose(cell, x * factor, rtol=1e-6)
    # the built-in families' draws are unchanged by the new one
    here = build_risky_suite({"x": x}, np.arange(30) % 3)
    for name in CATEGORIES:
        mine = out[category == name]
        assert np.array_equal(mine, here["x"][here["category"] == name]), name


def test_the_new_family_is_described_and_listed(edgeq_copy):
    code = ("from edgeq.inputs.risky import CATEGORIES, describe_categories; "
            f"print(CATEGORIES[-1]); print(describe_categories()[{LONG_NAME!r}])")
    done = subprocess.run([sys.executable, "-c", code], cwd=edgeq_copy, capture_output=True, text=True,
                          env={"PYTHONPATH": str(edgeq_copy)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["tile-swap", "features multiplied by (2.0, 3.0, 5.0)"]


def test_a_family_without_levels_or_with_a_used_name_is_refused():
    from edgeq.inputs.risky.families import Family, register

    with pytest.raises(ValueError, match="no levels"):
        Family("no-levels", lambda *a: a[0], str)
    with pytest.raises(ValueError, match="three levels"):
        Family("two-levels", lambda *a: a[0], str, levels=(1, 2))
    with pytest.raises(ValueError, match="registered twice"):
        register(Family("noise", lambda *a: a[0], str))


def _python(root: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root)}, timeout=120)


def test_one_new_file_adds_an_output_kind(edgeq_copy):
    code = """
import numpy as np
from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.plan import OutputSpec
ref = np.array([[1.0, 5], [-1, 5], [2, 5], [3, 5]] * 10)
cand = ref.copy(); cand[:10, 0] *= -1
spec = OutputSpec.from_sources(flags=("output_0=first-sign",))
out = compare_outputs([ref], [cand], {}, spec=spec)
print(out["outputs"]["output_0"]["kind"], out["metric_basis"], out["overall"]["value"], out["verdict"])
"""
    done = _python(edgeq_copy, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["first-sign", "sign_flip_rate", "0.25", "catastrophic"]


def test_one_new_file_adds_a_transport(edgeq_copy, tmp_path):
    (tmp_path / "edgeq.toml").write_text('[devices.bench]\ntransport = "loop"\nlane = 3\n'
                                         f'workdir = "{tmp_path / "work"}"\n')
    code = f"""
from edgeq.devices.inventory import connect, load_inventory
device = load_inventory({str(tmp_path / "edgeq.toml")!r})["bench"]
with connect(device) as transport:
    print(type(transport).__name__, dict(device.settings)["lane"], transport.run(["echo", "ok"]).stdout.strip())
"""
    done = _python(edgeq_copy, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LoopTransport", "3", "ok"]
    (tmp_path / "edgeq.toml").write_text('[devices.bench]\ntransport = "loop"\nlanes = 3\n')
    done = _run(edgeq_copy, "devices", "list", "--inventory", str(tmp_path / "edgeq.toml"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "devices.bench (transport loop): unknown key 'lanes' (known: lane)" in done.stderr


# --- a run option: one line in the agent's job table, plus its use ------------------------------------------

NEW_OPTION = '''    JobOption("note_text", str, None, "--note-text", help="A note the run writes into its meta.json."),
'''
OPTION_USE = '''        "note": job.get("note_text"),
'''


@pytest.fixture(scope="module")
def option_copy(tmp_path_factory) -> Path:
    """edgeq and the agent copied, with a run option added as a contributor would: one line in
    ``JOB_OPTIONS`` (agent ``jobs.py``) and one line that uses it (the run's meta, agent ``run.py``)."""
    root = tmp_path_factory.mktemp("option")
    source = Path(edgeq.__file__).parent
    shutil.copytree(source, root / "edgeq", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source.parent / "device_agents", root / "device_agents", ignore=shutil.ignore_patterns("__pycache__"))
    agent = root / "device_agents" / "edgeq_agent"
    jobs = (agent / "jobs.py").read_text()
    anchor = '    JobOption("vcgencmd",'
    assert anchor in jobs
    (agent / "jobs.py").write_text(jobs.replace(anchor, NEW_OPTION + anchor, 1))
    run = (agent / "run.py").read_text()
    assert "    meta = {\n" in run
    (agent / "run.py").write_text(run.replace("    meta = {\n", "    meta = {\n" + OPTION_USE, 1))
    return root


def _env(root: Path, tmp: Path) -> dict:
    return {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp), "EDGEQ_CACHE": str(tmp / "cache"),
            "EDGEQ_LOCAL_WORKDIR": str(tmp / "device")}


@pytest.mark.parametrize("command", [["run"], ["evaluate"], ["soak"]])
def test_one_line_in_the_job_table_adds_the_flag_to_every_command_of_its_group(option_copy, tmp_path, command):
    done = subprocess.run([sys.executable, "-m", "edgeq", *command, "--help"], cwd=option_copy, capture_output=True,
                          text=True, env=_env(option_copy, tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--note-text" in done.stdout


def test_the_new_option_reaches_the_agent_on_the_device(option_copy, example_tflite, small_inputs, tmp_path):
    """``edgeq run --note-text`` → RunSpec → the job checked on the host → the agent, which uses it."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "edgeq", "run", "--device", "local", "--model", str(example_tflite[0]),
                           "--inputs", str(small_inputs), "-o", str(out), "--note-text", "from the new flag",
                           "--no-history"],
                          cwd=option_copy, capture_output=True, text=True, env=_env(option_copy, tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["note"] == "from the new flag" and meta["job"]["note_text"] == "from the new flag"
