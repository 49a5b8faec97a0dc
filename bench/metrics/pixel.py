"""Full-reference pixel metrics on saved 8-bit images, via torchmetrics.

Both images are the 8-bit values written to / read from PNG, mapped to [0, 1] by /255:
* PSNR = 10 log10(1 / MSE) over all pixels and channels of one image (``data_range=1``), as official
  DDRM prints it (it computes it on [0, 1] float tensors) — ours is on the 8-bit saved output;
* SSIM: torchmetrics' Gaussian-window SSIM (11x11, sigma 1.5, K1=0.01, K2=0.03) on RGB, averaged over
  channels (Wang et al. 2004 settings). Papers differ (GDP crops 4 border pixels, its scripts use
  skimage on grayscale): the definition is recorded in every run manifest as ``METRIC_VERSION``.
"""

from __future__ import annotations

import torch

METRIC_VERSION = "psnr:torchmetrics,data_range=1,per-image,rgb;ssim:torchmetrics,gaussian11,sigma1.5,rgb;v1"


def _unit(x_u8: torch.Tensor) -> torch.Tensor:
    if x_u8.dtype != torch.uint8:
        raise TypeError(f"pixel metrics take uint8 images (what was saved), got {x_u8.dtype}")
    return x_u8.to(torch.float64) / 255.0


def psnr_ssim(pred_u8: torch.Tensor, target_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR and SSIM of (B, 3, H, W) uint8 batches -> two (B,) float64 tensors."""
    if pred_u8.shape != target_u8.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(pred_u8.shape)} vs target {tuple(target_u8.shape)}")
    # imported here: torchmetrics takes seconds to import, which a skipped sweep cell should not pay
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p, t = _unit(pred_u8), _unit(target_u8)
    psnr = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    return psnr.reshape(-1), ssim.reshape(-1)
