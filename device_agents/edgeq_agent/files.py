"""Writing a file so that no reader ever sees half of it: the one atomic write, for the agent and the host.

Standard library only (Python 3.8+), no import from the rest of the agent, so the host can use it
as ``device_agents.edgeq_agent.files`` too.

A write goes to a temporary name in the destination's own folder (a rename across filesystems would
not be atomic), is flushed and fsync'd, replaces the destination with ``os.replace`` and then the
folder is fsync'd (best effort: some filesystems refuse it), so after a crash or a power cut the
destination is either the old file or the new one, whole. On any error the temporary file is removed
and the destination is left as it was. Two writers of the same path never share a temporary name.

    with atomic_write(path) as handle:          # streamed: binary by default, text=True for str
        for block in blocks:
            handle.write(block)
    write_bytes(path, data)                     # all at once
    write_text(path, "text\\n")
    write_json(path, {"a": 1})                  # as the agent writes its JSON files

``sync=False`` skips both fsyncs (a file rewritten often whose loss on a power cut costs nothing, such
as a progress checkpoint); the replacement is still atomic. ``perms`` sets the file's permission bits
whatever the umask (e.g. 0o644); None gives what ``open`` would (0o666 less the umask).
"""

import contextlib
import hashlib
import json
import os

__all__ = ["atomic_write", "write_bytes", "write_text", "write_json", "temp_name", "fsync_folder", "fsync_path",
           "sha256_file"]


def temp_name(path):
    """A hidden name beside ``path``, unique to this process and call: ``.NAME.tmp-PID-RANDOM``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, ".%s.tmp-%d-%s" % (name, os.getpid(), os.urandom(4).hex()))


@contextlib.contextmanager
def atomic_write(path, text=False, sync=True, perms=None, encoding="utf-8"):
    """A new file object that replaces ``path`` whole when the block ends cleanly, or not at all.

    Yields a file open for writing (binary, or text with ``text=True`` and ``encoding``) on a temporary
    name in ``path``'s folder. When the block ends without an error the file is flushed, fsync'd
    (``sync``), renamed onto ``path`` and the folder fsync'd (``sync``, best effort). When the block
    raises, or finishing fails, the temporary file is removed, ``path`` is untouched and the error
    propagates.
    """
    tmp = temp_name(path)
    mode = 0o666 if perms is None else 0o600  # given perms: never wider than the owner's until chmod below
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if perms is not None:
            os.chmod(tmp, perms)
        handle = os.fdopen(fd, "w", encoding=encoding) if text else os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    if sync:
        fsync_folder(os.path.dirname(os.path.abspath(path)))


def write_bytes(path, data, sync=True, perms=None):
    """Replace ``path`` with ``data`` (bytes), atomically (see ``atomic_write``)."""
    with atomic_write(path, sync=sync, perms=perms) as handle:
        handle.write(data)


def write_text(path, text, sync=True, perms=None, encoding="utf-8"):
    """Replace ``path`` with ``text`` (str), atomically (see ``atomic_write``)."""
    with atomic_write(path, text=True, sync=sync, perms=perms, encoding=encoding) as handle:
        handle.write(text)


def write_json(path, payload, sync=True, perms=None, indent=1, sort_keys=True):
    """Replace ``path`` with ``payload`` as JSON, atomically; by default as the agent writes its files
    (one-space indent, sorted keys)."""
    with atomic_write(path, text=True, sync=sync, perms=perms) as handle:
        json.dump(payload, handle, indent=indent, sort_keys=sort_keys)


def fsync_folder(folder):
    """fsync a folder, so a file created or renamed in it survives a power cut; best effort, never raises."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_path(path):
    """fsync a file written by other means (a memory map, positioned writes) to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def sha256_file(path, chunk=1 << 20):
    """The sha256 of a file's bytes, as hex, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _discard(tmp):
    try:
        os.remove(tmp)
    except OSError:
        pass
