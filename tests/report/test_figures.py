"""Figures read at page width: measured with matplotlib's renderer (tick labels, legend, step labels, data
points in display coordinates) and, for the sample grid, on the PNG's pixels at a stated page width."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

#: ten methods like a full sweep; zero_dce: one network evaluation, no steps, ~1e5 img/s beside CPU solvers
METHODS = ("ddrm", "ddrm_srldm", "dgp", "dps", "gdp", "gdp_x0", "pigdm", "red_diff", "srldm", "zero_dce")
PAGE_WIDTH = 1000  # px: a README figure is shown at most this wide
SPREAD = (0.0, 1.1, -0.6, 0.5, 1.6, -1.2, 0.9, -0.2, 2.0, 0.3)  # dB per method: lines cross and crowd


def _row(label, steps, ips, nfe, psnr, complete=True, device="cpu"):
    return {"dataset": "d", "task": "sr4", "label": label, "method": label.split(" ")[0], "steps": steps,
            "images_per_s": ips, "nfe_per_image": nfe, "complete": complete, "fid": np.nan, "fid_na": "offline",
            "psnr_mean": psnr, "psnr_ci_lo": psnr - 0.4, "psnr_ci_hi": psnr + 0.4, "n_images": 8,
            "device_name": device}


def sweep(methods=METHODS, steps=(10, 20, 50, 100)) -> pd.DataFrame:
    """Crowded on purpose: similar speeds and PSNRs, error bars, a constant-20-step method, a step-less fast
    method and an NFE = 0 reference (bicubic)."""
    rows = []
    for k, m in enumerate(methods):
        if m == "zero_dce":
            rows.append(_row(m, pd.NA, 9.0e4, 1, 21.0))
        elif m == "dps":  # every run used 20 steps: no step labels
            rows.append(_row(m, 20, 0.11, 40, 23.4))
        else:
            for j, s in enumerate(steps):
                rows.append(_row(m, s, 12.0 / s * (1 + 0.3 * k), s, 22.0 + 0.8 * math.log(s) + SPREAD[k],
                                 complete=(k, j) != (2, 3)))
    rows.append(_row("bicubic", pd.NA, 8.2e4, 0, 22.5))
    df = pd.DataFrame(rows)
    df["steps"] = df["steps"].astype("Int64")
    return df


@pytest.fixture()
def saved(monkeypatch):
    """The matplotlib figures that tradeoff_figure saved, kept for measuring."""
    from bench.report import figures

    out, save = [], figures._save

    def spy(fig, base):
        out.append(fig)
        return save(fig, base)

    monkeypatch.setattr(figures, "_save", spy)
    return out


def _overlap(a, b, tol=0.5) -> bool:
    return a.x0 < b.x1 - tol and b.x0 < a.x1 - tol and a.y0 < b.y1 - tol and b.y0 < a.y1 - tol


def _measure(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text  # an annotation's text without its leader line

    FigureCanvasAgg(fig)  # pyplot.close detached the saving canvas
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_window_extent(r)
    ticks = []
    for axis, lo, hi in ((ax.xaxis, box.x0, box.x1), (ax.yaxis, box.y0, box.y1)):
        for t in axis.get_ticklabels(which="both"):
            if not (t.get_visible() and t.get_text()):
                continue
            e = t.get_window_extent(r)
            mid = (e.x0 + e.x1) / 2 if axis is ax.xaxis else (e.y0 + e.y1) / 2
            if lo - 1 <= mid <= hi + 1:
                ticks.append((axis.axis_name, t.get_text(), e))
    points = [p for line in ax.lines if line.get_marker() not in (None, "None", "", " ")
              for p in ax.transData.transform(np.column_stack(line.get_data()).astype(float))]
    steps = [(t.get_text(), Text.get_window_extent(t, r)) for t in ax.texts if t.get_text().isdigit()]
    legend = ax.get_legend() or (fig.legends[0] if fig.legends else None)
    return SimpleNamespace(ax=ax, box=box, ticks=ticks, points=np.array(points), steps=steps,
                           legend=legend, legend_box=legend.get_window_extent(r) if legend else None)


def _problems(m) -> list[str]:
    """Every readability problem of a measured figure (empty = readable)."""
    out = [f"{a1} tick labels {t1!r} and {t2!r} overlap"
           for (a1, t1, e1), (a2, t2, e2) in itertools.combinations(m.ticks, 2) if a1 == a2 and _overlap(e1, e2)]
    out += [f"step labels {t1!r} and {t2!r} overlap"
            for (t1, e1), (t2, e2) in itertools.combinations(m.steps, 2) if _overlap(e1, e2)]
    b = m.box
    out += [f"step label {t!r} outside the axes" for t, e in m.steps
            if not (b.x0 <= e.x0 and e.x1 <= b.x1 and b.y0 <= e.y0 and e.y1 <= b.y1)]
    if m.legend_box is None:
        return out + ["no legend"]
    lb = m.legend_box
    if _overlap(lb, b):
        out.append("the legend covers the axes area")
    out += [f"the legend covers the tick label {t!r}" for _, t, e in m.ticks if _overlap(lb, e)]
    inside = [p for p in m.points if lb.x0 - 4 <= p[0] <= lb.x1 + 4 and lb.y0 - 4 <= p[1] <= lb.y1 + 4]
    return out + ([f"the legend covers {len(inside)} data point(s)"] if inside else [])


def test_crowded_figure_is_readable(saved, tmp_path):
    """10 methods, 4 step counts, 0.1 .. 1e5 img/s: no overlapping ticks, legend outside, labels apart."""
    from bench.report.figures import tradeoff_figure

    df = sweep()
    png, svg, caption = tradeoff_figure(df, tmp_path / "crowded")
    m = _measure(saved[-1])
    assert _problems(m) == []
    lo, hi = m.ax.get_xlim()
    assert lo <= 0.1 and hi >= 9e4 and m.ax.get_xscale() == "log"
    # most varied-step points are labelled, each such method at least once; a label that fits nowhere (this
    # sweep is crowded on purpose) is left out and counted in the caption, never drawn over another
    anchors = {(t.xy[0], t.xy[1]) for t in m.ax.texts if t.get_text().isdigit()}
    varied = df[df["label"].isin(set(METHODS) - {"dps", "zero_dce"})]
    for label, g in varied.groupby("label"):
        assert any((r["images_per_s"], r["psnr_mean"]) in anchors for _, r in g.iterrows()), label
    left_out = len(varied) - len(m.steps)
    assert left_out <= 0.2 * len(varied)
    assert (f"{left_out} step label(s) left out" in caption) == (left_out > 0)
    legend = [t.get_text() for t in m.legend.get_texts()]
    assert "ddrm, 10-100 steps" in legend and "dps, 20 steps" in legend and "zero_dce" in legend
    assert m.ax.get_legend().get_title().get_text() == "numbers at points = steps"


@pytest.mark.parametrize("span", [(0.25, 0.45), (0.1, 1e5), (2.0, 60.0), (0.3, 0.3), (1e-3, 5e-3), (40, 900)])
def test_log_ticks_never_collide(saved, tmp_path, span):
    """The observed '3×10⁻¹4×10⁻¹': a span under a decade labels minor ticks; any span stays readable."""
    from bench.report.figures import tradeoff_figure

    lo, hi = span
    xs = np.geomspace(lo, hi, 5) if hi > lo else [lo]
    df = pd.DataFrame([_row("ddrm", 10 * (i + 1), x, 10 * (i + 1), 20 + i) for i, x in enumerate(xs)])
    tradeoff_figure(df, tmp_path / "t")
    m = _measure(saved[-1])
    assert _problems(m) == []
    xt = [t for a, t, _ in m.ticks if a == "x"]
    assert len(xt) >= 2, f"the throughput axis needs at least two labelled ticks, got {xt}"


def test_one_style_per_method_across_figures(saved, tmp_path):
    """Figures of one report with different method subsets draw each method in the same colour and marker."""
    from bench.report.figures import style_map, tradeoff_figure

    full = sweep()
    styles = style_map(full["label"])
    a = full[full["label"].isin(["ddrm", "gdp", "srldm", "bicubic"])]
    b = full[full["label"].isin(["dgp", "ddrm", "pigdm", "gdp", "zero_dce", "bicubic"])]
    seen = []
    for name, sub in (("a", a), ("b", b)):
        tradeoff_figure(sub.reset_index(drop=True), tmp_path / name, styles=styles)
        leg = saved[-1].axes[0].get_legend()
        seen.append({t.get_text().split(",")[0]: (h.get_color(), h.get_marker())
                     for t, h in zip(leg.get_texts(), leg.legend_handles)})
    common = set(seen[0]) & set(seen[1])
    assert {"ddrm", "gdp"} <= common
    for label in common:
        assert seen[0][label] == seen[1][label], label
    pairs = [styles[k] for k in styles]
    assert len(set(pairs)) == len(pairs)  # every method of the report its own (colour, marker)
    assert style_map(list(reversed(full["label"]))) == styles  # order-free: from the sorted set
    assert style_map(["my_method"])["my_method"] == style_map(["my_method", "zz"])["my_method"]


def test_step_labels_only_where_steps_differ(saved, tmp_path):
    from bench.report.figures import tradeoff_figure

    df = sweep(methods=("ddrm", "dps", "zero_dce"), steps=(10, 50))
    df = pd.concat([df, pd.DataFrame([_row("gdp", 20, 0.5, 20, 24.0), _row("gdp", 20, 0.45, 20, 24.2,
                                                                           device="cpu")])])
    df["label"] = df["label"].where(~((df["label"] == "gdp") & (df["psnr_mean"] == 24.2)), "gdp (eta=0.5)")
    png, svg, caption = tradeoff_figure(df.reset_index(drop=True), tmp_path / "s")
    m = _measure(saved[-1])
    assert sorted(t for t, _ in m.steps) == ["10", "50"]  # ddrm only; dps and gdp: every run 20 steps
    legend = [t.get_text() for t in m.legend.get_texts()]
    assert "dps, 20 steps" in legend and "zero_dce" in legend  # constant steps said once; step-less: nothing
    text = svg.read_text()
    assert "default" not in text and "default" not in caption


def test_axis_labels_say_what_is_plotted(saved, tmp_path):
    from bench.report.figures import tradeoff_figure

    df = sweep(methods=("ddrm", "gdp"))
    tradeoff_figure(df, tmp_path / "p", "offline", n_common=8)
    ax = saved[-1].axes[0]
    assert ax.get_ylabel() == "PSNR (dB), mean over 8 common images"
    assert ax.get_xlabel() == "images/s (restore only, cpu), log scale"
    notes = [t.get_text() for t in ax.texts if not t.get_text().isdigit()]
    assert any("FID unavailable" in n for n in notes)  # a separate note, not part of the axis label
    tradeoff_figure(df.assign(fid=[40.0 + i for i in range(len(df))], fid_n=8, fid_na=""), tmp_path / "f")
    ax = saved[-1].axes[0]
    assert ax.get_ylabel().startswith("FID") and "unavailable" not in ax.get_ylabel()
    assert not any("FID unavailable" in t.get_text() for t in ax.texts)


# ----------------------------------------------------------------------------- sample grid
def _fake_runs(tmp_path: Path, labels, ids, size=64):
    """Runs whose images are flat colours (distinct per method and image), so tiles and text can be told
    apart on the pixels."""
    def flat(path, rgb):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), rgb).save(path)

    ref = tmp_path / "ref"
    cols = []
    for k, lab in enumerate(labels):
        d = tmp_path / f"run{k}"
        for j, i in enumerate(ids):
            flat(d / "images" / f"{i}.png", (20 + 15 * k, 60 + 40 * j, 150))
            flat(d / "degraded" / f"{i}.png", (200, 40 + 40 * j, 20))
            flat(ref / f"{i}.png", (40, 200, 40 + 40 * j))
        rows = pd.DataFrame({"id": ids, "psnr": [23.456] * len(ids), "lpips": [0.123] * len(ids)})
        cols.append((lab, SimpleNamespace(dir=d, rows=rows, ids=sorted(ids))))
    return cols, ref


def _tile_colours(cols, ref, ids):
    out = set()
    for _, run in cols:
        for i in ids:
            for p in (run.dir / "images" / f"{i}.png", run.dir / "degraded" / f"{i}.png", ref / f"{i}.png"):
                with Image.open(p) as im:
                    out.add(im.getpixel((0, 0)))
    return out


@pytest.mark.parametrize("size, n_ids", [(64, 4), (256, 6)])
def test_grid_is_readable_at_page_width(tmp_path, size, n_ids):
    """Shown at PAGE_WIDTH px (or natively when narrower), every text line has >= 9 px of ink (a 14 px font's
    capitals) and the tallest >= 12 px (ascenders to descenders), and every tile is >= ~192 px, with ten
    methods; 64 px images (upscaled) and 256 px ones (more ids than fit: a second file)."""
    from bench.report.figures import sample_grid

    ids = [f"{k:04d}" for k in range(1, n_ids + 1)]
    labels = [f"{m}, 100 steps" if m != "zero_dce" else m for m in METHODS]
    cols, ref = _fake_runs(tmp_path, labels, ids, size)
    paths, texts = sample_grid(cols, ref, tmp_path / "g.png", max_images=n_ids, colors=["#1f77b4"] * 10)
    assert len(paths) == math.ceil(n_ids / 4)
    assert any(t.startswith("PSNR 23.46") for t in texts) and any("LPIPS 0.123" in t for t in texts)
    assert "default" not in " ".join(texts) and set(labels) <= set(texts)
    tiles = _tile_colours(cols, ref, ids)
    for path in paths:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB")).astype(int)
        scale = min(1.0, PAGE_WIDTH / a.shape[1])
        packed = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]  # one int per pixel: one isin for all colours
        is_tile = np.isin(packed, [(r << 16) | (g << 8) | b for r, g, b in tiles])
        white = (a > 200).all(axis=2)
        text_rows = white.any(axis=1) & ~is_tile.any(axis=1)
        # contiguous runs of text rows = one line of text each
        edges = np.flatnonzero(np.diff(np.r_[0, text_rows.astype(int), 0]))
        heights = edges[1::2] - edges[::2]
        assert len(heights) and heights.max() * scale >= 12 and heights.min() * scale >= 9, \
            (path.name, heights, scale)
        # tiles: runs of one tile colour along a row through the tiles
        y = int(np.flatnonzero(is_tile.any(axis=1))[0]) + 2
        runs = [len(list(g)) for key, g in itertools.groupby(map(tuple, a[y])) if key in tiles]
        assert len(runs) >= 2 and min(runs) * scale >= 190, (path.name, runs, scale)
    for lab, run in cols:  # every method's tiles appear in some grid file
        with Image.open(run.dir / "images" / f"{ids[-1]}.png") as im:
            colour = im.getpixel((0, 0))
        assert any(colour in _file_colours(p) for p in paths), lab


def _file_colours(path):
    with Image.open(path) as im:
        return {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 20)}
