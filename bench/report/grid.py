"""Sample grid, laid out to be read at page width (a README shows an image at most :data:`PAGE_WIDTH` px
wide): one row per image source (ground truth, degraded input, then each method), one column per image id
plus a last column with a :data:`ZOOM` x zoom of the centre of the first image of the file.

* At most :data:`MAX_COLS` columns per file, so each tile is >= :data:`MIN_TILE` px on the page; more ids
  than fit go to further files (``<name>_2.png`` ...), each with its own zoom column.
* Text is :data:`LABEL_PX` px tall on the page: the font grows with the file's width when it is wider than
  the page (large images are shown scaled down).
* Each method row starts with a band holding its label and a swatch of its figure colour; under each tile a
  band with its PSNR / LPIPS from the run's rows.
* Tiles are upscaled nearest-neighbour to at least :data:`MIN_TILE` px (large images box-downscaled to
  :data:`MAX_TILE`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from bench.imageio import atomic_write_bytes

PAGE_WIDTH, LABEL_PX, GAP = 1000, 14, 4
MIN_TILE, MAX_TILE, ZOOM = 192, 384, 4
MAX_COLS = (PAGE_WIDTH + GAP) // (MIN_TILE + GAP)  # 5: four images and the zoom
BAND, FOOT, WHITE = (28, 28, 28), (45, 45, 45), (255, 255, 255)


def _font(size: int):
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
        ImageDraw.Draw(tile).text((6, h // 2 - 8), "n/a", fill=WHITE, font=font)
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


def _zoom(im: Image.Image | None, size: tuple[int, int]) -> Image.Image | None:
    """The centre (1/ZOOM of each side) of ``im`` at ``size`` (the reference image size)."""
    if im is None:
        return None
    if im.size != size:  # e.g. the 4x smaller degraded input
        im = im.resize(size, Image.Resampling.NEAREST)
    cw, ch = max(1, im.size[0] // ZOOM), max(1, im.size[1] // ZOOM)
    left, top = (im.size[0] - cw) // 2, (im.size[1] - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def _metric_lines(run, image_id: str) -> list[str]:
    row = run.rows[run.rows["id"] == image_id]
    if not len(row):
        return ["not in this run"]
    row = row.iloc[0]
    parts = []
    p = row.get("psnr")
    if p is not None and not pd.isna(p):
        parts.append("PSNR inf (identical)" if p == math.inf else f"PSNR {float(p):.2f} dB")
    lp = row.get("lpips")
    if lp is not None and not pd.isna(lp):
        parts.append(f"LPIPS {float(lp):.3f}")
    return parts or ["no reference metrics"]


def grid_ids(runs, max_images: int) -> list[str]:
    common = set(runs[0].ids)
    for r in runs[1:]:
        common &= set(r.ids)
    return sorted(common)[:max_images]


def sample_grid(columns: list[tuple[str, object]], ref_dir: Path | None, out: Path, max_images: int = 4,
                colors: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """``columns``: (label, Run) per method (one grid row each; ``colors``: its figure colour, for the
    swatch). Writes ``out`` (and ``<stem>_2.png`` ... when more ids than fit); returns the files and every
    text drawn."""
    runs = [r for _, r in columns]
    ids = grid_ids(runs, max_images)
    per_file = MAX_COLS - 1
    paths, texts = [], []
    for n in range(0, len(ids), per_file):
        path = out if n == 0 else out.with_name(f"{out.stem}_{n // per_file + 1}{out.suffix}")
        texts += _render(columns, ref_dir, ids[n:n + per_file], path, colors)
        paths.append(path)
    return paths, texts


def _render(columns, ref_dir, ids, out: Path, colors) -> list[str]:
    runs = [r for _, r in columns]
    first = _load(runs[0].dir / "images" / f"{ids[0]}.png")
    w, h = tile_size(*first.size)
    ncol = len(ids) + 1
    width = ncol * w + (ncol - 1) * GAP
    px = max(LABEL_PX, math.ceil(LABEL_PX * width / PAGE_WIDTH))  # LABEL_PX on the page
    font, line = _font(px), px + px // 3
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heads = [_wrap(probe, f"image {i}", w, font, 2) for i in ids] + [_wrap(probe, f"zoom x{ZOOM} of {ids[0]}",
                                                                           w, font, 2)]
    rows = [("ground truth", None, [_load(ref_dir / f"{i}.png") if ref_dir is not None else None for i in ids],
             None), ("degraded input", None, [_load(runs[0].dir / "degraded" / f"{i}.png") for i in ids], None)]
    for k, (label, run) in enumerate(columns):
        rows.append((label, colors[k] if colors else None, [_load(run.dir / "images" / f"{i}.png") for i in ids],
                     [_metric_lines(run, i) for i in ids]))
    swatch = px + 6
    labels = [_wrap(probe, r[0], width - swatch, font, 2) for r in rows]
    feet = [[[ln for part in f for ln in _wrap(probe, part, w, font, 2)][:3] for f in r[3]] if r[3] else []
            for r in rows]
    foot_h = [line * max((len(f) for f in ft), default=0) + (6 if ft else 0) for ft in feet]
    head_h = 10 + line * max(len(x) for x in heads)
    height = head_h + sum(6 + line * len(lab) + h + fh for lab, fh in zip(labels, foot_h))
    grid = Image.new("RGB", (width, height), BAND)
    draw = ImageDraw.Draw(grid)
    texts = []

    def text(xy, s, colour=WHITE):
        draw.text(xy, s, fill=colour, font=font)
        texts.append(s)

    xs = [c * (w + GAP) for c in range(ncol)]
    for x0, lines in zip(xs, heads):
        for j, s in enumerate(lines):
            text((x0 + 4, 3 + line * j), s)
    draw.line((0, head_h - 4, width - 1, head_h - 4), fill=(110, 110, 110), width=1)  # column heads | rows
    y0 = head_h
    for (label, colour, ims, _), lab, ft, fh in zip(rows, labels, feet, foot_h):
        x_text = 4
        if colour:
            draw.rectangle((4, y0 + 4, 4 + px, y0 + 4 + px), fill=colour, outline=(150, 150, 150))
            x_text = swatch + 4
        for j, s in enumerate(lab):
            text((x_text, y0 + 3 + line * j), s)
        y0 += 6 + line * len(lab)
        cells = ims + [_zoom(ims[0], first.size)]
        for x0, im in zip(xs, cells):
            grid.paste(_tile(im, (w, h), font), (x0, y0))
        y0 += h
        if fh:
            draw.rectangle((0, y0, width - 1, y0 + fh - 1), fill=FOOT)
            for x0, lines in zip(xs, ft):
                for j, s in enumerate(lines):
                    text((x0 + 4, y0 + 3 + line * j), s)
            y0 += fh
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(out, buf.getvalue())
    return texts
