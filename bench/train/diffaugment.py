"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020).

The same random, differentiable transforms T are applied to real and to generated images before the
discriminator, D(T(x)) and D(T(G(z))), so D cannot memorise the few training images and G still gets
gradients through T (paper eq. (3)-(4)). Policy ``"color,translation,cutout"`` is the paper's choice for
small data sets; the transforms follow the official ``DiffAugment_pytorch.py`` exactly (images in [-1, 1]):

* color: brightness + U(-0.5, 0.5); saturation * U(0, 2) around the per-pixel channel mean; contrast
  * U(0.5, 1.5) around the per-image mean;
* translation: an integer shift of up to 1/8 of the size in each direction, zero-padded;
* cutout: a square of half the size (centre uniform over the image, clipped at the borders) set to 0.

Deviation: every draw comes from the caller's ``torch.Generator`` (the official code uses the global RNG),
so a training step is a function of its seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")


def check_policy(policy: str) -> list[str]:
    """``"color,translation,cutout"`` -> its parts; unknown parts are an error naming the choices."""
    parts = [p.strip() for p in str(policy or "").split(",") if p.strip()]
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ValueError(f"diffaugment policy {policy!r}: unknown part(s) {bad}; allowed: {list(POLICIES)} "
                         f"(comma-separated, e.g. 'color,translation,cutout'; '' = none)")
    return parts


def _rand(g: torch.Generator, n: int, x: Tensor) -> Tensor:
    return torch.rand(n, 1, 1, 1, generator=g).to(device=x.device, dtype=x.dtype)


def color(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    x = x + (_rand(g, n, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(g, n, x) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(g, n, x) + 0.5) + mean


def translation(x: Tensor, g: torch.Generator, ratio: float = 0.125) -> Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=g).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=g).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    pad = F.pad(x, [1, 1, 1, 1])
    return pad.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def cutout(x: Tensor, g: torch.Generator, ratio: float = 0.5) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=g).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=g).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: str, g: torch.Generator) -> Tensor:
    """T(x) for the comma-separated ``policy`` (applied in the official order color, translation, cutout)."""
    for part in check_policy(policy):
        x = _OPS[part](x, g)
    return x
