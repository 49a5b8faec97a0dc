"""Figures: quality-vs-throughput per (dataset, task) like Liu's Fig. 7 (the sample grid is in :mod:`.grid`).

* :func:`tradeoff_figure`: x = throughput (images/s, log scale), y = FID when some run has one, else PSNR,
  then LPIPS, LOE, NIQE (axis label and caption say which; a missing FID is never drawn as a number). One
  line per method label (code versions apart) across its step counts, duplicates already collapsed; 95 %
  BCa error bars for per-image metrics (FID has no per-image values: no bar); runs without network
  evaluations (NFE = 0, e.g. bicubic) are a horizontal reference line, not a point at 10^5 img/s;
  incomplete runs are drawn hollow.

Determinism: Agg backend, ``svg.hashsalt`` fixed, PNG ``Software`` and SVG ``Date`` metadata removed; every
file is written atomically (rendered into memory, then temp file + rename).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.imageio import atomic_write_bytes  # noqa: E402
from bench.report.grid import MIN_TILE, ZOOM, grid_ids, sample_grid, tile_size  # noqa: E402,F401 (re-exported)

#: (column, axis label, lower is better) in order of preference for the y axis
Y_CHOICES = (("fid", "FID", True), ("psnr_mean", "PSNR (dB)", False), ("lpips_mean", "LPIPS", True),
             ("loe_mean", "LOE", True), ("niqe_mean", "NIQE", True))
RC = {"svg.hashsalt": "bench-report", "font.size": 9, "figure.dpi": 100}


def _save(fig, base: Path) -> tuple[Path, Path]:
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=meta, bbox_inches="tight")
        path = base.with_suffix(f".{ext}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths[0], paths[1]


def _numeric(s) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").replace([np.inf, -np.inf], np.nan)


def pick_y(df: pd.DataFrame) -> tuple[str, str, bool] | None:
    for col, label, lower in Y_CHOICES:
        if col in df and _numeric(df[col]).notna().any():
            return col, label, lower
    return None


def tradeoff_figure(df: pd.DataFrame, base: Path, fid_reason: str = "") -> tuple[Path, Path, str]:
    """Plot the shown runs of one (dataset, task); returns (png, svg, caption)."""
    dataset, task = str(df["dataset"].iloc[0]), str(df["task"].iloc[0])
    choice = pick_y(df)
    x = _numeric(df["images_per_s"])
    nfe = _numeric(df["nfe_per_image"]).fillna(0)
    with matplotlib.rc_context(RC):
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        if choice is None:
            ax.text(0.5, 0.5, "no metric available", ha="center", va="center", transform=ax.transAxes)
            caption = f"{dataset}/{task}: no metric with a value to plot against throughput."
            ylabel = "(no metric)"
        else:
            col, ylabel, lower = choice
            metric = ylabel.split()[0]
            y = _numeric(df[col])
            has_ci = col.endswith("_mean")
            lo = _numeric(df[col.replace("_mean", "_ci_lo")]) if has_ci else pd.Series(np.nan, index=df.index)
            hi = _numeric(df[col.replace("_mean", "_ci_hi")]) if has_ci else pd.Series(np.nan, index=df.index)
            ref = (nfe == 0) & y.notna()
            pts = ~ref & y.notna() & x.gt(0) & x.notna()
            for k, (label, g) in enumerate(df[pts].groupby("label", sort=True)):
                g = g.assign(_x=x[g.index], _y=y[g.index]).sort_values("_x")
                err = np.vstack([(g["_y"] - lo[g.index]).clip(lower=0), (hi[g.index] - g["_y"]).clip(lower=0)])
                color = f"C{k % 10}"
                ax.errorbar(g["_x"], g["_y"], yerr=None if not has_ci else np.nan_to_num(err), color=color,
                            marker="o", capsize=3, label=str(label), linewidth=1.2)
                inc = g[~g["complete"].astype(bool)]
                if len(inc):
                    ax.plot(inc["_x"], inc["_y"], "o", mfc="white", color=color)
                for _, r in g.iterrows():
                    if not pd.isna(r["steps"]):
                        ax.annotate(str(int(r["steps"])), (r["_x"], r["_y"]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7)
            for k, (_, r) in enumerate(df[ref].iterrows()):
                ax.axhline(float(y[r.name]), color="0.35", linestyle=("--", ":", "-.")[k % 3], linewidth=1,
                           label=f"{r['label']} (NFE = 0, reference)")
            caption = (f"{dataset}/{task}: {metric} ({'lower' if lower else 'higher'} is better) vs throughput "
                       f"(images/s, log scale); one line per method across step counts (labels = steps)"
                       + ("; error bars = 95 % BCa intervals over images" if has_ci else "; FID has no per-image "
                          "values, so no error bars") + "; methods without network evaluations (NFE = 0) are "
                       "dashed horizontal reference lines; hollow markers = incomplete runs.")
            if col != "fid":
                why = "see the FID column of the table" if fid_reason else "no run has an FID"
                caption += f" FID is unavailable ({why}), so {metric} is plotted instead; this is not an FID plot."
                ylabel = f"{ylabel} - FID unavailable, {metric} shown instead"
            dropped = int((~(pts | ref)).sum())
            if dropped:
                caption += f" {dropped} run(s) without a finite throughput or value are not shown."
            if pts.any():
                ax.set_xscale("log")
            if pts.any() or ref.any():
                ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("throughput (images/s, log scale)")
        ax.set_ylabel(ylabel if len(ylabel) < 40 else ylabel.replace(" - ", "\n"))
        ax.set_title(f"{dataset} / {task}")
        ax.grid(True, which="both", alpha=0.3)
        png, svg = _save(fig, base)
    return png, svg, caption


def fid_unavailable_reason(df: pd.DataFrame) -> str:
    reasons = [str(x) for x in df.get("fid_na", pd.Series(dtype=str)).tolist() if isinstance(x, str) and x]
    return reasons[0] if reasons else ""
