"""Intervals and paired comparisons over images, with ``scipy.stats.bootstrap`` (BCa).

* :func:`bootstrap_ci`: the mean of a run's per-image values and its 95 % BCa bootstrap interval.
* :func:`paired_diff`: the mean per-image difference ``a_i - b_i`` of two runs on their common image ids and
  its 95 % BCa interval from the *paired* bootstrap (images resampled jointly, ``paired=True``); ``significant``
  when the interval excludes 0.

Determinism: every interval is seeded with :func:`cell_seed` = sha256 of the report seed and the *cell
identity* (dataset, task, method variant, steps, metric; for a comparison both cells) - never a run hash - so
identical outputs give identical intervals and regenerating a report prints the same numbers. Edge cases:
fewer than 2 values -> no interval (NaN); all values (differences) equal up to round-off -> the degenerate
interval ``(v, v)`` (BCa is undefined there; scipy would return NaN with a warning).
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np

__all__ = ["CI_LEVEL", "cell_seed", "bootstrap_ci", "paired_diff"]

CI_LEVEL = 0.95


def cell_seed(seed: int, *identity) -> int:
    """A 64-bit seed from the report seed and a cell identity (strings/numbers; None allowed)."""
    blob = "/".join(["bench-report", str(seed), *("-" if v is None else str(v) for v in identity)])
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def _finite(values) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _bca(data: tuple[np.ndarray, ...], statistic, n_boot: int, seed: int, paired: bool) -> tuple[float, float]:
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n BCa notes; degenerate data is handled by the caller
        res = bootstrap(data, statistic, n_resamples=int(n_boot), confidence_level=CI_LEVEL, method="BCa",
                        paired=paired, vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _constant(v: np.ndarray) -> bool:
    """All values equal up to float round-off (BCa's acceleration is 0/0 there)."""
    return float(np.ptp(v)) <= 1e-12 * max(1.0, float(np.abs(v).max()))


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of the finite ``values``; (nan, nan) interval for < 2 values or ``n_boot == 0``."""
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2 or n_boot <= 0:
        return mean, math.nan, math.nan
    if _constant(v):
        return mean, mean, mean
    lo, hi = _bca((v,), _mean, n_boot, seed, paired=False)
    return mean, lo, hi


def paired_diff(a: dict, b: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of ``a[id] - b[id]`` over the ids both hold with finite values, and its paired BCa interval.

    Returns ``{mean, lo, hi, n, significant}``; ``significant`` = the interval excludes 0.
    """
    ids = sorted(i for i in set(a) & set(b) if math.isfinite(a[i]) and math.isfinite(b[i]))
    xa = np.array([a[i] for i in ids], dtype=np.float64)
    xb = np.array([b[i] for i in ids], dtype=np.float64)
    n = len(ids)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "significant": False}
    d = xa - xb
    mean = float(d.mean())
    if n < 2 or n_boot <= 0:
        lo = hi = math.nan
    elif _constant(d):
        lo = hi = mean
    else:
        lo, hi = _bca((xa, xb), _mean_diff, n_boot, seed, paired=True)
    sig = bool(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0))
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "significant": sig}
