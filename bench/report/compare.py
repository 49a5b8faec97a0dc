"""One table's comparison: the runs' common images, their values there, paired tests, bold and verdicts.

Every number a table, its paired differences, its verdict and its figure print comes from :func:`compare`:

* **Common images**: the intersection of the image ids of the table's runs (:func:`common_ids`; a run that
  shares no image with the others is left out of the comparison and named). Means, intervals, ranks, bold,
  deltas and verdicts use those N images only; runs holding more are named with their count.
* **Values**: per run and metric the mean over the common images and its 95 % interval
  (:func:`bench.report.stats.mean_interval`: Student t below 30 images, BCa from there). A run that lacks a
  value on some common image has no mean for that metric (never a mean over part of the set).
* **Tests**: for every metric with a direction (:func:`ranked`), every pair of runs is compared with the
  paired sign-flip test (:func:`bench.report.stats.sign_flip_p`) and the p-values of all pairs of the metric
  are Holm-corrected together: the family covers the bold, the "vs baseline" and the "vs best" columns and
  the verdict at once, so a data-selected "best" does not inflate the error rate. ``*`` = adjusted p < 0.05.
* **Noisy tasks** (task sigma > 0): the consistency ``‖A x̂ − y‖²/M`` is divided by ``sigma²`` per image
  (the true image scores about 1: ``E‖A x − y‖²/M = sigma²``); below 1 = the output fits the noise (the noisy
  input itself scores ~0), above 1 = it does not explain y. Neither consistency column is ranked there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.report.aggregate import LOWER_IS_BETTER, PER_IMAGE
from bench.report.stats import ALPHA, cell_seed, holm, mean_interval, sign_flip_p, smallest_p

__all__ = ["BASELINE", "DIGITS", "NAMES", "QUALITY", "Table", "common_ids", "compare", "ranked"]

BASELINE = "bicubic"
#: format spec per metric (consistency in [0, 1] units spans decades: scientific; its ratio to sigma²: plain)
DIGITS = {"psnr": ".2f", "ssim": ".3f", "lpips": ".3f", "consistency": ".2e", "consistency_psnr": ".2f",
          "consistency_gdp": ".2f", "loe": ".1f", "niqe": ".2f", "pi": ".2f"}
NAMES = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "consistency": "consistency",
         "consistency_psnr": "consistency PSNR", "consistency_gdp": "GDP consistency", "loe": "LOE",
         "niqe": "NIQE", "pi": "PI"}
UNITS = {"psnr": " dB"}
#: metrics that get a verdict in words (quality; consistency is a check of the data fit, not a ranking)
QUALITY = ("psnr", "ssim", "lpips", "loe", "niqe", "pi")


def ranked(metric: str, noisy: bool) -> bool:
    """Whether ``metric`` has a better direction in a table (never the consistency of a noisy task)."""
    if metric not in LOWER_IS_BETTER or metric == "consistency_psnr":
        return False
    return not (noisy and metric.startswith("consistency"))


def common_ids(id_sets: dict[str, set]) -> tuple[list[str], list[str]]:
    """``(sorted common ids, left-out keys)``: intersect the sets from the largest down (ties by key); a set
    that would leave nothing in common is left out instead (runs of disjoint shards)."""
    common: set | None = None
    left_out = []
    for key in sorted(id_sets, key=lambda k: (-len(id_sets[k]), k)):
        ids = set(id_sets[key])
        if common is None:
            common = ids
        elif common & ids:
            common &= ids
        else:
            left_out.append(key)
    return sorted(common or ()), left_out


@dataclass
class Table:
    """The comparison of one (dataset, task); ``runs`` = the compared rows (table order), keyed by run_dir."""

    dataset: str
    task: str
    runs: pd.DataFrame
    common: list[str]
    left_out: pd.DataFrame
    noisy: bool
    metrics: list[str]
    stats: dict = field(default_factory=dict)  # (run_dir, metric) -> {mean, lo, hi, kind} or {na}
    pvalues: dict = field(default_factory=dict)  # metric -> {(a, b): {p, p_holm, d (diffs a - b)}}
    n_boot: int = 1000
    seed: int = 0
    idents: dict = field(default_factory=dict)  # run_dir -> (label, steps)

    @property
    def n(self) -> int:
        return len(self.common)

    def row(self, run_dir: str) -> pd.Series:
        return self.runs[self.runs["run_dir"] == run_dir].iloc[0]

    def name(self, run_dir: str) -> str:
        """The run's label, with its step count when the label appears at several in the table."""
        r = self.row(run_dir)
        several = int((self.runs["label"] == r["label"]).sum()) > 1
        return f"{r['label']} ({int(r['steps'])} steps)" if several and not pd.isna(r["steps"]) else str(r["label"])

    def mean(self, run_dir: str, metric: str) -> float:
        return float(self.stats.get((run_dir, metric), {}).get("mean", math.nan))

    def order(self, metric: str) -> list[str]:
        """Run dirs with a mean for ``metric``, best first (table order breaks ties)."""
        have = [d for d in self.runs["run_dir"] if math.isfinite(self.mean(d, metric))]
        sign = 1.0 if LOWER_IS_BETTER[metric] else -1.0
        return sorted(have, key=lambda d: sign * self.mean(d, metric))  # stable: table order among ties

    def n_pairs(self, metric: str) -> int:
        return len(self.pvalues.get(metric, {})) // 2

    def test(self, a: str, b: str, metric: str) -> dict | None:
        """``{mean, lo, hi, kind, p, p_holm, significant, identical, n}`` of ``a - b`` on the common images."""
        t = self.pvalues.get(metric, {}).get((a, b))
        if t is None:
            return None
        if "test" in t:
            return t["test"]
        d = t["d"]
        ident = not np.any(d)
        mean, lo, hi, kind = mean_interval(d, self.n_boot, cell_seed(self.seed, "paired", self.dataset, self.task,
                                                                     *_ident(self, a), *_ident(self, b), metric))
        t["test"] = {"mean": mean, "lo": lo, "hi": hi, "kind": kind, "p": t["p"], "p_holm": t["p_holm"],
                          "significant": self.significant(a, b, metric), "identical": ident, "n": len(d)}
        return t["test"]

    def significant(self, a: str, b: str, metric: str) -> bool:
        """The report's ``*``: Holm-adjusted p of ``a`` vs ``b`` below alpha (False when not compared)."""
        t = self.pvalues.get(metric, {}).get((a, b))
        return t is not None and t["p_holm"] < ALPHA

    def best(self, metric: str) -> str | None:
        order = self.order(metric)
        return order[0] if order else None

    def bold(self, metric: str) -> str | None:
        """The best run when its lead over *every* other run is significant (Holm), else None."""
        order = self.order(metric)
        if len(order) < 2 or not ranked(metric, self.noisy):
            return None
        best = order[0]
        return best if all(self.significant(best, o, metric) for o in order[1:]) else None

    def baseline(self) -> str | None:
        base = self.runs[self.runs["method"] == BASELINE]
        if not len(base):
            return None
        exact = base[base["label"] == BASELINE]
        return str((exact if len(exact) else base).iloc[0]["run_dir"])

    def unreachable(self, metric: str) -> bool:
        """True when no pair of ``metric`` can reach adjusted p < alpha at this n (Holm's first step)."""
        return smallest_p(self.n) * max(1, self.n_pairs(metric)) >= ALPHA


def _ident(tab: Table, run_dir: str) -> tuple:
    """(label, steps) of a run: its cell identity in the seeds."""
    if not tab.idents:
        tab.idents.update({str(r["run_dir"]): (str(r["label"]), None if pd.isna(r["steps"]) else int(r["steps"]))
                           for _, r in tab.runs.iterrows()})
    return tab.idents[run_dir]


def _values(tab: Table, values: dict, run_dir: str, metric: str, sigma: float) -> tuple[np.ndarray | None, str]:
    """Values of ``metric`` on the common images, or (None, why not)."""
    v = values.get(run_dir, {}).get(metric) or {}
    have = [i for i in tab.common if i in v]
    if not have:
        return None, ""
    if len(have) < tab.n:
        return None, f"{NAMES[metric]} missing for {tab.n - len(have)} of the {tab.n} common images"
    x = np.array([v[i] for i in tab.common], dtype=np.float64)
    if tab.noisy and metric == "consistency":
        x = x / sigma ** 2 if sigma > 0 else np.full_like(x, np.nan)
    return x, ""


def compare(sub: pd.DataFrame, values: dict, run_ids: dict, n_boot: int = 1000, seed: int = 0,
            metrics: tuple[str, ...] = PER_IMAGE) -> Table:
    """The comparison of the shown runs ``sub`` of one (dataset, task): ``values[run_dir][metric]`` = per-image
    values (:func:`bench.report.aggregate.per_image_values`), ``run_ids[run_dir]`` = the run's image ids."""
    sub = sub.reset_index(drop=True)
    common, left = common_ids({str(d): set(run_ids[d]) for d in sub["run_dir"]})
    sigma = pd.to_numeric(sub["task_sigma"], errors="coerce").fillna(0.0)
    tab = Table(str(sub["dataset"].iloc[0]), str(sub["task"].iloc[0]), sub[~sub["run_dir"].isin(left)]
                .reset_index(drop=True), common, sub[sub["run_dir"].isin(left)].reset_index(drop=True),
                bool((sigma > 0).any()), list(metrics), n_boot=n_boot, seed=seed)
    sig_of = dict(zip(sub["run_dir"], sigma))
    for m in metrics:
        have = {}
        for d in tab.runs["run_dir"]:
            x, why = _values(tab, values, d, m, float(sig_of[d]))
            if x is None or not np.isfinite(x).all():
                tab.stats[(d, m)] = {"na": why}
                continue
            mean, lo, hi, kind = mean_interval(x, n_boot, cell_seed(seed, tab.dataset, tab.task, *_ident(tab, d),
                                                                    "common", m))
            tab.stats[(d, m)] = {"mean": mean, "lo": lo, "hi": hi, "kind": kind}
            have[d] = x
        if ranked(m, tab.noisy) and len(have) >= 2:
            tab.pvalues[m] = _pairs(tab, have, m)
    return tab


def _pairs(tab: Table, have: dict, metric: str) -> dict:
    keys = list(have)
    pairs = [(a, b) for k, a in enumerate(keys) for b in keys[k + 1:]]
    ps = [sign_flip_p(have[a] - have[b], cell_seed(tab.seed, "signflip", tab.dataset, tab.task, *_ident(tab, a),
                                                   *_ident(tab, b), metric)) for a, b in pairs]
    out = {}
    for (a, b), p, adj in zip(pairs, ps, holm(ps)):
        out[(a, b)] = {"p": p, "p_holm": adj, "d": have[a] - have[b]}
        out[(b, a)] = {"p": p, "p_holm": adj, "d": have[b] - have[a]}
    return out


# --------------------------------------------------------------------------- verdicts in words
def fmt_value(metric: str, v: float) -> str:
    return f"{v:{DIGITS[metric]}}{UNITS.get(metric, '')}"


def fmt_delta(metric: str, v: float) -> str:
    return f"{v:+{DIGITS[metric]}}{UNITS.get(metric, '')}"


def _significance(tab: Table, t: dict, metric: str) -> str:
    if t["identical"]:
        return "identical values on every image"
    if t["significant"]:
        return f"significant, Holm-adjusted p = {t['p_holm']:.3g}"
    if tab.unreachable(metric):
        return f"not significant: at n = {tab.n} no test of this table can reach p < {ALPHA:g}"
    return f"not significant at n = {tab.n}, Holm-adjusted p = {t['p_holm']:.2g}"


def _better(metric: str) -> str:
    return "lower" if LOWER_IS_BETTER[metric] else "higher"


def verdict(tab: Table, metric: str) -> str | None:
    """One sentence on ``metric``: the best run and its lead over the runner-up, and how the runs fare against
    the baseline (runs with identical values on every image tie)."""
    order = tab.order(metric)
    if not ranked(metric, tab.noisy) or len(order) < 2:
        return None
    name, best = NAMES[metric], order[0]
    top = [d for d in order if d == best or tab.test(d, best, metric)["identical"]]
    rest = [d for d in order if d not in top]
    where = f"on the {tab.n} common images" if tab.n != 1 else "on the only common image"
    who = (tab.name(best) if len(top) == 1 else
           "a tie between " + " and ".join(tab.name(d) for d in top) + " (identical values on every image)")
    lead = ""
    if rest:
        t = tab.test(best, rest[0], metric)
        twins = [tab.name(d) for d in rest[1:] if tab.test(d, rest[0], metric)["identical"]]
        lead = (f", {fmt_delta(metric, t['mean'])} over the runner-up {tab.name(rest[0])}"
                + (f" (tied with {' and '.join(twins)})" if twins else "") + f" ({_significance(tab, t, metric)})")
    base = tab.baseline()
    if base is not None and base in top:
        return (f"No method beats the baseline ({tab.name(base)}) on {name} ({_better(metric)} is better): "
                f"best {where} is {who} with {fmt_value(metric, tab.mean(best, metric))}{lead}.")
    value = fmt_value(metric, tab.mean(best, metric))
    text = f"Best {name} ({_better(metric)} is better) {where}: {who}, {value}{lead}"
    if base is None or base not in order:
        return text + "."
    beat = [d for d in order if d != base and _beats(tab, d, base, metric)]
    sig = [d for d in beat if tab.test(d, base, metric)["significant"]]
    return text + (f"; {len(beat)} of {len(order) - 1} runs beat the baseline {tab.name(base)} on average, "
                   + (f"significantly: {', '.join(tab.name(d) for d in sig)}" if sig else "none significantly")
                   + ".")


def _beats(tab: Table, a: str, b: str, metric: str) -> bool:
    d = tab.mean(a, metric) - tab.mean(b, metric)
    return d < 0 if LOWER_IS_BETTER[metric] else d > 0
