"""edgeq on an old-Python board: Debian bullseye amd64 (python3 3.9, glibc 2.31, as on a Raspberry
Pi OS bullseye board), native, its own sshd in its own network namespace (tests/old_python_board.py,
scripts/old_python_board.sh — the arm64 board's recipe with --board bullseye-amd64).

The runtime comes the way an air-gapped lab gets it: `edgeq devices setup --offline` downloads
cp39 x86_64 wheels on this host (ai-edge-litert 2.1.0 is the last release with cp39 wheels; numpy
2.0.2 the last numpy for 3.9) and pushes them. Then the agent runs under the board's Python 3.9
and its numbers are compared with this host's (Python 3.11, ai-edge-litert 2.3.0). Skip vs fail
as for the arm64 board: where the machine cannot host it (not root, exit 77) every test skips.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from arm64_board import edgeq, elf_machine, inside, short_soak
from old_python_board import (  # noqa: F401
    BOARD_NAME, DEVICE_WORKDIR, PYTHON_VERSION, SCRIPT, WHEEL_CACHE, old_python_board,
)

pytestmark = pytest.mark.old_python
AGENT_SOURCES = Path(__file__).resolve().parent.parent / "device_agents"
# Imports every module named on the command line under the board's Python; prints {module: traceback}.
IMPORT_ALL = """import importlib, json, sys, traceback
sys.path.insert(0, sys.argv[1])
failed = {}
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
print(json.dumps({"python": sys.version.split()[0], "failed": failed}))
"""

# Outputs on the board vs this host's for the same model and inputs. Both are x86-64 with the same
# kernels (XNNPACK, or the built-in hybrid ones), only the runtime release differs (2.1.0 vs 2.3.0):
# float within float32 rounding, dynamic-range within a row-rounding step, top-1 agreeing (>= 99 %).
# (The arm64 test only checks its figures are finite: aarch64 kernels give other numbers.)
FLOAT_RTOL, QUANT_RTOL, MIN_AGREEMENT = 1e-5, 1e-3, 0.99
EVALUATE_ARGS = ("--max-per-category", 20, "--warmup", 2, "--no-history", "-q")


def say(request, line: str) -> None:
    """A line in the terminal, out of pytest's capture (the facts this board found)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


def outputs_of(run: Path) -> list[np.ndarray]:
    meta = json.loads((run / "meta.json").read_text())
    return [np.load(run / "outputs" / f"output_{k}.npy", allow_pickle=False) for k in range(len(meta["outputs"]))]


@pytest.fixture(scope="session")
def old_setup(old_python_board, tmp_path_factory, request, record_testsuite_property):  # noqa: F811
    """`edgeq devices setup bullseye-py39 --offline` once for the session: the facts it wrote."""
    out = tmp_path_factory.mktemp("old-python-setup")
    code, output = edgeq("devices", "setup", BOARD_NAME, "--inventory", old_python_board.inventory, "--offline",
                         "--wheels", WHEEL_CACHE, "--json", out / "setup.json")
    assert code == 0, output
    facts = json.loads((out / "setup.json").read_text())
    ready = facts["ready"].get(BOARD_NAME, {})
    record_testsuite_property("old_python_board_agent_python", ready.get("python"))  # in the JUnit XML
    say(request, f"\nold-Python board: the agent reports Python {ready.get('python')}, numpy {ready.get('numpy')}, "
                 f"{(ready.get('runtime') or {}).get('name')} {(ready.get('runtime') or {}).get('version')}, "
                 f"{ready.get('libc')}")
    return facts


def evaluate(device: str, inventory, out: Path) -> Path:
    args = ["evaluate", "--device", device, "-o", out, *EVALUATE_ARGS]
    code, output = edgeq(*args, *(["--inventory", inventory] if inventory else []))
    assert code in (0, 1), output  # 1 would be a crossed gate; none is given, but it still ran
    return out


@pytest.fixture(scope="session")
def old_evaluation(old_python_board, old_setup, tmp_path_factory):  # noqa: F811
    """The built-in example evaluated on the board (a small suite): its output folder."""
    return evaluate(BOARD_NAME, old_python_board.inventory, tmp_path_factory.mktemp("old-python-evaluate") / "out")


@pytest.fixture(scope="session")
def local_evaluation(tmp_path_factory):
    """The same evaluation on `local` (this host's Python and runtime)."""
    return evaluate("local", None, tmp_path_factory.mktemp("old-python-local-evaluate") / "out")


def test_setup_offline_serves_a_cp39_board(old_python_board, old_setup):  # noqa: F811
    assert old_setup["failed"] == {}
    ready = old_setup["ready"][BOARD_NAME]
    assert ready["python"].startswith(PYTHON_VERSION + "."), ready["python"]
    assert ready["arch"] == "x86_64" and ready["hostname"] == BOARD_NAME and ready["libc"] == "glibc-2.31"
    assert ready["python_path"] == f"{DEVICE_WORKDIR}/venv/bin/python"
    assert ready["runtime"]["name"] == "ai_edge_litert"
    assert list(WHEEL_CACHE.glob("ai_edge_litert-*-cp39-*x86_64.whl")), "no cp39 x86_64 ai-edge-litert wheel downloaded"
    # The board's disk is a directory on this host: what setup pushed there is for CPython 3.9.
    rootfs = old_python_board.board.rootfs
    pushed = sorted(p.name for p in (rootfs / DEVICE_WORKDIR.lstrip("/") / "wheels").glob("*.whl"))
    assert any(n.startswith("numpy-") and "-cp39-" in n and "x86_64" in n for n in pushed), pushed
    venv_python = inside(rootfs, f"{DEVICE_WORKDIR}/venv/bin/python")
    assert elf_machine(venv_python) == 0x3E, venv_python
    assert list((rootfs / "usr" / "lib").glob("python3.9")), "the board's own python3 is not 3.9"


def test_check_reports_python_39(old_python_board, old_setup, tmp_path):  # noqa: F811
    code, output = edgeq("devices", "check", BOARD_NAME, "--inventory", old_python_board.inventory,
                         "--json", tmp_path / "check.json")
    assert code == 0, output
    facts = json.loads((tmp_path / "check.json").read_text())[BOARD_NAME]
    assert facts["ok"] and facts["arch"] == "x86_64"
    assert facts["python"].startswith(PYTHON_VERSION + "."), facts["python"]
    assert facts["python_executable"] == f"{DEVICE_WORKDIR}/venv/bin/python"
    assert facts["runtime"]["name"] == "ai_edge_litert" and facts["libc"] == "glibc-2.31"


@pytest.mark.parametrize("resolver", ["AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"])
def test_run_matches_the_host(old_python_board, old_setup, example_tflite, local_evaluation, resolver,  # noqa: F811
                              tmp_path):
    """`edgeq run` of the example models (float and dynamic-range) on the risky suite: board == host."""
    inputs = local_evaluation / "inputs" / "risky.npz"
    for label, model, rtol in (("float", example_tflite[0], FLOAT_RTOL), ("quant", example_tflite[1], QUANT_RTOL)):
        runs = {}
        for device, inventory in ((BOARD_NAME, old_python_board.inventory), ("local", None)):
            out = tmp_path / f"{label}-{device}"
            code, output = edgeq("run", "--device", device, *(["--inventory", inventory] if inventory else []),
                                 "--model", model, "--inputs", inputs, "--warmup", 1, "--resolver", resolver,
                                 "-o", out, "-q")
            assert code == 0, output
            runs[device] = out
        meta = json.loads((runs[BOARD_NAME] / "meta.json").read_text())
        assert meta["device"]["python"].startswith(PYTHON_VERSION + "."), meta["device"]
        assert meta["device"]["runtime"]["name"] == "ai_edge_litert" and meta["resolver"] == resolver, meta
        for board, host in zip(outputs_of(runs[BOARD_NAME]), outputs_of(runs["local"])):
            assert board.shape == host.shape and board.dtype == host.dtype
            assert np.isfinite(board).all()
            scale = max(1.0, float(np.abs(host).max()))
            error = float(np.abs(board.astype(np.float64) - host).max())
            assert error <= rtol * scale, f"{label}/{resolver}: max |board - host| = {error} (scale {scale})"
            agreement = float((board.reshape(-1, board.shape[-1]).argmax(-1)
                               == host.reshape(-1, host.shape[-1]).argmax(-1)).mean())
            assert agreement >= MIN_AGREEMENT, f"{label}/{resolver}: top-1 agreement {agreement}"
        code, output = edgeq("compare", runs["local"], runs[BOARD_NAME], "--json", tmp_path / f"{label}.json", "-q")
        assert code in (0, 1), output
        assert json.loads((tmp_path / f"{label}.json").read_text())["overall"]["n"] > 0


def copy_agent_sources(dest: Path) -> list[str]:
    """device_agents/ (whatever its layout: one file, a package) into dest; its module names. The
    agent is being reorganised in place: a file that vanishes mid-copy means wait and copy again."""
    for attempt in range(10):
        shutil.rmtree(dest, ignore_errors=True)
        try:
            shutil.copytree(AGENT_SOURCES, dest / AGENT_SOURCES.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            break
        except (shutil.Error, FileNotFoundError):
            if attempt == 9:
                raise
            time.sleep(3)
    names = []
    for path in sorted((dest / AGENT_SOURCES.name).rglob("*.py")):
        parts = path.relative_to(dest).with_suffix("").parts
        if parts[-1] != "__main__":  # an entry point runs the agent when imported
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_agent_module_imports_on_python_39(old_python_board, old_setup):  # noqa: F811
    """All of the agent's sources, imported by the board's Python 3.9 (with numpy and the runtime):
    syntax or a module-level use of something newer than 3.9 fails here with its traceback."""
    board = old_python_board.board
    dest = board.rootfs / "root" / "agent-sources"  # the board's disk is a directory on this host
    names = copy_agent_sources(dest)
    assert names, f"no Python files under {AGENT_SOURCES}"
    python = old_setup["ready"][BOARD_NAME]["python_path"]
    command = shlex.join([python, "-I", "-c", IMPORT_ALL, board.inside(dest), *names])
    client = board.connect()
    try:
        _, stdout, stderr = client.exec_command(command, timeout=300)
        out, err = stdout.read().decode(), stderr.read().decode()
        status = stdout.channel.recv_exit_status()
    finally:
        client.close()
    assert status == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["python"].startswith(PYTHON_VERSION + "."), result
    assert result["failed"] == {}, "\n".join(f"{name}:\n{trace}" for name, trace in result["failed"].items())


def test_soak_for_a_few_seconds(old_python_board, old_setup, example_tflite, small_inputs, tmp_path):  # noqa: F811
    """A detached soak (its own process, status files, sampler) under Python 3.9."""
    short_soak(BOARD_NAME, old_python_board.inventory, example_tflite[1], small_inputs, tmp_path)


def test_evaluate_gives_the_local_verdict(old_evaluation, local_evaluation):
    board = json.loads((old_evaluation / "report.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"report.json holds {c}"))
    host = json.loads((local_evaluation / "report.json").read_text())
    assert board["device"]["name"] == BOARD_NAME and board["device"]["arch"] == "x86_64"
    assert board["device"]["python"].startswith(PYTHON_VERSION + "."), board["device"]
    assert host["device"]["name"] == "local"
    assert board["verdict"] == host["verdict"], (board["verdict"], host["verdict"])
    assert board["worst_category"] == host["worst_category"]
    assert board["overall"]["n"] == host["overall"]["n"] > 0
    versus = board["device_vs_host"]
    for which in ("float", "quant"):
        assert versus[which]["n"] == board["overall"]["n"]
        assert versus[which]["agreement"] >= MIN_AGREEMENT, versus


def test_script_says_why_it_cannot_host_without_root(tmp_path):
    """The skip path for real: as an unprivileged user the script exits 77 with a reason."""
    setpriv = subprocess.run(["sh", "-c", "command -v setpriv"], capture_output=True, text=True).stdout.strip()
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    # copies in a folder anyone may read: the checkout (or pytest's tmp) may sit below a folder only root can enter
    readable = Path(tempfile.mkdtemp(prefix="edgeq-old-python-script-"))
    try:
        readable.chmod(0o755)
        for script in (SCRIPT, SCRIPT.parent / "arm64_board.sh"):  # the thin script runs the shared recipe
            shutil.copy(script, readable / script.name)
            (readable / script.name).chmod(0o755)
        proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                               str(readable / SCRIPT.name), "prepare"], capture_output=True, text=True, timeout=60,
                              cwd=readable, env={"PATH": os.environ["PATH"], "HOME": str(readable)})
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert proc.returncode == 77, proc.stderr
    assert "bullseye-amd64 board: cannot host here: needs root" in proc.stderr
