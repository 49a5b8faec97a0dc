"""Intervals, paired comparisons and the significance-gated bold (bench.report.stats / tables)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap

from bench.report.stats import bootstrap_ci, cell_seed


def test_bootstrap_ci_is_scipy_bca_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 1, 20), rng.normal(10, 1, 800)
    m1, lo1, hi1 = bootstrap_ci(small, 1000, seed=3)
    m2, lo2, hi2 = bootstrap_ci(large, 1000, seed=3)
    assert lo1 < m1 < hi1 and lo2 < m2 < hi2 and m1 == pytest.approx(small.mean())
    want = bootstrap((small,), np.mean, n_resamples=1000, method="BCa", random_state=np.random.default_rng(3))
    assert (lo1, hi1) == pytest.approx((want.confidence_interval.low, want.confidence_interval.high))
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 / math.sqrt(800), rel=0.2)  # ~1/sqrt(n)
    whole = bootstrap((large,), np.mean, n_resamples=1000, method="BCa", random_state=np.random.default_rng(3))
    assert (lo2, hi2) == (whole.confidence_interval.low, whole.confidence_interval.high)  # batches: bit-identical
    assert bootstrap_ci(small, 1000, seed=3) == (m1, lo1, hi1) != bootstrap_ci(small, 1000, seed=4)
    m, lo, hi = bootstrap_ci([5.0, float("inf"), float("nan")], 100)
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)  # one finite value: no interval
    assert bootstrap_ci([2.0, 2.0, 2.0], 100) == (2.0, 2.0, 2.0)  # degenerate: BCa undefined, no NaN


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


def test_bold_only_when_the_lead_over_every_run_is_significant():
    rng = np.random.default_rng(2)
    base = rng.normal(25, 3, 30)
    clear = base + 1.0 + rng.normal(0, 0.1, 30)
    tied = base + rng.normal(0, 1.0, 30)
    assert _table({"a": clear, "b": base, "c": tied}).bold("psnr") == "a"
    # a lead within the noise: no bold
    assert _table({"b": base, "c": base + 0.001 * (np.arange(30) % 2 - 0.5)}).bold("psnr") is None
    # significantly better than one run but not the other: no bold
    assert _table({"a": clear, "b": base, "c": clear + rng.normal(0, 0.05, 30)}).bold("psnr") is None


def test_throughput_bold_skips_nfe0_and_needs_a_margin_on_one_device():
    from bench.report.tables import throughput_bold

    dev = {"device_name": "cpu: X (2 threads)", "num_threads": "2"}
    df = _df(label=["bicubic", "ddrm", "gdp"], images_per_s=[81845.0, 2.0, 1.0], nfe_per_image=[0.0, 20.0, 20.0],
             **dev)
    assert throughput_bold(df) == 1
    assert throughput_bold(df.assign(images_per_s=[81845.0, 2.0, 1.95])) is None  # 2.6 % ahead: timing noise
    # the fastest was measured with more threads: it is not compared (the majority device decides)
    df = _df(label=["a", "b", "c"], images_per_s=[9.0, 2.0, 1.0], nfe_per_image=[5.0] * 3,
             device_name=["cpu: X (8 threads)", "cpu: X (2 threads)", "cpu: X (2 threads)"],
             num_threads=["8", "2", "2"])
    assert throughput_bold(df) == 1


# ----------------------------------------------------------------------------- the paired test (issue 22)
def test_sign_flip_is_scipys_exact_permutation_test():
    from scipy.stats import permutation_test

    from bench.report.stats import EXACT_MAX_N, sign_flip_p, smallest_p

    rng = np.random.default_rng(4)
    mean = lambda x, axis: np.mean(x, axis=axis)  # noqa: E731
    for n in (2, 3, 4, 5, 8, 12):
        d = rng.normal(0.4, 1, n)
        want = permutation_test((d,), mean, permutation_type="samples", n_resamples=2 ** n, vectorized=True).pvalue
        assert sign_flip_p(d) == pytest.approx(want, abs=1e-12), n
    assert [smallest_p(n) for n in (3, 4, 5, 6)] == [0.25, 0.125, 0.0625, 0.03125]
    assert sign_flip_p(np.array([2.0, 2.0, 2.0, 2.0])) == smallest_p(4)  # the most extreme pattern at n = 4
    assert sign_flip_p(np.zeros(7)) == 1.0 and sign_flip_p([]) == 1.0 and sign_flip_p([0.3]) == 1.0
    # beyond EXACT_MAX_N: seeded Monte Carlo, (1 + count) / (1 + B), close to scipy's randomized test
    d = rng.normal(0.3, 1, 40)
    want = permutation_test((d,), mean, permutation_type="samples", n_resamples=20000, vectorized=True,
                            random_state=1).pvalue
    got = sign_flip_p(d, seed=7)
    assert got == sign_flip_p(d, seed=7) and got == pytest.approx(want, abs=0.01) and EXACT_MAX_N < 40


def test_sign_flip_monte_carlo_slices_keep_the_random_stream():
    """The Monte Carlo test gathers its patterns in cache-sized slices; its p-value is bit-identical to drawing
    each chunk of ~1M random bytes in one call (the stream the reports were made with), also where a chunk's
    byte count is not a multiple of 4 (numpy drops a 32-bit word's unused bytes at the end of a call)."""
    from bench.report.stats import _BYTE_BITS, sign_flip_p

    def whole_chunks(d, seed, resamples):  # the formula without slices
        rng, n = np.random.default_rng(seed), d.size
        nb = (n + 7) // 8
        table = _BYTE_BITS @ np.concatenate([d, np.zeros(nb * 8 - n)]).reshape(nb, 8).T
        t, tol, count, left = abs(d.mean()), 1e-12 * max(1.0, np.abs(d).max()), 0, resamples
        while left > 0:
            b = min(left, max(1, 1_000_000 // nb))
            flips = table[rng.integers(0, 256, size=(b, nb), dtype=np.uint8), np.arange(nb)].sum(axis=1)
            count += int(np.count_nonzero(np.abs(d.sum() - 2.0 * flips) / n >= t - tol))
            left -= b
        return (1.0 + count) / (1.0 + resamples)

    rng = np.random.default_rng(9)
    for n, resamples in ((17, 10_000), (23, 999), (33, 10_000), (2001, 10_000), (9000, 601)):
        for shift in (0.0, 0.03, 0.1):
            d = rng.normal(shift, 1, n)
            p = sign_flip_p(d, seed=n, resamples=resamples)
            assert p == whole_chunks(d, n, resamples), (n, shift)
    assert 601 * (9000 // 8) % 4 == 1  # n = 9000, 601 patterns: one chunk whose byte count leaves a partial word


def test_holm_step_down():
    from bench.report.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])


def test_mean_interval_is_t_below_30_and_bca_from_30():
    from scipy.stats import t as student

    from bench.report.stats import BOOT_MIN_N, mean_interval

    small = np.array([1.0, 2.0, 3.0, 4.5])
    m, lo, hi, kind = mean_interval(small, 500, 0)
    h = student.ppf(0.975, 3) * small.std(ddof=1) / 2
    assert kind == "t" and (lo, hi) == pytest.approx((m - h, m + h))
    big = np.random.default_rng(0).normal(0, 1, BOOT_MIN_N)
    assert mean_interval(big, 500, 0)[3] == "BCa" and mean_interval(big, 500, 0) == mean_interval(big, 500, 0)
    assert mean_interval([3.0], 500, 0)[3] == "" and mean_interval([2.0, 2.0], 500, 0)[1:3] == (2.0, 2.0)


# The issue's case: ddrm - ddnm on the 4 shared images, mean +0.20 dB, a paired t-test p = 0.085; the old BCa
# interval excluded 0 and printed `*`.
ISSUE_DIFFS = np.array([0.05, 0.10, 0.25, 0.40])


def _table(vals: dict[str, np.ndarray], task_sigma=0.0, method=None):
    from bench.report.compare import compare

    labels = list(vals)
    n = len(next(iter(vals.values())))
    ids = [f"i{k}" for k in range(n)]
    sub = pd.DataFrame({"dataset": "d", "task": "t", "label": labels, "method": method or labels,
                        "run_dir": labels, "steps": pd.array([None] * len(labels), dtype="Int64"),
                        "task_sigma": task_sigma, "complete": True, "n_images": n})
    values = {lab: {"psnr": dict(zip(ids, v))} for lab, v in vals.items()}
    return compare(sub, values, {lab: ids for lab in labels}, n_boot=200, seed=0, metrics=("psnr",))


def test_the_issue_case_gets_no_star():
    from scipy.stats import ttest_1samp

    from bench.report.compare import verdict
    from bench.report.tables import paired_table

    assert ttest_1samp(ISSUE_DIFFS, 0).pvalue == pytest.approx(0.085, abs=0.01)
    ddnm = np.array([38.0, 41.0, 39.5, 41.66])
    tab = _table({"ddrm": ddnm + ISSUE_DIFFS, "ddnm": ddnm})
    t = tab.test("ddrm", "ddnm", "psnr")
    assert t["mean"] == pytest.approx(0.20) and t["p"] == 0.125 and not t["significant"]
    assert tab.bold("psnr") is None and tab.unreachable("psnr")
    assert "*" not in paired_table(tab)
    text = verdict(tab, "psnr")
    assert text.startswith("Best PSNR (higher is better) on the 4 common images: ddrm, 40.24 dB, +0.20 dB over the "
                           "runner-up ddnm (not significant: at n = 4 no test")


def _null_rate(n: int, k: int, reps: int, rng) -> float:
    """Share of simulated tables (k exchangeable methods, n images) with any `*` (any Holm-adjusted p < 0.05)."""
    hits = 0
    for _ in range(reps):
        difficulty = rng.normal(25, 4, n)  # images differ a lot; methods do not (the null)
        vals = {f"m{j}": difficulty + rng.standard_t(3, n) for j in range(k)}  # heavy-tailed per-image noise
        tab = _table(vals)
        hits += any(tab.significant(a, b, "psnr") for a in vals for b in vals if a < b)
    return hits / reps


@pytest.mark.parametrize("n", [3, 4, 8, 30])
def test_false_positive_rate_of_star_under_the_null(n):
    """The `*` of a table: at most 5 % false positives at every n (simulated tables of 2 and 4 methods)."""
    from bench.report.stats import smallest_p

    rng = np.random.default_rng(1000 + n)
    reps = 400
    for k in (2, 4):
        rate = _null_rate(n, k, reps, rng)
        print(f"null false-positive rate of `*`: n = {n}, {k} methods: {rate:.4f} over {reps} tables")
        se = math.sqrt(0.05 * 0.95 / reps)
        assert rate <= 0.05 + 2 * se, (n, k, rate)  # Monte Carlo tolerance of the simulation itself
        if smallest_p(n) >= 0.05:
            assert rate == 0.0  # n = 3, 4: no `*` is possible at all
    if n <= 16:  # the exact test's size is exactly floor(0.05 * 2^n) / 2^n <= 5 % (continuous data, one pair)
        assert math.floor(0.05 * 2 ** n) / 2 ** n <= 0.05


def test_the_old_bca_star_fails_the_same_simulation():
    """The check has teeth: the former `*` (paired BCa interval excludes 0) is far above 5 % at n = 4."""
    rng = np.random.default_rng(7)
    reps, hits = 300, 0
    for _ in range(reps):
        difficulty = rng.normal(25, 4, 4)
        a, b = difficulty + rng.standard_t(3, 4), difficulty + rng.standard_t(3, 4)
        ci = bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                       n_resamples=200, method="BCa", random_state=np.random.default_rng(int(rng.integers(1 << 30))))
        lo, hi = ci.confidence_interval.low, ci.confidence_interval.high  # the old `*`: the interval excludes 0
        hits += bool(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0))
    assert hits / reps > 0.15
