"""The agent is a package of small modules, shipped as one reproducible zipapp.

- Two builds from copies of the sources with other file times, a __pycache__ and another umask give
  byte-identical archives (same sha256): the archive depends on the sources only.
- Every agent module stays small and is Python 3.8 source (older Raspberry Pi OS).
- The archive runs isolated (``python -I``): the package inside it answers hello over the JSON-lines
  protocol, and an ``edgeq_agent/`` or ``numpy.py`` planted beside the archive is never imported.
- The agent starts itself again (soak, sampler) as its archive, never as a path inside it; run from the
  source folder it names the same sha256 as the archive its sources make. It never imports edgeq.
- The one atomic write leaves the old file whole when a write fails.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import device_agents.edgeq_agent as agent
from device_agents.edgeq_agent.files import atomic_write, write_bytes, write_json
from device_agents.zipapp import archive_name, build_agent

PACKAGE = Path(agent.archive.PACKAGE_DIR)
MODULE_LINES_MAX = 400
PLANTED = "open({marker!r}, 'a').write('planted {what} ran\\n')\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_sources(folder: Path, day: int) -> Path:
    """The package's sources in ``folder/edgeq_agent`` with every file dated ``day`` days after 2001-01-01,
    and a __pycache__ that must stay out of the archive."""
    package = folder / "edgeq_agent"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "errors.cpython-311.pyc").write_bytes(os.urandom(64))
    when = 978307200 + day * 86400
    for path in package.rglob("*"):
        os.utime(path, (when, when))
    return package


def build_with_umask(dest: Path, source: Path, umask: int) -> Path:
    old = os.umask(umask)
    try:
        return build_agent(dest, source=source)
    finally:
        os.umask(old)


def test_two_builds_from_differently_dated_sources_are_byte_identical(tmp_path):
    first = build_with_umask(tmp_path / "out1", copy_sources(tmp_path / "src1", day=3), 0o022)
    second = build_with_umask(tmp_path / "out2", copy_sources(tmp_path / "src2", day=4000), 0o077)
    assert first.read_bytes() == second.read_bytes()
    assert first.name == second.name == archive_name(sha256(first)) and first.name.endswith(".pyz")
    assert build_agent(tmp_path / "out3").read_bytes() == first.read_bytes()  # the package where it lies
    assert first.read_bytes().startswith(b"#!/usr/bin/env python3\n")

    import zipfile

    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and names[0] == "__main__.py"
    assert set(names[1:]) == {"edgeq_agent/" + p.name for p in PACKAGE.glob("*.py")}  # .py only, no __pycache__
    assert {(i.date_time, i.compress_type, i.external_attr >> 16) for i in infos} == {
        ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED, 0o100644)}


def test_a_build_reuses_a_good_archive_and_replaces_a_bad_one(tmp_path):
    built = build_agent(tmp_path)
    digest, inode = sha256(built), built.stat().st_ino
    assert build_agent(tmp_path).stat().st_ino == inode  # reused, not written again
    built.write_bytes(b"not the agent")
    assert sha256(build_agent(tmp_path)) == digest

    results, errors = [], []

    def build():
        try:
            results.append(build_agent(tmp_path / "together"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "together").iterdir()] == [built.name]  # no temporary file left


def test_the_builder_command_prints_the_path_and_its_sha256(tmp_path):
    done = subprocess.run([sys.executable, "-m", "device_agents.zipapp", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=PACKAGE.parent.parent, check=True)
    digest, path = done.stdout.split()
    assert Path(path).parent == tmp_path and sha256(Path(path)) == digest and Path(path).name == archive_name(digest)


def agent_modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("path", agent_modules(), ids=lambda p: p.name)
def test_every_agent_module_is_small_python_3_8_source(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MODULE_LINES_MAX, f"{path.name}: split it, a module per concern"
    tree = ast.parse(source, feature_version=(3, 8))  # no match, no parenthesised context managers, ...
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 1 or node.module in ("__future__",) or not (node.module or "").startswith(
                ("edgeq", "device_agents")), f"{path.name}: only relative imports inside the package"
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.split(".")[0] in ("edgeq", "device_agents")], path.name
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("removeprefix", "removesuffix"), f"{path.name}: str.{node.attr} is 3.9+"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "zip":
            assert not [k for k in node.keywords if k.arg == "strict"], f"{path.name}: zip(strict=) is 3.10+"
        annotated = (isinstance(node, ast.AnnAssign) or (isinstance(node, ast.arg) and node.annotation is not None)
                     or (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None))
        assert not annotated or future, f"{path.name}: annotations need `from __future__ import annotations`"


def exchange(argv: list[str], requests: list[dict], cwd: Path, timeout: float = 120) -> list[dict]:
    """The agent's answers to ``requests`` (JSON lines on stdin), read from its stdout."""
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run(argv, input=lines, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_archive_runs_isolated_and_nothing_planted_beside_it_is_imported(tmp_path):
    folder = tmp_path / "agents"
    pyz = build_agent(folder)
    marker = tmp_path / "planted-ran.txt"
    (folder / "edgeq_agent").mkdir()
    (folder / "edgeq_agent" / "__init__.py").write_text(PLANTED.format(marker=str(marker), what="edgeq_agent"))
    (folder / "numpy.py").write_text(PLANTED.format(marker=str(marker), what="numpy"))
    subprocess.run([sys.executable, "-c", "import numpy, edgeq_agent"], cwd=folder, check=True, timeout=60)
    assert marker.read_text().count("planted") == 2, "the control ran nothing planted: the test proves nothing"
    marker.unlink()

    hello, bye = exchange([sys.executable, "-I", str(pyz)], [{"id": 1, "op": "hello"}, {"id": 2, "op": "shutdown"}],
                          cwd=folder)
    assert hello["id"] == 1 and hello["ok"] is True, hello
    facts = hello["result"]
    assert facts["agent_sha256"] == sha256(pyz) and facts["agent_version"] == agent.AGENT_VERSION
    import numpy

    assert facts["numpy"] == numpy.__version__ and "runtime" in facts
    assert bye == {"id": 2, "ok": True, "result": {}}
    assert not marker.exists(), marker.read_text()


SPAWN = """
import json, sys
sys.path.insert(0, {root!r})
import {package} as agent
print(json.dumps({{"command": agent.agent_command(["soak", "job.json"]), "archive": agent.running_archive(),
                  "sha256": agent.agent_sha256(),
                  "edgeq": sorted(m for m in sys.modules if m == "edgeq" or m.startswith("edgeq."))}}))
"""


def test_the_agent_starts_itself_again_as_its_archive_and_never_imports_edgeq(tmp_path):
    pyz = build_agent(tmp_path)
    done = subprocess.run([sys.executable, "-I", "-c", SPAWN.format(root=str(pyz), package="edgeq_agent")],
                          capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    assert found["archive"] == str(pyz) and found["sha256"] == sha256(pyz) and not found["edgeq"]
    assert found["command"] == [sys.executable, "-I", str(pyz), "soak", "job.json"]  # the archive, not a member


def test_from_its_source_folder_the_agent_names_the_archive_its_sources_make(tmp_path):
    pyz = build_agent(tmp_path)
    assert agent.running_archive() is None and agent.agent_sha256() == sha256(pyz)
    command = agent.agent_command([])  # the package by name, from the source tree's root
    assert command[:3] == [sys.executable, "-I", "-c"]
    (hello, _) = exchange(command, [{"id": 1, "op": "hello"}, {"id": 2, "op": "shutdown"}], cwd=tmp_path)
    assert hello["ok"] is True and hello["result"]["agent_sha256"] == sha256(pyz)


def test_an_atomic_write_that_fails_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    target = tmp_path / "status.json"
    write_json(target, {"state": "running"})
    with pytest.raises(RuntimeError):
        with atomic_write(target, text=True) as handle:
            handle.write('{"state": "half')
            raise RuntimeError("cut off")
    assert json.loads(target.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    old = os.umask(0o077)
    try:
        write_bytes(tmp_path / "report", b"x", perms=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o644


CLOCK_SHIFTED_BUILD = """
import sys, time
shift = float(sys.argv[3]) * 86400
real_time, real_localtime, real_gmtime = time.time, time.localtime, time.gmtime
time.time = lambda: real_time() + shift
time.localtime = lambda t=None: real_localtime((real_time() if t is None else t) + (shift if t is None else 0))
time.gmtime = lambda t=None: real_gmtime((real_time() if t is None else t) + (shift if t is None else 0))
from device_agents.zipapp import build_agent
print(build_agent(sys.argv[1], source=sys.argv[2]))
"""


def test_builds_on_different_days_give_the_same_archive(tmp_path):
    """The builder reads no clock: a build whose clock says a year later (and one a year earlier),
    from sources dated other days, is the same archive byte for byte."""
    built = []
    for days in (-365, 0, 400):
        source = copy_sources(tmp_path / f"src{days}", day=abs(days) + 1)
        done = subprocess.run([sys.executable, "-c", CLOCK_SHIFTED_BUILD, str(tmp_path / f"out{days}"), str(source),
                               str(days)], capture_output=True, text=True, timeout=120,
                              cwd=str(Path(agent.__file__).resolve().parents[2]))
        assert done.returncode == 0, done.stderr
        built.append(Path(done.stdout.strip()))
    assert len({sha256(p) for p in built}) == 1
    assert built[0].read_bytes() == build_agent(tmp_path / "today").read_bytes()
