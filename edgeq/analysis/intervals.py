"""Confidence intervals for the rates a verdict rests on.

A flip rate of 1 in 5 and one of 100 in 500 are both 20 %, but only the second says
much. Wilson's score interval behaves at 0 and n (where the normal approximation
gives nonsense) and is what the verdict's confidence is judged by. An accuracy drop
is a difference of two proportions measured on the *same* samples, so it gets
Newcombe's paired interval (method 10), which uses the correlation of the pairs.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval for k events in n trials; (0, 1) when there are no trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(both: int, only_first: int, only_second: int, neither: int,
                      z: float = Z95) -> tuple[float, float]:
    """Interval for p1 − p2 where p1 = (both+only_first)/n, p2 = (both+only_second)/n.

    For an accuracy drop: first = float correct, second = quantized correct.
    """
    n = both + only_first + only_second + neither
    if n <= 0:
        return -1.0, 1.0
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n, z)
    l2, u2 = wilson(both + only_second, n, z)
    margins = ((both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither))
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    delta = p1 - p2
    lower = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = delta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)
