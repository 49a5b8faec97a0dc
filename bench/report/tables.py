"""Markdown tables per (dataset, task): ours with the papers' values in the same rows, and paired comparisons.

:func:`our_table` - one row per shown run (duplicates collapsed, code versions apart; paper-only methods as
extra rows), columns: method, steps, NFE/img, prior, task sigma, then per metric ``ours`` followed by one
column per paper source that reports it (labelled ``[Liu T1]``, ``[GDP]``; protocol in the caption), then
img/s, wall time, peak memory, N finished / expected, seed, code version. Per-image metrics are
``mean ± h`` (``h`` = half-width of the 95 % BCa interval). **Bold** = the best complete run of a column,
only when its paired difference to the runner-up is significant (CI excludes 0); FID/KID (no per-image
values) are never bold; throughput is bold only among methods with NFE > 0 and when the fastest is >= 10 %
ahead. Incomplete runs are marked and never bold. A missing value is ``n/a`` plus a footnote number, one
footnote per distinct reason (:class:`Notes`).

:func:`paired_table` - for every run, the mean per-image difference to the task's baseline (bicubic) and to
the best run of each per-image metric, with the paired 95 % BCa interval; ``*`` = the interval excludes 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.aggregate import LOWER_IS_BETTER
from bench.report.dataset_metrics import short_reason
from bench.report.stats import cell_seed, paired_diff

#: format spec per metric (consistency in [0, 1] units spans decades: scientific)
DIGITS = {"psnr": ".2f", "ssim": ".3f", "lpips": ".3f", "consistency": ".2e", "consistency_psnr": ".2f",
          "consistency_gdp": ".2f", "loe": ".1f", "niqe": ".2f", "pi": ".2f"}
PAPER_CSV = Path(__file__).with_name("paper_values.csv")
#: our column -> the paper_values.csv column holding the same quantity
PAPER_COLUMN = {"psnr": "PSNR", "ssim": "SSIM", "fid": "FID", "loe": "LOE", "pi": "PI",
                "consistency_gdp": "consistency", "images_per_s": "throughput"}
HEADERS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "fid": "FID ↓", "kid": "KID ↓",
           "consistency": "‖A(x̂)−y‖²/M ↓", "consistency_gdp": "Consist. (GDP) ↓", "loe": "LOE ↓",
           "pi": "PI ↓", "niqe": "NIQE ↓", "images_per_s": "img/s ↑"}
THROUGHPUT_MARGIN = 1.10
_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
BASELINE = "bicubic"


def paper_source_label(source: str) -> str:
    if source.startswith("Liu Table "):
        return f"Liu T{source.split()[-1]}"
    return "GDP" if source.startswith("GDP") else source


#: protocol of each paper source: images, units of sigma, prior (printed once per table)
PAPER_PROTOCOL = {
    "Liu": "2000 ImageNet-1K val images at 256x256, 100 steps, A4000 GPU; noise sigma in [-1, 1] units (half of "
           "it in our [0, 1] units); priors: guided-diffusion 256x256 unconditional ADM (DDRM), CompVis LDM-SR 4x "
           "(SRLDM)",
    "GDP ImageNet linear": "ImageNet-1k val (1000 images) at 256x256, noiseless; prior: guided-diffusion 256x256 "
                           "unconditional ADM, 1000 DDPM steps; consistency = its evaluations/cal_all_metrics.py "
                           "(our `Consist. (GDP)` column)",
    "GDP LOL": "LOL eval15 (15 real low/normal-light pairs, 600x400); prior: guided-diffusion 256x256 unconditional "
               "ADM, patch-wise sampling; PI = PIRM (NIQE and Ma)",
}


class Notes:
    """Numbered footnotes, one per distinct text."""

    def __init__(self):
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        text = short_reason(text)
        if text not in self.texts:
            self.texts.append(text)
        return str(self.texts.index(text) + 1).translate(_SUP)

    def na(self, reason: str) -> str:
        return "n/a" + self.mark(reason or "not computed")

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
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


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


# --------------------------------------------------------------------------- papers
def load_paper_values(path: Path = PAPER_CSV) -> pd.DataFrame:
    """The transcribed values as text (exactly as printed; empty = not reported)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def paper_sources(pv: pd.DataFrame, task: str, key: str) -> list[str]:
    col = PAPER_COLUMN.get(key)
    if col is None:
        return []
    sub = pv[(pv["task"] == task) & (pv[col] != "")]
    return list(dict.fromkeys(sub["source"]))


def paper_value(pv: pd.DataFrame, task: str, method: str, source: str, key: str) -> str:
    sub = pv[(pv["task"] == task) & (pv["method"] == method) & (pv["source"] == source)]
    return (sub.iloc[0][PAPER_COLUMN[key]] or "-") if len(sub) else "-"


# --------------------------------------------------------------------------- bold with significance
def bold_rows(df: pd.DataFrame, key: str, values: dict, n_boot: int, seed: int) -> set:
    """Index labels of ``df`` to bold in column ``key`` (see the module docstring)."""
    ok = df[df["complete"].astype(bool)]
    if key == "images_per_s":
        ok = ok[pd.to_numeric(ok["nfe_per_image"], errors="coerce") > 0]
        x = pd.to_numeric(ok[key], errors="coerce").replace(np.inf, np.nan).dropna().sort_values(ascending=False)
        if len(x) >= 2 and x.iloc[0] >= THROUGHPUT_MARGIN * x.iloc[1]:
            return {x.index[0]}
        return set()
    col = f"{key}_mean"
    if col not in ok:
        return set()
    x = pd.to_numeric(ok[col], errors="coerce").dropna()
    if len(x) < 2:
        return set()
    x = x.sort_values(ascending=LOWER_IS_BETTER[key])
    best, second = x.index[0], x.index[1]
    a, b = values[ok.loc[best, "run_dir"]].get(key, {}), values[ok.loc[second, "run_dir"]].get(key, {})
    r = paired_diff(a, b, n_boot, cell_seed(seed, "bold", ok.loc[best, "dataset"], ok.loc[best, "task"],
                                             ok.loc[best, "label"], ok.loc[second, "label"], key))
    return {best} if r["significant"] else set()


# --------------------------------------------------------------------------- our table
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


def _metric_cell(row, key: str, notes: Notes) -> str:
    if key == "fid":
        if not math.isfinite(_num(row.get("fid"))):
            return notes.na(str(row.get("fid_na", "") or "not computed"))
        text = f"{row['fid']:.2f}"
        if row.get("fid_warning"):
            n = int(row["fid_n"])
            text += " ⚠" + notes.mark(f"FID from n={n} < 2048 images: biased and noisy (covariance rank <= n-1); "
                                      "compare KID")
        return text
    if key == "kid":
        if not math.isfinite(_num(row.get("kid_mean"))):
            why = row.get("kid_na", "") or row.get("fid_na", "") or "not computed"
            return notes.na(str(row.get("fid_na") or why) if why == "as FID" else str(why))
        sub = row.get("kid_subset_size")
        mark = notes.mark(f"KID: mean ± std over 100 subsets of {int(sub)} images") if not pd.isna(sub) else ""
        return f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}{mark}"
    mean = _num(row.get(f"{key}_mean"))
    if not math.isfinite(mean):
        return notes.na(str(row.get(f"{key}_na", "") or "not computed for this task"))
    text = fmt_ci(mean, _num(row.get(f"{key}_ci_lo")), _num(row.get(f"{key}_ci_hi")), DIGITS[key])
    if key == "psnr" and int(_num(row.get("psnr_capped")) or 0) > 0:
        text += notes.mark("includes images identical to the reference (PSNR = inf), counted as 100 dB")
    return text


def _label(row, notes: Notes) -> str:
    text = str(row["label"])
    if not bool(row["complete"]):
        text += f" ⚠ incomplete{notes.mark('incomplete run: fewer images than the dataset/limit; never bold')}"
    return text


def our_table(df: pd.DataFrame, pv: pd.DataFrame, values: dict, notes: Notes, n_boot: int = 1000,
              seed: int = 0) -> str:
    """Markdown table of the shown runs of one (dataset, task) with the papers' values in the same rows."""
    df = df.reset_index(drop=True)
    task = str(df["task"].iloc[0])
    keys = table_metrics(df, task)
    bold = {k: bold_rows(df, k, values, n_boot, seed) for k in keys + ["images_per_s"] if k not in ("fid", "kid")}
    headers = ["Method", "Steps", "NFE/img", "Prior", "σ"]
    cols: list[tuple[str, str | None]] = []  # (metric key, paper source or None = ours)
    for k in keys + ["images_per_s"]:
        cols.append((k, None))
        cols += [(k, s) for s in paper_sources(pv, task, k)]
    headers += [HEADERS[k] if s is None else f"{HEADERS[k].split()[0]} [{paper_source_label(s)}]" for k, s in cols]
    headers += ["wall (s)", "peak MB", "N", "seed", "code"]
    rows = []
    for i, row in df.iterrows():
        cells = [_label(row, notes), _fmt_steps(row["steps"]), _fmt_nfe(row["nfe_per_image"]), str(row["prior"]),
                 f"{_num(row['task_sigma']):g}"]
        for k, s in cols:
            if s is not None:
                cells.append(paper_value(pv, task, str(row["method"]), s, k))
                continue
            c = fmt_throughput(_num(row["images_per_s"])) if k == "images_per_s" else _metric_cell(row, k, notes)
            cells.append(f"**{c}**" if i in bold.get(k, set()) else c)
        wall, mem = _num(row.get("wall_seconds")), _num(row.get("peak_memory_mb"))
        cells += [f"{wall:.1f}" if math.isfinite(wall) else "n/a", f"{mem:.0f}" if math.isfinite(mem) else "n/a",
                  f"{int(row['n_images'])}/{int(row['n_expected'])}", str(row["seed"]), str(row["code_version"])]
        rows.append(cells)
    ours = set(df["method"].astype(str))
    for method in dict.fromkeys(pv[pv["task"] == task]["method"]):
        if method in ours:
            continue
        cells = [f"{method} (paper only)", "", "", "", ""]
        for k, s in cols:
            cells.append("—" if s is None else paper_value(pv, task, method, s, k))
        rows.append(cells + ["", "", "", "", ""])
    return markdown_table(headers, rows)


def caption(df: pd.DataFrame, pv: pd.DataFrame, conventions: list[str]) -> list[str]:
    """Lines under a table: the metric conventions used and the papers' protocols (with citations)."""
    task = str(df["task"].iloc[0])
    out = [f"Conventions of this table: {'; '.join(conventions)}."]
    sources = list(dict.fromkeys(pv[pv["task"] == task]["source"]))
    for s in sources:
        cite = pv[(pv["source"] == s) & (pv["task"] == task)].iloc[0]["citation"]
        proto = PAPER_PROTOCOL["Liu" if s.startswith("Liu") else s] if (s.startswith("Liu") or s in PAPER_PROTOCOL) \
            else "as in the citation"
        out.append(f"[{paper_source_label(s)}] {cite}; protocol: {proto}.")
    if any(s.startswith("Liu") for s in sources):
        sig = sorted({_num(v) for v in df["task_sigma"] if _num(v) > 0})
        if sig:
            conv = ", ".join(f"our {v:g} in [0, 1] units = Liu's {2 * v:g} in [-1, 1] units" for v in sig)
            out.append(f"Noise sigma: {conv} (docs/datasets-and-tasks.md \"Task conventions\": this reading reproduces Liu's "
                       "baseline row).")
    return out


# --------------------------------------------------------------------------- paired comparisons
def paired_table(df: pd.DataFrame, values: dict, metrics: list[str], n_boot: int = 1000, seed: int = 0) -> str | None:
    """Differences to the baseline and to the best run per per-image metric (None if nothing to compare)."""
    df = df.reset_index(drop=True)
    metrics = [m for m in metrics if sum(bool(values[d].get(m)) for d in df["run_dir"]) >= 2]
    if not metrics:
        return None
    base = df[df["method"] == BASELINE]
    base = base.sort_values(["complete", "n_images"], ascending=False).iloc[0] if len(base) else None
    headers, cols = ["Method", "Steps"], []
    for m in metrics:
        best = df[df["complete"].astype(bool)].copy()
        best["_v"] = pd.to_numeric(best.get(f"{m}_mean"), errors="coerce")
        best = best.dropna(subset=["_v"]).sort_values("_v", ascending=LOWER_IS_BETTER[m])
        best = best.iloc[0] if len(best) else None
        for name, ref in (("baseline", base), ("best", best)):
            if ref is None or (name == "best" and base is not None and ref["run_dir"] == base["run_dir"]):
                continue  # no such run, or the best run is the baseline (its column already says it)
            headers.append(f"Δ{HEADERS.get(m, m).split()[0]} vs {name} ({ref['label']})")
            cols.append((m, ref))
    rows = []
    for _, row in df.iterrows():
        cells = [str(row["label"]) + ("" if row["complete"] else " ⚠"), _fmt_steps(row["steps"])]
        for m, ref in cols:
            if row["run_dir"] == ref["run_dir"]:
                cells.append("(reference)")
                continue
            a, b = values[row["run_dir"]].get(m, {}), values[ref["run_dir"]].get(m, {})
            r = paired_diff(a, b, n_boot, cell_seed(seed, "paired", row["dataset"], row["task"], row["label"],
                                                    row["steps"], ref["label"], ref["steps"], m))
            if not math.isfinite(r["mean"]):
                cells.append("n/a")
                continue
            d = "+" + DIGITS[m]
            ci = f" [{r['lo']:{d}}, {r['hi']:{d}}]" if math.isfinite(r["lo"]) else " (n<2)"
            cells.append(f"{r['mean']:{d}}{ci}{' *' if r['significant'] else ''}")
        rows.append(cells)
    return markdown_table(headers, rows)


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
