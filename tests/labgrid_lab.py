"""A real labgrid lab for the tests: coordinator, exporter and places, from labgrid on PyPI.

labgrid lives in its own venv (``.venv-labgrid``, made by scripts/setup.sh --tests; or
$EDGEQ_LABGRID_PYTHON): it pins grpcio/protobuf and brings a pytest plugin, and a lab
installs it apart from edgeq just the same. The exporter exports one NetworkService per
board, pointing at a real sshd of tests/lab.py. Missing labgrid fails these tests (CI
must test the lab path); it does not skip them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from lab import free_port

ROOT = Path(__file__).resolve().parents[1]


def labgrid_python() -> Path:
    python = Path(os.environ.get("EDGEQ_LABGRID_PYTHON") or ROOT / ".venv-labgrid" / "bin" / "python")
    if not python.exists():
        raise RuntimeError(f"{python}: no labgrid venv (bash scripts/setup.sh --tests makes it)")
    return python


class LabgridLab:
    """A coordinator on a free port and one exporter; ``add_board`` exports an sshd as a place."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = labgrid_python().parent
        self.address = f"127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self.boards: dict[str, object] = {}

    def start(self, boards: dict) -> "LabgridLab":
        """boards: place name -> SshServer. Returns once every place's resource is visible."""
        self._spawn("coordinator", [self.bin / "labgrid-coordinator", "-l", self.address])
        self._wait_for(lambda: self.client("places", check=False).returncode == 0, "the coordinator")
        config = "".join(f"{place}:\n  NetworkService:\n    address: {server.host}\n    username: {server.user}\n"
                         f"    port: {server.port}\n" for place, server in boards.items())
        (self.dir / "exporter.yaml").write_text(config)
        self._spawn("exporter", [self.bin / "labgrid-exporter", "-c", self.address, "--name", "rack",
                                 str(self.dir / "exporter.yaml")])
        for place in boards:
            self.client("-p", place, "create")
            self._wait_for(lambda p=place: self.client("-p", p, "add-match", f"rack/{p}/NetworkService/*",
                                                       check=False).returncode == 0, f"the exporter's {place}")
        self.boards = dict(boards)
        return self

    def _spawn(self, name: str, argv: list) -> None:
        log = open(self.dir / f"{name}.log", "w")
        self.procs.append(subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                           start_new_session=True))

    def _wait_for(self, ready, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                logs = " | ".join(p.read_text()[-400:] for p in self.dir.glob("*.log"))
                raise RuntimeError(f"labgrid: {what} not ready after {timeout_s:g} s: {logs}")
            time.sleep(0.3)

    def client(self, *args: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, LG_COORDINATOR=self.address)
        if user:
            env["LG_USERNAME"] = user
        done = subprocess.run([str(self.bin / "labgrid-client"), *args], capture_output=True, text=True, env=env,
                              timeout=120)
        if check and done.returncode:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {done.stdout[-500:]} {done.stderr[-500:]}")
        return done

    def holder(self, place: str) -> str | None:
        """Who holds the place, as labgrid-client shows it ('host/user'), or None."""
        shown = self.client("-p", place, "show").stdout
        value = next(line.split(":", 1)[1].strip() for line in shown.splitlines() if line.strip().startswith("acquired:"))
        return None if value == "None" else value

    def inventory_entry(self, place: str) -> dict:
        server = self.boards[place]
        entry = server.inventory_entry()
        return {"transport": "labgrid", "labgrid_place": place, "labgrid_coordinator": self.address,
                "labgrid_python": str(labgrid_python()), "identity_file": entry["identity_file"],
                "known_hosts": entry["known_hosts"], "python": entry["python"], "workdir": entry["workdir"]}

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
