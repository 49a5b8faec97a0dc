"""Inpainting keep-masks, one pure function per kind: ``fn(size, seed, **params) -> (size, size) bool``.

True = kept pixel, False = missing (all channels of a pixel together). Every mask is computed on the CPU
(float64 geometry, a CPU ``torch.Generator().manual_seed(seed)`` for the random kinds), so it is the
same on every device, batch size and run; :class:`bench.operators.Inpainting` moves it to its device.
Deterministic kinds ignore ``seed``. The fractions below are of the ``size * size`` pixels.

======== =============================================================== ==================================
kind     mask                                                            missing fraction
======== =============================================================== ==================================
random   ``round(missing * size**2)`` pixels drawn by ``torch.randperm``  ``missing`` (default 0.25), exact
box      centre square of side ``round(box * size)`` missing             ``box**2`` = 0.25 (size % 4 == 0)
half     one half missing: ``half`` = right (default), left, top, bottom 0.5 (even size)
expand   only the centre square of side ``round(keep * size)`` kept      ``1 - keep**2`` = 0.75 (size % 4 == 0)
lines    every second row missing (odd rows 1, 3, ...; row 0 kept)      0.5 (even size)
sr2      kept: pixels with even row AND even column (a stride-2 grid)    0.75 (even size)
wide     thick free-form strokes (:func:`strokes_mask`, WIDE)           in [0.2, 0.4] (guaranteed)
narrow   thin free-form strokes (:func:`strokes_mask`, NARROW)          in [0.05, 0.2] (guaranteed)
======== =============================================================== ==================================

The stroke kinds stand in for LaMa's "thick"/"thin" masks, which RePaint evaluates on (its ``thick`` /
``thin`` folders); RePaint ships those as PNG files in a separate download, not in its repository, and
nothing there generates them, so ours come from our own generator (parameters in :func:`strokes_mask`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .denoise import check_float, check_int

#: thick strokes (``inpaint_wide``): widths and segment lengths are fractions of the image side
WIDE = {"width": (0.06, 0.16), "length": (0.1, 0.4), "vertices": (2, 6), "max_turn": 90.0,
        "missing": (0.2, 0.4)}
#: thin strokes (``inpaint_narrow``)
NARROW = {"width": (0.02, 0.05), "length": (0.1, 0.4), "vertices": (4, 10), "max_turn": 90.0,
          "missing": (0.05, 0.2)}
#: stroke attempts before giving up (never reached with the shipped parameters: see tests/operators)
MAX_STROKES = 2000


def random_mask(size: int, seed: int, *, missing: float = 0.25) -> Tensor:
    """Exactly ``round(missing * size**2)`` random pixels missing: the first ones of
    ``torch.randperm(size**2)`` on a CPU generator seeded with ``seed`` (the original ``task=inpaint``)."""
    missing = check_float("missing", missing, 0.0, 1.0, "pass the fraction of pixels to drop, e.g. missing=0.25",
                          high_open=True)
    n_pix = size * size
    gen = torch.Generator().manual_seed(int(seed))
    dropped = torch.randperm(n_pix, generator=gen)[: int(round(missing * n_pix))]
    keep = torch.ones(n_pix, dtype=torch.bool)
    keep[dropped] = False
    return keep.reshape(size, size)


def _centre_square(size: int, side_fraction: float, name: str, fix: str) -> Tensor:
    """(size, size) bool, True on the centre square of side round(side_fraction * size)."""
    frac = check_float(name, side_fraction, 0.0, 1.0, fix, low_open=True, high_open=True)
    side = int(round(frac * size))
    start = (size - side) // 2
    sq = torch.zeros(size, size, dtype=torch.bool)
    sq[start:start + side, start:start + side] = True
    return sq


def box_mask(size: int, seed: int = 0, *, box: float = 0.5) -> Tensor:
    """The centre square of side ``round(box * size)`` missing (starts at (size - side) // 2)."""
    return ~_centre_square(size, box, "box", "pass the missing square's side as a fraction of the image, "
                                               "e.g. box=0.5")


def expand_mask(size: int, seed: int = 0, *, keep: float = 0.5) -> Tensor:
    """Only the centre square of side ``round(keep * size)`` kept; everything around it missing."""
    return _centre_square(size, keep, "keep", "pass the kept square's side as a fraction of the image, "
                                              "e.g. keep=0.5")


HALVES = ("right", "left", "top", "bottom")


def half_mask(size: int, seed: int = 0, *, half: str = "right") -> Tensor:
    """One half missing: the last ``size // 2`` columns (right), first ones (left), rows (top, bottom)."""
    if half not in HALVES:
        raise ValueError(f"half={half!r} is invalid: use one of {HALVES}, e.g. half=right")
    keep = torch.ones(size, size, dtype=torch.bool)
    n = size // 2
    index = {"right": (slice(None), slice(size - n, None)), "left": (slice(None), slice(0, n)),
             "bottom": (slice(size - n, None), slice(None)), "top": (slice(0, n), slice(None))}[half]
    keep[index] = False
    return keep


def lines_mask(size: int, seed: int = 0) -> Tensor:
    """Every second row missing: rows 1, 3, 5, ... (row 0 kept)."""
    keep = torch.ones(size, size, dtype=torch.bool)
    keep[1::2] = False
    return keep


def sr2_mask(size: int, seed: int = 0) -> Tensor:
    """A stride-2 grid kept: pixel (i, j) is kept iff i and j are both even (3/4 missing)."""
    keep = torch.zeros(size, size, dtype=torch.bool)
    keep[0::2, 0::2] = True
    return keep


def _pair(name: str, value, low: float, high: float, fix: str, integer: bool = False) -> tuple:
    """A (lo, hi) pair with low <= lo <= hi <= high, or a ValueError."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is invalid: it must be a pair [lo, hi]; {fix}") from None
    if integer and not (lo.is_integer() and hi.is_integer()):
        raise ValueError(f"{name}={value!r} is invalid: it must be a pair of integers; {fix}")
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise ValueError(f"{name}={value!r} is invalid: it must satisfy {low} <= lo <= hi <= {high}; {fix}")
    return (int(lo), int(hi)) if integer else (lo, hi)


def _paint_capsule(canvas: Tensor, a: tuple, b: tuple, radius: float) -> None:
    """Set the pixels of ``canvas`` whose centre (i + 0.5) lies within ``radius`` of the segment a-b
    (points as (x, y) = (column, row) in pixels); only the segment's bounding box is computed."""
    size = canvas.shape[0]
    c0, c1 = max(int(min(a[0], b[0]) - radius), 0), min(int(max(a[0], b[0]) + radius) + 1, size)
    r0, r1 = max(int(min(a[1], b[1]) - radius), 0), min(int(max(a[1], b[1]) + radius) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return
    py = (torch.arange(r0, r1, dtype=torch.float64) + 0.5)[:, None] - a[1]
    px = (torch.arange(c0, c1, dtype=torch.float64) + 0.5)[None, :] - a[0]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = ((px * dx + py * dy) / length2).clamp(0.0, 1.0) if length2 > 0 else torch.zeros(())
    canvas[r0:r1, c0:c1] |= (px - t * dx) ** 2 + (py - t * dy) ** 2 <= radius * radius


def strokes_mask(size: int, seed: int, *, width, length, vertices, max_turn: float, missing) -> Tensor:
    """Free-form brush strokes (LaMa-style "irregular" masks; our own generator, not LaMa's code).

    All randomness comes from one CPU ``torch.Generator().manual_seed(seed)``, in this order:

    1. a target missing fraction ``u ~ U[missing]``;
    2. strokes, one after another, until at least ``u`` of the pixels are missing. A stroke: start point
       uniform in the image, start direction uniform in [0, 2 pi), a width ``max(U[width] * size, 1)``
       pixels and ``U{vertices}`` segments (integers, both ends included); each segment first turns by
       ``U[-max_turn, max_turn]`` degrees, then runs ``U[length] * size`` pixels (the end point is clamped
       to the image); a pixel is covered when its centre lies within width / 2 of a segment (round caps
       and joints);
    3. a stroke that would push the missing fraction above ``missing[1]`` is dropped (its draws are
       used up, so the sequence stays a function of the seed).

    The missing fraction therefore always lies in ``[missing[0], missing[1]]``. Widths and lengths are
    fractions of the side, so the pictures look alike at every size. Presets: :data:`WIDE`, :data:`NARROW`.
    """
    width = _pair("width", width, 0.0, 1.0, "pass stroke widths as fractions of the image side, e.g. [0.06, 0.16]")
    length = _pair("length", length, 0.0, 2.0, "pass segment lengths as fractions of the side, e.g. [0.1, 0.4]")
    vertices = _pair("vertices", vertices, 1, 1000, "pass segments per stroke, e.g. [2, 6]", integer=True)
    missing = _pair("missing", missing, 0.0, 1.0, "pass the missing-fraction range, e.g. [0.2, 0.4]")
    if missing[1] >= 1.0:
        raise ValueError(f"missing={list(missing)!r} is invalid: at least one pixel must stay known; "
                         "pass an upper end < 1, e.g. [0.2, 0.4]")
    max_turn = math.radians(check_float("max_turn", max_turn, 0.0, 180.0, "pass the largest turn in degrees, "
                                                                               "e.g. 90"))
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))

    n_pix = size * size
    lo_count, hi_count = math.ceil(missing[0] * n_pix), math.floor(missing[1] * n_pix)
    target = max(math.ceil(uniform(*missing) * n_pix), lo_count)
    holes = torch.zeros(size, size, dtype=torch.bool)
    count = 0
    for _ in range(MAX_STROKES):
        if count >= target:
            break
        x, y = uniform(0, size), uniform(0, size)
        angle = uniform(0, 2 * math.pi)
        radius = max(uniform(*width) * size, 1.0) / 2
        n_seg = int(torch.randint(vertices[0], vertices[1] + 1, (), generator=gen))
        stroke = torch.zeros_like(holes)
        for _ in range(n_seg):
            angle += uniform(-max_turn, max_turn)
            step = uniform(*length) * size
            nx = min(max(x + step * math.cos(angle), 0.0), float(size))
            ny = min(max(y + step * math.sin(angle), 0.0), float(size))
            _paint_capsule(stroke, (x, y), (nx, ny), radius)
            x, y = nx, ny
        new = holes | stroke
        new_count = int(new.sum())
        if new_count <= hi_count:
            holes, count = new, new_count
    if not lo_count <= count <= hi_count:
        raise RuntimeError(f"stroke mask (size {size}, seed {seed}) reached {count / n_pix:.3f} missing, outside "
                           f"missing={list(missing)} after {MAX_STROKES} strokes; widen the range or the widths")
    return ~holes


#: mask kind -> (function, default parameters); the function is called as fn(size, seed, **params)
MASKS: dict[str, tuple[Callable[..., Tensor], dict]] = {
    "random": (random_mask, {"missing": 0.25}),
    "box": (box_mask, {"box": 0.5}),
    "half": (half_mask, {"half": "right"}),
    "expand": (expand_mask, {"keep": 0.5}),
    "lines": (lines_mask, {}),
    "sr2": (sr2_mask, {}),
    "wide": (strokes_mask, WIDE),
    "narrow": (strokes_mask, NARROW),
}


def resolve(kind: str, params: dict) -> dict:
    """The full parameters of a mask kind (defaults + ``params``), or a ValueError for an unknown kind
    or parameter. Sequences become tuples (Hydra passes lists)."""
    if kind not in MASKS:
        raise ValueError(f"mask={kind!r} is invalid: use one of {sorted(MASKS)}, e.g. mask=box")
    defaults = MASKS[kind][1]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"mask={kind!r} takes the parameters {sorted(defaults) or 'none'}, not {unknown}; "
                         f"drop them or pick the kind they belong to")
    out = {**defaults, **params}
    return {k: v if isinstance(v, (str, int, float)) else tuple(v) for k, v in out.items()}


def make_mask(kind: str, size: int, seed: int = 0, **params) -> Tensor:
    """The (size, size) bool keep-mask (True = kept) of ``kind`` on the CPU; see the module table."""
    check_int("size", size, 1, "pass the image side length in pixels, e.g. size=256")
    return MASKS[kind][0](size, seed, **resolve(kind, params))
