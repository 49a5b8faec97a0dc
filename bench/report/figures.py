"""Figures: quality-vs-throughput per (dataset, task) like Liu's Fig. 7, and sample grids.

* :func:`tradeoff_figure`: one line per method variant across its step counts, x = throughput (images/s,
  log scale), y = FID. When no run of the task has an FID the y axis is PSNR (then LOE / NIQE for unpaired
  low-light data) and the axis label and caption say so: a missing FID is never drawn as a number.
* :func:`sample_grid`: rows = up to ``max_rows`` image ids common to the runs, columns = ground truth,
  degraded input, then one column per method variant (its run with the most steps), built from the saved
  PNGs; small degraded inputs are upsampled nearest-neighbour to the output size. Pillow only, no
  timestamps, so the bytes depend only on the inputs.

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
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from bench.imageio import atomic_write_bytes  # noqa: E402

#: (column, axis label, lower is better) in order of preference for the y axis
Y_CHOICES = (("fid", "FID", True), ("psnr_mean", "PSNR (dB)", False), ("loe_mean", "LOE", True),
             ("niqe_mean", "NIQE", True))
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


def pick_y(df: pd.DataFrame) -> tuple[str, str, bool] | None:
    for col, label, lower in Y_CHOICES:
        if col in df and pd.to_numeric(df[col], errors="coerce").replace([np.inf, -np.inf], np.nan).notna().any():
            return col, label, lower
    return None


def tradeoff_figure(df: pd.DataFrame, base: Path, fid_reason: str = "") -> tuple[Path, Path, str]:
    """Plot the runs of one (dataset, task); returns (png, svg, caption)."""
    dataset, task = str(df["dataset"].iloc[0]), str(df["task"].iloc[0])
    choice = pick_y(df)
    x = pd.to_numeric(df["images_per_s"], errors="coerce")
    with matplotlib.rc_context(RC):
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        if choice is None:
            ax.text(0.5, 0.5, "no metric available", ha="center", va="center", transform=ax.transAxes)
            caption = f"{dataset}/{task}: no metric with a value to plot against throughput."
            ylabel = "(no metric)"
        else:
            col, ylabel, lower = choice
            if col != "fid":
                ylabel = f"{ylabel} - FID unavailable, {ylabel.split()[0]} shown instead"
            ok = x.gt(0) & np.isfinite(x) & pd.to_numeric(df[col], errors="coerce").notna()
            for variant, g in df[ok].groupby("variant", sort=True):
                g = g.assign(_x=x[g.index]).sort_values("_x")
                ax.plot(g["_x"], pd.to_numeric(g[col]), marker="o", label=str(variant))
                for _, r in g.iterrows():
                    if not pd.isna(r["steps"]):
                        ax.annotate(str(int(r["steps"])), (r["_x"], r[col]), textcoords="offset points",
                                    xytext=(3, 3), fontsize=7)
            dropped = int((~ok).sum())
            caption = (f"{dataset}/{task}: {ylabel.split(' - ')[0]} ({'lower' if lower else 'higher'} is better) "
                       f"vs throughput (images/s, log scale); one line per method across step counts "
                       f"(labels = steps).")
            if col != "fid":
                why = "see the FID column of the table" if fid_reason else "no run has an FID"
                caption += f" FID is unavailable ({why}), so {ylabel.split()[0]} is plotted instead; " \
                           "this is not an FID plot."
            if dropped:
                caption += f" {dropped} run(s) without a finite throughput or value are not shown."
            if ok.any():
                ax.set_xscale("log")
                ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("throughput (images/s, log scale)")
        ax.set_ylabel(ylabel if len(ylabel) < 40 else ylabel.replace(" - ", "\n"))
        ax.set_title(f"{dataset} / {task}")
        ax.grid(True, which="both", alpha=0.3)
        png, svg = _save(fig, base)
    return png, svg, caption


# --------------------------------------------------------------------------- sample grid
def _font():
    try:
        return ImageFont.load_default(size=10)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(draw, text: str, width: int, font, max_lines: int = 6) -> list[str]:
    """Greedy word wrap to ``width`` pixels (words longer than a line are broken by character)."""
    lines, cur = [], ""
    for word in text.split(" "):
        trial = f"{cur} {word}" if cur else word
        if draw.textlength(trial, font=font) <= width - 4:
            cur = trial
            continue
        if cur:
            lines.append(cur)
        cur = ""
        for ch in word:
            if cur and draw.textlength(cur + ch, font=font) > width - 4:
                lines.append(cur)
                cur = ""
            cur += ch
    return (lines + [cur])[:max_lines]


def _tile(path: Path | None, size: tuple[int, int]) -> Image.Image:
    w, h = size
    if path is None or not path.is_file():
        tile = Image.new("RGB", (w, h), (128, 128, 128))
        ImageDraw.Draw(tile).text((3, h // 2 - 6), "n/a", fill=(255, 255, 255), font=_font())
        return tile
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (w, h):
            smaller = im.size[0] <= w and im.size[1] <= h
            im = im.resize((w, h), Image.Resampling.NEAREST if smaller else Image.Resampling.BOX)
        return im.copy()


LINE_H = 12  # pixels per label line above the tiles
GRID_MAX_TILE = 256  # tiles larger than this (long side) are box-downscaled to keep the PNG small


def grid_header_height(n_lines: int) -> int:
    return 4 + LINE_H * n_lines


def grid_ids(runs, max_rows: int) -> list[str]:
    common = set(runs[0].ids)
    for r in runs[1:]:
        common &= set(r.ids)
    return sorted(common)[:max_rows]


def sample_grid(columns: list[tuple[str, object]], ref_dir: Path | None, out: Path, max_rows: int = 4) -> Path:
    """``columns``: (label, Run) per method; writes the grid PNG to ``out`` and returns it."""
    runs = [r for _, r in columns]
    ids = grid_ids(runs, max_rows)
    with Image.open(runs[0].dir / "images" / f"{ids[0]}.png") as im:
        w, h = im.size
    if max(w, h) > GRID_MAX_TILE:
        s = GRID_MAX_TILE / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    labels = ["ground truth", "degraded"] + [lab for lab, _ in columns]
    font = _font()
    wrapped = [_wrap(ImageDraw.Draw(Image.new("RGB", (1, 1))), lab, w, font) for lab in labels]
    header = grid_header_height(max(len(x) for x in wrapped))
    grid = Image.new("RGB", (w * len(labels), header + h * len(ids)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((c * w + 2, 2 + LINE_H * k), line, fill=(0, 0, 0), font=font)
    for r, i in enumerate(ids):
        y0 = header + r * h
        cells = [ref_dir / f"{i}.png" if ref_dir is not None else None, runs[0].dir / "degraded" / f"{i}.png"]
        cells += [run.dir / "images" / f"{i}.png" for run in runs]
        for c, p in enumerate(cells):
            grid.paste(_tile(p, (w, h)), (c * w, y0))
        draw.text((2, y0 + 2), i, fill=(255, 255, 0), font=font)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(out, buf.getvalue())
    return out


def fid_unavailable_reason(df: pd.DataFrame) -> str:
    reasons = [str(x) for x in df.get("fid_na", pd.Series(dtype=str)).tolist() if isinstance(x, str) and x]
    return reasons[0] if reasons else ""
