"""A project's edgeq.toml is found from its subfolders, and its history lives beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _edgeq(cwd: Path, *args: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("EDGEQ_INVENTORY", "EDGEQ_DB")}
    return subprocess.run([sys.executable, "-m", "edgeq", *args], cwd=cwd, capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


def test_inventory_and_history_are_found_from_a_subfolder(tmp_path):
    project = tmp_path / "project"
    deep = project / "models" / "v2"
    deep.mkdir(parents=True)
    (project / "edgeq.toml").write_text('[devices.pi5-bench]\nhost = "10.0.0.5"\nuser = "pi"\n')
    listed = _edgeq(deep, "devices", "list")
    assert listed.returncode == 0, listed.stderr
    assert "pi5-bench" in listed.stdout and "10.0.0.5" in listed.stdout
    code = "from edgeq.store.db import default_location; print(default_location())"
    where = subprocess.run([sys.executable, "-c", code], cwd=deep, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "EDGEQ_DB"})
    assert where.stdout.strip() == str(project.resolve() / ".edgeq" / "history.sqlite")
    outside = _edgeq(tmp_path, "devices", "list")
    assert "pi5-bench" not in outside.stdout  # above the project: only local
    chosen = _edgeq(deep, "devices", "list", EDGEQ_INVENTORY=str(tmp_path / "nope.toml"))
    assert chosen.returncode == 2 and "nope.toml: inventory file not found" in chosen.stderr
