"""The same arrays make the same input-set file, byte for byte, whenever they are written: a rebuilt
suite is recognised by its sha256 (the device store does not receive it again, cached float outputs
for it are reused)."""

from __future__ import annotations

import hashlib
import time

import numpy as np

from edgeq.inputs.npz import NpzWriter


def write(path, clock_shift_days: float, monkeypatch) -> str:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + clock_shift_days * 86400)
    monkeypatch.setattr(time, "localtime", lambda t=None: time.gmtime((t if t is not None else time.time())))
    with NpzWriter(path) as writer:
        writer.write("category", np.array(["clean", "noise"]))
        with writer.member("x", (4, 3), np.float32) as member:
            member.append(np.ones((2, 3), np.float32))
            member.append(np.zeros((2, 3), np.float32))
    monkeypatch.undo()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_input_set_written_on_another_day_is_the_same_file(tmp_path, monkeypatch):
    assert write(tmp_path / "a.npz", 0, monkeypatch) == write(tmp_path / "b.npz", 400.5, monkeypatch)
    loaded = np.load(tmp_path / "a.npz", allow_pickle=False)
    assert loaded["x"].shape == (4, 3) and list(loaded["category"]) == ["clean", "noise"]
