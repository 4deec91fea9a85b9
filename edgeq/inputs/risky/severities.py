"""The severity table: the one place to read or tune how hard each family pushes.

Kept apart from the transforms so that a reviewer can judge the suite's strength
(and a report can describe it) without reading any array code. Every family has
three graded levels (a preprocessing mistake one); severity ``s`` uses ``SEVERITIES[cat][s - 1]``.
Levels are relative to the data itself, never to an assumed [0, 1] or [0, 255]:
the photometric, corruption and image families to the data's range R = hi - lo
(global or per feature, see ranges.py; spatial image strengths to the image's size),
the sensor families to each feature's OBSERVED values (min, max, mean, most extreme
value, span), so the suite means the same thing for any input scaling. The order of
this table is the order of the suite; new families go at the end, because a family's
position seeds its generator.
"""

from __future__ import annotations

SEVERITY_LEVELS: tuple[int, ...] = (1, 2, 3)

SEVERITIES: dict[str, tuple[float, ...]] = {
    "brightness+": (0.1, 0.25, 0.5),   # shift up, fraction of R
    "brightness-": (0.1, 0.25, 0.5),   # shift down, fraction of R
    "contrast+": (1.5, 2.5, 4.0),      # gain k around the sample mean
    "contrast-": (0.6, 0.35, 0.15),    # gain k around the sample mean
    "noise": (0.05, 0.1, 0.2),         # Gaussian sigma, fraction of R
    "impulse": (0.01, 0.05, 0.15),     # fraction of elements set to lo or hi
    "outlier": (1.0, 4.0, 16.0),       # one element set to hi + m * R
    "sentinel": (1, 2, 4),             # features set to their most extreme observed value, every sample
    "stuck": (1, 2, 4),                # features per sample stuck at their observed min or max
    # unit changes of one feature: ×10 cm→mm, ×100 m→cm, ×1000 m→mm / kg→g / V→mV
    # (the common steps of SI prefixes and of pipelines that mix them)
    "scaled": (10.0, 100.0, 1000.0),
    "offset": (0.5, 1.0, 2.0),         # one feature shifted by ± k × its observed span
    "dropout-zero": (0.1, 0.25, 0.5),  # fraction of features (at least one) set to 0
    "dropout-mean": (0.1, 0.25, 0.5),  # fraction of features (at least one) set to their mean
    # image families (families/image.py): images only, spatial strengths relative to the image's
    # size, value strengths to R; all stay inside the data range
    "blur": (0.015, 0.03, 0.06),       # Gaussian sigma, fraction of the shorter side (≥ 32 px)
    "jpeg": (60, 25, 10),              # JPEG quality (the IJG 1-100 scale of the quantization tables)
    "pixelate": (0.6, 0.4, 0.25),      # resolution kept per axis (block means shown at full size)
    "haze": (0.2, 0.4, 0.6),           # blend weight towards a light grey at lo + 0.75 R
    "colour-cast": (0.05, 0.1, 0.2),   # per-channel shift, largest channel's shift as a fraction of R
    "gamma": (1.3, 1.8, 2.5),          # gamma (or 1/gamma, per sample) on (x - lo) / R
    "occlusion": (0.05, 0.15, 0.3),    # area of one patch, fraction of the image
    "translate": (0.03, 0.06, 0.12),   # shift, fraction of height and width (sub-pixel), edge fill
    # preprocessing mistakes (families/preprocessing.py): one level each, a mistake has no strength;
    # stress findings beside the verdict, never deciding it
    "value-scale": (1,),               # 0-255 where 0-1 is expected, or the other way round
    "channel-order": (1,),             # RGB read as BGR
    "normalization": (1,),             # normalization left out, or applied where it should not be
}


def pct(levels) -> str:
    return "/".join(f"{v * 100:g}%" for v in levels)


def mult(levels) -> str:
    return "/".join(f"×{v:g}" for v in levels)


def plain(levels) -> str:
    return "/".join(f"{v:g}" for v in levels)
