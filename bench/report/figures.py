"""Quality-vs-throughput figure per (dataset, task), like Liu's Fig. 7, and the budget view's quality-vs-NFE
figure (:func:`nfe_figure`); the sample grid is in :mod:`.grid`.

:func:`tradeoff_figure`: x = throughput (images/s of the restore call, log scale), y = FID when some run has
one, else PSNR, then LPIPS, LOE, NIQE (the axis label says which and over how many images; a missing FID is
a separate note above the axes, never drawn as a number). One line per method label across its step counts,
duplicates already collapsed; 95 % error bars for per-image metrics (the intervals the caller computed: the
table's; FID has no per-image values: no bar); runs without network evaluations (NFE = 0, e.g. bicubic) are horizontal reference lines, not points at
10^5 img/s; incomplete runs are drawn hollow.

Readability at page width, measured with the renderer rather than hoped for:

* one colour and marker per method label across every figure of a report: :func:`style_map` over the
  sorted set of the report's labels without their settings tag (``base_label``: ``dps`` for ``dps (tuned)``;
  distinct (colour, marker) pairs for up to 100 labels), passed to every figure; a label missing from the map
  takes the first free pair, in sorted order; a method's runs with tuned settings are a second, dashed line
  in the same colour and marker;
* the legend sits outside the axes (right), so it covers no data point;
* throughput ticks: the densest of a few candidate sets (1..9, 1-2-5, 1-3, decades, every k-th decade)
  whose labels keep a gap on the drawn axis; no minor tick labels;
* step labels only for methods whose points differ in steps (a constant step count is said once, in the
  legend: "dps, 20 steps"; step-less methods get none), placed greedily around each point (extremes
  first) where they overlap no other label, marker or the axes' edge; one that fits nowhere is left out
  and counted in the caption.

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
from matplotlib import ticker  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from bench.imageio import atomic_write_bytes  # noqa: E402
from bench.report.grid import MIN_TILE, ZOOM, grid_ids, sample_grid, tile_size  # noqa: E402,F401 (re-exported)

#: (column, axis label, lower is better) in order of preference for the y axis
Y_CHOICES = (("fid", "FID", True), ("psnr_mean", "PSNR (dB)", False), ("lpips_mean", "LPIPS", True),
             ("loe_mean", "LOE", True), ("niqe_mean", "NIQE", True))
RC = {"svg.hashsalt": "bench-report", "font.size": 9, "figure.dpi": 120}
FIGSIZE = (6.0, 4.6)  # inches at 120 dpi; with the legend beside it the PNG stays under ~1000 px wide
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # matplotlib's tab10, written out so a style change cannot move it
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
TICK_SUBS = ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1, 3), (1,))
MAX_TICKS, TICK_GAP_PX = 8, 8
STEP_FONT, MARKER_PX = 7, 4.5
TUNED_LINESTYLE = "--"  # tuned settings: dashed, in the method's colour and marker (official: solid)
#: step-label offsets (points) around a point, nearest ring first; the outer rings get a leader line
RINGS = (7, 12, 18, 26, 36)
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))

Style = tuple[str, str]  # (colour, marker)


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


# --------------------------------------------------------------------------- one style per method
def _pair(k: int) -> Style:
    return PALETTE[k % len(PALETTE)], MARKERS[(k + k // len(PALETTE)) % len(MARKERS)]


def style_map(labels) -> dict[str, Style]:
    """(colour, marker) per method label, from the sorted set of ``labels`` (pass every label of the report,
    so each figure draws a method the same way); distinct pairs for up to 100 labels."""
    keys = sorted({str(x) for x in labels if isinstance(x, str) and x})
    return {k: _pair(i) for i, k in enumerate(keys)}


def _complete_styles(styles: dict[str, Style] | None, labels) -> dict[str, Style]:
    """``styles`` plus, for labels it lacks (sorted), the first (colour, marker) pairs it does not use."""
    styles = dict(styles) if styles is not None else style_map(labels)
    used, k = set(styles.values()), 0
    for label in sorted({str(x) for x in labels} - set(styles)):
        while _pair(k) in used and k < 100:
            k += 1
        styles[label] = _pair(k)
        used.add(styles[label])
    return styles


def _darker(colour: str, f: float = 0.72) -> tuple[float, float, float]:
    return tuple(c * f for c in to_rgb(colour))


# --------------------------------------------------------------------------- throughput ticks
def _fmt(v: float, _pos=None) -> str:
    if 1e-2 <= v < 1e4:
        return f"{v:g}"
    k = math.floor(math.log10(v) + 1e-9)
    m = round(v / 10 ** k, 6)
    return f"$10^{{{k}}}$" if m == 1 else f"${m:g}\\times10^{{{k}}}$"


def _tick_sets(lo: float, hi: float):
    """Candidate major tick sets inside [lo, hi], densest first; each has >= 2 ticks or is skipped."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    sets = [[m * 10.0 ** k for k in range(k0, k1 + 1) for m in subs] for subs in TICK_SUBS]
    sets += [[10.0 ** k for k in range(k0, k1 + 1) if k % step == 0] for step in range(2, k1 - k0 + 2)]
    for ticks in sets:
        ticks = [t for t in ticks if lo <= t * (1 + 1e-9) and t <= hi * (1 + 1e-9)]
        if 2 <= len(ticks) <= MAX_TICKS:
            yield ticks


def log_limits(lo: float, hi: float) -> tuple[float, float]:
    """[lo / 1.6, hi * 1.6] widened to the nearest m x 10^k (m = 1..9) outside: both ends are ticks of the
    densest candidate set, so even a single point gets two labelled ticks."""
    def snap(v, up):
        k = math.floor(math.log10(v))
        m = (math.ceil if up else math.floor)(round(v / 10 ** k, 9))
        return m * 10.0 ** k

    return snap(lo / 1.6, False), snap(hi * 1.6, True)


def _log_x_axis(fig, ax, x, pts) -> bool:
    """Grid, y margins and a log x axis spanning the points ``pts`` of ``x``; False when there is none."""
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(y=0.1)
    if not pts.any():
        return False
    ax.set_xscale("log")
    ax.set_xlim(*log_limits(float(x[pts].min()), float(x[pts].max())))
    _log_ticks(fig, ax)
    return True


def _log_ticks(fig, ax) -> None:
    """The densest candidate tick set whose labels keep TICK_GAP_PX apart on the drawn axis."""
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_fmt))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=100))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    candidates = list(_tick_sets(lo, hi)) or [[lo, hi]]  # (lo, hi from log_limits are ticks)
    r = fig.canvas.get_renderer()
    for ticks in candidates:
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        fig.draw_without_rendering()
        boxes = sorted((t.get_window_extent(r) for t in ax.xaxis.get_ticklabels() if t.get_text()),
                       key=lambda b: b.x0)
        if all(b.x0 - a.x1 >= TICK_GAP_PX for a, b in zip(boxes, boxes[1:])):
            return
    ax.xaxis.set_major_locator(ticker.FixedLocator(candidates[-1]))


# --------------------------------------------------------------------------- step labels
def _step_items(groups) -> list[tuple[float, float, str, str, bool]]:
    """(x, y, text, colour, is an extreme) for the points of methods whose points differ in steps."""
    items = []
    for g, colour in groups:
        s = g["steps"].dropna()
        if s.nunique() < 2:
            continue
        ends = {s.idxmin(), s.idxmax()}
        items += [(float(r["_x"]), float(r["_y"]), str(int(r["steps"])), colour, i in ends)
                  for i, r in g.loc[s.index].iterrows()]
    return items


def _obstacles(ax) -> list[Bbox]:
    """Display boxes of every marker and error bar: step labels go elsewhere."""
    boxes = []
    for line in ax.lines:
        if line.get_marker() not in (None, "None", "", " "):
            for px, py in ax.transData.transform(np.column_stack(line.get_data()).astype(float)):
                boxes.append(Bbox.from_extents(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX))
    for coll in ax.collections:
        for seg in coll.get_segments() if hasattr(coll, "get_segments") else []:
            (x0, y0), (x1, y1) = ax.transData.transform(np.asarray(seg, float)[[0, -1]])
            boxes.append(Bbox.from_extents(min(x0, x1) - 1.5, min(y0, y1), max(x0, x1) + 1.5, max(y0, y1)))
    return boxes


def _place_step_labels(fig, ax, items) -> int:
    """Greedy placement on rings of candidate positions (nearest first); each method's extreme step counts
    first, the most hemmed-in point first within each group. Returns how many labels fitted nowhere."""
    r = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    inner, taken, px = ax.get_window_extent(r).padded(-1), _obstacles(ax), fig.dpi / 72
    sizes = {}
    for text in {it[2] for it in items}:
        t = ax.text(0, 0, text, fontsize=STEP_FONT)
        e = t.get_window_extent(r)
        sizes[text] = (e.width / 2 + 1, e.height / 2 + 1)
        t.remove()

    def candidates(x, y, text):
        (cx, cy), (w, h) = ax.transData.transform((x, y)), sizes[text]
        for radius in RINGS:
            for dx, dy in DIRECTIONS:
                ox, oy = radius * dx / math.hypot(dx, dy), radius * dy / math.hypot(dx, dy)
                box = Bbox.from_extents(cx + ox * px - w, cy + oy * px - h, cx + ox * px + w, cy + oy * px + h)
                if inner.x0 <= box.x0 and box.x1 <= inner.x1 and inner.y0 <= box.y0 and box.y1 <= inner.y1:
                    yield radius, (ox, oy), box

    def free(c):
        return not any(c[2].overlaps(b) for b in taken)

    room = [sum(map(free, candidates(*it[:3]))) for it in items]
    dropped = 0
    for k in sorted(range(len(items)), key=lambda k: (not items[k][4], room[k], k)):
        x, y, text, colour, _ = items[k]
        spot = next(filter(free, candidates(x, y, text)), None)
        if spot is None:
            dropped += 1
            continue
        radius, offset, box = spot
        lead = {"arrowprops": {"arrowstyle": "-", "lw": 0.5, "color": _darker(colour), "shrinkA": 0,
                               "shrinkB": 3}} if radius > RINGS[0] else {}
        ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha="center", va="center",
                    fontsize=STEP_FONT, color=_darker(colour), **lead)
        taken.append(box)
    return dropped


# --------------------------------------------------------------------------- one line per method
def _style_key(row) -> str:
    """The key of a row's (colour, marker): its label without the settings tag (``base_label``), so a
    method's official and tuned runs share a colour; the label itself in frames without that column."""
    base = row.get("base_label") if hasattr(row, "get") else None
    return str(base) if isinstance(base, str) and base else str(row["label"])


def _tuned(g) -> bool:
    return "settings" in g and bool((g["settings"].astype(str) != "official settings").any())


def _lines(ax, df, pts, x, y, lo, hi, has_ci, styles) -> list:
    """One line per label over the rows ``pts``, x-sorted, in its method's (colour, marker); a tuned label
    (settings other than official) is dashed, so official and tuned runs of one method share the colour and
    differ in line style. Error bars from ``lo``/``hi``; incomplete runs hollow. Returns [(rows, colour)]."""
    groups = []
    for name, g in df[pts].groupby("label", sort=True):
        colour, marker = styles[_style_key(g.iloc[0])]
        g = g.assign(_x=x[g.index], _y=y[g.index]).sort_values("_x")
        if has_ci:
            err = np.vstack([(g["_y"] - lo[g.index]).clip(lower=0), (hi[g.index] - g["_y"]).clip(lower=0)])
            ax.errorbar(g["_x"], g["_y"], yerr=np.nan_to_num(err), fmt="none", ecolor=colour, capsize=3,
                        linewidth=0.9)
        steps = sorted(int(v) for v in g["steps"].dropna().unique())
        legend = (f"{name}, {steps[0]}{f'-{steps[-1]}' if len(steps) > 1 else ''} steps" if steps else str(name))
        dash = {"linestyle": TUNED_LINESTYLE} if _tuned(g) else {}
        ax.plot(g["_x"], g["_y"], color=colour, marker=marker, markersize=6, linewidth=1.2, label=legend, **dash)
        inc = g[~g["complete"].astype(bool)]
        if len(inc):
            ax.plot(inc["_x"], inc["_y"], linestyle="none", marker=marker, markersize=6, mfc="white", color=colour)
        groups.append((g, colour))
    return groups


def _reference_lines(ax, df, ref, y, styles) -> None:
    """Runs without network evaluations (NFE = 0) as horizontal lines in their method's colour."""
    for k, (_, r) in enumerate(df[ref].sort_values("label").iterrows()):
        ax.axhline(float(y[r.name]), color=styles[_style_key(r)][0], linestyle=("--", ":", "-.")[k % 3],
                   linewidth=1.2, label=f"{r['label']} (NFE = 0, reference)")


# --------------------------------------------------------------------------- labels
def _y_label(df, shown, col: str, label: str, n_common: int | None) -> str:
    if col == "fid":
        n = _numeric(df.loc[shown, "fid_n"]).dropna().unique() if "fid_n" in df else []
        return f"FID ({int(n[0])} images vs ground truth)" if len(n) == 1 else "FID"
    if n_common is not None:
        return f"{label}, mean over {n_common} common images"
    n = _numeric(df.loc[shown, "n_images"]).dropna() if "n_images" in df else pd.Series(dtype=float)
    if n.nunique() == 1:
        return f"{label}, mean over {int(n.iloc[0])} images"
    return f"{label}, mean over each run's images ({int(n.min())}-{int(n.max())})" if len(n) else label


def _x_label(df, shown) -> str:
    names = sorted({str(d) for d in df.loc[shown, "device_name"] if isinstance(d, str) and d}) \
        if "device_name" in df else []
    where = names[0] if len(names) == 1 else "devices differ, see runs.csv" if names else ""
    return f"images/s (restore only{', ' + where if where else ''}), log scale"


def tradeoff_figure(df: pd.DataFrame, base: Path, fid_reason: str = "", *, styles: dict[str, Style] | None = None,
                    n_common: int | None = None) -> tuple[Path, Path, str]:
    """Plot the runs of one (dataset, task) (one row per run); returns (png, svg, caption).

    ``styles``: the report's :func:`style_map` (default: one over this figure's labels); ``n_common``: the
    number of common images the per-run values were computed on (the y label says so)."""
    dataset, task = str(df["dataset"].iloc[0]), str(df["task"].iloc[0])
    styles = _complete_styles(styles, [_style_key(r) for _, r in df.iterrows()])
    choice = pick_y(df)
    x = _numeric(df["images_per_s"])
    nfe = _numeric(df["nfe_per_image"]).fillna(0)
    with matplotlib.rc_context(RC):
        fig, ax = plt.subplots(figsize=FIGSIZE)
        ax.set_title(f"{dataset} / {task}")
        if choice is None:
            ax.text(0.5, 0.5, "no metric available", ha="center", va="center", transform=ax.transAxes)
            caption = f"{dataset}/{task}: no metric with a value to plot against throughput."
            ax.set_ylabel("(no metric)")
            ax.set_xlabel(_x_label(df, df.index == df.index))
        else:
            caption = _draw(fig, ax, df, choice, x, nfe, styles, fid_reason, n_common)
        png, svg = _save(fig, base)
    return png, svg, caption


def _draw(fig, ax, df, choice, x, nfe, styles, fid_reason, n_common) -> str:
    dataset, task = str(df["dataset"].iloc[0]), str(df["task"].iloc[0])
    col, label, lower = choice
    metric = label.split()[0]
    y = _numeric(df[col])
    has_ci = col.endswith("_mean")
    nan = pd.Series(np.nan, index=df.index)
    lo = _numeric(df[col.replace("_mean", "_ci_lo")]) if has_ci else nan
    hi = _numeric(df[col.replace("_mean", "_ci_hi")]) if has_ci else nan
    ref = (nfe == 0) & y.notna()
    pts = ~ref & y.notna() & x.gt(0) & x.notna()
    groups = _lines(ax, df, pts, x, y, lo, hi, has_ci, styles)
    _reference_lines(ax, df, ref, y, styles)
    ax.set_ylabel(_y_label(df, pts | ref, col, label, n_common))
    ax.set_xlabel(_x_label(df, pts) if pts.any() else "images/s: no run with network evaluations (NFE > 0) to place")
    if not _log_x_axis(fig, ax, x, pts):
        ax.set_xticks([])
    items = _step_items(groups)
    tuned = any(_tuned(g) for g, _ in groups)
    title = "\n".join(t for t, on in (("numbers at points = steps", items), ("dashed = tuned settings", tuned)) if on)
    if pts.any() or ref.any():
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  ncol=1 if len(groups) + int(ref.sum()) <= 16 else 2, title=title or None, title_fontsize=7.5)
    if col != "fid":
        ax.annotate(f"FID unavailable ({'see the table' if fid_reason else 'no run has one'}): {metric} shown",
                    (0, 1), xycoords="axes fraction", xytext=(0, 3), textcoords="offset points", ha="left",
                    va="bottom", fontsize=7.5, color="0.35")
        ax.set_title(f"{dataset} / {task}", pad=14)
    dropped = _place_step_labels(fig, ax, items) if items else 0
    caption = (f"{dataset}/{task}: {metric} ({'lower' if lower else 'higher'} is better) vs throughput "
               f"(images/s of the restore call, log scale); one line per method across step counts"
               + ("; numbers at points = steps" if items else "") + "; the legend gives each method's steps"
               + ("; error bars = the 95 % intervals of the table" if has_ci else "; FID has no per-image "
                  "values, so no error bars") + "; methods without network evaluations (NFE = 0) are "
               "horizontal reference lines; hollow markers = incomplete runs; "
               + ("dashed lines = tuned settings, in their method's colour and marker; " if tuned else "")
               + "colours and markers are the same in every figure of this report.")
    if dropped:
        caption += f" {dropped} step label(s) left out where they would cover other labels (steps: the table)."
    if col != "fid":
        why = "see the FID column of the table" if fid_reason else "no run has an FID"
        caption += f" FID is unavailable ({why}), so {metric} is plotted instead; this is not an FID plot."
    gone = int((~(pts | ref)).sum())
    if gone:
        caption += f" {gone} run(s) without a finite throughput or value are not shown."
    return caption


def nfe_figure(df: pd.DataFrame, base: Path, *, styles: dict[str, Style] | None = None,
               n_common: int | None = None) -> tuple[Path, Path, str]:
    """Quality vs NFE of one (dataset, task), the budget view: x = the runs' measured network evaluations per
    image (``nfe_per_image``, log scale), y = mean PSNR with the 95 % intervals of the caller (the table's, on
    its common images). One line per method label in its report-wide (colour, marker) (:func:`style_map` over
    ``base_label``); tuned settings dashed; NFE = 0 baselines as horizontal reference lines; the legend
    outside the axes; the tick sets of :func:`_log_ticks`. Returns (png, svg, caption)."""
    dataset, task = str(df["dataset"].iloc[0]), str(df["task"].iloc[0])
    styles = _complete_styles(styles, [_style_key(r) for _, r in df.iterrows()])
    x = _numeric(df["nfe_per_image"])
    y = _numeric(df["psnr_mean"])
    lo, hi = _numeric(df["psnr_ci_lo"]), _numeric(df["psnr_ci_hi"])
    ref = x.eq(0) & y.notna()
    pts = x.gt(0) & y.notna()
    with matplotlib.rc_context(RC):
        fig, ax = plt.subplots(figsize=FIGSIZE)
        ax.set_title(f"{dataset} / {task}: quality vs NFE")
        groups = _lines(ax, df, pts, x, y, lo, hi, True, styles)
        _reference_lines(ax, df, ref, y, styles)
        ax.set_ylabel(_y_label(df, pts | ref, "psnr_mean", "PSNR (dB)", n_common))
        ax.set_xlabel("network evaluations per image (NFE, measured), log scale")
        _log_x_axis(fig, ax, x, pts)
        tuned = [_tuned(g) for g, _ in groups]
        if pts.any() or ref.any():
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                      ncol=1 if len(groups) + int(ref.sum()) <= 16 else 2,
                      title="dashed = tuned settings" if any(tuned) else None, title_fontsize=7.5)
        png, svg = _save(fig, base)
    caption = (f"{dataset}/{task}: PSNR (higher is better) vs network evaluations per image (NFE as measured by "
               "the runs' timing, log scale); one line per method across step counts, error bars = the 95 % "
               "intervals of the table; methods without network evaluations (NFE = 0) are horizontal reference "
               "lines; hollow markers = incomplete runs")
    if any(tuned):
        caption += ("; dashed lines = tuned settings, solid = official settings, each in its method's colour"
                    if not all(tuned) else "; every line uses tuned settings (dashed)")
    caption += "; colours and markers are the same in every figure of this report."
    gone = int((~(pts | ref)).sum())
    if gone:
        caption += f" {gone} run(s) without a measured NFE or a PSNR on the common images are not shown."
    return png, svg, caption


def fid_unavailable_reason(df: pd.DataFrame) -> str:
    reasons = [str(x) for x in df.get("fid_na", pd.Series(dtype=str)).tolist() if isinstance(x, str) and x]
    return reasons[0] if reasons else ""
