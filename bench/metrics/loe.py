"""Lightness Order Error (Wang, Zheng, Hu & Li, "Naturalness Preserved Enhancement Algorithm for Non-Uniform
Illumination Images", IEEE TIP 2013).

Definitions (paper notation; lower is better):

* lightness ``L(x) = max_{c ∈ {R,G,B}} I_c(x)`` of the reference (the low-light *input*, not a ground truth)
  and ``L_e(x)`` of the enhanced image;
* ``U(a, b) = 1 if a >= b else 0``;
* ``RD(x) = Σ_y U(L(x), L(y)) ⊕ U(L_e(x), L_e(y))`` (⊕ = exclusive or);
* ``LOE = (1/m) Σ_x RD(x)`` over the ``m`` pixels.

Pinned protocol (the common MATLAB ``loe.m``): the lightness maps are computed at full resolution and then
down-sampled with MATLAB ``imresize(L, [round(H r) round(W r)])``, ``r = short_side / min(H, W)``,
``short_side = 50`` - i.e. the default *bicubic, antialiased* imresize (:func:`bench.metrics.niqe.imresize_matlab`,
which matches MATLAB's kernel and mirror boundary). This was chosen over ``F.interpolate`` or nearest
sampling because it is exactly what ``loe.m`` does, so values are comparable with tables produced by it.
LOE values are only comparable at the same ``short_side`` (LIME-style code uses ~100 px): record
:func:`loe_protocol` next to the numbers. ``short_side=None`` disables the resize.

Scale: ``U`` only compares values, so inputs on [0, 1] or 0..255 give the same LOE. The one MATLAB detail
that is not scale-free is that ``imresize`` of a uint8 image returns rounded uint8 values (which creates
ties); ``quantize_8bit=True`` reproduces that (input rounded to 8 bit, resized lightness rounded to 8 bit).
Default ``False`` keeps the resized lightness in float.

Cost: O(m²) comparisons per image, done in chunks of rows (bounded memory), m = 50 x 75 = 3750 for a 2:3
image at the default protocol.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench.metrics.niqe import imresize_matlab

__all__ = ["loe", "loe_downsampled_shape", "loe_protocol", "lightness", "rank_disorder"]


def lightness(img: Tensor) -> Tensor:
    """``L = max(R, G, B)``: (B,3,H,W) -> (B,H,W)."""
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) RGB, got {tuple(img.shape)}")
    return img.amax(dim=1)


def _matlab_round(v: float) -> int:
    """MATLAB ``round`` (half away from zero) for non-negative values."""
    return int(math.floor(v + 0.5))


def loe_downsampled_shape(h: int, w: int, short_side: int | None = 50) -> tuple[int, int]:
    """The (rows, cols) LOE is evaluated at: ``(round(h r), round(w r))`` with ``r = short_side / min(h, w)``."""
    if short_side is None:
        return h, w
    r = short_side / min(h, w)
    return _matlab_round(h * r), _matlab_round(w * r)


def loe_protocol(short_side: int | None = 50, quantize_8bit: bool = False) -> str:
    """A one-line description of the LOE protocol, to store next to LOE values."""
    size = "full resolution" if short_side is None else f"short side {short_side} (MATLAB bicubic imresize)"
    q = ", 8-bit quantized" if quantize_8bit else ""
    return f"LOE(ref=low-light input; L=max(R,G,B); {size}{q})"


def rank_disorder(l_ref: Tensor, l_enh: Tensor, chunk: int = 1024) -> Tensor:
    """``RD(x)`` for flattened lightness maps (B, m) -> (B, m) int64, computed in row chunks."""
    if l_ref.shape != l_enh.shape:
        raise ValueError(f"shape mismatch {tuple(l_ref.shape)} vs {tuple(l_enh.shape)}")
    b, m = l_ref.shape
    out = torch.empty(b, m, dtype=torch.long, device=l_ref.device)
    for s in range(0, m, chunk):
        u_ref = l_ref[:, s:s + chunk, None] >= l_ref[:, None, :]  # (B, c, m)
        u_enh = l_enh[:, s:s + chunk, None] >= l_enh[:, None, :]
        out[:, s:s + chunk] = (u_ref ^ u_enh).sum(dim=2)
    return out


def loe(enhanced: Tensor, reference: Tensor, short_side: int | None = 50, quantize_8bit: bool = False,
        chunk: int = 1024) -> Tensor:
    """LOE of ``enhanced`` against the low-light input ``reference``; both (B,3,H,W). Returns (B,) float64.

    ``short_side`` pins the down-sampling protocol (see module docstring; ``None`` = no resize).
    """
    if enhanced.shape != reference.shape:
        raise ValueError(f"enhanced {tuple(enhanced.shape)} and reference {tuple(reference.shape)} differ")
    maps = []
    for img in (reference, enhanced):
        x = img.detach().to(torch.float64)
        if quantize_8bit:
            x = (x * 255).round().clamp(0, 255)
        lit = lightness(x)
        h, w = lit.shape[-2:]
        size = loe_downsampled_shape(h, w, short_side)
        if size != (h, w):
            lit = imresize_matlab(lit, size=size)
            if quantize_8bit:
                lit = lit.round().clamp(0, 255)
        maps.append(lit.flatten(1))
    return rank_disorder(maps[0], maps[1], chunk=chunk).to(torch.float64).mean(dim=1)
