"""GDP's losses and patch grid (Fei et al., CVPR 2023): pure tensor functions, no config, no RNG.

Everything works on [0, 1] images (B, C, H, W) and returns one value per image, shape (B,), so a
batch's sum has per-image gradients (batch-composition independence).

* Distances ``L(y, D(x))`` (slides "Reconstruction Loss: MSE, SSIM..."): :func:`mse` is the
  official one (``mse = ((x_in_lr - x_lr) ** 2).mean(dim=(1, 2, 3))`` in every official
  ``sample_*.py``); :func:`ssim_distance` (1 - SSIM, 11-tap Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1) is offered because the paper names it; official never uses it.
* Quality losses ``Q`` ("adopted from Zero-DCE", official ``scripts/MyLoss.py``; the low-light
  script builds ``L_exp(8, 0.3)``, ``L_color()``, ``L_TV()`` but the line that would use them is
  commented out):

  - :func:`exposure_loss` = MyLoss ``L_exp``: channel mean, ``AvgPool2d(patch)``, then
    ``mean((pool - E) ** 2)``; squared, as the code (the slides print ``|R_k - E|``).
  - :func:`color_loss` = MyLoss ``L_color``: channel means m_R, m_G, m_B per image,
    D_ab = (m_a - m_b)^2, k = sqrt(D_RG^2 + D_RB^2 + D_GB^2). We add 1e-12 under the root so the
    gradient stays finite for a grey image (official gives NaN there).
  - :func:`tv_loss` = MyLoss ``L_TV`` on the illumination mask M (H, W):
    ``2 * (sum(dh^2) / ((H-1) W) + sum(dw^2) / (H (W-1)))``.

  The commented-out official line weights them ``s/100`` (exposure), ``s/200`` (color) and ``s``
  (TV) against ``s`` for the MSE, i.e. ``exposure=0.01, color=0.005, tv=1`` in :class:`GDP` units.
* :class:`PatchGrid`: official ``overlapping_grid_indices`` (low-light / HDR samplers): corners at
  ``range(0, H - p + 1, stride)`` plus ``H - p`` (same for W); overlapping outputs are averaged.
  We drop the duplicate corner that upstream gets when ``(H - p) % stride == 0`` (upstream runs
  that patch twice and so weights it double in the average).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("mse", "ssim")


# ------------------------------------------------------------------------------------- distances
def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per image, (B,)."""
    return ((pred - target) ** 2).flatten(1).mean(1)


def _gauss_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    ax = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_distance(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """1 - mean SSIM per image, (B,) (Wang et al. 2004; 'valid' windows, data range 1).

    The window shrinks to the image side when the image is smaller than ``window``.
    """
    c = pred.shape[1]
    size = min(window, pred.shape[-2], pred.shape[-1])
    w = _gauss_window(size, sigma, c, pred)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, w, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return 1.0 - ssim_map.flatten(1).mean(1)


def distance_fn(name: str):
    """The per-image distance called ``name`` (one of :data:`DISTANCES`)."""
    if name == "mse":
        return mse
    if name == "ssim":
        return ssim_distance
    raise ValueError(f"distance={name!r} is invalid: use one of {DISTANCES} (official GDP uses 'mse')")


# -------------------------------------------------------------------------------- quality losses
def exposure_loss(x: Tensor, patch: int = 8, level: float = 0.3) -> Tensor:
    """Zero-DCE exposure control (MyLoss ``L_exp(patch, level)``), (B,)."""
    gray = x.mean(1, keepdim=True)
    k = min(patch, gray.shape[-2], gray.shape[-1])
    pooled = F.avg_pool2d(gray, k)
    return ((pooled - level) ** 2).flatten(1).mean(1)


def color_loss(x: Tensor) -> Tensor:
    """Zero-DCE colour constancy (MyLoss ``L_color``), (B,)."""
    m = x.mean((2, 3))  # (B, 3)
    d_rg = (m[:, 0] - m[:, 1]) ** 2
    d_rb = (m[:, 0] - m[:, 2]) ** 2
    d_gb = (m[:, 2] - m[:, 1]) ** 2
    return (d_rg**2 + d_rb**2 + d_gb**2 + 1e-12).sqrt()


def tv_loss(mask: Tensor) -> Tensor:
    """Illumination smoothness of the mask M (MyLoss ``L_TV``), M (B, 1, H, W) -> (B,)."""
    h, w = mask.shape[-2:]
    dh = ((mask[..., 1:, :] - mask[..., :-1, :]) ** 2).flatten(1).sum(1) / max((h - 1) * w, 1)
    dw = ((mask[..., :, 1:] - mask[..., :, :-1]) ** 2).flatten(1).sum(1) / max(h * (w - 1), 1)
    return 2.0 * (dh + dw)


# --------------------------------------------------------------------------- learned degradation
def lowlight_model(x: Tensor, f: Tensor, mask: Tensor) -> Tensor:
    """GDP's blind low-light model ``y = f x + M`` (official ``(x0+1)/2 * light_factor + light_mask``);
    x (B, C, H, W) in [0, 1], f (B, 1, 1, 1), M (B, 1, H, W) shared by the channels."""
    return x * f + mask


def degradation_step(x: Tensor, y: Tensor, f: Tensor, mask: Tensor, lr: float, distance=mse,
                     tv: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """One plain gradient step on (f, M) for fixed x (Algorithm 2: phi <- phi - l grad_phi L).

    Official: ``light_factor - grad(mse, light_factor)`` and the same for the mask (lr 1). Returns
    (new f, new M, loss per image before the step). Used by the sampler's guidance and tested alone.
    """
    with torch.enable_grad():
        f = f.detach().requires_grad_(True)
        mask = mask.detach().requires_grad_(True)
        loss = distance(lowlight_model(x.detach(), f, mask), y)
        if tv:
            loss = loss + tv * tv_loss(mask)
        gf, gm = torch.autograd.grad(loss.sum(), (f, mask))
    return (f - lr * gf).detach(), (mask - lr * gm).detach(), loss.detach()


# ------------------------------------------------------------------------------------ patch grid
class PatchGrid:
    """Overlapping p x p patches of an (H, W) image with averaged overlaps (official GDP tiling).

    ``tile`` (B, C, H, W) -> (B * P, C, p, p), patch-major per image (image b's patches are rows
    b*P .. b*P+P-1); ``untile`` is its averaging inverse. An image of exactly p x p is one patch.
    """

    def __init__(self, height: int, width: int, patch: int, stride: int):
        if patch < 1 or stride < 1:
            raise ValueError(f"patch={patch}, stride={stride}: both must be >= 1")
        if height < patch or width < patch:
            raise ValueError(
                f"image {height}x{width} is smaller than the {patch}px patch (the prior's image size): "
                f"GDP tiles larger images but cannot shrink the prior. Fix: use images of at least "
                f"{patch}x{patch} (e.g. dataset.image_size={patch}) or a prior trained at a smaller size"
            )
        self.height, self.width, self.patch, self.stride = height, width, patch, stride
        self.corners = [(i, j) for i in self._starts(height) for j in self._starts(width)]

    def _starts(self, n: int) -> list[int]:
        return sorted(set(range(0, n - self.patch + 1, self.stride)) | {n - self.patch})

    @property
    def count(self) -> int:
        return len(self.corners)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def tile(self, x: Tensor) -> Tensor:
        if self.whole:
            return x
        p = self.patch
        parts = [x[:, :, i:i + p, j:j + p] for i, j in self.corners]
        return torch.stack(parts, 1).reshape(-1, x.shape[1], p, p)

    def coverage(self, device=None, dtype=torch.float32) -> Tensor:
        """How many patches cover each pixel, (H, W)."""
        cov = torch.zeros(self.height, self.width, device=device, dtype=dtype)
        for i, j in self.corners:
            cov[i:i + self.patch, j:j + self.patch] += 1
        return cov

    def untile(self, patches: Tensor) -> Tensor:
        if self.whole:
            return patches
        p, n = self.patch, self.count
        parts = patches.reshape(-1, n, patches.shape[1], p, p)
        out = patches.new_zeros(parts.shape[0], patches.shape[1], self.height, self.width)
        for k, (i, j) in enumerate(self.corners):
            out[:, :, i:i + p, j:j + p] += parts[:, k]
        return out / self.coverage(patches.device, patches.dtype)
