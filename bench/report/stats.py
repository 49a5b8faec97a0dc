"""Intervals, paired tests and the multiple-comparison correction of the report.

Intervals (descriptive; ``*`` never comes from them):

* :func:`bootstrap_ci`: the mean of a run's per-image values and its 95 % BCa bootstrap interval
  (``runs.csv``: each run over its own images).
* :func:`mean_interval`: the interval the tables print - Student t below :data:`BOOT_MIN_N` values, BCa from
  there on. BCa under-covers badly at small n (simulated 95 % intervals of a normal mean: 77 % coverage at
  n = 4, 88 % at n = 8, 94 % at n = 30; the t interval: 95 % at every n under normality), so it is used only
  where its coverage holds.

Significance (the report's ``*``): :func:`sign_flip_p`, the paired two-sided sign-flip (permutation) test of
the mean difference: under the null "the two methods are exchangeable on every image" each difference is as
likely ``+d_i`` as ``-d_i``, so the 2^n sign patterns give the exact null distribution of the mean. It is
exact for n <= :data:`EXACT_MAX_N` (full enumeration) and a seeded Monte Carlo test beyond
(:data:`MC_RESAMPLES` sign patterns, ``p = (1 + #{|T*| >= |T|}) / (1 + B)``, valid at any B). It makes no
normality or large-n assumption, so its false-positive rate is at most alpha at every n; the price is
honesty at small n: the smallest attainable p is ``2 / 2^n`` (0.25 at n = 3, 0.125 at n = 4), so no
difference over fewer than 6 images can ever be significant (:func:`smallest_p`). :func:`holm` corrects the
p-values of one family of comparisons (Holm 1979, step-down; controls the family-wise error rate under any
dependence). ``scipy.stats.permutation_test`` computes the same p-values (tests check it) but takes ~1 s per
exact n = 16 test, too slow for every pair of every metric of every table.

Determinism: every interval and every Monte Carlo test is seeded with :func:`cell_seed` = sha256 of the
report seed and the *cell identity* (dataset, task, method variant, steps, metric; for a comparison both
cells) - never a run hash - so identical outputs give identical numbers and regenerating a report prints the
same bytes. Edge cases: fewer than 2 values -> no interval (NaN); all values (differences) equal up to
round-off -> the degenerate interval ``(v, v)`` (BCa is undefined there; scipy would return NaN), p = 1 for
all-zero differences.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings

import numpy as np

__all__ = ["ALPHA", "BOOT_MIN_N", "CI_LEVEL", "EXACT_MAX_N", "MC_RESAMPLES", "bootstrap_ci", "cell_seed", "holm",
           "mean_interval", "sign_flip_p", "smallest_p"]

CI_LEVEL = 0.95
ALPHA = 0.05
#: from this many values on, intervals are BCa bootstrap; below, Student t (see the module docstring)
BOOT_MIN_N = 30
#: up to this n the sign-flip test enumerates all 2^n patterns (65 536 at 16); beyond, Monte Carlo
EXACT_MAX_N = 16
MC_RESAMPLES = 10_000


def cell_seed(seed: int, *identity) -> int:
    """A 64-bit seed from the report seed and a cell identity (strings/numbers; None allowed)."""
    blob = "/".join(["bench-report", str(seed), *("-" if v is None else str(v) for v in identity)])
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def _finite(values) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64).ravel()
    return v[np.isfinite(v)]


#: resamples (and jackknife samples) scipy computes at once: the same random stream and per-resample means as
#: one batch (the interval is bit-identical, tests/report/test_stats.py), without (n_boot, n) arrays of tens of
#: MB at n = 2000: about 1.5x faster
_BOOT_BATCH = 200


def _bca(v: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The 95 % BCa bootstrap interval of the mean of ``v`` (``scipy.stats.bootstrap``)."""
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n BCa notes; degenerate data is handled by the caller
        res = bootstrap((v,), np.mean, n_resamples=int(n_boot), confidence_level=CI_LEVEL, method="BCa",
                        vectorized=True, random_state=np.random.default_rng(seed), batch=_BOOT_BATCH)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _constant(v: np.ndarray) -> bool:
    """All values equal up to float round-off (BCa's acceleration is 0/0 there)."""
    return float(np.ptp(v)) <= 1e-12 * max(1.0, float(np.abs(v).max()))


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
    lo, hi = _bca(v, n_boot, seed)
    return mean, lo, hi


# --------------------------------------------------------------------------- intervals for the tables
def t_interval(values) -> tuple[float, float]:
    """95 % Student t interval of the mean (NaN for < 2 values; ``(m, m)`` for constant values)."""
    from scipy.stats import t as student

    v = _finite(values)
    if v.size < 2:
        return math.nan, math.nan
    m = float(v.mean())
    if _constant(v):
        return m, m
    h = float(student.ppf(0.5 + CI_LEVEL / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m - h, m + h


def mean_interval(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, str]:
    """``(mean, lo, hi, kind)``: kind ``t`` below :data:`BOOT_MIN_N` values, ``BCa`` from there on (``""`` =
    no interval: < 2 values, or ``n_boot == 0`` where the bootstrap would be due)."""
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan, ""
    if v.size < BOOT_MIN_N:
        lo, hi = t_interval(v)
        return float(v.mean()), lo, hi, "t" if math.isfinite(lo) else ""
    mean, lo, hi = bootstrap_ci(v, n_boot, seed)
    return mean, lo, hi, "BCa" if math.isfinite(lo) else ""


# --------------------------------------------------------------------------- the paired test
@functools.lru_cache(maxsize=EXACT_MAX_N + 1)
def _all_signs(n: int) -> np.ndarray:
    """(2^n, n) matrix of every +-1 pattern (row k = the bits of k)."""
    k = np.arange(2 ** n, dtype=np.uint32)[:, None]
    return np.where((k >> np.arange(n, dtype=np.uint32)) & 1, -1.0, 1.0)


_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64)  # (256, 8): bits of a byte
_MC_ROWS = 256  # Monte Carlo patterns gathered at once (a multiple of 4: see sign_flip_p)


def smallest_p(n: int, resamples: int = MC_RESAMPLES) -> float:
    """The smallest two-sided p-value :func:`sign_flip_p` can return for n differences (1 for n = 0)."""
    if n <= 0:
        return 1.0
    if n <= EXACT_MAX_N:
        return min(1.0, 2.0 / 2 ** n)
    return 1.0 / (1 + int(resamples))


def sign_flip_p(d, seed: int = 0, resamples: int = MC_RESAMPLES) -> float:
    """Two-sided paired sign-flip test of ``mean(d) = 0`` (see the module docstring): exact for
    ``len(d) <= EXACT_MAX_N``, else Monte Carlo with ``resamples`` patterns from ``seed``. 1.0 when every
    difference is 0 (identical values) or there is none."""
    d = _finite(d)
    n = d.size
    if n == 0 or not np.any(d):
        return 1.0
    t = abs(float(d.mean()))
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))  # ties: a pattern equal to the observed one counts
    if n <= EXACT_MAX_N:
        null = np.abs(_all_signs(n) @ d) / n
        return float(np.count_nonzero(null >= t - tol)) / 2 ** n
    # Monte Carlo: a pattern is n random bits (1 = flip); the flipped sum is sum(d) - 2 * (sum of d over the set
    # bits), computed byte-wise from a 256-entry table per block of 8 differences (no (B, n) float matrix)
    rng = np.random.default_rng(seed)
    nb = (n + 7) // 8
    blocks = np.concatenate([d, np.zeros(nb * 8 - n)]).reshape(nb, 8)
    table = _BYTE_BITS @ blocks.T  # (256, nb): sum of d over the bits of each byte value, per block
    flat = table.T.ravel()  # [k * 256 + v] = table[v, k], one block's 256 sums together
    total, offsets = float(d.sum()), np.arange(nb, dtype=np.intp) * 256
    count, left = 0, int(resamples)
    while left > 0:  # chunks of ~1M bytes (the random stream's unit: it must not change, see below)
        b = min(left, max(1, 1_000_000 // nb))
        # drawn in slices of _MC_ROWS patterns (a multiple of 4 rows: numpy draws uint8 from 32-bit words and
        # drops a word's unused bytes only at the end of a call, so the slices give the very bytes the whole
        # chunk gives) whose gathered values fit in the CPU cache; each pattern's sum is the same row sum
        for s in range(0, b, _MC_ROWS):
            idx = rng.integers(0, 256, size=(min(_MC_ROWS, b - s), nb), dtype=np.uint8).astype(np.intp)
            flips = flat.take(idx + offsets).sum(axis=1)
            count += int(np.count_nonzero(np.abs(total - 2.0 * flips) / n >= t - tol))
        left -= b
    return (1.0 + count) / (1.0 + int(resamples))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (same order as ``pvalues``; reject where adjusted < alpha)."""
    p = np.asarray(list(pvalues), dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()
