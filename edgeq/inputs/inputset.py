"""Input sets: ``.npz`` files written and read with ``allow_pickle=False``.

Arrays: ``x`` (or one array per model input, named as the input), optional ``y``
(int labels), ``category`` (unicode, one per sample), ``severity`` (int),
``source_index`` (int), ``allow_nonfinite`` (a bool scalar that says NaN/Inf are
there on purpose), and what a search found about each input: ``seed_index`` (int) and
``distance`` (float, from its seed). Everything else about a set is checked here, so the device only
ever sees data that was validated on the host.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.errors import InputSetError
from edgeq.inputs.npz import DiskArray, NpzWriter, open_npz, row_blocks

LABEL_ARRAYS = ("y", "category", "severity", "source_index")
FLAG_ARRAYS = ("allow_nonfinite",)
# per-sample facts that are never model inputs, kept in InputSet.extra: what a search found (seed_index,
# distance), and the suite row of each sample of rows of a suite edgeq built (suite_row: a lazily built suite
# holds the rows run only)
SUITE_ROW = "suite_row"
EXTRA_TAGS = ("seed_index", "distance", SUITE_ROW)
# which suite the rows are of: its identity (the hash of its recipe), one string; with suite_row, runs over the
# set are named by the suite's rows and identity, so runs over any rows of one suite compare sample by sample
SUITE_ID = "suite_sha256"


@dataclass
class InputSet:
    arrays: dict[str, np.ndarray]
    y: np.ndarray | None = None
    category: np.ndarray | None = None
    severity: np.ndarray | None = None
    source_index: np.ndarray | None = None
    allow_nonfinite: bool = False
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.arrays.values())))

    def positions(self, rows) -> np.ndarray:
        """Where suite ``rows`` are in this set: by its ``suite_row`` tags (a lazily built suite holds the rows run
        only), or the rows themselves in a set without them; InputSetError for a row it lacks."""
        rows = np.asarray(rows, dtype=np.int64)
        held = self.extra.get(SUITE_ROW)
        if held is None:
            return rows
        held = np.asarray(held, dtype=np.int64)
        order = np.argsort(held, kind="stable")
        at = np.minimum(np.searchsorted(held, rows, sorter=order), len(held) - 1)
        found = order[at]
        missing = held[found] != rows
        if missing.any():
            raise InputSetError(self.path or Path("<input set>"), f"holds no sample of suite row "
                                                                  f"{int(rows[np.flatnonzero(missing)[0]])}")
        return found

    @property
    def suite(self) -> dict | None:
        """{"rows": the suite row of each sample, "sha256": the suite's identity} when the set holds rows of a
        suite edgeq built (``SUITE_ID``), else None."""
        if SUITE_ID not in self.extra:
            return None
        return {"rows": np.asarray(self.extra[SUITE_ROW], dtype=np.int64), "sha256": self.extra[SUITE_ID]}

    def labels_only(self) -> dict[str, np.ndarray]:
        """The per-sample tags a comparison needs, without the (large) inputs."""
        tags = {"y": self.y, "category": self.category, "severity": self.severity,
                "source_index": self.source_index}
        return {k: v for k, v in tags.items() if v is not None}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        payload = dict(self.arrays)
        payload.update(self.labels_only())
        if self.allow_nonfinite:
            payload["allow_nonfinite"] = np.array(True)
        write_npz(path, payload)
        self.path = path
        return path


def write_npz(path: Path, payload: dict) -> None:
    """Write atomically (an interrupted write never leaves a half file), a block at a time."""
    try:
        with NpzWriter(path) as out:
            for name, array in payload.items():
                if not isinstance(array, DiskArray):
                    out.write(name, array)
                    continue
                with out.member(name, array.shape, array.dtype) as member:
                    for block in row_blocks(array):
                        member.append(block)
    except OSError as exc:
        raise InputSetError(path, f"cannot write: {exc.strerror or exc}") from None


def load_inputset(path: str | os.PathLike, *, what: str = "input set") -> InputSet:
    path = Path(path)
    raw = _read_arrays(path)
    inputs = {k: v for k, v in raw.items() if k not in LABEL_ARRAYS + FLAG_ARRAYS + EXTRA_TAGS + (SUITE_ID,)}
    if not inputs:
        raise InputSetError(path, f"{what} has no input array (expected 'x' or arrays named after the model inputs)")
    allow_nonfinite = _flag(path, raw, "allow_nonfinite")
    extra = {k: raw[k] for k in EXTRA_TAGS if k in raw}
    if SUITE_ID in raw:
        extra[SUITE_ID] = _suite_id(path, raw)
    dataset = InputSet(arrays=inputs, allow_nonfinite=allow_nonfinite, path=path, extra=extra,
                       **{k: raw[k] for k in LABEL_ARRAYS if k in raw})
    validate(dataset)
    return dataset


def _read_arrays(path: Path) -> dict:
    """Small arrays in memory, large ones as DiskArrays: a set of any size loads in constant memory."""
    if not path.exists():
        raise InputSetError(path, "file not found")
    if path.is_dir():
        raise InputSetError(path, "is a folder, expected an .npz file")
    if not path.is_file():
        raise InputSetError(path, "is not a regular file (a FIFO or device would block or never end)")
    if zipfile.is_zipfile(path):
        return open_npz(path)
    problem = _not_numpy(path)
    if problem:
        raise InputSetError(path, problem)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputSetError(path, _pickle_message(exc)) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputSetError(path, f"not a readable NumPy .npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return {"x": loaded}
    raise InputSetError(path, "not a readable NumPy .npz file")


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2_UP = b"\x80"


def _not_numpy(path: Path) -> str | None:
    """What the file is when it is neither an .npz (zip) nor an .npy: said from its first bytes.

    Without this, numpy falls back to pickle for anything it does not recognise, so
    a text file or a truncated archive was reported as "pickled data".
    """
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(NPY_MAGIC) or head.startswith(PICKLE_PROTOCOL_2_UP):
        return None  # .npy is read below; a pickle is refused there without unpickling
    if not head:
        return "is not a readable NumPy .npz file: it is empty"
    if head.startswith(ZIP_MAGIC):
        return "is not a readable NumPy .npz file: a zip archive cut short or damaged (no central directory)"
    if _looks_like_text(head):
        return f"is not a readable NumPy .npz file: it is text (it starts {head[:24].decode('utf-8', 'replace')!r})"
    return f"is not a readable NumPy .npz file (it starts with bytes {head[:8].hex(' ')})"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the 512 bytes is still text
        if exc.start < len(head) - 3:
            return False
        text = head[:exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _suite_id(path: Path, raw: dict) -> str:
    """The suite identity a set names: 64 hex digits, and only beside a ``suite_row`` per sample."""
    value = np.asarray(raw[SUITE_ID])
    text = str(value.reshape(())) if value.dtype.kind == "U" and value.size == 1 else ""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text) or SUITE_ROW not in raw:
        raise InputSetError(path, "must be one sha256 (64 hex digits) beside a suite_row per sample", array=SUITE_ID)
    return text


def _flag(path: Path, raw: dict, name: str) -> bool:
    """A flag must be a boolean: the string "no" is truthy, and would silently mean yes."""
    if name not in raw:
        return False
    value = np.asarray(raw[name])
    if value.dtype != bool or value.size != 1:
        raise InputSetError(path, f"must be one boolean (True/False), got {value.dtype} {value.tolist()!r}",
                            array=name)
    return bool(value.reshape(()))


def _pickle_message(exc: Exception) -> str:
    if "pickle" in str(exc).lower():
        return "holds pickled/object data, which edgeq refuses to load (save plain numeric arrays)"
    return f"cannot be read: {exc}"


def validate(dataset: InputSet) -> None:
    path = dataset.path or Path("<input set>")
    lengths = {}
    for name, array in dataset.arrays.items():
        _check_input_array(path, name, array, dataset.allow_nonfinite)
        lengths[name] = len(array)
    tags = (("y", "iu"), ("severity", "iu"), ("source_index", "iu"), ("category", "U"), ("seed_index", "iu"),
            ("distance", "f"), (SUITE_ROW, "iu"))
    for name, kind in tags:
        array = getattr(dataset, name, None) if name in LABEL_ARRAYS else dataset.extra.get(name)
        if array is None:
            continue
        if array.ndim != 1:
            raise InputSetError(path, f"must be 1-D, one value per sample; got shape {array.shape}", array=name)
        if array.dtype.kind not in kind:
            wanted = {"U": "unicode strings", "f": "floats"}.get(kind, "integers")
            raise InputSetError(path, f"must hold {wanted}, got {array.dtype}", array=name)
        lengths[name] = len(array)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise InputSetError(path, f"arrays have different numbers of samples ({shown})")
    if dataset.n == 0:
        raise InputSetError(path, "has zero samples")


def _check_input_array(path: Path, name: str, array: np.ndarray, allow_nonfinite: bool) -> None:
    if array.dtype.kind not in "fiub":
        raise InputSetError(path, f"must be numeric, got dtype {array.dtype}", array=name)
    if array.ndim == 0:
        raise InputSetError(path, "is a scalar; the first axis must count samples", array=name)
    if array.dtype.kind == "f" and not allow_nonfinite:
        count, first = 0, None
        for lo, block in _numbered_blocks(array):
            bad = ~np.isfinite(block)
            if bad.any():
                count += int(bad.sum())
                first = lo + int(np.argwhere(bad)[0][0]) if first is None else first
        if count:
            raise InputSetError(path, f"holds {count} NaN/Inf values (first in sample {first}); "
                                      "set allow_nonfinite=True in the set if that is on purpose", array=name)


def _numbered_blocks(array):
    """(first row, block) pairs; the check reads a block at a time, never the whole set."""
    lo = 0
    for block in row_blocks(array):
        yield lo, block
        lo += len(block)


def category_counts(category) -> dict[str, int]:
    """Samples per category, in the order categories first appear, a block at a time."""
    counts: dict[str, int] = {}
    for block in row_blocks(category):
        names, first, number = np.unique(block, return_index=True, return_counts=True)
        for k in np.argsort(first):
            counts[str(names[k])] = counts.get(str(names[k]), 0) + int(number[k])
    return counts


def clean_tensor_name(name: str) -> str:
    """``serving_default_image:0`` → ``image``: the name a user knows an input by."""
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def input_specs(info) -> list[dict]:
    """A ModelInfo's inputs in the form ``match_model_inputs`` takes."""
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
             "shape_signature": list(t.shape_signature or t.shape)} for t in info.inputs]


def match_model_inputs(dataset: InputSet, model_inputs: list[dict]) -> list[str]:
    """Check shapes and dtypes against the model; return array names in input order.

    ``model_inputs`` are dicts with ``name``, ``shape``, ``dtype`` (and optionally
    ``shape_signature`` where -1 marks a dimension of any size).
    """
    path = dataset.path or Path("<input set>")
    names = _array_names_for(dataset, model_inputs, path)
    for array_name, spec in zip(names, model_inputs):
        array = dataset.arrays[array_name]
        want_dtype = np.dtype(spec["dtype"])
        if array.dtype != want_dtype:
            raise InputSetError(path, f"dtype {array.dtype} does not match model input "
                                      f"{clean_tensor_name(spec['name'])!r} ({want_dtype})", array=array_name)
        if not _shape_fits(array.shape[1:], spec):
            want = list(spec["shape"][1:])
            raise InputSetError(path, f"sample shape {list(array.shape[1:])} does not match model input "
                                      f"{clean_tensor_name(spec['name'])!r} {want}", array=array_name)
    return names


def _array_names_for(dataset: InputSet, model_inputs: list[dict], path: Path) -> list[str]:
    if len(model_inputs) == 1 and "x" in dataset.arrays:
        return ["x"]
    names = []
    for spec in model_inputs:
        candidates = [spec["name"], clean_tensor_name(spec["name"])]
        found = next((c for c in candidates if c in dataset.arrays), None)
        if found is None:
            have = ", ".join(sorted(dataset.arrays))
            raise InputSetError(path, f"no array for model input {clean_tensor_name(spec['name'])!r} "
                                      f"(the set has: {have})")
        names.append(found)
    return names


def _shape_fits(sample_shape: tuple, spec: dict) -> bool:
    want = list(spec.get("shape_signature") or spec["shape"])[1:]
    if len(want) != len(sample_shape):
        return False
    return all(w in (-1, s) for w, s in zip(want, sample_shape))
