"""Lightness Order Error (Wang, Zheng, Hu & Li, "Naturalness Preserved Enhancement Algorithm for Non-Uniform
Illumination Images", IEEE TIP 2013).

Definitions (paper notation; lower is better):

* lightness ``L(x) = max_{c ∈ {R,G,B}} I_c(x)`` of the reference (the low-light *input*, not a ground truth)
  and ``L_e(x)`` of the enhanced image;
* ``U(a, b) = 1 if a >= b else 0``;
* ``RD(x) = Σ_y U(L(x), L(y)) ⊕ U(L_e(x), L_e(y))`` (⊕ = exclusive or);
* ``LOE = (1/m) Σ_x RD(x)`` over the ``m`` pixels.

Pinned protocol: the common MATLAB ``loe.m`` (``L = max(I,[],3)``, ``r = 50 / min(M, N)``,
``imresize(L, [round(N r) round(M r)])``, ``LOE = sum(RD(:)) / (Md Nd)``) run on the images as ``imread`` gives
them, i.e. **uint8**. Reproduced here (the default, ``quantize_8bit=True``): the inputs are rounded to 8 bit
(the saved PNGs already are), the lightness maps are uint8 values, and the down-sampling is MATLAB's default
*bicubic, antialiased* ``imresize`` of a uint8 image - one dimension at a time, each pass rounded half away
from zero and saturated to 0..255 (:func:`bench.metrics.niqe.imresize_matlab` with ``uint8=True``). Those
rounded values create ties, and ties change ``U`` (``a >= b``): on the 20 low-light photos of
``../shared/data/lowlight`` enhanced with CLAHE (``skimage.exposure.equalize_adapthist``, clip 0.02) the mean
LOE is 352.5 on the uint8 path, 346.4 in float (``quantize_8bit=False``: input and resized lightness kept in
float64, only for comparison with float-based code) and 352.9 when the resize is rounded once at the end
instead of per pass (up to 7.2 apart on one image), so the per-pass rounding is reproduced too. LOE values are only
comparable at the same ``short_side`` (LIME-style code uses ~100 px): record :func:`loe_protocol` next to the
numbers. ``short_side=None`` disables the resize.

Scale: ``U`` only compares values, so in the float variant inputs on [0, 1] or 0..255 give the same LOE; the
uint8 path takes [0, 1] inputs (scaled by 255 and rounded).

Cost: O(m²) comparisons per image, done in chunks of rows (bounded memory), m = 50 x 75 = 3750 for a 2:3
image at the default protocol.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench.metrics.niqe import imresize_matlab

__all__ = ["loe", "loe_downsampled_shape", "loe_protocol", "loe_version", "lightness", "rank_disorder"]


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


def loe_protocol(short_side: int | None = 50, quantize_8bit: bool = True) -> str:
    """A one-line description of the LOE protocol, to store next to LOE values."""
    size = "full resolution" if short_side is None else f"short side {short_side} (MATLAB bicubic imresize)"
    q = ", uint8 as MATLAB loe.m on 8-bit files" if quantize_8bit else ", float lightness (not loe.m)"
    return f"LOE(ref=low-light input; L=max(R,G,B); {size}{q})"


def loe_version(short_side: int | None = 50, quantize_8bit: bool = True) -> str:
    """The ``version`` string recorded next to LOE values (v2: the uint8 path of ``loe.m`` by default)."""
    return f"loe:bench.metrics.loe,{loe_protocol(short_side, quantize_8bit)};v2"


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


def loe(enhanced: Tensor, reference: Tensor, short_side: int | None = 50, quantize_8bit: bool = True,
        chunk: int = 1024) -> Tensor:
    """LOE of ``enhanced`` against the low-light input ``reference``; both (B,3,H,W) in [0, 1] (or any scale
    with ``quantize_8bit=False``). Returns (B,) float64.

    ``short_side`` pins the down-sampling protocol (see module docstring; ``None`` = no resize);
    ``quantize_8bit`` (default) follows ``loe.m`` on uint8 images.
    """
    if enhanced.shape != reference.shape:
        raise ValueError(f"enhanced {tuple(enhanced.shape)} and reference {tuple(reference.shape)} differ")
    maps = []
    for img in (reference, enhanced):
        x = img.detach().to(torch.float64)
        if quantize_8bit:
            x = torch.floor(x.clamp(0, 1) * 255 + 0.5)  # imread: 8-bit values
        lit = lightness(x)
        h, w = lit.shape[-2:]
        size = loe_downsampled_shape(h, w, short_side)
        if size != (h, w):
            lit = imresize_matlab(lit, size=size, uint8=quantize_8bit)
        maps.append(lit.flatten(1))
    return rank_disorder(maps[0], maps[1], chunk=chunk).to(torch.float64).mean(dim=1)
