"""The papers' values (``paper_values.csv``) as a compact companion table per (dataset, task).

Each row of ``paper_values.csv`` is one (source, task, method) as printed in the paper, under the task whose
*protocol* produced it (GDP's "Deblur" column is GDP's own blur = ``deblur_gdp``, not DDRM's
``deblur_gauss``), with the experiment preset (``conf/experiment/<experiment>.yaml``) that reproduces it;
``tests/report/test_papers.py`` checks every row against its preset. The companion table sits under our
table (never in its columns): the papers used other images, devices and checkpoints, so it is there to
compare trends, not digits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

__all__ = ["PAPER_CSV", "PAPER_COLUMN", "PAPER_PROTOCOL", "load_paper_values", "paper_caption", "paper_table",
           "source_label"]

PAPER_CSV = Path(__file__).with_name("paper_values.csv")
#: paper_values.csv column -> header of the companion table
PAPER_COLUMN = {"PSNR": "PSNR ↑", "SSIM": "SSIM ↑", "FID": "FID ↓", "LOE": "LOE ↓", "PI": "PI ↓",
                "consistency": "Consist. (GDP) ↓", "throughput": "img/s ↑"}
#: protocol of each paper source: images, units of sigma, prior, device (printed once per table)
PAPER_PROTOCOL = {
    "Liu": "2000 ImageNet-1K val images at 256x256, 100 steps, img/s on an NVIDIA A4000 GPU; noise sigma in "
           "[-1, 1] units (half of it in our [0, 1] units); priors: guided-diffusion 256x256 unconditional ADM "
           "(DDRM), CompVis LDM-SR 4x (SRLDM)",
    "GDP ImageNet linear": "ImageNet-1k val (1000 images) at 256x256, noiseless; prior: guided-diffusion 256x256 "
                           "unconditional ADM, 1000 DDPM steps; consistency = its evaluations/cal_all_metrics.py "
                           "(our `Consist. (GDP)` column)",
    "GDP LOL": "LOL eval15 (15 real low/normal-light pairs, 600x400); prior: guided-diffusion 256x256 unconditional "
               "ADM, patch-wise sampling; PI = PIRM (NIQE and Ma)",
}


def load_paper_values(path: Path = PAPER_CSV) -> pd.DataFrame:
    """The transcribed values as text (exactly as printed; empty = not reported)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def source_label(source: str) -> str:
    if source.startswith("Liu Table "):
        return f"Liu T{source.split()[-1]}"
    return "GDP" if source.startswith("GDP") else source


def _protocol(source: str) -> str:
    return PAPER_PROTOCOL["Liu" if source.startswith("Liu") else source] if (
        source.startswith("Liu") or source in PAPER_PROTOCOL) else "as in the citation"


def paper_table(pv: pd.DataFrame, task: str, ours: set[str]) -> list[str]:
    """Markdown lines of the companion table for ``task`` ([] when no paper reports it): one row per (method,
    source), only the columns some row fills; methods we do not run are marked."""
    from bench.report.tables import markdown_table

    sub = pv[pv["task"] == task]
    if not len(sub):
        return []
    cols = [c for c in PAPER_COLUMN if (sub[c] != "").any()]
    rows = [[str(r["method"]) + ("" if r["method"] in ours else " (not run here)"), source_label(r["source"])]
            + [r[c] or "-" for c in cols] for _, r in sub.iterrows()]
    return [markdown_table(["Method", "Source"] + [PAPER_COLUMN[c] for c in cols], rows)]


def paper_caption(pv: pd.DataFrame, task: str, sigmas: list[float]) -> list[str]:
    """Lines under the companion table: each source's citation and protocol, and the sigma units."""
    sub = pv[pv["task"] == task]
    sources = list(dict.fromkeys(sub["source"]))
    out = [f"[{source_label(s)}] {sub[sub['source'] == s].iloc[0]['citation']}; protocol: {_protocol(s)}."
           for s in sources]
    sig = sorted({v for v in sigmas if math.isfinite(v) and v > 0})
    if any(s.startswith("Liu") for s in sources) and sig:
        conv = ", ".join(f"our {v:g} in [0, 1] units = Liu's {2 * v:g} in [-1, 1] units" for v in sig)
        out.append(f"Noise sigma: {conv} (docs/datasets-and-tasks.md \"Task conventions\": this reading reproduces Liu's baseline row).")
    return out
