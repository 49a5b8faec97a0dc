"""Full-reference pixel metrics (PSNR, SSIM) on the saved 8-bit images, written here in torch.

Both images are the 8-bit values written to / read from PNG (``uint8``), converted to float64 on the
0..255 scale. Two conventions that papers differ on are explicit arguments (``conf/metrics``):

* ``channel``: ``"rgb"`` (all three channels; SSIM is the mean of the per-channel SSIMs, as skimage's
  ``channel_axis``) or ``"y"`` (the BT.601 luma of MATLAB ``rgb2ycbcr`` / BasicSR ``rgb2ycbcr(y_only=True)``:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], kept in float as BasicSR does);
* ``crop_border``: pixels removed from every side before either metric (GDP's evaluator and BasicSR's SR
  scripts use 4 for 4x SR; the seed tables and DDRM use 0).

PSNR = ``10 log10(255² / MSE)`` over all pixels (and channels) of one image, data range 255 on either channel
choice (BasicSR). Official DDRM computes ``10 log10(1 / MSE)`` on [0, 1] tensors: the same number. An image
identical to its reference has MSE = 0 and PSNR = ``inf``, stored as such (BasicSR, skimage, torchmetrics);
the report applies :data:`PSNR_CAP_DB` to means and intervals (:func:`psnr_for_mean`).

SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004, eq. (13) with the paper's Section III-C settings):
Gaussian weighting window with sigma 1.5 truncated at 3.5 sigma (radius ``int(3.5 * 1.5 + 0.5) = 5``, an 11x11
window, as ``scipy.ndimage``'s kernel), weighted means, *population* (co)variances, ``K1 = 0.01``,
``K2 = 0.03``, ``L = 255``, and the mean of the SSIM map over the positions whose window lies entirely inside
the image - i.e. skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=...)``, which crops ``(win - 1) / 2`` from each side
of the map, and BasicSR's ``calculate_ssim`` ('valid' filtering). It does not depend on the installed
torchmetrics (whose border handling changed between releases: >= 1.4.2 averages over a reflect-padded border).
The separable filter is a shift-and-add over the 11 taps in float64, vectorised over batch and channels,
so it runs on whatever device the images are on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["psnr", "ssim", "psnr_ssim", "rgb_to_y", "gaussian_taps", "psnr_for_mean", "PSNR_CAP_DB",
           "CHANNELS", "PSNR_VERSION", "SSIM_VERSION", "pixel_version"]

CHANNELS = ("rgb", "y")
#: PSNR cap for means / intervals: what ignite's PSNR (GDP's evaluator) returns for identical images
#: (data range 1, 10 log10(1 / (MSE + 1e-10)) = 100 dB at MSE = 0); stored per-image values stay exact (inf)
PSNR_CAP_DB = 100.0
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03
PSNR_VERSION = "psnr:bench.metrics.pixel,8-bit,data_range=255,per-image,mse0=inf;v2"
SSIM_VERSION = ("ssim:bench.metrics.pixel,Wang2004,gaussian sigma=1.5 truncate=3.5 (11x11),population cov,"
                "K1=0.01,K2=0.03,L=255,valid-window mean (skimage crop),channel mean;v2")


def pixel_version(channel: str = "rgb", crop_border: int = 0) -> dict:
    """The ``version`` strings of PSNR and SSIM under one convention (recorded per run)."""
    conv = f",channel={channel},crop_border={int(crop_border)}"
    return {"psnr": PSNR_VERSION + conv, "ssim": SSIM_VERSION + conv}


def rgb_to_y(img: Tensor) -> Tensor:
    """(B,3,H,W) RGB in [0,1] -> (B,H,W) float64 Y of MATLAB ``rgb2ycbcr`` on 0..255; (B,1,H,W) -> 255*x."""
    x = img.detach().to(torch.float64)
    if x.shape[1] == 1:
        return x[:, 0] * 255.0
    if x.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) or (B,1,H,W), got {tuple(img.shape)}")
    return 16.0 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]


def _prepare(pred_u8: Tensor, target_u8: Tensor, channel: str, crop_border: int) -> tuple[Tensor, Tensor]:
    """uint8 (B,3,H,W) pair -> float64 (B,C,h,w) pair on 0..255 in the chosen convention."""
    for name, t in (("prediction", pred_u8), ("target", target_u8)):
        if t.dtype != torch.uint8:
            raise TypeError(f"pixel metrics take uint8 images (what was saved); the {name} is {t.dtype}")
        if t.ndim != 4:
            raise ValueError(f"pixel metrics take (B,C,H,W) batches; the {name} has shape {tuple(t.shape)}")
    if pred_u8.shape != target_u8.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(pred_u8.shape)} vs target {tuple(target_u8.shape)}")
    if channel not in CHANNELS:
        raise ValueError(f"metrics channel={channel!r} is not one of {CHANNELS}. Fix: metrics.channel=rgb "
                         "(all channels) or metrics.channel=y (BT.601 luma, BasicSR's test_y_channel)")
    c = int(crop_border)
    h, w = pred_u8.shape[-2:]
    if c < 0 or 2 * c >= min(h, w):
        raise ValueError(f"metrics crop_border={crop_border!r} must be >= 0 and leave pixels of a {w}x{h} image. "
                         "Fix: metrics.crop_border=0 (or 4, GDP's evaluator)")
    p, t = pred_u8.to(torch.float64), target_u8.to(torch.float64)
    if channel == "y":
        p, t = rgb_to_y(p / 255.0)[:, None], rgb_to_y(t / 255.0)[:, None]
    if c:
        p, t = p[..., c:-c, c:-c], t[..., c:-c, c:-c]
    return p, t


def psnr(pred_u8: Tensor, target_u8: Tensor, channel: str = "rgb", crop_border: int = 0) -> Tensor:
    """Per-image PSNR (dB) of (B,3,H,W) uint8 batches -> (B,) float64; ``inf`` where the images are equal."""
    p, t = _prepare(pred_u8, target_u8, channel, crop_border)
    mse = (p - t).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(255.0 ** 2 / mse)  # mse = 0 -> inf


def gaussian_taps(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE, dtype=torch.float64,
                  device=None) -> Tensor:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter`` (radius ``int(truncate*sigma+0.5)``)."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: Tensor, taps: list[float], dim: int) -> Tensor:
    """'valid' correlation of ``x`` with the symmetric 1-D ``taps`` along ``dim`` (shift-and-add; the taps
    are paired, ``t_i (x_i + x_{k-1-i})``, since the Gaussian is symmetric)."""
    k = len(taps)
    n, r = x.shape[dim] - k + 1, k // 2
    out = x.narrow(dim, r, n) * taps[r]
    for i in range(r):
        out.add_(x.narrow(dim, i, n) + x.narrow(dim, k - 1 - i, n), alpha=taps[i])
    return out


#: target float64 elements of one row chunk on the CPU (~2 MB: the five filtered moments stay in cache,
#: which is what makes this as fast as skimage's C filters; on CUDA the whole image is one chunk)
_CHUNK_ELEMENTS = 1 << 18


def ssim_map_means(p: Tensor, t: Tensor, data_range: float = 255.0) -> Tensor:
    """Mean of the SSIM map over the valid window positions, per image and channel.

    ``p``, ``t``: float64 (B, C, H, W) on the 0..``data_range`` scale -> (B, C) float64. Eq. (13) of Wang et
    al. with the Gaussian-weighted moments ``mu_x = w * x``, ``sigma_x^2 = w * x^2 - mu_x^2`` and
    ``sigma_xy = w * (x y) - mu_x mu_y`` (population), computed in row chunks.
    """
    taps = gaussian_taps().tolist()  # Python floats: no device sync inside the loop
    k = len(taps)
    b, c, h, w = p.shape
    if min(h, w) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels (its Gaussian window) after the border "
                         f"crop; got {w}x{h}. Fix: use larger images or metrics.crop_border=0")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    n_out = h - k + 1
    rows = n_out if p.device.type != "cpu" else max(8, _CHUNK_ELEMENTS // (5 * b * c * w) - (k - 1))
    total = torch.zeros(b, c, dtype=torch.float64, device=p.device)
    for r0 in range(0, n_out, rows):
        r1 = min(r0 + rows, n_out)
        ps, ts = p[..., r0:r1 + k - 1, :], t[..., r0:r1 + k - 1, :]
        mom = _filter_valid(_filter_valid(torch.stack([ps, ts, ps * ps, ts * ts, ps * ts]), taps, -2), taps, -1)
        ux, uy, uxx, uyy, uxy = mom.unbind(0)
        uxuy, ux2, uy2 = ux * uy, ux * ux, uy * uy
        s = ((2 * uxuy + c1) * (2 * (uxy - uxuy) + c2)) / ((ux2 + uy2 + c1) * ((uxx - ux2) + (uyy - uy2) + c2))
        total += s.sum(dim=(-2, -1))
    return total / (n_out * (w - k + 1))


def ssim(pred_u8: Tensor, target_u8: Tensor, channel: str = "rgb", crop_border: int = 0) -> Tensor:
    """Per-image SSIM of (B,3,H,W) uint8 batches -> (B,) float64 (mean over channels of the map means)."""
    p, t = _prepare(pred_u8, target_u8, channel, crop_border)
    return ssim_map_means(p, t).mean(dim=1)


def psnr_ssim(pred_u8: Tensor, target_u8: Tensor, channel: str = "rgb",
              crop_border: int = 0) -> tuple[Tensor, Tensor]:
    """Per-image PSNR and SSIM of (B, 3, H, W) uint8 batches -> two (B,) float64 tensors."""
    return psnr(pred_u8, target_u8, channel, crop_border), ssim(pred_u8, target_u8, channel, crop_border)


def psnr_for_mean(values) -> list[float]:
    """PSNR values as they enter means and intervals: ``min(v, PSNR_CAP_DB)``, so an identical image (inf)
    counts as :data:`PSNR_CAP_DB` and never above a nearly identical one; NaN stays NaN."""
    return [v if math.isnan(v) else min(v, PSNR_CAP_DB) for v in map(float, values)]
