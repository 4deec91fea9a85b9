"""The device side of `edgeq deploy`: a verified model installed at the application's own path, atomically,
with releases to roll back to and a status that believes the file system over edgeq's record (``INSTALL_OPS``).

PATH is a symlink to ROOT/v<N>-<sha12>/<name>, beside its release.json (version, sha256, size, installed_at, meta,
original); ROOT/state.json is the record (history of {action, version, sha256, release, at, meta, previous} and
current); ROOT/.lock an flock. ROOT is the request's ``root``, else ``<dirname(PATH)>/.edgeq-releases/<name>``.

Why a symlink swapped by os.replace: at every instant PATH names a whole model, the old one or the new one,
whatever kills the agent. Release folders are built under hidden names and renamed into place whole (pruned ones
renamed away before deletion), and the next install sweeps hidden leftovers. The record is not the truth: where
PATH points decides what is current, and a record a crash left behind is repaired from it (entry ``repaired``).

The releases themselves (build, find, keep, switch, prune) and the crash test hook are ``releases``.
"""

import contextlib
import json
import os
import re
import time

from .errors import AgentFailure
from .files import write_json
from .releases import (RELEASES, build_release, crash_point, file_sha, keep_original, kind_of, linked_release,
                       make_folders, prune, releases, sweep_leftovers, switch, top_version)

HISTORY_SHOWN, WAIT_S, POLL_S = 20, 30.0, 0.05


def place(request):
    """(PATH, ROOT, name) of a request; PATH absolute, since a relative one would depend on the agent's folder."""
    path, root = request.get("path"), request.get("root")
    if not isinstance(path, str) or not path:
        raise AgentFailure("BadRequest", "%s needs path: the application's model file" % request.get("op"))
    if not os.path.isabs(path) or not os.path.basename(os.path.normpath(path)):
        raise AgentFailure("BadPath", "%s: not an absolute file path; give the application's full path" % path)
    path = os.path.normpath(path)
    if root is not None and (not isinstance(root, str) or not os.path.isabs(root)):
        raise AgentFailure("BadPath", "%s: root %r is not an absolute folder path" % (path, root))
    name = os.path.basename(path)
    return path, os.path.normpath(root or os.path.join(os.path.dirname(path), RELEASES, name)), name


@contextlib.contextmanager
def locked(root, path, wait_s, sweep=True):
    """Hold an flock on ROOT/.lock (two installs to one path never interleave; Busy after wait_s), sweep what a
    killed install left, and turn an OSError (permissions, a full disk) into one line naming path and cause."""
    import fcntl

    fd = None
    try:
        make_folders(os.path.dirname(path))
        make_folders(root)
        fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        wait_s = WAIT_S if wait_s is None else float(wait_s)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AgentFailure("Busy", "%s: another install or rollback of it is running (waited %.0f s)"
                                       % (path, wait_s))
            time.sleep(POLL_S)
        if sweep:
            sweep_leftovers(root, path)
        yield
    except OSError as exc:
        raise AgentFailure("InstallFailed", "%s: %s" % (exc.filename or path, exc.strerror or exc))
    finally:
        if fd is not None:
            os.close(fd)


def load_state(root):
    try:
        with open(os.path.join(root, "state.json")) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = None
    ok = isinstance(state, dict) and isinstance(state.get("history"), list)
    return dict(state, history=[e for e in state["history"] if isinstance(e, dict)]) if ok else {
        "history": [], "current": None}


def record(state, action, release, previous, **extra):
    """Append an action to the record and make its release current (written by the caller)."""
    state["history"].append(dict({"action": action, "version": release["version"], "sha256": release["sha256"],
                                  "release": release["release"], "at": time.time(), "meta": release.get("meta"),
                                  "previous": previous}, **extra))
    state["current"] = release["version"]


def repair(state, linked, found):
    """The record follows the symlink: a switch a crash kept out of the record is added (what preceded it: the
    recorded current, else the newest older release, such as the user's original); True if it changed."""
    if linked is None or state.get("current") == linked["version"]:
        return False
    seen = any(e.get("version") == linked["version"] for e in state["history"])
    older = [r["version"] for r in found if r["version"] < linked["version"]]
    previous = state.get("current") if state.get("current") is not None else (older[-1] if older else None)
    record(state, "rollback" if seen else "install", linked, previous, repaired=True)
    return True


def previous_of(state, version, found):
    """The release current before VERSION (the rollback target), as the record says (repaired first)."""
    entries = [e for e in state["history"] if e.get("version") == version]
    return dict((r["version"], r) for r in found).get(entries[-1].get("previous")) if entries else None


def brief(release, keys=("version", "sha256", "release")):
    return None if release is None else dict((k, release.get(k)) for k in keys)


def op_install(request):
    """{source, sha256, path, meta, keep=3, root, wait_s=30} -> {changed, version, sha256, path, release,
    previous, kept_original, pruned}. SOURCE (verified while copied) becomes PATH's new release; the same sha
    already installed by edgeq gives changed false and touches nothing."""
    path, root, name = place(request)
    source, sha, keep = request.get("source"), str(request.get("sha256") or "").lower(), request.get("keep", 3)
    if not isinstance(source, str) or not os.path.isabs(source) or not re.match(r"^[0-9a-f]{64}$", sha):
        raise AgentFailure("BadRequest", "install needs source (an absolute device path) and sha256 (64 hex digits)")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise AgentFailure("BadRequest", "install: keep must be a whole number >= 1, not %r" % (keep,))
    if not os.path.isfile(source):
        raise AgentFailure("NotFound", "%s: the pushed model is not there" % source)
    if kind_of(path) == "other":
        raise AgentFailure("BadPath", "%s: is a folder or special file, not a model file; not replacing it" % path)
    with locked(root, path, request.get("wait_s")):
        crash_point("locked")
        state, found, current = load_state(root), releases(root, name), linked_release(path, root)
        repaired, actual = repair(state, current, found), current and file_sha(current["release"])
        if current is not None and current["sha256"] == sha == actual:
            if repaired:
                write_json(os.path.join(root, "state.json"), state)
            return {"changed": False, "version": current["version"], "sha256": sha, "path": path,
                    "release": current["release"], "previous": brief(previous_of(state, current["version"], found)),
                    "kept_original": False, "pruned": []}
        # a model edgeq did not put there (a file, a symlink's target, a release edited in place) is kept first
        keeping = os.path.isfile(path) and (current is None or actual != current["sha256"])
        top = top_version(root, state)  # v0 is the user's first model, edgeq's own count from v1
        new = build_release(root, name, max(top + 1 + keeping, 1), source, sha, request.get("meta"))
        crash_point("released")
        previous = keep_original(root, path, top + 1, found) if keeping else current
        crash_point("kept")
        switch(path, new["release"])
        crash_point("switched")
        record(state, "install", new, previous["version"] if previous else None)
        write_json(os.path.join(root, "state.json"), state)
        crash_point("recorded")
        pruned = prune(root, name, keep, (new["version"], previous["version"] if previous else None))
        crash_point("pruned")
    return {"changed": True, "version": new["version"], "sha256": sha, "path": path, "release": new["release"],
            "previous": brief(previous), "kept_original": keeping, "pruned": pruned}


def op_rollback(request):
    """{path, root, to} -> {from, to, changed}: PATH back to the release current before the current one (or to
    version ``to``), verified first. Something at PATH edgeq did not put there is kept first, as install keeps
    it, and counts as the current one: rollback then returns to what edgeq had installed."""
    path, root, name = place(request)
    if not os.path.isdir(root):
        raise AgentFailure("NoPrevious", "%s: no earlier version to roll back to" % path)
    to = request.get("to")
    with locked(root, path, request.get("wait_s")):
        state, found, linked = load_state(root), releases(root, name), linked_release(path, root)
        repair(state, linked, found)
        current, by_version = linked, dict((r["version"], r) for r in found)
        if linked is None and os.path.isfile(path):
            current = keep_original(root, path, top_version(root, state) + 1, found)
        if to is not None or linked is None:  # not edgeq's link: back to the release edgeq had put there
            target = by_version.get(to if to is not None else state.get("current"))
        else:
            target = previous_of(state, linked["version"], found)
        if target is None and to is not None:
            raise AgentFailure("NoRelease", "%s: no release v%s to roll back to (there are: %s)" % (
                path, to, ", ".join("v%d" % r["version"] for r in found) or "none"))
        if target is None:
            raise AgentFailure("NoPrevious", "%s: no earlier version to roll back to" % path)
        if linked is not None and target["version"] == linked["version"]:
            return {"from": brief(current), "to": brief(target), "changed": False}
        actual = file_sha(target["release"])
        if actual != target["sha256"]:
            raise AgentFailure("Corrupt", "%s: sha256 is %s, its release.json says %s; not rolling back to it"
                               % (target["release"], actual, target["sha256"]))
        switch(path, target["release"])
        record(state, "rollback", target, current["version"] if current else None)
        write_json(os.path.join(root, "state.json"), state)
    return {"from": brief(current), "to": brief(target), "changed": True}


def op_install_status(request):
    """{path, root} -> {managed, kind, current, actual_sha256, changed_outside, why, releases, history}. Repairs
    the record from the symlink unless an install is running; writes nothing where edgeq never installed."""
    path, root, name = place(request)
    state, found, kind, linked = load_state(root), releases(root, name), kind_of(path), linked_release(path, root)
    if linked is not None and state.get("current") != linked["version"]:
        try:
            with locked(root, path, 0, sweep=False):
                state, linked = load_state(root), linked_release(path, root)
                if repair(state, linked, found):
                    write_json(os.path.join(root, "state.json"), state)
        except AgentFailure:
            pass  # an install is running: it repairs the record itself
    managed = bool(found or state["history"])
    current = linked or dict((r["version"], r) for r in found).get(state.get("current"))
    actual = file_sha(path)
    why = judge(path, kind, linked, current, actual) if managed else None
    return {"managed": managed, "kind": kind, "actual_sha256": actual, "changed_outside": why is not None,
            "current": brief(current, ("version", "sha256", "release", "installed_at", "meta")), "why": why,
            "releases": [brief(r, ("version", "sha256", "installed_at", "original")) for r in found],
            "history": state["history"][-HISTORY_SHOWN:]}


def judge(path, kind, linked, current, actual):
    """One sentence saying how PATH differs from what edgeq installed there, or None when it does not."""
    last = " (edgeq installed v%s)" % current["version"] if current else ""
    if kind == "missing":
        return "%s is missing%s." % (path, last)
    if linked is None:
        what = {"file": "a regular file", "other": "a folder or special file"}.get(kind)
        return "%s is %s that edgeq did not put there%s." % (path, what or "a symlink to " + os.readlink(path), last)
    if actual is None:
        return "the release file %s that %s points to is gone." % (linked["release"], path)
    if actual != linked["sha256"]:
        return "the release file %s was edited in place: sha256 %s, installed %s." % (
            linked["release"], actual, linked["sha256"])
    return None


INSTALL_OPS = {"install": op_install, "rollback": op_rollback, "install_status": op_install_status}
