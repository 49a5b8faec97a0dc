"""Figures: quality-vs-throughput per (dataset, task) like Liu's Fig. 7, and sample grids.

* :func:`tradeoff_figure`: x = throughput (images/s, log scale), y = FID when some run has one, else PSNR,
  then LPIPS, LOE, NIQE (axis label and caption say which; a missing FID is never drawn as a number). One
  line per method label (code versions apart) across its step counts, duplicates already collapsed; 95 %
  BCa error bars for per-image metrics (FID has no per-image values: no bar); runs without network
  evaluations (NFE = 0, e.g. bicubic) are a horizontal reference line, not a point at 10^5 img/s;
  incomplete runs are drawn hollow.
* :func:`sample_grid`: a dark header band with the column labels (ground truth, degraded input, then one
  column per method label at its largest step count), tiles upscaled nearest-neighbour to at least
  :data:`MIN_TILE` px (large images box-downscaled to :data:`MAX_TILE`), under each tile a band with its
  PSNR / LPIPS from the run's rows, and a last row with a 4x zoom of the centre of the first image.

Determinism: Agg backend, ``svg.hashsalt`` fixed, PNG ``Software`` and SVG ``Date`` metadata removed; every
file is written atomically (rendered into memory, then temp file + rename).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from bench.imageio import atomic_write_bytes  # noqa: E402

#: (column, axis label, lower is better) in order of preference for the y axis
Y_CHOICES = (("fid", "FID", True), ("psnr_mean", "PSNR (dB)", False), ("lpips_mean", "LPIPS", True),
             ("loe_mean", "LOE", True), ("niqe_mean", "NIQE", True))
RC = {"svg.hashsalt": "bench-report", "font.size": 9, "figure.dpi": 100}
MIN_TILE, MAX_TILE, ZOOM = 192, 384, 4
BAND, FOOT, FONT_SIZE = (28, 28, 28), (45, 45, 45), 14


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


# --------------------------------------------------------------------------- sample grid
def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(draw, text: str, width: int, font, max_lines: int = 4) -> list[str]:
    """Greedy word wrap to ``width`` pixels (words longer than a line are broken by character)."""
    lines, cur = [], ""
    for word in text.split(" "):
        trial = f"{cur} {word}" if cur else word
        if draw.textlength(trial, font=font) <= width - 8:
            cur = trial
            continue
        if cur:
            lines.append(cur)
        cur = ""
        for ch in word:
            if cur and draw.textlength(cur + ch, font=font) > width - 8:
                lines.append(cur)
                cur = ""
            cur += ch
    return (lines + [cur])[:max_lines]


def _load(path: Path | None) -> Image.Image | None:
    if path is None or not path.is_file():
        return None
    with Image.open(path) as im:
        return im.convert("RGB")


def _tile(im: Image.Image | None, size: tuple[int, int], font) -> Image.Image:
    w, h = size
    if im is None:
        tile = Image.new("RGB", (w, h), (90, 90, 90))
        ImageDraw.Draw(tile).text((6, h // 2 - 8), "n/a", fill=(255, 255, 255), font=font)
        return tile
    if im.size == (w, h):
        return im
    smaller = im.size[0] <= w and im.size[1] <= h
    return im.resize((w, h), Image.Resampling.NEAREST if smaller else Image.Resampling.BOX)


def tile_size(w: int, h: int) -> tuple[int, int]:
    """Nearest-neighbour integer upscale to >= MIN_TILE on the short side, box-downscale above MAX_TILE."""
    if max(w, h) > MAX_TILE:
        s = MAX_TILE / max(w, h)
        return max(1, round(w * s)), max(1, round(h * s))
    f = max(1, math.ceil(MIN_TILE / min(w, h)))
    return w * f, h * f


def _metric_text(run, image_id: str) -> str:
    row = run.rows[run.rows["id"] == image_id]
    if not len(row):
        return "not in this run"
    row = row.iloc[0]
    parts = []
    p = row.get("psnr")
    if p is not None and not pd.isna(p):
        parts.append("PSNR inf (identical)" if p == math.inf else f"PSNR {float(p):.2f} dB")
    lp = row.get("lpips")
    if lp is not None and not pd.isna(lp):
        parts.append(f"LPIPS {float(lp):.3f}")
    return "  ".join(parts) if parts else "no reference metrics"


def grid_ids(runs, max_rows: int) -> list[str]:
    common = set(runs[0].ids)
    for r in runs[1:]:
        common &= set(r.ids)
    return sorted(common)[:max_rows]


def sample_grid(columns: list[tuple[str, object]], ref_dir: Path | None, out: Path,
                max_rows: int = 4) -> tuple[Path, list[str]]:
    """``columns``: (label, Run) per method; writes the grid PNG to ``out``; returns it and every text drawn."""
    runs = [r for _, r in columns]
    ids = grid_ids(runs, max_rows)
    first = _load(runs[0].dir / "images" / f"{ids[0]}.png")
    w, h = tile_size(*first.size)
    labels = ["ground truth", "degraded input"] + [lab for lab, _ in columns]
    font, small = _font(), _font(FONT_SIZE - 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(probe, lab, w, font) for lab in labels]
    line_h, foot_h = FONT_SIZE + 4, FONT_SIZE + 6
    header = 6 + line_h * max(len(x) for x in wrapped)
    row_h = h + foot_h
    grid = Image.new("RGB", (w * len(labels), header + row_h * (len(ids) + 1)), BAND)
    draw = ImageDraw.Draw(grid)
    texts = []
    for c, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((c * w + 4, 3 + line_h * k), line, fill=(255, 255, 255), font=font)
            texts.append(line)
    images = {}
    for r, i in enumerate(ids):
        y0 = header + r * row_h
        cells = [_load(ref_dir / f"{i}.png") if ref_dir is not None else None,
                 _load(runs[0].dir / "degraded" / f"{i}.png")]
        cells += [_load(run.dir / "images" / f"{i}.png") for run in runs]
        feet = [f"id {i}", "input"] + [_metric_text(run, i) for run in runs]
        images[i] = cells
        for c, (im, foot) in enumerate(zip(cells, feet)):
            grid.paste(_tile(im, (w, h), font), (c * w, y0))
            draw.rectangle((c * w, y0 + h, (c + 1) * w - 1, y0 + row_h - 1), fill=FOOT)
            text = _wrap(probe, foot, w, small, max_lines=1)[0]
            draw.text((c * w + 4, y0 + h + 3), text, fill=(255, 255, 255), font=small)
            texts.append(text)
    # zoom row: the centre (1/ZOOM of each side) of the first image, nearest-neighbour
    y0 = header + len(ids) * row_h
    for c, im in enumerate(images[ids[0]]):
        if im is not None and im.size != first.size:  # e.g. the 4x smaller degraded input
            im = im.resize(first.size, Image.Resampling.NEAREST)
        if im is not None:
            cw, ch = max(1, im.size[0] // ZOOM), max(1, im.size[1] // ZOOM)
            left, top = (im.size[0] - cw) // 2, (im.size[1] - ch) // 2
            im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.NEAREST)
        grid.paste(_tile(im, (w, h), font), (c * w, y0))
        draw.rectangle((c * w, y0 + h, (c + 1) * w - 1, y0 + row_h - 1), fill=FOOT)
        text = f"zoom x{ZOOM}: centre of {ids[0]}"
        draw.text((c * w + 4, y0 + h + 3), _wrap(probe, text, w, small, 1)[0], fill=(255, 255, 255), font=small)
        texts.append(text)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(out, buf.getvalue())
    return out, texts


def fid_unavailable_reason(df: pd.DataFrame) -> str:
    reasons = [str(x) for x in df.get("fid_na", pd.Series(dtype=str)).tolist() if isinstance(x, str) and x]
    return reasons[0] if reasons else ""
