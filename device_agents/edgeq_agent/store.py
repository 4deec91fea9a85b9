"""The store on the device: edgeq's records of what it made, and the tidy that deletes only that.

Pushed files live in WORKDIR/cas, run folders in WORKDIR/runs; the tidy keeps them within a
budget, least recently used first, and never touches an entry edgeq's records do not name.
"""

import errno
import json
import os
import shutil
import time

from .files import write_json


STORE_FOLDERS = ("cas", "runs")  # what the store may evict; agents/ and venv/ are never touched
STORE_PROTECT_S = 3600.0  # entries used this recently may belong to another job still running
MADE = ".edgeq-made"  # edgeq's record that it made a store entry (see record_made)
RECORD_MAX = 4096


def record_made(path, source=None):
    """Record that edgeq made ``path``: the only entries the store's tidy ever deletes.

    A folder (a run's) holds its record inside, ``path/.edgeq-made``; a file (a pushed model or input set) has
    it beside, ``folder/.edgeq-made/name``. The record keeps the entry's identity (device and inode) at the
    time it was made, taken from ``source`` when given (an upload's part file, recorded before it is renamed
    to ``path``: a rename keeps the inode), so a file put there later by someone else under the same name is
    never taken for edgeq's.
    """
    made = os.lstat(source or path)
    target = _record_path(path, is_dir=_is_dir(made))
    if not _is_dir(made):
        try:
            os.mkdir(os.path.dirname(target))
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    write_json(target, {"made_by": "edgeq", "dev": made.st_dev, "ino": made.st_ino, "at": time.time()})


def made_by_edgeq(path):
    """True when edgeq's record says it made ``path``, the very entry there now (not a later one by that name)."""
    try:
        found = os.lstat(path)
    except OSError:
        return False
    record = _read_record(_record_path(path, is_dir=_is_dir(found)))
    return record is not None and (record.get("dev"), record.get("ino")) == (found.st_dev, found.st_ino)


def _record_path(path, is_dir):
    if is_dir:
        return os.path.join(path, MADE)
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, MADE, name)


def _is_dir(stat_result):
    import stat

    return stat.S_ISDIR(stat_result.st_mode)  # from lstat: a symlink to a folder is no folder of edgeq's


def _read_record(path):
    """The record as a dict, or None: absent, not a plain file, too large or not edgeq's JSON."""
    import stat

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            raw = handle.read(RECORD_MAX + 1)
        record = json.loads(raw.decode("utf-8")) if len(raw) <= RECORD_MAX else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("made_by") == "edgeq" else None


def tidy_store(root, budget_bytes, keep, drop, protect_s=STORE_PROTECT_S):
    """Keep what edgeq made in the device's store (pushed files, run folders) within budget_bytes.

    Only entries directly under root/cas and root/runs that edgeq's records say it made (``made_by_edgeq``)
    are counted, touched or removed, whatever the request names: a workdir may be a folder that already had
    a cas/ or runs/ of the user's, and those files are never edgeq's to delete. ``keep`` (files in use now)
    are touched so they count as recently used and are never removed; ``drop`` (run folders the host has
    pulled and verified) go first; then the least recently used entries go until the store fits, except
    those used in the last ``protect_s`` seconds (another job on this board may be reading them).
    ``foreign`` counts the entries left alone because edgeq did not make them.
    """
    root = os.path.realpath(os.path.expanduser(root))
    now = time.time()
    entries, foreign = _store_entries(root)
    ours = set(path for path, _, _ in entries)
    kept = set(os.path.realpath(p) for p in keep) & ours
    dropped = set(os.path.realpath(p) for p in drop) & ours
    for path in kept:
        os.utime(path, (now, now))
    before = sum(size for _, size, _ in entries)
    total, removed = before, 0
    for path, size, used in sorted(entries, key=lambda e: (e[0] not in dropped, e[2])):
        if path in kept or (path not in dropped and (total <= budget_bytes or now - used < protect_s)):
            continue
        _remove_made(path)
        total, removed = total - size, removed + 1
    _forget_stale_records(root)
    return {"before_bytes": before, "after_bytes": total, "removed": removed, "budget_bytes": budget_bytes,
            "foreign": foreign}


def _store_entries(root):
    """(path, bytes, last used) of every pushed file and run folder edgeq made; and how many others there are."""
    entries, foreign = [], 0
    for folder in STORE_FOLDERS:
        base = os.path.join(root, folder)
        for name in (os.listdir(base) if os.path.isdir(base) and not os.path.islink(base) else []):
            path = os.path.join(base, name)
            if name == MADE:
                continue
            if not made_by_edgeq(path):
                foreign += 1
                continue
            entries.append((path, _tree_size(path), os.lstat(path).st_mtime))
    return entries, foreign


def _forget_stale_records(root):
    """Drop records of files that are gone or were replaced by another (the records are edgeq's own)."""
    for folder in STORE_FOLDERS:
        records = os.path.join(root, folder, MADE)
        if not os.path.isdir(records) or os.path.islink(records):
            continue
        for name in os.listdir(records):
            if not made_by_edgeq(os.path.join(root, folder, name)):
                _remove(os.path.join(records, name))
        try:
            os.rmdir(records)  # once it records nothing
        except OSError:
            pass


def _tree_size(path):
    if not os.path.isdir(path) or os.path.islink(path):
        return os.lstat(path).st_size
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def _remove_made(path):
    """Remove an entry edgeq made, then its record (a folder's is inside it)."""
    is_dir = os.path.isdir(path) and not os.path.islink(path)
    _remove(path)
    if not is_dir:
        _remove(_record_path(path, is_dir=False))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass
