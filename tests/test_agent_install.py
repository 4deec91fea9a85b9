"""`edgeq deploy` on the device: the agent's install, rollback and install_status ops (install.py).

- A SIGKILL of a real agent at every step of an install (EDGEQ_INSTALL_CRASH_AT) leaves the application's
  PATH the old model or the new one, whole; the next status and install tell the truth and repair the record.
- The user's own model is kept as v0 and comes back byte for byte; installing what is installed touches nothing;
  rollback alternates; status sees a file replaced behind edgeq's back and a release edited in place; pruning
  keeps the newest, the current, its rollback target and the user's original; a sha mismatch switches nothing;
  two installs at once take turns on the lock; a relative PATH is refused and a missing folder made.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device_agents.edgeq_agent import install, releases
from device_agents.edgeq_agent.errors import AgentFailure
from device_agents.zipapp import build_agent

OPS = install.INSTALL_OPS
SWITCHED = releases.STEPS.index("switched")  # kills before this point leave the old model, from it the new one


@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> Path:
    return build_agent(tmp_path_factory.mktemp("agent"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pushed(tmp_path: Path, tag: str, size: int = 300_000) -> tuple[Path, str, bytes]:
    """A model pushed into edgeq's store: (its CAS file, its sha256, its bytes); different tags, other bytes."""
    data = hashlib.sha256(tag.encode()).digest() * (size // 32) + tag.encode()
    cas = tmp_path / "workdir" / "cas"
    cas.mkdir(parents=True, exist_ok=True)
    path = cas / f"{sha256(data)}.tflite"
    path.write_bytes(data)
    return path, sha256(data), data


def install_request(path: Path, source: Path, sha: str, **extra) -> dict:
    return dict({"op": "install", "source": str(source), "sha256": sha, "path": str(path), "meta": {"by": "test"},
                 "keep": 3, "root": None}, **extra)


def agent(pyz: Path, requests: list[dict], crash_at: str | None = None) -> tuple[int, list[dict]]:
    """A real agent (``python -I`` the zipapp) given the requests as JSON lines: (its exit code, its answers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != releases.CRASH_ENV}
    if crash_at:
        env[releases.CRASH_ENV] = crash_at
    lines = "".join(json.dumps(dict(r, id=i)) + "\n" for i, r in enumerate(requests + [{"op": "shutdown"}], 1))
    done = subprocess.run([sys.executable, "-I", str(pyz)], input=lines, capture_output=True, text=True, timeout=120,
                          env=env, cwd=pyz.parent)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def results(pyz: Path, requests: list[dict]) -> list[dict]:
    code, answers = agent(pyz, requests)
    assert code == 0 and len(answers) == len(requests) + 1, answers
    for answer in answers[:-1]:
        assert answer["ok"] is True, answer
    return [a["result"] for a in answers[:-1]]


def resolved(path: Path) -> bytes:
    return path.read_bytes()  # follows the symlink: what the application opens


def leftovers(path: Path) -> list[str]:
    """Hidden temporaries beside PATH and in its releases root: a clean state has none."""
    root = path.parent / ".edgeq-releases" / path.name
    found = [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
    return found + [p.name for p in root.iterdir() if p.name not in (".lock", "state.json") and
                    not releases.RELEASE_RE.match(p.name)]


def snapshot(folder: Path, folder_times: bool = True) -> dict:
    """Every entry under folder with its mtime and (for files) its bytes' sha256: no file modified, none added.
    Without folder_times a folder's mtime (changed by a temporary made and removed in it) is left out."""
    found = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            entry = Path(dirpath) / name
            info = entry.lstat()
            plain = entry.is_file() and not entry.is_symlink()
            found[str(entry)] = (info.st_mtime_ns if folder_times or name in files else None,
                                 plain and sha256(entry.read_bytes()))
    return found


@pytest.mark.parametrize("over", ["release", "user_file"])
@pytest.mark.parametrize("step", releases.STEPS)
def test_a_kill_at_any_step_leaves_the_old_or_the_new_model_whole(pyz, tmp_path, step, over):
    path = tmp_path / "app" / "model.tflite"
    old_source, old_sha, old = pushed(tmp_path, "old")
    new_source, new_sha, new = pushed(tmp_path, "new")
    if over == "release":
        OPS["install"](install_request(path, old_source, old_sha))
    else:
        path.parent.mkdir()
        path.write_bytes(old)

    code, answers = agent(pyz, [install_request(path, new_source, new_sha)], crash_at=step)
    assert code == -signal.SIGKILL and answers == [], "the crash hook did not fire at %s" % step
    switched = releases.STEPS.index(step) >= SWITCHED
    assert resolved(path) == (new if switched else old)
    assert path.is_symlink() == (switched or over == "release")

    status, again, after = results(pyz, [{"op": "install_status", "path": str(path)},
                                         install_request(path, new_source, new_sha),
                                         {"op": "install_status", "path": str(path)}])
    if switched or over == "release":  # edgeq's symlink: the record follows it, whatever the crash cut off
        assert status["current"]["sha256"] == status["actual_sha256"] == (new_sha if switched else old_sha)
        assert not status["changed_outside"] and status["history"][-1]["version"] == status["current"]["version"]
    else:  # the user's file is still there, whole, and status says edgeq did not put it there
        assert status["kind"] == "file" and status["actual_sha256"] == old_sha
    assert again["changed"] is not switched and again["sha256"] == new_sha and resolved(path) == new
    assert again["kept_original"] is (over == "user_file" and not switched)
    assert after["current"]["sha256"] == after["actual_sha256"] == new_sha and after["managed"]
    assert after["changed_outside"] is False and after["why"] is None
    assert after["history"][-1]["version"] == after["current"]["version"] == again["version"]
    assert [e["sha256"] for e in after["history"]].count(new_sha) == 1  # one switch to new, however it got there
    assert leftovers(path) == []
    (back,) = results(pyz, [{"op": "rollback", "path": str(path)}])
    assert back["to"]["sha256"] == old_sha and resolved(path) == old


def test_the_first_install_keeps_the_users_model_and_rollback_restores_it_byte_for_byte(pyz, tmp_path):
    path = tmp_path / "app" / "model.tflite"
    path.parent.mkdir()
    original = b"the user's own model\x00" * 999
    path.write_bytes(original)
    path.chmod(0o640)
    source, sha, data = pushed(tmp_path, "a")
    done, back = results(pyz, [install_request(path, source, sha, meta={"evidence": "report.json"}),
                               {"op": "rollback", "path": str(path)}])
    assert set(done) >= {"changed", "version", "sha256", "path", "release", "previous", "kept_original"}
    assert done["changed"] and done["kept_original"] and done["version"] == 1 and done["path"] == str(path)
    assert done["previous"]["version"] == 0 and done["previous"]["sha256"] == sha256(original)
    assert Path(done["previous"]["release"]).parent.name == "v0-" + sha256(original)[:12]
    release = json.loads((Path(done["release"]).parent / "release.json").read_text())
    assert release["meta"] == {"evidence": "report.json"} and release["sha256"] == sha and release["size"] == len(data)
    assert back["from"]["version"] == 1 and back["to"]["version"] == 0
    assert resolved(path) == original and path.stat().st_mode & 0o777 == 0o640


def test_installing_what_is_installed_moves_nothing_and_changes_nothing(tmp_path):
    path = tmp_path / "app" / "model.tflite"
    source, sha, _ = pushed(tmp_path, "a")
    first = OPS["install"](install_request(path, source, sha))
    before = snapshot(path.parent)
    again = OPS["install"](install_request(path, source, sha))
    assert again["changed"] is False and again["version"] == first["version"] and again["release"] == first["release"]
    assert snapshot(path.parent) == before


def test_rollback_twice_alternates_and_every_switch_is_recorded(tmp_path):
    path = tmp_path / "app" / "model.tflite"
    (a, sha_a, data_a), (b, sha_b, data_b) = pushed(tmp_path, "a"), pushed(tmp_path, "b")
    OPS["install"](install_request(path, a, sha_a))
    OPS["install"](install_request(path, b, sha_b))
    seen = []
    for _ in range(3):
        answer = OPS["rollback"]({"op": "rollback", "path": str(path)})
        seen.append((answer["from"]["sha256"], answer["to"]["sha256"], resolved(path)))
    assert seen == [(sha_b, sha_a, data_a), (sha_a, sha_b, data_b), (sha_b, sha_a, data_a)]
    status = OPS["install_status"]({"path": str(path)})
    assert [e["action"] for e in status["history"]] == ["install", "install", "rollback", "rollback", "rollback"]
    assert OPS["rollback"]({"path": str(path), "to": 2})["to"]["sha256"] == sha_b and resolved(path) == data_b


def test_rollback_with_nothing_to_go_back_to_says_so(pyz, tmp_path):
    path = tmp_path / "app" / "model.tflite"
    source, sha, _ = pushed(tmp_path, "a")
    code, answers = agent(pyz, [{"op": "rollback", "path": str(path)}, install_request(path, source, sha),
                                {"op": "rollback", "path": str(path)}, {"op": "rollback", "path": str(path), "to": 7}])
    assert code == 0
    assert answers[0]["error"] == {"type": "NoPrevious", "message": f"{path}: no earlier version to roll back to"}
    assert answers[1]["ok"] is True and answers[2]["error"]["type"] == "NoPrevious"
    assert answers[3]["error"]["type"] == "NoRelease" and "v7" in answers[3]["error"]["message"]
    assert resolved(path) == Path(source).read_bytes()


def test_status_sees_a_file_replaced_behind_edgeqs_back_and_a_release_edited_in_place(tmp_path):
    path = tmp_path / "app" / "model.tflite"
    unmanaged = OPS["install_status"]({"path": str(path)})
    assert unmanaged["managed"] is False and unmanaged["kind"] == "missing" and unmanaged["current"] is None
    assert unmanaged["changed_outside"] is False and not path.parent.exists()  # status writes nothing
    (a, sha_a, _), (b, sha_b, data_b) = pushed(tmp_path, "a"), pushed(tmp_path, "b")
    OPS["install"](install_request(path, a, sha_a))
    clean = OPS["install_status"]({"path": str(path)})
    assert clean["kind"] == "symlink" and clean["actual_sha256"] == sha_a and not clean["changed_outside"]

    path.unlink()
    path.write_bytes(b"copied over by hand")
    replaced = OPS["install_status"]({"path": str(path)})
    assert replaced["kind"] == "file" and replaced["changed_outside"] and "regular file" in replaced["why"]
    assert replaced["current"]["sha256"] == sha_a and replaced["actual_sha256"] == sha256(b"copied over by hand")
    path.unlink()
    path.symlink_to(b)
    elsewhere = OPS["install_status"]({"path": str(path)})
    assert elsewhere["changed_outside"] and f"a symlink to {b}" in elsewhere["why"]

    back = OPS["rollback"]({"path": str(path)})  # what is there is kept first, then edgeq's release comes back
    assert back["from"]["sha256"] == sha_b and back["to"]["sha256"] == sha_a
    assert not OPS["install_status"]({"path": str(path)})["changed_outside"]
    done = OPS["install"](install_request(path, b, sha_b))
    with open(done["release"], "r+b") as handle:
        handle.write(b"XX")
    edited = OPS["install_status"]({"path": str(path)})
    assert edited["changed_outside"] and "edited in place" in edited["why"] and edited["actual_sha256"] != sha_b
    assert OPS["install"](install_request(path, b, sha_b))["changed"] is True  # not taken for installed
    assert resolved(path) == data_b


def test_pruning_keeps_the_newest_the_current_its_rollback_target_and_the_users_original(tmp_path):
    path = tmp_path / "app" / "model.tflite"
    path.parent.mkdir()
    path.write_bytes(b"original")
    models = [pushed(tmp_path, str(i)) for i in range(7)]
    answers = [OPS["install"](install_request(path, m[0], m[1], keep=2)) for m in models[:5]]
    assert [a["version"] for a in answers] == [1, 2, 3, 4, 5]
    root = path.parent / ".edgeq-releases" / path.name

    def versions():
        return sorted(int(p.name[1:].split("-")[0]) for p in root.iterdir() if releases.RELEASE_RE.match(p.name))

    assert versions() == [0, 4, 5] and sum((a["pruned"] for a in answers), []) == [1, 2, 3]
    OPS["rollback"]({"path": str(path), "to": 4})
    last = OPS["install"](install_request(path, models[5][0], models[5][1], keep=1))
    assert last["previous"]["version"] == 4 and last["pruned"] == [5] and versions() == [0, 4, 6]
    assert OPS["rollback"]({"path": str(path)})["to"]["version"] == 4
    assert OPS["rollback"]({"path": str(path), "to": 0})["to"]["sha256"] == sha256(b"original")
    assert resolved(path) == b"original"


def test_a_sha_mismatch_switches_nothing_and_leaves_nothing(tmp_path):
    path = tmp_path / "app" / "model.tflite"
    (a, sha_a, data_a), (b, _, _) = pushed(tmp_path, "a"), pushed(tmp_path, "b")
    OPS["install"](install_request(path, a, sha_a))
    before = snapshot(path.parent, folder_times=False)
    with pytest.raises(AgentFailure) as failed:
        OPS["install"](install_request(path, b, "0" * 64))
    assert failed.value.kind == "ShaMismatch" and str(b) in str(failed.value) and "0" * 64 in str(failed.value)
    assert resolved(path) == data_a and snapshot(path.parent, folder_times=False) == before
    assert leftovers(path) == []


def test_two_installs_at_once_take_turns_on_the_lock(pyz, tmp_path):
    path = tmp_path / "app" / "model.tflite"
    models = [pushed(tmp_path, tag) for tag in "abc"]
    OPS["install"](install_request(path, models[0][0], models[0][1]))
    lock = os.open(path.parent / ".edgeq-releases" / path.name / ".lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # an install in progress, as far as the agent can tell
    try:
        with pytest.raises(AgentFailure) as busy:
            OPS["install"](install_request(path, models[1][0], models[1][1], wait_s=0))
        assert busy.value.kind == "Busy" and str(path) in str(busy.value)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        running = [subprocess.Popen([sys.executable, "-I", str(pyz)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=env) for _ in models[1:]]
        for agent_process, (source, sha, _) in zip(running, models[1:]):
            agent_process.stdin.write(json.dumps(dict(install_request(path, source, sha, wait_s=60), id=1)) + "\n")
            agent_process.stdin.flush()
    finally:
        os.close(lock)
    answers = [json.loads(p.communicate('{"id": 2, "op": "shutdown"}\n', timeout=120)[0].splitlines()[0])
               for p in running]
    assert all(a["ok"] for a in answers), answers
    first, second = sorted((a["result"] for a in answers), key=lambda r: r["version"])
    assert (first["version"], second["version"]) == (2, 3)
    assert first["previous"]["version"] == 1 and second["previous"]["version"] == 2  # one after the other
    assert sha256(resolved(path)) == second["sha256"] and resolved(path) == Path(second["release"]).read_bytes()
    status = OPS["install_status"]({"path": str(path)})
    assert [(e["version"], e["previous"]) for e in status["history"]] == [(1, None), (2, 1), (3, 2)]
    assert status["actual_sha256"] == second["sha256"] and not status["changed_outside"]


def test_a_relative_path_is_refused_and_a_missing_folder_is_made(tmp_path):
    source, sha, data = pushed(tmp_path, "a")
    with pytest.raises(AgentFailure) as refused:
        OPS["install"](install_request(Path("models/model.tflite"), source, sha))
    assert refused.value.kind == "BadPath" and "models/model.tflite: not an absolute" in str(refused.value)
    path = tmp_path / "deep" / "er" / "model.tflite"
    OPS["install"](install_request(path, source, sha))
    assert resolved(path) == data and not os.path.isabs(os.readlink(path))
    elsewhere = tmp_path / "releases-elsewhere"
    other = tmp_path / "other" / "model.tflite"
    done = OPS["install"](install_request(other, source, sha, root=str(elsewhere)))
    assert os.readlink(other) == done["release"] and done["release"].startswith(str(elsewhere))
    assert OPS["install_status"]({"path": str(other), "root": str(elsewhere)})["current"]["sha256"] == sha
