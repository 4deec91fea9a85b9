"""edgeq on an emulated aarch64 board: a Debian arm64 userland under qemu-user, its own sshd in
its own network namespace (tests/arm64_board.py, scripts/arm64_board.sh).

The runtime comes the way an air-gapped lab gets it: `edgeq devices setup --offline` downloads
ai-edge-litert's aarch64 wheels on this host and pushes them. Then the real pipeline runs on
the board and its numbers are compared with this host's. Where the machine cannot emulate
(not root, no binfmt_misc, no qemu-user >= 8) every test here skips with the reason.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from arm64_board import (BOARD_NAME, DEVICE_WORKDIR, SCRIPT, WHEEL_CACHE, arm64_board, edgeq,  # noqa: F401
                         elf_machine, inside, short_soak)

pytestmark = pytest.mark.arm64


@pytest.fixture(scope="session")
def arm64_setup(arm64_board, tmp_path_factory):  # noqa: F811
    """`edgeq devices setup arm64-emu --offline` once for the session: (facts, json path)."""
    out = tmp_path_factory.mktemp("arm64-setup")
    code, output = edgeq("devices", "setup", BOARD_NAME, "--inventory", arm64_board.inventory, "--offline",
                         "--wheels", WHEEL_CACHE, "--json", out / "setup.json")
    assert code == 0, output
    return json.loads((out / "setup.json").read_text())


@pytest.fixture(scope="session")
def arm64_evaluation(arm64_board, arm64_setup, tmp_path_factory):  # noqa: F811
    """The built-in example evaluated on the board (a small suite): its output folder."""
    out = tmp_path_factory.mktemp("arm64-evaluate") / "out"
    code, output = edgeq("evaluate", "--device", BOARD_NAME, "--inventory", arm64_board.inventory, "-o", out,
                         "--max-per-category", 20, "--warmup", 2, "--no-history", "-q")
    assert code in (0, 1), output  # 1 would be a crossed gate; none is given, but it still ran
    return out


def test_setup_offline_pushes_aarch64_wheels(arm64_board, arm64_setup):  # noqa: F811
    assert arm64_setup["failed"] == {}
    ready = arm64_setup["ready"][BOARD_NAME]
    assert ready["arch"] == "aarch64" and ready["hostname"] == BOARD_NAME
    assert ready["python_path"] == f"{DEVICE_WORKDIR}/venv/bin/python"
    assert ready["runtime"]["name"] == "ai_edge_litert"
    assert list(WHEEL_CACHE.glob("ai_edge_litert-*aarch64*.whl")), "no aarch64 ai-edge-litert wheel downloaded"
    # The board's disk is a directory on this host: what setup made there is arm64 code.
    rootfs = arm64_board.board.rootfs
    pushed = sorted(p.name for p in (rootfs / DEVICE_WORKDIR.lstrip("/") / "wheels").glob("*.whl"))
    assert any(n.startswith("numpy-") and "aarch64" in n for n in pushed), pushed
    venv_python = inside(rootfs, f"{DEVICE_WORKDIR}/venv/bin/python")
    assert elf_machine(venv_python) == 0xB7, venv_python


def test_check_reports_aarch64(arm64_board, arm64_setup, tmp_path):  # noqa: F811
    code, output = edgeq("devices", "check", BOARD_NAME, "--inventory", arm64_board.inventory,
                         "--json", tmp_path / "check.json")
    assert code == 0, output
    facts = json.loads((tmp_path / "check.json").read_text())[BOARD_NAME]
    assert facts["ok"] and facts["arch"] == "aarch64"
    assert facts["python_executable"] == f"{DEVICE_WORKDIR}/venv/bin/python"
    assert facts["runtime"]["name"] == "ai_edge_litert" and facts["libc"].startswith("glibc-")


def test_evaluate_on_the_board_compares_kernels_with_the_host(arm64_evaluation):
    text = (arm64_evaluation / "report.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"report.json holds {c}"))
    assert report["device"]["name"] == BOARD_NAME and report["device"]["arch"] == "aarch64"
    assert report["device"]["resolver"] == "AUTO"
    assert report["verdict"] in ("robust", "degraded", "catastrophic")
    versus = report["device_vs_host"]
    assert versus["host"] == platform.machine()
    n = report["overall"]["n"]
    for which in ("float", "quant"):
        assert versus[which]["n"] == n > 0
        assert math.isfinite(versus[which]["max_abs_error"]) and 0 <= versus[which]["agreement"] <= 1
    if platform.machine() != "aarch64":
        # Same model, same inputs, same runtime version: the aarch64 (NEON) kernels still give
        # other numbers than this host's x86-64 ones, and the report shows it.
        assert max(versus["float"]["max_abs_error"], versus["quant"]["max_abs_error"]) > 0, versus


def test_xnnpack_and_builtin_kernels_differ_on_the_board(arm64_board, arm64_evaluation, tmp_path):  # noqa: F811
    """The dynamic-range model with the built-in hybrid kernels vs XNNPACK, both on aarch64."""
    quant = next((arm64_evaluation / "models").glob("*.dynamic-range.tflite"))
    code, output = edgeq("run", "--device", BOARD_NAME, "--inventory", arm64_board.inventory, "--model", quant,
                         "--inputs", arm64_evaluation / "inputs" / "risky.npz", "--warmup", 2,
                         "--resolver", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "-o", tmp_path / "builtin", "-q")
    assert code == 0, output
    code, output = edgeq("compare", arm64_evaluation / "runs" / "quant", tmp_path / "builtin",
                         "--json", tmp_path / "cmp.json", "-q")
    assert code in (0, 1), output
    comparison = json.loads((tmp_path / "cmp.json").read_text())
    resolvers = [json.loads((d / "meta.json").read_text())["device"] for d in
                 (arm64_evaluation / "runs" / "quant", tmp_path / "builtin")]
    assert [r["arch"] for r in resolvers] == ["aarch64", "aarch64"]
    assert comparison["overall"]["n"] > 0
    assert comparison["overall"]["max_abs_error"] > 0, comparison["overall"]


def test_deploy_installs_the_boards_evaluated_model_and_refuses_host_evidence(arm64_board, arm64_evaluation,  # noqa: F811
                                                                             tmp_path):
    """Evidence is per device class: the board's own evaluation lets the model in (the smoke check
    then runs it at the installed path under qemu and must match the evaluation bit for bit); the
    same model with an x86-64 evaluation as its only evidence is refused."""
    import hashlib

    report = json.loads((arm64_evaluation / "report.json").read_text())
    quant = next((arm64_evaluation / "models").glob("*.dynamic-range.tflite"))
    path = "/opt/app/model.tflite"
    base = ["deploy", "install", quant, "--device", BOARD_NAME, "--inventory", arm64_board.inventory, "--to", path,
            "--require", "degraded", "--no-history"]
    host = tmp_path / "host-evidence"
    shutil.copytree(arm64_evaluation, host)
    (host / "report.json").write_text(json.dumps(dict(report, device=dict(report["device"], arch="x86_64"))))
    code, output = edgeq(*base, "--report", host)
    assert code == 2 and "no evaluation on aarch64" in output, output
    code, output = edgeq(*base, "--report", arm64_evaluation, "--json", tmp_path / "d.json")
    if report["verdict"] == "catastrophic":
        assert code == 2 and "says catastrophic" in output, output
        return
    assert code == 0, output
    result = json.loads((tmp_path / "d.json").read_text())["devices"][BOARD_NAME]
    assert result["status"] == "installed" and result["arch"] == "aarch64"
    assert result["smoke"]["ok"] and all(c["bit_exact"] for c in result["smoke"]["outputs"]), result["smoke"]
    installed = inside(arm64_board.board.rootfs, path)
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == hashlib.sha256(quant.read_bytes()).hexdigest()


def test_pushes_stream_through_the_boards_receiver(arm64_board, arm64_setup, example_tflite, small_inputs):  # noqa: F811
    """The board's own Python (under qemu) runs the agent's receiver: an input set and a model arrive whole,
    hashed as they were written (Transfer.wire_bytes is set only on that path), never over SFTP."""
    from edgeq.devices.inventory import load_inventory
    from edgeq.devices.session import open_session

    device = load_inventory(arm64_board.inventory)[BOARD_NAME]
    with open_session(device, lock=False) as opened:
        pushed = [opened.deployer.push(local) for local in (small_inputs, example_tflite[1])]
        transfers = [t for t in opened.deployer.transfers if not t.skipped]
        assert opened.transport._pusher.failed is None
    assert transfers and all(t.wire_bytes is not None for t in transfers), transfers
    for local, (remote, digest) in zip((small_inputs, example_tflite[1]), pushed):
        assert inside(arm64_board.board.rootfs, remote).read_bytes() == Path(local).read_bytes()


def test_soak_for_a_few_seconds(arm64_board, arm64_setup, example_tflite, small_inputs, tmp_path):  # noqa: F811
    short_soak(BOARD_NAME, arm64_board.inventory, example_tflite[1], small_inputs, tmp_path)


def test_script_says_why_it_cannot_emulate_without_root(tmp_path):
    """The skip path for real: as an unprivileged user the script exits 77 with a reason."""
    setpriv = subprocess.run(["sh", "-c", "command -v setpriv"], capture_output=True, text=True).stdout.strip()
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    # a copy in a folder anyone may read: the checkout (or pytest's tmp) may sit below a folder only root can enter
    readable = Path(tempfile.mkdtemp(prefix="edgeq-arm64-script-"))
    try:
        readable.chmod(0o755)
        script = Path(shutil.copy(SCRIPT, readable / SCRIPT.name))
        script.chmod(0o755)
        proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script),
                               "prepare"], capture_output=True, text=True, timeout=60, cwd=readable,
                              env={"PATH": os.environ["PATH"], "HOME": str(readable)})
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert proc.returncode == 77, proc.stderr
    assert "cannot emulate here: needs root" in proc.stderr
