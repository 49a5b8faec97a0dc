"""Measurement consistency of a restoration: does the output explain the measurement?

Two definitions, stored side by side because papers use both:

* ``consistency`` (ours; InverseBench's "data misfit", DPS/DDRM-style): ``||A(x̂) - y||² / M`` with the task's
  operator ``A``, the measurement ``y`` the method was given (noise included) and ``M`` its length, in [0, 1]
  image units; ``consistency_psnr = 10 log10(1 / consistency)`` (dB, peak 1) is the same number in
  measurement space. ``x̂`` is the *saved* 8-bit output / 255 (metrics come from what was saved). For a
  noisy task the true image scores about ``sigma²`` (``E||A x - y||²/M = sigma²``), so values far below
  ``sigma²`` mean the output fits the noise. Linear tasks only (``A`` with SVD parts).
* ``consistency_gdp`` (GDP's ``evaluations/cal_all_metrics.py::compute_consistency``, the "Consistency"
  column of its ImageNet table): ``mean((round(clamp(255 * bicubic_aa(x̂_8bit / 255), 0, 255)) - y_8bit)²)``
  on the 0..255 scale, where ``bicubic_aa`` is ``F.interpolate(mode='bicubic', antialias=True)`` to the size
  of the degraded picture ``y_8bit`` (the saved ``degraded/<id>.png``), computed in float32 as GDP does. It is
  defined through an LR image, so it is stored for super-resolution only (a degraded picture smaller than the
  output): for same-size tasks the resize is the identity and the script would measure the distance to the
  blurred / masked / gray picture (0 for the identity baseline), not a data fit, and GDP's deblur / inpaint /
  colorize numbers came from inputs its repository does not define.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["measurement_consistency", "gdp_consistency", "CONSISTENCY_VERSION", "GDP_CONSISTENCY_VERSION"]

CONSISTENCY_VERSION = "consistency:||A(x_8bit/255) - y||^2/M,[0,1] units,+psnr peak 1;v1"
GDP_CONSISTENCY_VERSION = ("consistency_gdp:GDP cal_all_metrics.compute_consistency,bicubic antialias to the "
                           "degraded picture,rounded,MSE 0..255;v1")


def measurement_consistency(operator, x_hat01: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(||A(x̂) - y||² / M, 10 log10(1 / that))`` per image, (B,) float64 each, for a linear ``operator``."""
    b = x_hat01.shape[0]
    ax = operator.A(x_hat01.to(y.dtype)).reshape(b, -1)
    yy = y.reshape(b, -1)
    if ax.shape != yy.shape:
        raise ValueError(f"A(x^) has shape {tuple(ax.shape)} but y has {tuple(yy.shape)}")
    mse = (ax.to(torch.float64) - yy.to(torch.float64)).square().mean(dim=1)
    return mse, 10.0 * torch.log10(1.0 / mse)


def gdp_consistency(x_hat_u8: Tensor, degraded_u8: Tensor) -> Tensor:
    """GDP's consistency of (B,3,H,W) uint8 outputs against (B,3,h,w) uint8 degraded pictures -> (B,) float64."""
    if x_hat_u8.dtype != torch.uint8 or degraded_u8.dtype != torch.uint8:
        raise TypeError("gdp_consistency takes the saved uint8 images")
    hr = x_hat_u8.to(torch.float32) / 255
    hr = F.interpolate(hr, size=tuple(degraded_u8.shape[-2:]), mode="bicubic", antialias=True)
    hr = torch.round(torch.clamp(hr * 255, min=0, max=255))
    return (hr - degraded_u8.to(hr.device, torch.float32)).square().flatten(1).mean(dim=1).to(torch.float64)
