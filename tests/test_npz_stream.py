"""Suites written as generated, arrays read a block at a time: same numbers as in memory.

Block sizes are shrunk here so that small arrays span many blocks; every result is
checked against the plain in-memory computation.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import edgeq.inputs.npz as npz
from edgeq.analysis.compare import compare_outputs
from edgeq.errors import InputSetError
from edgeq.inputs.inputset import load_inputset
from edgeq.inputs.npz import DiskArray, NpzWriter, open_npz, row_blocks
from edgeq.inputs.risky import build_risky_suite, write_risky_suite
import edgeq.inputs.risky as risky


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(npz, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(risky, "TRANSFORM_BYTES", 8 * 64 * 7)  # 7 rows of 64 float64 per transform


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 16, (n, 64)).astype(np.float32), rng.integers(0, 10, n)


def test_written_suite_equals_the_suite_built_in_memory(tmp_path, small_blocks):
    x, y = _data()
    path = tmp_path / "suite.npz"
    plan = write_risky_suite(path, {"x": x}, y, seed=3)
    here = build_risky_suite({"x": x}, y, seed=3)
    with np.load(path) as written:
        assert sorted(written.files) == sorted(["x", "y", "category", "severity", "source_index"])
        for key in written.files:
            assert np.array_equal(written[key], here[key]), key
    assert plan.n == len(here["x"]) and plan.families == here.families
    again = build_risky_suite({"x": x}, y, seed=3)
    assert np.array_equal(again["x"], here["x"])  # the split into blocks is fixed by the shape


def test_blocked_transforms_draw_from_their_own_generators(monkeypatch):
    x, y = _data()
    whole = build_risky_suite({"x": x}, y)
    monkeypatch.setattr(risky, "TRANSFORM_BYTES", 8 * 64 * 7)
    blocked = build_risky_suite({"x": x}, y)
    noisy = whole["category"] == "noise"
    assert np.array_equal(whole["x"][noisy][:7], blocked["x"][noisy][:7])  # the first block: the old key
    assert not np.array_equal(whole["x"][noisy][7:14], blocked["x"][noisy][7:14])
    clean = whole["category"] == "clean"
    assert np.array_equal(whole["x"][clean], blocked["x"][clean])


def test_disk_array_reads_what_numpy_reads(tmp_path, small_blocks):
    a = np.arange(300 * 5, dtype=np.float32).reshape(300, 5)
    np.save(tmp_path / "a.npy", a)
    disk = DiskArray.from_npy(tmp_path / "a.npy")
    mask = (np.arange(300) % 7) == 3
    assert disk.shape == a.shape and len(disk) == 300 and disk.size == a.size
    assert np.array_equal(disk[10:20], a[10:20]) and np.array_equal(disk[-1], a[-1])
    assert np.array_equal(disk[mask], a[mask]) and np.array_equal(np.asarray(disk), a)
    assert np.array_equal(np.concatenate(list(row_blocks(disk))), a)
    assert len(list(disk.blocks())) > 5  # 1 KiB blocks of 20-byte rows
    with pytest.raises(IndexError):
        disk[300]


@pytest.mark.parametrize("compressed", [False, True])
def test_large_members_stay_on_disk(tmp_path, small_blocks, compressed):
    x, y = _data(200)
    category = np.array(["clean"] * 100 + ["a-category-name-longer-than-sixteen"] * 100)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "s.npz", x=x, y=y, category=category,
                                                      allow_nonfinite=np.array(False))
    members = open_npz(tmp_path / "s.npz")
    assert isinstance(members["x"], DiskArray) and isinstance(members["category"], DiskArray)
    assert members["allow_nonfinite"].shape == ()
    assert np.array_equal(np.asarray(members["category"]), category)
    dataset = load_inputset(tmp_path / "s.npz")
    assert dataset.n == 200 and np.array_equal(np.asarray(dataset.arrays["x"]), x)


def test_a_nan_in_a_late_block_is_found_and_placed(tmp_path, small_blocks):
    x, _ = _data(200)
    x[150, 3] = np.nan
    x[170, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(InputSetError, match=r"holds 2 NaN/Inf values \(first in sample 150\)"):
        load_inputset(tmp_path / "bad.npz")


def test_flags_must_be_booleans_and_fifos_are_refused(tmp_path):
    x, _ = _data(10)
    np.savez(tmp_path / "flag.npz", x=x, allow_nonfinite=np.array("no"))
    with pytest.raises(InputSetError, match="must be one boolean") as info:
        load_inputset(tmp_path / "flag.npz")
    assert info.value.array == "allow_nonfinite"
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(InputSetError, match="not a regular file"):
        load_inputset(tmp_path / "pipe.npz")


def test_a_header_that_promises_more_than_the_archive_holds_is_refused(tmp_path):
    """A consistent archive (CRC right) whose .npy header declares 99 rows and holds 10:
    refused from the header, before a byte of data is read (the zip-bomb shape)."""
    import io
    import zipfile

    from numpy.lib import format as npy_format

    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (99, 4)})
    member.write(np.zeros((10, 4), np.float32).tobytes())
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    with pytest.raises(InputSetError, match=r"declares shape \[99, 4\]") as info:
        load_inputset(path)
    assert info.value.array == "x"
    raw = bytearray(path.read_bytes())
    at = raw.find(b"(99, 4)")
    raw[at:at + 7] = b"(98, 4)"
    path.write_bytes(bytes(raw))  # a changed byte: the CRC no longer matches
    with pytest.raises(InputSetError, match="CRC") as info:
        load_inputset(path)
    assert info.value.array == "x"


def test_writer_leaves_nothing_behind_when_a_member_is_short(tmp_path):
    path = tmp_path / "short.npz"
    with pytest.raises(ValueError, match="3 rows written, 5 declared"):
        with NpzWriter(path) as out:
            with out.member("x", (5, 2), np.float32) as member:
                member.append(np.zeros((3, 2)))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_compare_on_disk_equals_compare_in_memory(tmp_path, small_blocks):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(400, 10)).astype(np.float32)
    cand = (ref + rng.normal(0, 0.3, ref.shape)).astype(np.float32)
    category = np.repeat(np.array(["clean", "noise", "a-category-name-longer-than-sixteen", "outlier"]), 100)
    samples = {"y": rng.integers(0, 10, 400), "category": category, "severity": np.tile([1, 2], 200)}
    np.save(tmp_path / "r.npy", ref)
    np.save(tmp_path / "c.npy", cand)
    np.savez(tmp_path / "tags.npz", **samples)
    on_disk = compare_outputs([DiskArray.from_npy(tmp_path / "r.npy")], [DiskArray.from_npy(tmp_path / "c.npy")],
                              open_npz(tmp_path / "tags.npz"))
    in_memory = compare_outputs([ref], [cand], samples)
    assert on_disk == in_memory
    assert list(on_disk["categories"]) == ["clean", "noise", "a-category-name-longer-than-sixteen", "outlier"]
