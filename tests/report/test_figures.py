"""Figures read at page width: the sample grid measured on the PNG's pixels at a stated page width."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

#: ten methods like a full sweep
METHODS = ("ddrm", "ddrm_srldm", "dgp", "dps", "gdp", "gdp_x0", "pigdm", "red_diff", "srldm", "zero_dce")
PAGE_WIDTH = 1000  # px: a README figure is shown at most this wide


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
        is_tile = np.zeros(a.shape[:2], bool)
        for c in tiles:
            is_tile |= (a == np.array(c)).all(axis=2)
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
