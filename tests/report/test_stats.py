"""Intervals, paired comparisons and the significance-gated bold (bench.report.stats / tables)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap

from bench.report.stats import bootstrap_ci, cell_seed, paired_diff


def test_bootstrap_ci_is_scipy_bca_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 1, 20), rng.normal(10, 1, 800)
    m1, lo1, hi1 = bootstrap_ci(small, 1000, seed=3)
    m2, lo2, hi2 = bootstrap_ci(large, 1000, seed=3)
    assert lo1 < m1 < hi1 and lo2 < m2 < hi2 and m1 == pytest.approx(small.mean())
    want = bootstrap((small,), np.mean, n_resamples=1000, method="BCa", random_state=np.random.default_rng(3))
    assert (lo1, hi1) == pytest.approx((want.confidence_interval.low, want.confidence_interval.high))
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 / math.sqrt(800), rel=0.2)  # ~1/sqrt(n)
    assert bootstrap_ci(small, 1000, seed=3) == (m1, lo1, hi1) != bootstrap_ci(small, 1000, seed=4)
    m, lo, hi = bootstrap_ci([5.0, float("inf"), float("nan")], 100)
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)  # one finite value: no interval
    assert bootstrap_ci([2.0, 2.0, 2.0], 100) == (2.0, 2.0, 2.0)  # degenerate: BCa undefined, no NaN


def test_paired_diff_is_the_paired_bca_bootstrap_of_the_mean_difference():
    rng = np.random.default_rng(1)
    base = rng.normal(25, 3, 40)  # image difficulty dominates: unpaired intervals would overlap
    a = {f"i{k}": v for k, v in enumerate(base + 0.3 + rng.normal(0, 0.2, 40))}
    b = {f"i{k}": v for k, v in enumerate(base)}
    b["only_b"] = 99.0  # ids not in both are ignored
    r = paired_diff(a, b, 2000, seed=5)
    ids = sorted(a)  # paired_diff orders the common ids by name
    xa, xb = (np.array([x[i] for i in ids]) for x in (a, b))
    d = xa - xb
    paired = bootstrap((xa, xb), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                       n_resamples=2000, method="BCa", random_state=np.random.default_rng(5))
    assert r["n"] == 40 and r["mean"] == pytest.approx(d.mean())
    assert (r["lo"], r["hi"]) == pytest.approx((paired.confidence_interval.low, paired.confidence_interval.high))
    # resampling pairs = resampling the differences: the one-sample interval of d agrees to Monte-Carlo error
    one = bootstrap((d,), np.mean, n_resamples=2000, method="BCa", random_state=np.random.default_rng(9))
    assert (r["lo"], r["hi"]) == pytest.approx((one.confidence_interval.low, one.confidence_interval.high), rel=0.05)
    assert r["significant"] and r["lo"] > 0
    same = paired_diff(b, dict(b), 500)
    assert same["mean"] == 0 and same["lo"] == same["hi"] == 0 and not same["significant"]
    shift = paired_diff({k: v + 1 for k, v in b.items()}, b, 500)
    assert shift["lo"] == shift["hi"] == pytest.approx(1) and shift["significant"]
    assert math.isnan(paired_diff({"x": 1.0}, {"x": 2.0})["lo"]) and paired_diff({}, {})["n"] == 0


def test_seeds_come_from_the_cell_not_the_run():
    assert cell_seed(0, "sample", "sr4", "bicubic", None, "psnr") == cell_seed(0, "sample", "sr4", "bicubic", None,
                                                                               "psnr")
    assert cell_seed(0, "sample", "sr4", "bicubic", None, "psnr") != cell_seed(0, "sample", "sr4", "bicubic", None,
                                                                               "ssim")
    assert cell_seed(0, "a") != cell_seed(1, "a")


def _df(**cols):
    n = len(cols["label"])
    base = {"dataset": ["d"] * n, "task": ["sr4"] * n, "complete": [True] * n,
            "run_dir": [f"r{i}" for i in range(n)], "nfe_per_image": [10.0] * n}
    return pd.DataFrame({**base, **cols})


def test_bold_only_when_the_lead_is_significant():
    from bench.report.tables import bold_rows

    rng = np.random.default_rng(2)
    base = rng.normal(25, 3, 30)
    ids = [f"i{k}" for k in range(30)]
    clear = {i: v + 1.0 + rng.normal(0, 0.1) for i, v in zip(ids, base)}
    tied = {i: v + rng.normal(0, 1.0) for i, v in zip(ids, base)}
    ref = dict(zip(ids, base))
    values = {"r0": {"psnr": clear}, "r1": {"psnr": ref}, "r2": {"psnr": tied}}
    mean = lambda d: float(np.mean(list(d.values())))  # noqa: E731
    df = _df(label=["a", "b", "c"], psnr_mean=[mean(clear), mean(ref), mean(tied)])
    assert bold_rows(df, "psnr", values, 1000, 0) == {0}
    # a lead within the noise: no bold
    df2 = _df(label=["b", "c"], psnr_mean=[mean(ref), mean(tied)])
    v2 = {"r0": {"psnr": ref}, "r1": {"psnr": {i: v + 0.001 * (k % 2 - 0.5) for k, (i, v) in enumerate(ref.items())}}}
    assert bold_rows(df2, "psnr", v2, 1000, 0) == set()
    # an incomplete run is never bold, even when best
    df3 = df.assign(complete=[False, True, True])
    assert 0 not in bold_rows(df3, "psnr", values, 1000, 0)


def test_throughput_bold_skips_nfe0_and_needs_a_margin():
    from bench.report.tables import bold_rows

    df = _df(label=["bicubic", "ddrm", "gdp"], images_per_s=[81845.0, 2.0, 1.0], nfe_per_image=[0.0, 20.0, 20.0])
    assert bold_rows(df, "images_per_s", {}, 0, 0) == {1}
    df = df.assign(images_per_s=[81845.0, 2.0, 1.95])  # 2.6 % ahead: timing noise
    assert bold_rows(df, "images_per_s", {}, 0, 0) == set()
