"""Markdown per (dataset, task): our table on the common images, the paired differences, their notes.

:func:`our_cells` - one row per compared run (duplicates collapsed, code versions apart): method, settings
("official settings" or "tuned on <split> (<n> trials)", :func:`bench.tuned.label`; a preset tuned on a test
split is marked ⚠ and :func:`settings_caption` says so loudly), steps, NFE/img, the context columns that
differ between rows (prior, sigma, seed, code; constant ones become one line), per metric ``mean ± h`` over
the table's N common images (:mod:`bench.report.compare`: ``h`` = half-width of the 95 % t (n < 30) or BCa
interval), img/s (only for rows with NFE > 0), wall time and peak memory. **Bold** = the best run of a column
when its lead over every other run is significant (paired sign-flip test, Holm over all pairs of the metric);
FID/KID (no per-image values) and unranked columns (the consistency of a noisy task) are never bold;
throughput is bold only among methods with NFE > 0 when the fastest is >= 10 % ahead. A column that is n/a in
every row is dropped and said in one line; a missing asset is named in the table as a short reference to the
report's "Missing assets" list (:class:`Notes`).

:func:`paired_table` - per ranked metric, each run minus the baseline (bicubic) and minus the best run, with
the 95 % interval of the mean difference and the Holm-adjusted sign-flip p; ``*`` = adjusted p < 0.05.

:func:`budget_cells` - the budget view, "Best at <= N NFE": per NFE value N of the section's runs, the best
mean PSNR among the runs with 0 < NFE/img <= N (the baseline as a column), tested as in the table.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from bench.report.compare import DIGITS, NAMES, Table, ranked
from bench.report.dataset_metrics import short_reason
from bench.report.stats import ALPHA, BOOT_MIN_N, EXACT_MAX_N, MC_RESAMPLES, smallest_p

THROUGHPUT_MARGIN = 1.10
_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
HEADERS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "fid": "FID ↓", "kid": "KID ↓",
           "consistency": "‖A(x̂)−y‖²/M ↓", "consistency_gdp": "Consist. (GDP) ↓", "loe": "LOE ↓", "pi": "PI ↓",
           "niqe": "NIQE ↓", "images_per_s": "img/s ↑"}
NOISY_HEADERS = {"consistency": "‖A(x̂)−y‖²/(Mσ²) (≈1 ideal)", "consistency_gdp": "Consist. (GDP), not ranked"}
#: missing assets: (pattern on a reason, short name, what to do); printed once per report
ASSETS = (
    (re.compile(r"LPIPS backbone (\S+) unavailable"), "LPIPS backbone `{0}`",
     "place it in `$BENCH_CACHE` (sha256-checked) or set `metrics.lpips.backbone_path=`, then rerun the cells "
     "with `run.force=true` (LPIPS is stored by the run)"),
    (re.compile(r"Inception weights (\S+) unavailable"), "FID Inception weights `{0}`",
     "place it in `$BENCH_CACHE` or pass `--inception-weights` (FID/KID are computed by the report)"),
    (re.compile(r"NIQE parameters not found"), "NIQE parameters `niqe_pris_params.npz`",
     "pass `--niqe-params` (BasicSR's file)"),
    (re.compile(r"PI needs Ma|NRQM|pyiqa"), "Ma (NRQM) score for PI",
     "`pip install -e \".[pi]\"` (pyiqa) and pass `--nrqm-weights NRQM_model.mat`"),
)


def asset_of(reason: str) -> tuple[str, str] | None:
    """``(short name, fix)`` when ``reason`` is a missing asset, else None."""
    for pattern, name, fix in ASSETS:
        m = pattern.search(str(reason))
        if m:
            return name.format(*m.groups()), fix
    return None


class Notes:
    """Numbered footnotes of one table, one per distinct text; missing assets are collected in ``assets``
    (shared by the report) and referenced by a short footnote."""

    def __init__(self, assets: dict | None = None):
        self.texts: list[str] = []
        self.assets = {} if assets is None else assets

    def mark(self, text: str) -> str:
        text = short_reason(text)
        if text not in self.texts:
            self.texts.append(text)
        return str(self.texts.index(text) + 1).translate(_SUP)

    def reason(self, reason: str) -> str:
        asset = asset_of(reason)
        if asset is None:
            return short_reason(reason or "not computed")
        self.assets.setdefault(asset[0], asset[1])
        return f"missing asset {asset[0]}, see Missing assets"

    def na(self, reason: str) -> str:
        return "n/a" + self.mark(self.reason(reason))

    def lines(self) -> list[str]:
        return [f"{str(i + 1).translate(_SUP)} {t}" for i, t in enumerate(self.texts)]


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt_throughput(x: float) -> str:
    if not math.isfinite(x):
        return "inf" if x == math.inf else "n/a"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def fmt_ci(mean: float, lo: float, hi: float, spec: str) -> str:
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{mean:{spec}} ± {(hi - lo) / 2:{spec}}"
    return f"{mean:{spec}}"


def _fmt_steps(v) -> str:
    return "-" if v is None or pd.isna(v) else str(int(v))


def _fmt_nfe(v) -> str:
    v = _num(v)
    return "n/a" if not math.isfinite(v) else (f"{v:.0f}" if v == int(v) else f"{v:.1f}")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def table_metrics(df: pd.DataFrame, task: str) -> list[str]:
    """Metric columns of the table for ``task`` (consistency only where some run has it)."""
    keys = ["psnr", "ssim", "lpips", "fid", "kid"]
    for k in ("consistency", "consistency_gdp"):
        if f"{k}_mean" in df and pd.to_numeric(df[f"{k}_mean"], errors="coerce").notna().any():
            keys.append(k)
    if task == "lowlight":
        keys += ["loe", "pi"]
    elif "pi_mean" in df and pd.to_numeric(df["pi_mean"], errors="coerce").notna().any():
        keys.append("pi")
    return keys + ["niqe"]


# --------------------------------------------------------------------------- devices and throughput
def device_key(row) -> tuple[str, str]:
    """(device without its thread count, CPU threads) of a run's timing."""
    dev = re.sub(r"\s*\(\d+ threads\)", "", str(row.get("device_name") or "")).strip() or "unknown device"
    return dev, str(row.get("num_threads") or "unknown")


def _timed(df: pd.DataFrame) -> pd.DataFrame:
    return df[(pd.to_numeric(df["nfe_per_image"], errors="coerce") > 0)
              & pd.to_numeric(df["images_per_s"], errors="coerce").notna()]


def majority_device(df: pd.DataFrame) -> tuple[str, str] | None:
    keys = [device_key(r) for _, r in _timed(df).iterrows()]
    return max(sorted(set(keys)), key=keys.count) if keys else None


def throughput_bold(df: pd.DataFrame) -> int | None:
    """Index of the fastest NFE > 0 run when >= THROUGHPUT_MARGIN x the runner-up on the same device/threads."""
    timed = _timed(df)
    major = majority_device(df)
    timed = timed[[device_key(r) == major for _, r in timed.iterrows()]]
    x = pd.to_numeric(timed["images_per_s"], errors="coerce").sort_values(ascending=False)
    return x.index[0] if len(x) >= 2 and x.iloc[0] >= THROUGHPUT_MARGIN * x.iloc[1] else None


# --------------------------------------------------------------------------- our table
def _stat_cell(tab: Table, d: str, key: str, notes: Notes, row) -> str:
    st = tab.stats.get((d, key), {})
    if "mean" not in st:
        return notes.na(st.get("na") or str(row.get(f"{key}_na", "") or "not computed for this task"))
    spec = ".2f" if tab.noisy and key == "consistency" else DIGITS[key]
    text = fmt_ci(st["mean"], st["lo"], st["hi"], spec)
    if key == "psnr" and int(_num(row.get("psnr_capped")) or 0) > 0:
        text += notes.mark("includes images identical to the reference (PSNR = inf), counted as 100 dB")
    return f"**{text}**" if tab.bold(key) == d else text


def _fid_cell(row, key: str, notes: Notes, n: int) -> str:
    if key == "fid":
        if not math.isfinite(_num(row.get("fid"))):
            return notes.na(str(row.get("fid_na", "") or "not computed"))
        text = f"{row['fid']:.2f}"
        if row.get("fid_warning"):
            text += " ⚠" + notes.mark(f"FID from n={int(row['fid_n'])} < 2048 images: biased and noisy "
                                      "(covariance rank <= n-1); compare KID")
    else:
        if not math.isfinite(_num(row.get("kid_mean"))):
            why = row.get("kid_na", "") or row.get("fid_na", "") or "not computed"
            return notes.na(str(row.get("fid_na") or why) if why == "as FID" else str(why))
        sub = row.get("kid_subset_size")
        mark = notes.mark(f"KID: mean ± std over 100 subsets of {int(sub)} images") if not pd.isna(sub) else ""
        text = f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}{mark}"
    if math.isfinite(_num(row.get("fid_n"))) and int(_num(row.get("fid_n"))) != n:
        text += notes.mark("over the run's own images, not the common set (recomputing needs the Inception weights)")
    return text


def _label(row, notes: Notes) -> str:
    text = str(row["label"])
    if not bool(row["complete"]):
        text += f" ⚠ incomplete{notes.mark('incomplete run: fewer images than the dataset/limit')}"
    return text


CONTEXT = (("Prior", "prior", str), ("σ", "task_sigma", lambda v: f"{_num(v):g}"), ("seed", "seed", str),
           ("code", "code_version", str))


def our_cells(tab: Table, notes: Notes) -> tuple[list[str], list[list[str]], list[str]]:
    """Our table of ``tab``: ``(headers, rows of cell texts, lines under the table: dropped columns, constant
    context)``, one row per run of ``tab.runs`` in its order; the markdown and the HTML report render these."""
    df = tab.runs
    keys = table_metrics(df, tab.task)
    headers = ["Method", "Settings", "Steps", "NFE/img"]
    cells = [[_label(r, notes), settings_cell(r), _fmt_steps(r["steps"]), _fmt_nfe(r["nfe_per_image"])]
             for _, r in df.iterrows()]
    under = []
    const = []
    for head, col, fmt in CONTEXT:
        vals = [fmt(v) for v in df[col]]
        if len(set(vals)) > 1:
            headers.append(head)
            for c, v in zip(cells, vals):
                c.append(v)
        else:
            const.append(f"{head} {vals[0]}" if head != "σ" else f"σ = {vals[0]}")
    dropped: dict[str, list[str]] = {}
    for k in keys:
        col = [(_fid_cell(r, k, Notes(), tab.n) if k in ("fid", "kid") else
                _stat_cell(tab, r["run_dir"], k, Notes(), r)) for _, r in df.iterrows()]
        if all(c.startswith("n/a") for c in col):
            reasons = [_na_reason(tab, r, k) for _, r in df.iterrows()]
            why = sorted({notes.reason(x) for x in reasons})
            if all(asset_of(x) for x in reasons):
                why = ["missing assets, see Missing assets"]
            dropped.setdefault("; ".join(why), []).append(HEADERS[k].split()[0] if not (tab.noisy and k in
                                                          NOISY_HEADERS) else NOISY_HEADERS[k].split()[0])
            continue
        headers.append(NOISY_HEADERS[k] if tab.noisy and k in NOISY_HEADERS else HEADERS[k])
        for c, (_, r) in zip(cells, df.iterrows()):
            c.append(_fid_cell(r, k, notes, tab.n) if k in ("fid", "kid") else _stat_cell(tab, r["run_dir"], k,
                                                                                           notes, r))
    major = majority_device(df)
    if major is not None:
        fast = throughput_bold(df)
        headers.append(HEADERS["images_per_s"])
        for c, (i, r) in zip(cells, df.iterrows()):
            c.append(_throughput_cell(r, i == fast, major, notes))
    headers += ["wall (s)", "peak MB"]
    for c, (_, r) in zip(cells, df.iterrows()):
        wall, mem = _num(r.get("wall_seconds")), _num(r.get("peak_memory_mb"))
        c += [f"{wall:.1f}" if math.isfinite(wall) else "n/a", f"{mem:.0f}" if math.isfinite(mem) else "n/a"]
    if const:
        under.append(f"Every row: {', '.join(const)}.")
    under += [f"n/a for every run: {', '.join(cols)} ({why})." for why, cols in dropped.items()]
    return headers, cells, under


def _na_reason(tab: Table, row, key: str) -> str:
    if key in ("fid", "kid"):
        return str(row.get("fid_na") or row.get("kid_na") or "not computed")
    return tab.stats.get((row["run_dir"], key), {}).get("na") or str(row.get(f"{key}_na", "") or "not computed")


def _throughput_cell(row, bold: bool, major: tuple[str, str], notes: Notes) -> str:
    if not _num(row["nfe_per_image"]) > 0:
        return "—"
    text = fmt_throughput(_num(row["images_per_s"]))
    dev, threads = device_key(row)
    if (dev, threads) != major:
        text += " †" + notes.mark(f"measured on {dev} with {threads} CPU threads, not {major[0]} with {major[1]}: "
                                  "not comparable with the other rows")
    return f"**{text}**" if bold else text


def throughput_caption(df: pd.DataFrame) -> str | None:
    major = majority_device(df)
    if major is None:
        return None
    return (f"img/s = images per second of the restore call only (warm-up batch excluded), measured on "
            f"{major[0]} with {major[1]} CPU threads (rows marked † differ); — = no network evaluations (NFE = 0), "
            "not timed as a method.")


def settings_cell(row) -> str:
    """The row's settings label (official runs of older code have no ``settings`` column: official)."""
    text = str(row.get("settings") or "official settings")
    return f"⚠ {text}" if _forced(row) else text


def _forced(row) -> bool:
    v = row.get("tuned_forced_test_split")
    return bool(v) and not pd.isna(v)


def settings_caption(tab: Table) -> tuple[list[str], list[str]]:
    """``(caption sentences, warnings)`` on where the rows' settings came from; both empty when every row
    used official settings. Warnings (one per row tuned on a test split) go at the top of the section."""
    df = tab.runs
    if "settings" not in df or not (df["settings"].astype(str) != "official settings").any():
        return [], []
    forced = [tab.name(d) for d, (_, r) in zip(df["run_dir"], df.iterrows()) if _forced(r)]
    tuned = [r for _, r in df.iterrows() if str(r["settings"]) != "official settings" and not _forced(r)]
    splits = sorted({str(r.get("tuned_split") or "?") for r in tuned})
    text = ("Settings: `official settings` = the method's own hyper-parameters (its YAML); `tuned on <split> (<n> "
            "trials)` = a preset found by `python -m bench.tune` in <n> trials on a validation split")
    if splits:
        text += (f"; the tuned rows' settings were chosen on {', '.join(f'`{x}`' for x in splits)}, a split "
                 "disjoint from the test images compared here")
    text += " (each preset's sha256: `tuned_sha256` in `runs.csv`)."
    if not forced:
        return [text], []
    names = " and ".join(forced)
    splits = sorted({str(r.get("tuned_split") or "?") for _, r in df.iterrows() if _forced(r)})
    return [text, f"⚠ = tuned on a TEST split, not a validation split ({names}): see the warning above."], [
        f"> ⚠ **Tuned on a TEST split: {names}.** The preset was chosen on the test split "
        f"{', '.join(f'`{x}`' for x in splits)} (forced with `tune.allow_test_split=true`), which may be the very "
        "images compared here: its numbers are optimistic, not a fair comparison with the other rows."]


def common_caption(tab: Table) -> list[str]:
    """Which images the table compares on, and which runs hold more (or were left out)."""
    n, k = tab.n, len(tab.runs)
    out = [f"Compared on the **N = {n}** image{'s' if n != 1 else ''} common to all {k} runs"
           + (f" ({', '.join(tab.common)})" if n <= 8 else "") + ": every mean, interval, rank, bold, difference and "
           "verdict of this section uses exactly these images."]
    more = [(tab.name(d), int(c)) for d, c in zip(tab.runs["run_dir"], tab.runs["n_images"]) if int(c) != n]
    if more:
        out.append("Runs holding other images too (not used here): "
                   + ", ".join(f"{name} ({c} images)" for name, c in more) + ".")
    if len(tab.left_out):
        out.append("Left out (no image in common with the others): "
                   + ", ".join(f"{r['label']} ({int(r['n_images'])} images)" for _, r in tab.left_out.iterrows())
                   + ".")
    return out


# --------------------------------------------------------------------------- paired comparisons
def paired_metrics(tab: Table) -> list[str]:
    return [m for m in tab.metrics if ranked(m, tab.noisy) and tab.n_pairs(m) > 0]


def significance_caption(tab: Table) -> str:
    n = tab.n
    method = (f"exact over all 2^{n} sign patterns" if n <= EXACT_MAX_N else
              f"seeded Monte Carlo, {MC_RESAMPLES} sign patterns")
    kind = "Student t" if n < BOOT_MIN_N else "BCa bootstrap"
    pairs = sorted({tab.n_pairs(m) for m in paired_metrics(tab)})
    plural = "s" if pairs != [1] else ""
    text = (f"Paired over the N = {n} common images; p = two-sided sign-flip (permutation) test of the mean difference "
            f"({method}), Holm-adjusted over the {' / '.join(map(str, pairs))} pair{plural} of runs of each metric; "
            f"`*` = adjusted p < {ALPHA:g}; intervals: 95 % {kind} of the mean difference, not adjusted.")
    if smallest_p(n) >= ALPHA:
        text += f" At n = {n} the smallest possible p is {smallest_p(n):.3g}: no difference can be significant."
    elif pairs and smallest_p(n) * max(pairs) >= ALPHA:
        text += f" At n = {n} with {max(pairs)} pairs no adjusted p can fall below {ALPHA:g}."
    return text


def paired_table(tab: Table) -> str | None:
    """Differences to the baseline and to the best run per ranked metric (None if nothing to compare)."""
    cells = paired_cells(tab)
    return markdown_table(*cells) if cells else None


def paired_cells(tab: Table) -> tuple[list[str], list[list[str]]] | None:
    """``(headers, rows)`` of :func:`paired_table` (one row per run of ``tab.runs``), or None."""
    cols = []
    base = tab.baseline()
    for m in paired_metrics(tab):
        best = tab.best(m)
        for name, ref in (("baseline", base), ("best", best)):
            if ref is None or (name == "best" and ref == base):
                continue  # no such run, or the best run is the baseline (its column already says it)
            cols.append((m, ref, f"Δ{HEADERS[m].split()[0]} vs {name} ({tab.name(ref)})"))
    if not cols:
        return None
    rows = []
    for d in tab.runs["run_dir"]:
        r = tab.row(d)
        cells = [str(tab.name(d)) + ("" if r["complete"] else " ⚠"), _fmt_steps(r["steps"])]
        for m, ref, _ in cols:
            t = tab.test(d, ref, m) if d != ref else None
            cells.append("(reference)" if d == ref else "n/a" if t is None else _diff_cell(t, m))
        rows.append(cells)
    return ["Method", "Steps"] + [h for _, _, h in cols], rows


def _diff_cell(t: dict, m: str) -> str:
    if t["identical"]:
        return "0 (identical)"
    d = "+" + DIGITS[m]
    ci = f" [{t['lo']:{d}}, {t['hi']:{d}}]" if math.isfinite(t["lo"]) else ""
    return f"{t['mean']:{d}}{ci} p={t['p_holm']:.2g}{' *' if t['significant'] else ''}"


def table_notes(df: pd.DataFrame) -> list[str]:
    """Footnotes for one (dataset, task) table: non-standard extractors / LPIPS backbones."""
    from bench.metrics.fid import INCEPTION_SHA256

    notes = []
    for _, row in df.iterrows():
        sha = row.get("fid_extractor_sha256") or ""
        if isinstance(sha, str) and sha and sha != INCEPTION_SHA256:
            notes.append(f"FID/KID of `{row['label']}` used Inception weights with sha256 {sha[:16]}... "
                         f"(not the official {INCEPTION_SHA256[:16]}...): not comparable with published FIDs")
        if row.get("lpips_standard") is False:
            notes.append(f"LPIPS of `{row['label']}` used a backbone that is not torchvision's official file "
                         f"(sha256 {str(row.get('lpips_backbone_sha256', ''))[:16]}...): not comparable")
    return list(dict.fromkeys(notes))


# --------------------------------------------------------------------------- the budget view
def budgets(tab: Table) -> list:
    """The section's NFE budgets: the distinct NFE/img values (> 0) of its runs that have a mean PSNR on the
    common images, ascending."""
    have = set(tab.order("psnr")) if "psnr" in tab.metrics else set()
    return sorted({v for d, v in zip(tab.runs["run_dir"], tab.runs["nfe_per_image"])
                   if d in have and math.isfinite(_num(v)) and _num(v) > 0}, key=_num)


def _lead(tab: Table, a: str, b: str) -> str:
    t = tab.test(a, b, "psnr")
    if t["identical"]:
        return f"tie with {tab.name(b)} (identical values)"
    return f"{t['mean']:+.2f} dB over {tab.name(b)} (p={t['p_holm']:.2g}{' *' if t['significant'] else ''})"


def budget_cells(tab: Table) -> tuple[list[str], list[list[str]], str] | None:
    """"Best at <= N NFE": per budget N (:func:`budgets`), the run with the best mean PSNR on the common images
    among the runs that spent 0 < NFE/img <= N, with its settings, its lead over the runner-up within the
    budget and its difference to the baseline (NFE = 0: within every budget, so it is a column, not a
    candidate), both with the table's Holm-adjusted sign-flip p. ``(headers, rows, caption)``, or None below two
    budgets."""
    bud = budgets(tab)
    if len(bud) < 2:
        return None
    nfe = {d: _num(v) for d, v in zip(tab.runs["run_dir"], tab.runs["nfe_per_image"])}
    order = tab.order("psnr")  # best first
    base = tab.baseline()
    base = base if base in order else None
    rows = []
    for n in bud:
        within = [d for d in order if 0 < nfe[d] <= _num(n) + 1e-9]
        best, r = within[0], tab.row(within[0])
        st = tab.stats[(best, "psnr")]
        row = [f"≤ {_fmt_nfe(n)}", tab.name(best), settings_cell(r), _fmt_steps(r["steps"]),
               _fmt_nfe(r["nfe_per_image"]), fmt_ci(st["mean"], st["lo"], st["hi"], DIGITS["psnr"]),
               _lead(tab, best, within[1]) if len(within) > 1 else "— (the only run)"]
        rows.append(row + ([_lead(tab, best, base).replace(f" over {tab.name(base)}", "")] if base else [])
                    + [str(len(within))])
    caption = (f"Per NFE budget N (the NFE/img values of this section's runs, as measured by their timing), the run "
               f"with the highest mean PSNR on the n = {tab.n} common images among the runs that used at most N "
               "network evaluations per image, with its settings; ± = the 95 % interval of the table; differences "
               "are mean paired differences on the same images, p = the Holm-adjusted sign-flip p of the table "
               "above (`*` < 0.05)" + (f"; the baseline {tab.name(base)} (NFE = 0) is a column, not a candidate."
                                       if base else "."))
    head = ["NFE budget", "Best (PSNR)", "Settings", "Steps", "NFE/img", HEADERS["psnr"], "Lead over the runner-up"]
    head += [f"vs baseline ({tab.name(base)})"] if base else []
    return head + ["Runs within budget"], rows, caption


__all__ = ["ASSETS", "HEADERS", "NAMES", "Notes", "THROUGHPUT_MARGIN", "asset_of", "budget_cells",
           "budgets", "our_cells", "paired_cells",
           "common_caption",
           "markdown_table", "paired_table", "settings_caption", "settings_cell", "significance_caption",
           "table_metrics", "table_notes", "throughput_caption"]
