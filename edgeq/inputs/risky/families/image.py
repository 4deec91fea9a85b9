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
  memory too, with no per-pixel gathers where a whole row can be copied: blur is a
  banded matrix product (BLAS, float64), JPEG two small matrix products per strip
  of 8 rows and chroma kept at half resolution, pixelate takes each block mean once,
  translate copies whole rows of an edge-padded copy. On 224×224×3 the slowest family
  cell builds in a fraction of one float + one quantized inference of a MediaPipe-sized
  model (``scripts/bench_suite.py`` measures both in one run); the same results, number
  for number, as the plain forms kept in ``tests/test_family_speedups.py`` (blur to
  float64 rounding: it sums its taps in another order).
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


def _compact(a: np.ndarray) -> np.ndarray:
    """A broadcast view cut to one element along every axis it repeats (stride 0): the same values
    per element, but arithmetic with it no longer makes full-size temporaries."""
    return a[tuple(slice(0, 1) if step == 0 else slice(None) for step in a.strides)]


def _range_hwc(data: DataStats, sample_shape: tuple, layout: ImageLayout):
    """(lo, hi, span) as arrays that broadcast against (n, H, W, C) stacks, one value per element
    of a sample: a global or per-channel range alike. Axes the range does not vary along are
    kept 1 wide, so the range never costs a full-size array."""
    vr = data.range
    shape = (1, *sample_shape)
    return tuple(_compact(layout.to_hwc(np.broadcast_to(a, shape))) for a in (vr.lo, vr.hi, vr.span))


def _bound(a: np.ndarray):
    """A one-value range as a Python float (np.clip's fast path); any other as it is."""
    return float(a.reshape(-1)[0]) if a.size == 1 else a


def _apply(x: np.ndarray, data: DataStats, work) -> np.ndarray:
    """Run ``work(hwc, lo, hi, span, layout)`` on an (n, H, W, C) view; clip into a new float64
    array in the original layout (one pass: the clip writes the layout)."""
    layout = _layout(x)
    lo, hi, span = _range_hwc(data, x.shape[1:], layout)
    out = work(layout.to_hwc(x), lo, hi, span, layout)
    result = np.empty(x.shape, dtype=np.float64)
    np.clip(out, _bound(lo), _bound(hi), out=layout.to_hwc(result))
    return result


# ---------------------------------------------------------------- blur

# Blur is a banded matrix product: output rows are taken BAND_ROWS at a time, each block the
# same small (BAND_ROWS × BAND_ROWS + 2·radius) matrix of taps times a window of the edge-padded
# input (a strided view, no copy). That is the tap sum of the textbook filter done by BLAS, in
# float64: it equals the per-tap loop up to float64 rounding (≈1e-15 of the range), with about
# (BAND_ROWS + 2·radius) / (2·radius + 1) of its multiplications, not the H / (2·radius + 1) of
# a full H × H matrix.
BAND_ROWS = 16


def _gaussian_taps(sigma: float) -> tuple[np.ndarray, int]:
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum(), radius


def _gaussian_rows(planes: np.ndarray, sigma: float) -> np.ndarray:
    """1-D Gaussian filter of (m, S, T) planes along S, edge-replicated borders."""
    taps, radius = _gaussian_taps(sigma)
    m, size, width = planes.shape
    rows = min(BAND_ROWS, size)
    blocks = -(-size // rows)
    padded = np.pad(planes, [(0, 0), (radius, radius + blocks * rows - size), (0, 0)], mode="edge")
    band = np.zeros((rows, rows + 2 * radius))
    band[np.arange(rows)[:, None], np.arange(rows)[:, None] + np.arange(2 * radius + 1)] = taps
    s0, s1, s2 = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (m, blocks, rows + 2 * radius, width),
                                              (s0, rows * s1, s1, s2), writeable=False)
    return np.matmul(band, windows).reshape(m, blocks * rows, width)[:, :size]


def blur(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma = level × the shorter side, at least BLUR_MIN_SIDE (defocus,
    motion at a slow shutter)."""
    def work(img, lo, hi, span, layout):
        sigma = level * max(min(layout.height, layout.width), BLUR_MIN_SIDE)
        if sigma <= 0:
            return img
        n, h, w, c = img.shape
        planes = np.ascontiguousarray(img.transpose(0, 3, 1, 2)).reshape(n * c, h, w)
        down = _gaussian_rows(planes, sigma)  # along the height
        across = _gaussian_rows(np.ascontiguousarray(down.transpose(0, 2, 1)), sigma)  # along the width
        return across.reshape(n, c, w, h).transpose(0, 3, 2, 1)
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
    """Quantize an (n, H, W) plane of 0..255 samples (H, W multiples of 8) in the DCT domain.

    D @ block @ D.T as two matrix products over the whole plane, block rows first (each
    8 rows: D times an 8 × W strip), then block columns (every run of 8 values times D.T),
    so no block is ever copied out; the inverse the same way with D.T and D."""
    n, h, w = plane.shape
    strips = n * (h // 8)  # one small product per strip of 8 rows (small: BLAS runs it on one thread)
    rows = (plane - 128.0).reshape(strips, 8, w)
    coef = (np.matmul(_DCT, rows).reshape(strips, w, 8) @ _DCT.T).reshape(n, h // 8, 8, w // 8, 8)
    step = table[:, None, :]
    coef /= step
    np.round(coef, out=coef)
    coef *= step
    back = np.matmul(_DCT.T, coef.reshape(strips, 8, w)).reshape(strips, w, 8) @ _DCT
    back += 128.0
    return back.reshape(n, h, w)


def _pad_planes(planes: np.ndarray, multiple: int) -> np.ndarray:
    """(…, H, W) planes edge-padded at the bottom and right to multiples of ``multiple``."""
    h, w = planes.shape[-2:]
    if h % multiple == 0 and w % multiple == 0:
        return planes
    pad = [(0, 0)] * (planes.ndim - 2) + [(0, -h % multiple), (0, -w % multiple)]
    return np.pad(planes, pad, mode="edge")


def jpeg(x: np.ndarray, quality: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Compress and decompress like a baseline JPEG at ``quality``, on 8-bit samples of the range.

    Works on channel planes (C, n, H, W), so every colour formula runs over contiguous
    memory; chroma stays at half resolution until it is added back to the luma."""
    def work(img, lo, hi, span, layout):
        h, w, c = img.shape[1:]
        lo_p, span_p = np.moveaxis(lo, -1, 0), np.moveaxis(span, -1, 0)
        v = np.empty((c, *img.shape[:3]))
        np.subtract(np.moveaxis(img, -1, 0), lo_p, out=v)
        v /= span_p
        v *= 255.0
        np.round(v, out=v)
        np.clip(v, 0, 255, out=v)
        luma, chroma = quality_table(_LUMA, quality), quality_table(_CHROMA, quality)
        if layout.colour:
            v = _pad_planes(v, 16)
            r, g, b = v[0], v[1], v[2]
            y = 0.299 * r
            y += 0.587 * g
            y += 0.114 * b
            cb = 128.0 - 0.168736 * r
            cb -= 0.331264 * g
            cb += 0.5 * b
            cr = 128.0 + 0.5 * r
            cr -= 0.418688 * g
            cr -= 0.081312 * b
            y = _blocks_roundtrip(y, luma)
            n, hp, wp = y.shape
            halves = []
            for p in (cb, cr):  # 4:2:0: chroma at half resolution each way
                half = p.reshape(n, hp // 2, 2, wp // 2, 2).mean(axis=(2, 4))
                half = _blocks_roundtrip(_pad_planes(half, 8), chroma)[:, :hp // 2, :wp // 2]
                half -= 128.0
                halves.append(half[:, :, None, :, None])  # spread back over its 2 × 2 pixels
            cb, cr = halves
            out = np.empty((c, n, hp, wp))
            y5, out5 = y.reshape(n, hp // 2, 2, wp // 2, 2), out.reshape(c, n, hp // 2, 2, wp // 2, 2)
            np.add(y5, 1.402 * cr, out=out5[0])
            np.subtract(y5, 0.344136 * cb, out=out5[1])
            out5[1] -= 0.714136 * cr
            np.add(y5, 1.772 * cb, out=out5[2])
            if c > 3:  # alpha/IR: like luma
                out[3:] = _blocks_roundtrip(v[3:].reshape(-1, hp, wp), luma).reshape(c - 3, n, hp, wp)
        else:
            v = _pad_planes(v, 8)
            out = _blocks_roundtrip(v.reshape(-1, *v.shape[-2:]), luma).reshape(v.shape)
        out = out[:, :, :h, :w]
        np.round(out, out=out)
        np.clip(out, 0, 255, out=out)
        out /= 255.0
        out *= span_p
        out += lo_p
        return np.moveaxis(out, 0, -1)
    return _apply(x, data, work)


# ---------------------------------------------------------------- pixelate

def _cells(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``cells`` contiguous runs over ``size`` positions starts, and how long it is."""
    owner = (np.arange(size) * cells) // size  # which cell each position falls in
    starts = np.searchsorted(owner, np.arange(cells))
    return starts, np.diff(np.append(starts, size))


def _cell_means(img: np.ndarray, starts: np.ndarray, counts: np.ndarray, axis: int) -> np.ndarray:
    """Mean of each run along ``axis`` (one value per cell, not spread back)."""
    shape = [1] * img.ndim
    shape[axis] = len(counts)
    return np.add.reduceat(img, starts, axis=axis) / counts.astype(np.float64).reshape(shape)


def pixelate(x: np.ndarray, keep: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Down-sample to ``keep`` × the resolution by block means, back up by nearest neighbour.

    The block means are taken along the height, then along the width of those (each mean
    once, not once per pixel), and spread back over the pixels by repeating them."""
    def work(img, lo, hi, span, layout):
        rows = max(1, int(round(layout.height * keep)))
        cols = max(1, int(round(layout.width * keep)))
        (row_starts, row_counts), (col_starts, col_counts) = _cells(img.shape[1], rows), _cells(img.shape[2], cols)
        means = _cell_means(_cell_means(img, row_starts, row_counts, 1), col_starts, col_counts, 2)
        return np.repeat(np.repeat(means, row_counts, axis=1), col_counts, axis=2)
    return _apply(x, data, work)


# ---------------------------------------------------------------- haze, colour cast, gamma

def haze(x: np.ndarray, weight: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """(1 − w)·x + w·grey: contrast lost towards a light grey (fog, a dirty lens, glare)."""
    def work(img, lo, hi, span, layout):
        out = img * (1.0 - weight)
        out += weight * (lo + HAZE_GREY * span)
        return out
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
        u = img - lo
        u /= span
        np.clip(u, 0.0, 1.0, out=u)
        np.power(u, g, out=u)
        u *= span
        u += lo
        return u
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
    border pixels fill what moved in (a camera a little off its usual framing).

    Bilinear is separable: every row is interpolated along the width first (``_columns``),
    then whole rows are gathered and blended: the same products and sums, per pixel, as
    the four-corner form."""
    def work(img, lo, hi, span, layout):
        n, h, w = img.shape[:3]
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        dy, dx = level * h * np.sin(angle), level * w * np.cos(angle)
        at = np.arange(n)[:, None]

        def sample_points(size, shift):
            pos = np.clip(np.arange(size)[None, :] - shift[:, None], 0, size - 1)
            low = np.floor(pos).astype(np.int64)
            return low, np.minimum(low + 1, size - 1), pos - low

        y0, y1, fy = sample_points(h, dy)
        x0, x1, fx = sample_points(w, dx)
        left, right = _columns(img, x0, x1, fx)
        left *= (1 - fx)[:, None, :, None]
        right *= fx[:, None, :, None]
        left += right
        out = left[at, y0]  # whole rows: each a contiguous copy
        out *= (1 - fy)[:, :, None, None]
        below = left[at, y1]
        below *= fy[:, :, None, None]
        out += below
        return out
    return _apply(x, data, work)


def _columns(img: np.ndarray, x0: np.ndarray, x1: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` at columns ``x0`` and ``x1`` of each sample (n, H, W, C each, new arrays).

    A shift with the edge repeated picks columns clip(j + k, 0, W − 1): then both are
    slices of one edge-padded copy, taken for every sample at its own offset as whole rows
    (a strided view, no per-pixel gather). ``x1`` = ``x0`` + 1 differs from that only where
    the shift clamps at the left edge, where its weight ``fx`` is 0, so the blend is the same
    number. Any other indices are gathered pixel by pixel."""
    n, h, w, c = img.shape
    k = x0[:, w // 2] - w // 2  # the shift, read where no clamp reaches (checked below)
    picks = np.clip(np.arange(w + 1)[None, :] + k[:, None], 0, w - 1)
    if not (np.array_equal(picks[:, :w], x0) and np.all((picks[:, 1:] == x1) | (fx == 0))):
        at = np.arange(n)[:, None]
        return img[at, :, x0].transpose(0, 2, 1, 3).copy(), img[at, :, x1].transpose(0, 2, 1, 3).copy()
    before, after = max(0, -int(k.min())), max(0, int(k.max()) + 1)
    padded = np.pad(img, [(0, 0), (0, 0), (before, after), (0, 0)], mode="edge")
    s0, s1, s2, s3 = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (n, before + after, h, w + 1, c),
                                              (s0, s2, s1, s2, s3), writeable=False)
    both = windows[np.arange(n), k + before]  # (n, H, W + 1, C): columns k .. k + W, clamped
    return both[:, :, :w], both[:, :, 1:].copy()


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
