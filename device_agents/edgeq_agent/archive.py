"""What this agent is and where it runs from: its version, the one archive it ships as, its sha256,
and the command that starts it again (a detached soak, a run's sampler process).

The agent ships as one zipapp, ``edgeq_agent-<sha12>.pyz``: a shebang line, a root ``__main__.py``
that runs this package, and the package's ``.py`` files under ``edgeq_agent/``. ``archive_bytes``
makes it, the same bytes for the same sources whatever the files' times, the umask or the zlib in
use: entries in sorted order, stored (not compressed), dated 1980-01-01, mode 0644. The host's
builder (``device_agents/zipapp.py``) writes these bytes; the agent reports the sha256 of the
archive it runs from, or, run from its source folder, of the archive those sources make, so either
way ``agent_sha256`` names the archive the host pushed.

Started as ``python -I edgeq_agent-<sha12>.pyz``, Python puts the archive itself first on sys.path
(even isolated) and nothing of the folder it lies in: an ``edgeq_agent/`` or ``numpy.py`` planted
beside it is never imported.
"""

import hashlib
import io
import os
import sys
import zipfile

from .files import sha256_file

AGENT_VERSION = "1"
ARCHIVE_PACKAGE = "edgeq_agent"  # the package's name inside the archive, whatever its folder is called
SHEBANG = b"#!/usr/bin/env python3\n"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
ZIP_MODE = 0o100644  # a regular file, rw-r--r--
PACKAGE = __name__.rpartition(".")[0]  # "edgeq_agent" in the archive, "device_agents.edgeq_agent" on the host
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

ROOT_MAIN = b'''"""edgeq device agent: runs the edgeq_agent package in this archive (python -I edgeq_agent-<sha12>.pyz)."""

import os
import sys

_archive = os.path.dirname(os.path.abspath(__file__))
if _archive not in [os.path.abspath(p) for p in sys.path if p]:  # python puts it first; started otherwise
    sys.path.insert(0, _archive)
from edgeq_agent.__main__ import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
'''


def source_files(package_dir=PACKAGE_DIR):
    """(name in the archive, path) of every ``.py`` file of the package, sorted by name: no
    ``__pycache__``, no hidden files, nothing that is not Python source."""
    found = []
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        for name in files:
            if name.endswith(".py") and not name.startswith("."):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, package_dir).replace(os.sep, "/")
                found.append((ARCHIVE_PACKAGE + "/" + rel, path))
    return sorted(found)


def archive_bytes(package_dir=PACKAGE_DIR):
    """The zipapp of the package in ``package_dir``, as bytes that depend on the sources only."""
    entries = [("__main__.py", ROOT_MAIN)]
    for name, path in source_files(package_dir):
        with open(path, "rb") as handle:
            entries.append((name, handle.read()))
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, so the mode below is read as one
            info.external_attr = ZIP_MODE << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def running_archive():
    """The path of the .pyz this agent runs from; None when it runs from its source folder."""
    root = os.path.dirname(PACKAGE_DIR)
    return root if os.path.isfile(root) else None


def agent_sha256():
    """The sha256 of the archive this agent is: the one it runs from, or the one its sources make."""
    archive = running_archive()
    if archive is not None:
        return sha256_file(archive)
    return hashlib.sha256(archive_bytes()).hexdigest()


def agent_command(args):
    """The argv that starts this agent again in a process of its own, isolated (``python -I``), with
    ``args`` (["soak", JOB] or ["sample", CONFIG]): the archive it runs from, never a path inside it;
    run from its source folder, its package by name from that folder's root."""
    archive = running_archive()
    if archive is not None:
        return [sys.executable, "-I", archive] + list(args)
    root = PACKAGE_DIR
    for _ in PACKAGE.split("."):
        root = os.path.dirname(root)
    boot = ("import sys; sys.path.insert(0, %r); from %s.__main__ import main; sys.exit(main(sys.argv[1:]))"
            % (root, PACKAGE))
    return [sys.executable, "-I", "-c", boot] + list(args)
