"""Small statistics helpers for reported figures."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (lo, hi); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a_only: int, b_only: int, n: int, z: float = 1.959964) -> dict[str, float]:
    """Two policies on the same n seeds, a_only episodes solved by A alone and b_only by B
    alone: the difference of their success rates (A - B), its 95% interval (Agresti and Min's
    adjusted Wald interval for paired proportions: half an episode added to each cell) and
    McNemar's exact two-sided p (a binomial test of the discordant episodes)."""
    if n <= 0 or a_only < 0 or b_only < 0 or a_only + b_only > n:
        raise ValueError(f"paired counts a_only = {a_only}, b_only = {b_only} of n = {n}: expected "
                         "0 <= a_only + b_only <= n, n >= 1")
    diff = (a_only - b_only) / n
    na, nb, m = a_only + 0.5, b_only + 0.5, n + 2
    centre = (na - nb) / m
    half = z * math.sqrt(max((na + nb) - (na - nb) ** 2 / m, 0.0)) / m
    k, d = min(a_only, b_only), a_only + b_only
    p = min(1.0, 2 * sum(math.comb(d, i) for i in range(k + 1)) / 2 ** d) if d else 1.0
    return {"diff": diff, "diff_ci95": [round(max(-1.0, centre - half), 4), round(min(1.0, centre + half), 4)],
            "mcnemar_p": round(p, 4)}
