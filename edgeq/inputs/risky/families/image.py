"""Image shift families: blur, JPEG, pixelation, haze, colour cast, gamma, occlusion, translation.

The field conditions a camera model meets and a validation set rarely holds: focus and
motion, lossy compression on the way from the sensor, a lower resolution upscaled, fog
or a dirty lens, the wrong white balance, a different tone curve, something in front of
the lens, a framing a few pixels off. Each moves the statistics of the activation rows
that dynamic-range quantization scales per input, so a quantized model can lose what
its float twin keeps.

Inputs: an image sample is recognised from its shape (``image_layout``: HWC or CHW,
grey or colour). Every transform reads the layout from the stack it gets, works on an
(n, H, W, C) view and returns the original layout, so a CHW set gets exactly the
transposed result of its HWC twin. Colour cast needs colour images; the others fit grey
ones too. Strengths are relative to the data: value strengths to the range R (global
or per channel, ``ranges.py``), spatial ones to the image's size, so a 28×28 digit and
a 224×224 photo are pushed alike. Every result stays inside the data's range.

Grids (2-D samples without a channel axis) are left alone: their shape does not say
whether they are a grey image, a spectrogram or a window of sensor readings (time ×
channels), and blur, JPEG blocks or a shift along an axis of unrelated sensors makes
inputs that mean nothing. A grid of a grey image is left out with a note that says so.

Library choice: numpy, not albumentations or imagecorruptions.
- Host dependency weight: albumentations 2.0.8 requires opencv-python-headless, scipy,
  pydantic, albucore and PyYAML; imagecorruptions 1.1.2 (last release 2020) requires
  opencv-python, scikit-image, scipy and Pillow. edgeq's core install is numpy, click,
  paramiko, rich and ai-edge-litert; these eight transforms are ~250 lines of numpy.
- Determinism: the suite's contract is one generator per (seed, family, severity,
  block), given to the transform. imagecorruptions draws from the global
  ``np.random`` state (and PIL/OpenCV code paths), albumentations from its own seeded
  state per call; neither takes our generator, so results would depend on call order.
  JPEG here is plain arithmetic (no libjpeg version, no SIMD path), identical everywhere.
- Data range and layout: both libraries expect uint8 (or [0, 1] float) HWC images;
  edgeq data is any range, any dtype, HWC or CHW, grey or colour.
- Speed: both work one image at a time; here every transform is vectorised over the
  block of samples the suite hands over (``TRANSFORM_BYTES``), which is what bounds
  memory too. OpenCV's single blur is faster per image, but a loop of Python calls over
  a block gives that back, and the suite's time is dominated by the device runs.
The JPEG here is "JPEG-like": YCbCr with 4:2:0 chroma subsampling, 8×8 block DCT,
the standard (Annex K) tables scaled by quality as the IJG encoder does, 8-bit
samples; no entropy coding (lossless, so it changes nothing).
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.families import Family, ImageLayout, image_layout, register
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import pct, plain

IMAGE = frozenset({"image"})
HAZE_GREY = 0.75  # fog scatters light: the haze level is a light grey, lo + 0.75 R
# Blur's sigma is a fraction of the shorter side, taken as at least this many pixels: on a
# thumbnail (8×8 digits) a fraction of its side is a sigma of a tenth of a pixel, which
# changes nothing, while a real lens or motion still smears a pixel or two into the next.
BLUR_MIN_SIDE = 32


# ---------------------------------------------------------------- layout and range helpers

def _layout(x: np.ndarray) -> ImageLayout:
    layout = image_layout(x.shape[1:])
    if layout is None:
        raise ValueError(f"image family given samples of shape {list(x.shape[1:])}, which are not images")
    return layout


def _range_hwc(data: DataStats, sample_shape: tuple, layout: ImageLayout):
    """(lo, hi, span) per element as (1, H, W, C) arrays: a global or per-channel range alike."""
    vr = data.range
    shape = (1, *sample_shape)
    return tuple(layout.to_hwc(np.broadcast_to(a, shape)) for a in (vr.lo, vr.hi, vr.span))


def _apply(x: np.ndarray, data: DataStats, work) -> np.ndarray:
    """Run ``work(hwc, lo, hi, span, layout)`` on an (n, H, W, C) view; clip; original layout back."""
    layout = _layout(x)
    lo, hi, span = _range_hwc(data, x.shape[1:], layout)
    out = work(layout.to_hwc(x), lo, hi, span, layout)
    return np.ascontiguousarray(layout.from_hwc(np.clip(out, lo, hi)))


# ---------------------------------------------------------------- blur

def _gaussian_along(x: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """1-D Gaussian filter along ``axis`` with edge-replicated borders."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="edge")
    size = x.shape[axis]
    out = np.zeros_like(x)
    for k, w in enumerate(taps):
        out += w * np.take(padded, np.arange(k, k + size), axis=axis)
    return out


def blur(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma = level × the shorter side, at least BLUR_MIN_SIDE (defocus,
    motion at a slow shutter)."""
    def work(img, lo, hi, span, layout):
        sigma = level * max(min(layout.height, layout.width), BLUR_MIN_SIDE)
        if sigma <= 0:
            return img.copy()
        return _gaussian_along(_gaussian_along(img, sigma, 1), sigma, 2)
    return _apply(x, data, work)


# ---------------------------------------------------------------- JPEG

# The example quantization tables of the JPEG standard (ITU-T T.81, Annex K.1), quality 50.
_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)
_CHROMA = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99], [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99]], dtype=np.float64)


def _dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II: coefficients = D @ block @ D.T."""
    k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    d = np.cos(np.pi * (2 * n + 1) * k / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d


_DCT = _dct_matrix()


def quality_table(base: np.ndarray, quality: float) -> np.ndarray:
    """A base table scaled to ``quality`` (1..100) the way the IJG encoder scales it."""
    quality = float(np.clip(quality, 1, 100))
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((base * scale + 50.0) / 100.0), 1, 255)


def _blocks_roundtrip(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Quantize an (n, H, W) plane of 0..255 samples (H, W multiples of 8) in the DCT domain."""
    n, h, w = plane.shape
    blocks = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8)
    coef = np.einsum("ij,nbjdk,lk->nbidl", _DCT, blocks, _DCT, optimize=True)
    coef = np.round(coef / table[:, None, :]) * table[:, None, :]
    back = np.einsum("ji,nbjdk,kl->nbidl", _DCT, coef, _DCT, optimize=True)
    return back.reshape(n, h, w) + 128.0


def _pad_to(img: np.ndarray, multiple: int) -> np.ndarray:
    h, w = img.shape[1:3]
    return np.pad(img, [(0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)], mode="edge")


def jpeg(x: np.ndarray, quality: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Compress and decompress like a baseline JPEG at ``quality``, on 8-bit samples of the range."""
    def work(img, lo, hi, span, layout):
        h, w, c = img.shape[1:]
        v = np.clip(np.round((img - lo) / span * 255.0), 0, 255)
        luma, chroma = quality_table(_LUMA, quality), quality_table(_CHROMA, quality)
        if layout.colour:
            v = _pad_to(v, 16)
            r, g, b = v[..., 0], v[..., 1], v[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
            cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
            y = _blocks_roundtrip(y, luma)
            n, hp, wp = y.shape
            planes = []
            for p in (cb, cr):  # 4:2:0: chroma at half resolution each way
                half = p.reshape(n, hp // 2, 2, wp // 2, 2).mean(axis=(2, 4))
                half = _pad_to(half[..., None], 8)[..., 0]
                half = _blocks_roundtrip(half, chroma)[:, :hp // 2, :wp // 2]
                planes.append(np.repeat(np.repeat(half, 2, axis=1), 2, axis=2))
            cb, cr = planes
            rgb = [y + 1.402 * (cr - 128.0), y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0),
                   y + 1.772 * (cb - 128.0)]
            extra = [_blocks_roundtrip(v[..., k], luma) for k in range(3, c)]  # alpha/IR: like luma
            out = np.stack(rgb + extra, axis=-1)
        else:
            v = _pad_to(v, 8)
            out = np.stack([_blocks_roundtrip(v[..., k], luma) for k in range(c)], axis=-1)
        out = np.clip(np.round(out[:, :h, :w]), 0, 255)
        return lo + out / 255.0 * span
    return _apply(x, data, work)


# ---------------------------------------------------------------- pixelate

def _cell_means(img: np.ndarray, cells: int, axis: int) -> np.ndarray:
    """Mean over ``cells`` contiguous runs along ``axis``, spread back to every position."""
    size = img.shape[axis]
    owner = (np.arange(size) * cells) // size  # which cell each position falls in
    starts = np.searchsorted(owner, np.arange(cells))
    counts = np.diff(np.append(starts, size)).astype(np.float64)
    shape = [1] * img.ndim
    shape[axis] = cells
    means = np.add.reduceat(img, starts, axis=axis) / counts.reshape(shape)
    return np.take(means, owner, axis=axis)


def pixelate(x: np.ndarray, keep: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Down-sample to ``keep`` × the resolution by block means, back up by nearest neighbour."""
    def work(img, lo, hi, span, layout):
        rows = max(1, int(round(layout.height * keep)))
        cols = max(1, int(round(layout.width * keep)))
        return _cell_means(_cell_means(img, rows, 1), cols, 2)
    return _apply(x, data, work)


# ---------------------------------------------------------------- haze, colour cast, gamma

def haze(x: np.ndarray, weight: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """(1 − w)·x + w·grey: contrast lost towards a light grey (fog, a dirty lens, glare)."""
    def work(img, lo, hi, span, layout):
        return (1.0 - weight) * img + weight * (lo + HAZE_GREY * span)
    return _apply(x, data, work)


def colour_cast(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """A white-balance error: the colour channels shifted apart, ± level·R for the largest one.

    Each sample gets its own direction (zero mean over R, G, B, so the cast tints rather
    than brightens); a fourth channel (alpha) is left alone.
    """
    def work(img, lo, hi, span, layout):
        n = img.shape[0]
        direction = rng.standard_normal((n, 3))
        direction -= direction.mean(axis=1, keepdims=True)
        direction /= np.maximum(np.abs(direction).max(axis=1, keepdims=True), 1e-12)
        out = img.copy()
        out[..., :3] += level * span[..., :3] * direction[:, None, None, :]
        return out
    return _apply(x, data, work)


def gamma(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """lo + R·u^g with u = (x − lo)/R and g = level or 1/level (per sample, 50/50): darker or
    brighter mid-tones with the range ends kept (another camera's tone curve)."""
    def work(img, lo, hi, span, layout):
        n = img.shape[0]
        g = np.where(rng.random(n) < 0.5, level, 1.0 / level).reshape(n, 1, 1, 1)
        u = np.clip((img - lo) / span, 0.0, 1.0)
        return lo + span * u ** g
    return _apply(x, data, work)


# ---------------------------------------------------------------- occlusion, translation

def occlusion(x: np.ndarray, area: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """One rectangular patch of ``area`` × the image, at a random place, in one random grey level."""
    def work(img, lo, hi, span, layout):
        n, h, w = img.shape[:3]
        side = np.sqrt(area)
        ph, pw = max(1, int(round(side * h))), max(1, int(round(side * w)))
        top = rng.integers(0, h - ph + 1, size=n)
        left = rng.integers(0, w - pw + 1, size=n)
        level = rng.random(n).reshape(n, 1, 1, 1)
        rows, cols = np.arange(h), np.arange(w)
        inside = (((rows >= top[:, None]) & (rows < (top + ph)[:, None]))[:, :, None]
                  & ((cols >= left[:, None]) & (cols < (left + pw)[:, None]))[:, None, :])
        return np.where(inside[..., None], lo + level * span, img)
    return _apply(x, data, work)


def translate(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Shift by level × (H, W) in a random direction per sample; sub-pixel (bilinear); the
    border pixels fill what moved in (a camera a little off its usual framing)."""
    def work(img, lo, hi, span, layout):
        n, h, w = img.shape[:3]
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        dy, dx = level * h * np.sin(angle), level * w * np.cos(angle)
        at = np.arange(n)[:, None, None]

        def sample_points(size, shift):
            pos = np.clip(np.arange(size)[None, :] - shift[:, None], 0, size - 1)
            low = np.floor(pos).astype(np.int64)
            return low, np.minimum(low + 1, size - 1), pos - low

        y0, y1, fy = sample_points(h, dy)
        x0, x1, fx = sample_points(w, dx)
        fy, fx = fy[:, :, None, None], fx[:, None, :, None]
        top = img[at, y0[:, :, None], x0[:, None, :]] * (1 - fx) + img[at, y0[:, :, None], x1[:, None, :]] * fx
        bottom = img[at, y1[:, :, None], x0[:, None, :]] * (1 - fx) + img[at, y1[:, :, None], x1[:, None, :]] * fx
        return top * (1 - fy) + bottom * fy
    return _apply(x, data, work)


def _colour(sample_shape: tuple) -> bool:
    layout = image_layout(sample_shape)
    return layout is not None and layout.colour


register(Family("blur", blur, lambda s: f"Gaussian blur, sigma {pct(s)} of the image's shorter side "
                                       f"(at least {BLUR_MIN_SIDE} px)",
                applies_to=IMAGE))
register(Family("jpeg", jpeg, lambda s: f"JPEG-like compression (8×8 DCT, 4:2:0 chroma) at quality {plain(s)}",
                applies_to=IMAGE))
register(Family("pixelate", pixelate,
                lambda s: f"resolution cut to {pct(s)} per axis (block means), shown at full size",
                applies_to=IMAGE))
register(Family("haze", haze, lambda s: f"haze: blended {pct(s)} towards a light grey (lo + 75% of the range)",
                applies_to=IMAGE))
register(Family("colour-cast", colour_cast,
                lambda s: f"colour cast: R, G, B shifted apart by up to {pct(s)} of the range, clipped",
                applies_to=IMAGE, fits=_colour, needs="needs colour images (3 or 4 channels)"))
register(Family("gamma", gamma, lambda s: f"tone curve: gamma {plain(s)} or its inverse per sample",
                applies_to=IMAGE))
register(Family("occlusion", occlusion, lambda s: f"one patch of {pct(s)} of the image set to a random grey",
                applies_to=IMAGE))
register(Family("translate", translate,
                lambda s: f"shifted by {pct(s)} of the image size, random direction, edges repeated",
                applies_to=IMAGE))
