"""The host's cache of float runs: the float model's outputs on a suite, kept for the next evaluation.

A float model's outputs depend on the model, the input set, and where and how it ran — not on the
quantized model it is compared with. A nightly evaluation, a new quantization policy
(``edgeq evaluate float.tflite --quant-model other.tflite``) or the next device run of the same float
model therefore reuses them: the key is the sha256 of a canonical JSON of (float model sha256, input set
sha256, device name, runtime name and version and arch from the agent's hello, resolver, threads, batch
size, the cache format). Suites are byte-deterministic (same data, seed and model → same sha256), so the
key holds across evaluations.

Layout: ``$EDGEQ_CACHE/float-runs/`` (else ``~/.cache/edgeq/float-runs``, beside the built agents)::

    <key>/              a plain run directory (``RunResult.load`` works): the float outputs of every row
                        computed so far, rows.npy naming them; key.json says what the key is made of
    .locks/<key>.lock   one flock per key
    .staging-*/ .old-*  a store being written / an entry being replaced (removed when done, or by a
                        later eviction once an hour old: a writer that crashed)

Locking: every read and write of a key holds an exclusive ``flock`` on its lock file (the kernel drops
it with its holder, however that ends). A store writes the new entry — the union of the cached rows and
the new runs' rows — into a staging folder, then, still under the lock, renames the old entry away,
renames the new one in and deletes the old: two evaluations storing the same key run one after the
other (the second unions the first's rows), and no reader ever sees a half entry. A lookup verifies
every file against the run's manifest (never trusted unchecked; a failing entry is dropped with a
warning) and hard-links the files into the caller's folder (a copy where links cannot be made): edgeq
never rewrites a file in place (every write is a new file renamed over the old), so a linked file
cannot change under either side, and an eviction or replacement of the entry does not take it away.

Bound: the entries' total size at most ``budget_bytes`` (default ``$EDGEQ_FLOAT_CACHE_MB`` MiB, else
2048): after a store, the least recently used entries (an entry's folder time is set on every use)
are removed first, never the entry just written and never one another process holds. An entry larger
than the whole budget is not kept. ``EDGEQ_FLOAT_CACHE=off`` (or ``evaluate --no-float-cache``) turns
the cache off.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeq.errors import ConfigError
from edgeq.files import copy_file, write_json
from edgeq.results import MANIFEST, RUN_FILE, IncompleteRun, RunResult
from edgeq.rows import ROWS_FILE, merge_rounds, run_rows, take_run_rows

FORMAT = 1  # what an entry holds and how; part of every key, so another format never shares a folder
KEY_FILE = "key.json"
DEFAULT_BUDGET_MB = 2048
LOCK_TIMEOUT_S = 600.0  # a store of a very large entry may hold its key this long
STALE_S = 3600.0  # a staging or replaced folder this old belongs to a writer that is gone
OFF = ("off", "0", "no", "false")
_KEY = re.compile(r"[0-9a-f]{64}")
_NEEDED = (MANIFEST, RUN_FILE, "meta.json", ROWS_FILE, KEY_FILE)  # an entry of this format has them all


class CacheKey(str):
    """A cache key (the sha256 hex of its fields' canonical JSON) that remembers its ``fields``."""

    fields: dict

    def __new__(cls, digest: str, fields: dict | None = None):
        key = super().__new__(cls, digest)
        key.fields = dict(fields or {})
        return key


def key_fields(model_sha256: str, inputs_sha256: str, device_name: str, facts: dict, resolver: str, threads: int,
               batch_size: int) -> dict:
    """What a float run's outputs depend on: the model and input set (sha256), the device, its runtime and
    arch as the agent's hello said (``facts``), and the job options that change outputs."""
    runtime = (facts or {}).get("runtime") or {}
    return {"format": FORMAT, "model_sha256": str(model_sha256), "inputs_sha256": str(inputs_sha256),
            "device": str(device_name),
            "runtime": {"name": runtime.get("name"), "version": runtime.get("version")},
            "arch": (facts or {}).get("arch"), "resolver": str(resolver), "threads": int(threads),
            "batch_size": int(batch_size)}


def key_for(model_sha256: str, inputs_sha256: str, device_name: str, facts: dict, resolver: str, threads: int,
            batch_size: int) -> CacheKey:
    """The cache key: sha256 of the canonical JSON (sorted keys, no spaces) of ``key_fields``."""
    fields = key_fields(model_sha256, inputs_sha256, device_name, facts, resolver, threads, batch_size)
    return CacheKey(_digest(fields), fields)


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def cache_root() -> Path:
    """$EDGEQ_CACHE/float-runs, else ~/.cache/edgeq/float-runs: beside the built agents."""
    from device_agents.zipapp import agent_cache_dir

    return agent_cache_dir().parent / "float-runs"


def cache_enabled(wanted: bool = True) -> bool:
    """False when the user turned the cache off (``--no-float-cache`` → ``wanted`` False, or
    ``EDGEQ_FLOAT_CACHE=off``)."""
    return wanted and os.environ.get("EDGEQ_FLOAT_CACHE", "").strip().lower() not in OFF


def default_budget_bytes() -> int:
    """$EDGEQ_FLOAT_CACHE_MB MiB, else 2048 MiB."""
    text = os.environ.get("EDGEQ_FLOAT_CACHE_MB", "").strip()
    if not text:
        return DEFAULT_BUDGET_MB << 20
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"EDGEQ_FLOAT_CACHE_MB={text!r}: must be a number of MiB, 0 or more")
    return int(value * (1 << 20))


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class RunCache:
    """Float runs on this host, by key (see the module docstring).

    ``warn(message)`` hears what was dropped or not kept (default: a line on stderr); ``warnings`` keeps
    every such message of this object, for a report."""

    def __init__(self, root: str | os.PathLike | None = None, budget_bytes: int | None = None,
                 warn: Callable[[str], None] | None = None, lock_timeout_s: float = LOCK_TIMEOUT_S):
        self.root = Path(root) if root is not None else cache_root()
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
        self.lock_timeout_s = lock_timeout_s
        self._warn = warn or _warn_stderr
        self.warnings: list[str] = []

    key_for = staticmethod(key_for)

    def clone(self) -> "RunCache":
        """The same cache with warnings of its own (one per device of a fleet, so each report names its own)."""
        return RunCache(self.root, self.budget_bytes, self._warn, self.lock_timeout_s)

    def entry(self, key: str) -> Path:
        return self.root / _checked_key(key)

    # -- reading -----------------------------------------------------------------------------

    def lookup(self, key: str, into: str | os.PathLike | None = None) -> RunResult | None:
        """The cached run of ``key``, every file checked against its manifest, or None (no entry, an entry
        of another format, or a damaged one: dropped, with a warning). With ``into``, the entry's files are
        hard-linked (copied where linking fails) into that folder, which they replace, and the run there is
        returned: the caller's own copy, which a later replacement or eviction of the entry leaves alone.
        Without it the run is the entry itself, valid until the entry is next replaced."""
        entry = self.entry(key)
        with self._locked(key) as held:
            if not held or not self._usable(entry, key):
                return None
            dest = Path(into) if into is not None else None
            try:
                if dest is not None:
                    _link_tree(entry, dest)
                run = self._checked(dest if dest is not None else entry, key)
            except IncompleteRun as exc:
                if dest is not None:
                    shutil.rmtree(dest, ignore_errors=True)
                self._drop(key, f"float cache entry {key[:12]} failed its check and was dropped "
                                f"(the float model runs again): {exc}")
                return None
            except OSError as exc:  # the caller's folder could not take the files (disk full, permissions)
                if dest is not None:
                    shutil.rmtree(dest, ignore_errors=True)
                self.say(f"float cache entry {key[:12]} not used: {exc}")
                return None
            self._touch(entry)
            return run

    def _usable(self, entry: Path, key: str) -> bool:
        """An entry this edgeq wrote: every file of the format there and key.json naming this key and format.
        Anything else (another format, a folder made by hand) is ignored; a store replaces it."""
        if not entry.is_dir() or any(not (entry / name).is_file() for name in _NEEDED):
            return False
        try:
            named = json.loads((entry / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return False
        return isinstance(named, dict) and named.get("format") == FORMAT and named.get("key") == key

    def _checked(self, path: Path, key: str) -> RunResult:
        """The run at ``path`` when every file matches its manifest, its rows are sound and it is the run
        the key names (key.json hashes to the key; the run's model and input set are the key's)."""
        run = RunResult.load(path)
        rows = run_rows(run)
        if len(rows) > 1 and not np.all(np.diff(rows) > 0):
            raise IncompleteRun(f"{path / ROWS_FILE}: rows are not sorted and unique")
        try:
            named = json.loads((path / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise IncompleteRun(f"{path / KEY_FILE}: unreadable ({exc})") from None
        fields = named.get("fields") if isinstance(named, dict) else None
        if not isinstance(fields, dict) or _digest(fields) != key:
            raise IncompleteRun(f"{path / KEY_FILE}: its fields do not hash to the key")
        for name in ("model_sha256", "inputs_sha256"):
            if run.meta.get(name) != fields.get(name):
                raise IncompleteRun(f"{path}: the run's {name} is not the key's")
        return run

    # -- writing -----------------------------------------------------------------------------

    def store(self, key: str, runs) -> Path | None:
        """Keep the float outputs of ``runs`` (runs of the key's model over the key's input set, on disjoint
        rows: the rounds an evaluation ran) under ``key``: the new entry is the union of the rows cached
        already and the runs' rows (a run's rows win where both hold one), written beside the entry and
        swapped in whole under the key's lock. Then the cache is brought under its budget. Returns the entry,
        or None when nothing was kept (the cache busy for too long, or the entry larger than the budget)."""
        runs = [r for r in runs if r is not None]
        key = _checked_key(key)
        fields = getattr(key, "fields", None) or None
        for run in runs:
            for name in ("model_sha256", "inputs_sha256"):
                if fields is not None and run.meta.get(name) != fields.get(name):
                    raise ConfigError(f"{run.path}: its {name} is not the cache key's: not cached")
        entry = self.entry(key)
        with self._locked(key) as held:
            if not held:
                return None
            current = None
            if self._usable(entry, key):
                try:
                    current = self._checked(entry, key)
                except IncompleteRun as exc:
                    self._drop(key, f"float cache entry {key[:12]} failed its check and was dropped: {exc}")
            if fields is None and current is not None:
                fields = json.loads((entry / KEY_FILE).read_text(encoding="utf-8"))["fields"]
            if not runs:
                if current is not None:
                    self._touch(entry)
                return entry if current is not None else None
            if fields is None:
                raise ConfigError(f"float cache key {key[:12]}: no fields to name it (make keys with key_for)")
            kept = self._write_entry(key, fields, runs, current)
        if kept is not None:
            self.evict(keep=key)
        return kept

    def _write_entry(self, key: str, fields: dict, runs: list, current: RunResult | None) -> Path | None:
        """(Under the key's lock.) The union written into a staging folder, then swapped in."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{key[:16]}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            parts = list(runs)
            if current is not None:
                new_rows = np.unique(np.concatenate([run_rows(r) for r in runs]))
                keep = np.setdiff1d(run_rows(current), new_rows)
                if len(keep):
                    parts.append(take_run_rows(current, keep, staging / "kept"))
            built = merge_rounds(parts, staging / "entry")
            write_json(staging / "entry" / KEY_FILE, {"format": FORMAT, "key": str(key), "fields": fields,
                                                      "rows": built.n, "stored": time.time()})
            size = _tree_bytes(staging / "entry")
            if size > self.budget_bytes:
                self.say(f"float outputs not cached: the entry ({size / 2**20:.1f} MiB) is larger than the "
                         f"cache's budget ({self.budget_bytes / 2**20:.0f} MiB, EDGEQ_FLOAT_CACHE_MB)")
                return None
            entry = self.entry(key)
            old = self._move_away(entry)
            os.rename(staging / "entry", entry)
            _fsync_dir(self.root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self._touch(entry)
            return entry
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _move_away(self, entry: Path) -> Path | None:
        if not entry.exists():
            return None
        old = self.root / f".old-{entry.name[:16]}-{uuid.uuid4().hex[:8]}"
        os.rename(entry, old)
        return old

    def _drop(self, key: str, message: str) -> None:
        """(Under the key's lock.) The entry renamed away and removed; the warning said."""
        old = self._move_away(self.entry(key))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.say(message)

    def say(self, message: str) -> None:
        """A warning: kept in ``warnings`` and given to ``warn``."""
        self.warnings.append(message)
        self._warn(message)

    # -- the bound ---------------------------------------------------------------------------

    def entries(self) -> list[dict]:
        """Every entry: key, path, bytes, last used (ns), least recently used first."""
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.is_dir() and _KEY.fullmatch(path.name):
                    with contextlib.suppress(OSError):
                        found.append({"key": path.name, "path": path, "bytes": _tree_bytes(path),
                                      "used_ns": path.stat().st_mtime_ns})
        return sorted(found, key=lambda e: (e["used_ns"], e["key"]))

    def total_bytes(self) -> int:
        return sum(e["bytes"] for e in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the total is within the budget; never ``keep`` nor an
        entry another process holds (its lock is tried, not waited for). Also removes what crashed writers
        left (staging and replaced folders over an hour old). Returns the keys removed."""
        self._tidy_leftovers()
        entries = self.entries()
        total = sum(e["bytes"] for e in entries)
        removed = []
        for e in entries:
            if total <= self.budget_bytes:
                break
            if e["key"] == keep:
                continue
            with self._locked(e["key"], wait=False) as held:
                if not held or not e["path"].is_dir():
                    continue
                old = self._move_away(e["path"])
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            total -= e["bytes"]
            removed.append(e["key"])
        return removed

    def _tidy_leftovers(self) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for path in self.root.iterdir():
            if path.name.startswith((".staging-", ".old-")):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > STALE_S:
                        shutil.rmtree(path, ignore_errors=True)

    def _touch(self, entry: Path) -> None:
        """The entry's folder time is its last use (set explicitly, in ns: a coarse file-system clock
        would tie two uses a millisecond apart)."""
        now = time.time_ns()
        with contextlib.suppress(OSError):
            os.utime(entry, ns=(now, now))

    # -- the lock ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, key: str, wait: bool = True) -> Iterator[bool]:
        """An exclusive flock on the key's lock file; yields False when it could not be had (not waiting,
        or after ``lock_timeout_s``: the cache is then not used for this key, with a warning)."""
        import fcntl

        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{_checked_key(key)}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            deadline = time.monotonic() + (self.lock_timeout_s if wait else 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if time.monotonic() >= deadline:
                        if wait:
                            self.say(f"float cache entry {key[:12]} busy for {self.lock_timeout_s:.0f} s "
                                     "(another evaluation holds it): not used this time")
                        yield False
                        return
                    time.sleep(0.05)
            yield True
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


def _checked_key(key: str) -> str:
    """A key names a folder: exactly 64 lowercase hex digits, nothing that could climb out of the cache."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigError(f"not a float cache key: {str(key)[:80]!r} (64 hex digits, from key_for)")
    return key


def _tree_bytes(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        with contextlib.suppress(OSError):
            if item.is_file():
                total += item.stat().st_size
    return total


def _link_tree(source: Path, dest: Path) -> None:
    """``dest`` replaced by a folder of hard links to ``source``'s files (copies where a link cannot be made:
    another file system, a file system without links). Built beside ``dest`` and renamed in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.link-{uuid.uuid4().hex[:8]}"
    try:
        for item in sorted(source.rglob("*")):
            rel = item.relative_to(source)
            if any(part.startswith(".") for part in rel.parts) or not item.is_file():
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(item, target)
            except OSError:
                copy_file(item, target)
        tmp.mkdir(exist_ok=True)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["CacheKey", "RunCache", "cache_enabled", "cache_root", "default_budget_bytes", "key_fields", "key_for"]
