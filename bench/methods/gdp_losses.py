"""GDP's losses, patch grid and guidance (Fei et al., CVPR 2023): tensor code, no config, no RNG.

Everything works on [0, 1] images (B, C, H, W) and returns one value per image, shape (B,), so a
batch's sum has per-image gradients (batch-composition independence).

* Distances ``L(y, D(x))`` (slides "Reconstruction Loss: MSE, SSIM..."): :func:`mse` is the
  official one (``mse = ((x_in_lr - x_lr) ** 2).mean(dim=(1, 2, 3))`` in every official
  ``sample_*.py``); :func:`ssim_distance` (1 - SSIM, 11-tap Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1) is offered because the paper names it; official never uses it.
* Quality losses ``Q`` ("adopted from Zero-DCE", official ``scripts/MyLoss.py``). The colorization
  scripts (``sample_x0_color.py``, ``sample_color.py``) use ``L_color`` (``- 500 * mean(L_color(x))``
  on x in [-1, 1], GDP's ``color_colorize``); the low-light script builds ``L_exp(8, 0.3)``,
  ``L_color()``, ``L_TV()`` but the line that would use them is commented out:

  - :func:`exposure_loss` = MyLoss ``L_exp``: channel mean, ``AvgPool2d(patch)``, then
    ``mean((pool - E) ** 2)``; squared, as the code (the slides print ``|R_k - E|``).
  - :func:`color_loss` = MyLoss ``L_color``: channel means m_R, m_G, m_B per image,
    D_ab = (m_a - m_b)^2, k = sqrt(D_RG^2 + D_RB^2 + D_GB^2). We add 1e-12 under the root so the
    gradient stays finite for a grey image (official gives NaN there).
  - :func:`tv_loss` = MyLoss ``L_TV`` on the illumination mask M (H, W):
    ``2 * (sum(dh^2) / ((H-1) W) + sum(dw^2) / (H (W-1)))``.

  The commented-out low-light line weights them ``s/100`` (exposure), ``s/200`` (color) and ``s``
  (TV) against ``s`` for the MSE, i.e. ``exposure=0.01, color=0.005, tv=1`` in :class:`GDP` units.
* :func:`degradation_step`: the blind (f, M) update, per patch of a :class:`PatchGrid` as upstream.
* :class:`Guidance`: L_tot per image and the mean shift the GDP samplers add (``bench/methods/gdp.py``).
* :class:`PatchGrid`: official ``overlapping_grid_indices`` (low-light / HDR samplers): corners at
  ``range(0, H - p + 1, stride)`` plus ``H - p`` (same for W); overlapping outputs are averaged.
  We drop the duplicate corner that upstream gets when ``(H - p) % stride == 0`` (upstream runs
  that patch twice and so weights it double in the average).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
                     tv: float = 0.0, grid: "PatchGrid | None" = None) -> tuple[Tensor, Tensor, Tensor]:
    """One plain gradient step on (f, M) for fixed x (Algorithm 2: phi <- phi - l grad_phi L).

    Official: ``light_factor - grad(mse, light_factor)`` and the same for the mask (lr 1). With a
    ``grid`` of several patches, upstream's per-patch rule (``gaussian_diffusion_x0_enhancement_
    direct.py::p_sample``): every patch's loss is a mean over that patch, every patch steps its own copy
    of (f, M) from the pre-step values, and the new f is the mean of the patches' f, the new M the mean
    of the patches' M where they overlap (``grid.untile``). Returns (new f, new M, loss per image before
    the step; with patches the mean of its patches' losses). Used by the sampler's guidance and tested.
    """
    b = x.shape[0]
    tiled = grid is not None and not grid.whole
    if tiled:  # (B, ...) -> (B * P, ...), patch-major per image; f repeated per patch
        x, y, mask = grid.tile(x), grid.tile(y), grid.tile(mask)
        f = f.repeat_interleave(grid.count, 0)
    with torch.enable_grad():
        f = f.detach().requires_grad_(True)
        mask = mask.detach().requires_grad_(True)
        loss = distance(lowlight_model(x.detach(), f, mask), y)
        if tv:
            loss = loss + tv * tv_loss(mask)
        gf, gm = torch.autograd.grad(loss.sum(), (f, mask))
    f, mask, loss = (f - lr * gf).detach(), (mask - lr * gm).detach(), loss.detach()
    if tiled:
        f = f.reshape(b, grid.count, *f.shape[1:]).mean(1)
        mask, loss = grid.untile(mask), loss.reshape(b, grid.count).mean(1)
    return f, mask, loss


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


# -------------------------------------------------------------------------------------- guidance
@dataclass
class Guidance:
    """L_tot = distance(D(x), target) + Q(x) per image, and the mean shift
    ``-grad_x (scale * L_tot + color_pm * L_color(x))`` (x in [-1, 1]).

    ``predict`` maps a [0, 1] image to the comparison space (fixed D); with ``f``/``mask`` set the
    blind model ``f x + M`` is used instead and updated by :func:`degradation_step`
    (per patch of ``grid``). ``color_pm`` is the colorization scripts' absolute colour-constancy
    weight on the [-1, 1] image, already rescaled.
    """

    predict: Callable[[Tensor], Tensor] | None
    target: Tensor
    scale: float
    distance: Callable[[Tensor, Tensor], Tensor]
    exposure: float = 0.0
    exposure_patch: int = 8
    exposure_level: float = 0.3
    color: float = 0.0
    tv: float = 0.0
    lr: float = 1.0
    color_pm: float = 0.0
    f: Tensor | None = None
    mask: Tensor | None = None
    grid: PatchGrid | None = None

    def loss(self, x01: Tensor) -> Tensor:
        pred = self.predict(x01) if self.f is None else lowlight_model(x01, self.f, self.mask)
        total = self.distance(pred, self.target)
        if self.exposure:
            total = total + self.exposure * exposure_loss(x01, self.exposure_patch, self.exposure_level)
        if self.color:
            total = total + self.color * color_loss(x01)
        return total

    def __call__(self, x: Tensor) -> Tensor:
        grad = torch.zeros_like(x)
        if self.scale or self.color_pm:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                total = self.scale * self.loss((x_in + 1) / 2) if self.scale else 0.0
                if self.color_pm:  # official colorization: - 500 * L_color(x) on x in [-1, 1]
                    total = total + self.color_pm * color_loss(x_in)
                grad = -torch.autograd.grad(total.sum(), x_in)[0]
        if self.f is not None:  # Algorithm 2: phi <- phi - l grad_phi L_tot (same, pre-update phi)
            self.f, self.mask, _ = degradation_step(
                (x.detach() + 1) / 2, self.target, self.f, self.mask, self.lr, self.distance, self.tv,
                grid=self.grid)
        return grad
