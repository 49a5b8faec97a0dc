"""Markdown tables: ours per (dataset, task) in the seed papers' layout, and the papers' reported values.

Layouts: Liu (Tables 1-4) ``Method | PSNR | SSIM | FID | Throughput`` plus steps, NFE/image, KID and N;
GDP's LOL table ``PSNR | SSIM | FID | LOE | PI`` (plus NIQE, the computable half of PI) for ``lowlight``.
Per-image metrics are ``mean ± h`` with ``h`` the half-width ``(hi - lo) / 2`` of the 95 % bootstrap interval;
the best value of a column is bold (:data:`HIGHER_IS_BETTER`), ties all bold, only when at least two rows
have a number. A metric that could not be computed is ``n/a (<reason>)``, never a number.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

#: column -> True if larger is better
HIGHER_IS_BETTER = {"psnr_mean": True, "ssim_mean": True, "images_per_s": True, "fid": False, "kid_mean": False,
                    "loe_mean": False, "pi_mean": False, "niqe_mean": False}
DIGITS = {"psnr": 2, "ssim": 3, "loe": 1, "niqe": 2, "pi": 2}
PAPER_CSV = Path(__file__).with_name("paper_values.csv")
PAPER_METRICS = ("PSNR", "SSIM", "FID", "LOE", "PI", "throughput", "consistency")
PAPER_HEADERS = {"PSNR": "PSNR ↑", "SSIM": "SSIM ↑", "FID": "FID ↓", "LOE": "LOE ↓", "PI": "PI ↓",
                 "throughput": "Throughput (img/s) ↑", "consistency": "Consistency ↓"}


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def best_mask(values, higher: bool) -> pd.Series:
    """True where ``values`` holds the best finite value (max if ``higher`` else min); needs >= 2 numbers."""
    s = pd.Series([_num(v) for v in values], index=getattr(values, "index", None), dtype="float64")
    ok = s.notna() & ~np.isinf(s) | (higher & np.isposinf(s))
    if ok.sum() < 2:
        return pd.Series(False, index=s.index)
    best = s[ok].max() if higher else s[ok].min()
    return ok & (s == best)


def fmt_throughput(x: float) -> str:
    if not math.isfinite(x):
        return "inf" if x == math.inf else "n/a (no timing file)"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_ci(mean: float, lo: float, hi: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"
    return f"{mean:.{digits}f}"


def na(reason: str) -> str:
    return f"n/a ({reason})" if reason else "n/a"


def _cell_ci(row, m: str) -> str:
    if f"{m}_mean" not in row or not math.isfinite(_num(row[f"{m}_mean"])):
        return na(str(row.get(f"{m}_na", "") or "not computed for this task"))
    return fmt_ci(row[f"{m}_mean"], row[f"{m}_ci_lo"], row[f"{m}_ci_hi"], DIGITS[m])


def _cell_fid(row) -> str:
    if "fid" not in row or not math.isfinite(_num(row["fid"])):
        return na(str(row.get("fid_na", "") or "not computed"))
    text = f"{row['fid']:.2f}"
    if row.get("fid_warning"):
        text += f" (⚠ n={int(row['fid_n'])} < 2048)"
    return text


def _cell_kid(row) -> str:
    if "kid_mean" not in row or not math.isfinite(_num(row["kid_mean"])):
        return na("as FID" if row.get("fid_na") else "not computed")
    return f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}"


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


def columns_for(task: str) -> list[tuple[str, str]]:
    """(header, column key) of our table for ``task``."""
    cols = [("PSNR ↑", "psnr_mean"), ("SSIM ↑", "ssim_mean"), ("FID ↓", "fid")]
    if task == "lowlight":
        cols += [("LOE ↓", "loe_mean"), ("PI ↓", "pi_mean"), ("NIQE ↓", "niqe_mean")]
    return cols + [("Throughput (img/s) ↑", "images_per_s"), ("KID ↓", "kid_mean")]


def our_table(df: pd.DataFrame) -> str:
    """Markdown table of the runs of one (dataset, task), best values bold."""
    df = df.reset_index(drop=True)
    task = str(df["task"].iloc[0])
    cols = columns_for(task)
    bold = {key: best_mask(df[key] if key in df else [math.nan] * len(df), HIGHER_IS_BETTER[key])
            for _, key in cols}
    rows = []
    for i, row in df.iterrows():
        cells = [str(row["variant"]), _fmt_steps(row["steps"]), _fmt_nfe(row["nfe_per_image"])]
        for _, key in cols:
            if key == "fid":
                c = _cell_fid(row)
            elif key == "kid_mean":
                c = _cell_kid(row)
            elif key == "images_per_s":
                c = fmt_throughput(_num(row["images_per_s"]))
            else:
                c = _cell_ci(row, key.removesuffix("_mean"))
            cells.append(f"**{c}**" if bold[key].iloc[i] else c)
        cells.append(str(int(row["n_images"])))
        rows.append(cells)
    headers = ["Method", "Steps", "NFE/img"] + [h for h, _ in cols] + ["N"]
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- papers
def load_paper_values(path: Path = PAPER_CSV) -> pd.DataFrame:
    """The transcribed values as text (exactly as printed; empty = not reported)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def paper_table(pv: pd.DataFrame, task: str) -> str | None:
    """Markdown table + citations of the papers' values for ``task`` (None if no paper reports it)."""
    sub = pv[pv["task"] == task]
    if sub.empty:
        return None
    metrics = [m for m in PAPER_METRICS if (sub[m] != "").any()]
    rows = [[r["source"], r["method"], r["dataset"]] + [r[m] or "-" for m in metrics] for _, r in sub.iterrows()]
    headers = ["Source", "Method", "Dataset"] + [PAPER_HEADERS.get(m, m) for m in metrics]
    cites = sub.drop_duplicates("source")
    lines = [markdown_table(headers, rows), ""]
    lines += [f"- *{r['source']}*: {r['citation']}" for _, r in cites.iterrows()]
    return "\n".join(lines)


def table_notes(df: pd.DataFrame) -> list[str]:
    """Footnotes for one (dataset, task) table: small-sample FID warnings and non-standard extractors."""
    from bench.metrics.fid import INCEPTION_SHA256

    notes = []
    for _, row in df.iterrows():
        if row.get("fid_warning"):
            notes.append(f"FID of `{row['variant']}` (steps {_fmt_steps(row['steps'])}): {row['fid_warning']}")
        sha = row.get("fid_extractor_sha256") or ""
        if sha and sha != INCEPTION_SHA256:
            notes.append(f"FID/KID of `{row['variant']}` used Inception weights with sha256 {sha[:16]}... "
                         f"(not the official {INCEPTION_SHA256[:16]}...): not comparable with published FIDs")
    return list(dict.fromkeys(notes))
