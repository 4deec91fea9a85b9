"""A real PostgreSQL server for the history tests: Debian's binaries, a private cluster.

initdb into a fresh folder, trust authentication on 127.0.0.1 and a socket folder of
its own, a free port; stopped (and its folder removed) when the test session ends.
PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user the
Debian package creates. scripts/setup.sh --tests installs the package; a machine
without it fails these tests (the lab path must be tested), it does not skip them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def postgres_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed (scripts/setup.sh --tests installs postgresql)")
    return found[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="edgeq-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sock"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/edgeq"

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr[-800:]}")

    def start(self) -> "PostgresServer":
        self.sockets.mkdir(parents=True)
        if self.as_user:
            owner = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            for folder in (self.root, self.sockets):
                os.chown(folder, owner.pw_uid, owner.pw_gid)
        self._run(postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.resume()
        self._run(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "edgeq")
        return self

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "120", "start")

    def pause(self) -> None:
        """Stop the server (fast: sessions are cut, as when a lab database goes down)."""
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "120", "stop")

    def stop(self) -> None:
        try:
            self.pause()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
