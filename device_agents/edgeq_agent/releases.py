"""The releases of one model path on the device, as files: how a release is built, found, kept, pruned
and switched to. ``install`` holds the lock and the record; this module is the on-disk layout.

ROOT/v<N>-<sha12>/<name> holds a release's model beside its release.json (version, sha256, size,
installed_at, meta, original); PATH is a symlink to one of them. Folders are built under hidden names
and renamed into place whole, pruned ones renamed away before deletion, and the next install sweeps
hidden leftovers, so a kill at any instant leaves no half release under a release's name.

Test hook: EDGEQ_INSTALL_CRASH_AT=<one of STEPS> makes the agent SIGKILL itself at that point of an
install, as a power cut would (tests/test_agent_install.py). Nothing else reads it.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import time

from .errors import AgentFailure
from .files import atomic_write, fsync_folder, sha256_file, temp_name, write_json

STEPS = ("locked", "copied", "released", "kept", "linked", "switched", "recorded", "pruned")
CRASH_ENV = "EDGEQ_INSTALL_CRASH_AT"
RELEASES = ".edgeq-releases"
RELEASE_RE = re.compile(r"^v(\d+)-[0-9a-f]{12}$")
TEMP_RE = r"^\.%s\.tmp-\d+-[0-9a-f]{8}$"  # files.temp_name's names (%s: the name they stand beside)


def crash_point(step):
    """Test hook: die here, as a power cut would, when EDGEQ_INSTALL_CRASH_AT names this step."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def kind_of(path):
    """What PATH is itself (a symlink is not followed): symlink, file, missing or other (a folder, a device)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    return "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "other"


def file_sha(path):
    """The sha256 of what PATH resolves to; None when that is no readable file."""
    try:
        return sha256_file(path) if os.path.isfile(path) else None
    except OSError:
        return None


def read_release(folder, name):
    """A release's release.json plus its model file's path as ``release``; None when it is no whole release."""
    try:
        with open(os.path.join(folder, "release.json")) as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and isinstance(info.get("version"), int) and isinstance(info.get("sha256"), str)
    return dict(info, release=os.path.join(folder, name)) if ok else None


def releases(root, name):
    """Every whole release under ROOT, oldest version first."""
    found = []
    for entry in (os.listdir(root) if os.path.isdir(root) else []):
        match = RELEASE_RE.match(entry)
        info = read_release(os.path.join(root, entry), name) if match else None
        if info is not None and info["version"] == int(match.group(1)):
            found.append(info)
    return sorted(found, key=lambda r: r["version"])


def linked_release(path, root):
    """The release PATH is edgeq's symlink to, else None: where PATH points is the truth about what is current."""
    folder, name = os.path.split(os.path.realpath(path))
    if (not os.path.islink(path) or name != os.path.basename(path) or not RELEASE_RE.match(os.path.basename(folder))
            or os.path.dirname(folder) != os.path.realpath(root)):
        return None
    return read_release(os.path.join(root, os.path.basename(folder)), name)


def make_folders(folder):
    """os.makedirs that fsyncs each new folder's parent: a power cut must not lose a folder PATH points into."""
    if not os.path.isdir(folder):
        make_folders(os.path.dirname(folder))
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
        fsync_folder(os.path.dirname(folder))


def sweep_leftovers(root, path):
    """Remove half-built or half-pruned release folders and state temporaries in ROOT, and a symlink made
    beside PATH that never replaced it: only a killed install leaves them, and this one holds the lock."""
    for entry in os.listdir(root):
        leftover = os.path.join(root, entry)
        if re.match(TEMP_RE % ".+", entry):
            (shutil.rmtree if os.path.isdir(leftover) and not os.path.islink(leftover) else os.remove)(leftover)
    folder, name = os.path.split(path)
    for entry in os.listdir(folder):
        if re.match(TEMP_RE % re.escape(name), entry) and os.path.islink(os.path.join(folder, entry)):
            os.remove(os.path.join(folder, entry))


def build_release(root, name, version, source, sha256, meta, original=False):
    """Copy SOURCE into release v<version>, hashing while copying: built under a hidden name, renamed into place
    only whole and verified, so neither a crash nor a sha mismatch leaves a release behind."""
    final = os.path.join(root, "v%d-%s" % (version, sha256[:12]))
    work = temp_name(final)
    os.mkdir(work)
    try:
        digest, size = hashlib.sha256(), 0
        with open(source, "rb") as src, atomic_write(os.path.join(work, name)) as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                size += out.write(block)
            if digest.hexdigest() != sha256:
                raise AgentFailure("ShaMismatch", "%s: sha256 is %s, not %s as expected; nothing was switched"
                                   % (source, digest.hexdigest(), sha256))
        if original:  # the user's model comes back with its own permissions
            os.chmod(os.path.join(work, name), stat.S_IMODE(os.stat(source).st_mode))
        crash_point("copied")
        write_json(os.path.join(work, "release.json"), {"version": version, "sha256": sha256, "size": size,
                   "installed_at": time.time(), "meta": meta, "original": original})
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    fsync_folder(root)
    return read_release(final, name)


def keep_original(root, path, version, found):
    """Keep what PATH holds, which edgeq did not put there, as a release: no model of the user's is ever lost
    (bytes a release already holds, e.g. from an install a crash cut short, are not copied again)."""
    sha = sha256_file(path)
    same = [r for r in found if r["sha256"] == sha and file_sha(r["release"]) == sha]
    return same[-1] if same else build_release(root, os.path.basename(path), version, path, sha,
                                               {"kept_from": path}, True)


def switch(path, release_file):
    """Point PATH at a release: a symlink made under a hidden name, os.replace'd onto PATH (atomic), then PATH's
    folder fsync'd so the switch survives a power cut."""
    folder = os.path.dirname(path)
    target = os.path.relpath(release_file, folder)
    if target.split(os.sep)[0] == os.pardir:  # ROOT elsewhere: absolute (PATH's folder may be behind a symlink)
        target = os.path.abspath(release_file)
    link = temp_name(path)
    os.symlink(target, link)
    crash_point("linked")
    try:
        os.replace(link, path)
    except BaseException:
        os.remove(link)
        raise
    fsync_folder(folder)


def top_version(root, state):
    """The highest version any release folder (whole or not) or the record ever used: a new one is above it."""
    used = [int(RELEASE_RE.match(n).group(1)) for n in os.listdir(root) if RELEASE_RE.match(n)]
    return max([v for v in used + [e.get("version") for e in state["history"]] if isinstance(v, int)] or [-1])


def prune(root, name, keep, protect):
    """Delete releases beyond the KEEP newest, never one in PROTECT (current, rollback target) nor a user's
    original (edgeq deletes only what it made), each renamed away first so no half release keeps its name."""
    pruned = []
    for release in releases(root, name)[:-keep]:
        if release["version"] not in protect and not release.get("original"):
            trash = temp_name(os.path.dirname(release["release"]))
            os.rename(os.path.dirname(release["release"]), trash)
            fsync_folder(root)
            shutil.rmtree(trash, ignore_errors=True)
            pruned.append(release["version"])
    return pruned
