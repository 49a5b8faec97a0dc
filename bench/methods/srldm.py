"""SRLDM: latent-diffusion 4x super-resolution used as a restorer (Liu, seed paper §3.1).

"The low-resolution image is directly concatenated with the latent vector z_t and togetherly fed into
the denoising model ... For other image restoration tasks, such as denoising and deblurring, we
down-scale the degraded image four times and follow the same pipeline."

Input rule (no per-task code; decided by sizes). Let ``p = degradation.frame_image(y)`` (the degraded
picture in the image frame, in [0, 1]; a valid convolution's smaller y is edge-padded back in place)
and (H, W) the target size, f the model's factor (4):

* ``p`` is (H/f, W/f) (``sr4``, ``sr4_bicubic``, ``sr4_noisy``): p is the LR input as is;
* ``p`` is (H, W) (deblur, denoise, inpaint, colorize, lowlight): the LR input is ``p`` downscaled to
  (round(H/f), round(W/f)) with ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``
  (PIL-style antialiased bicubic; the seed paper does not name its filter);
* ``p`` is (H/k, W/k) for an integer k > f (``sr8``): p is upsampled to (H/f, W/f) with bicubic
  interpolation (``align_corners=False``, no antialias: it is an upscale), then super-resolved f x;
* anything else is a ValueError.

The LR input is clipped to [0, 1] (a noisy measurement can leave it; the model was trained on 8-bit LR
images) and mapped to [-1, 1]. If its side is not a multiple of the UNet's downsampling (8 for the hub
model) it is padded (replicate) at the bottom/right and the output cropped back (diffusers' PIL path
crops the input to a multiple of 32 instead; we keep every pixel). If f * LR size != (H, W) (a side not
divisible by f) the output is resized to (H, W) with bicubic interpolation.

Sampler: :func:`sample_ldm_sr` mirrors ``LDMSuperResolutionPipeline.__call__`` (diffusers 0.42) step for
step, except that all noise (initial latents and DDIM's eta-variance noise) comes from per-image
generators (``bench.seeding.randn``), passed to ``DDIMScheduler.step`` as ``variance_noise``; diffusers
would draw the variance noise from one generator for the whole batch. ``eta`` defaults to 1.0 as in
CompVis' ``notebook_helpers.py`` (DDIM with eta=1 on c in [-1, 1]); diffusers' pipeline defaults to 0.0
(``method.eta=0`` reproduces it). NFE per image = ``steps`` UNet calls (+1 VQ decode, not counted).
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor

from bench import seeding
from bench.cli_errors import reject_unknown_keys
from bench.methods.base import Method
from bench.models.ldm import EMBEDDED_DIR, HUB_ID, LDMSR, load_ldm_sr, tiny_ldm_sr
from bench.tasks import Degradation

LDM_KEYS = ("source", "local_dir", "seed")
#: ``method.ldm.source`` names that are not hub ids
LOCAL_SOURCES = ("embedded", "tiny")


@torch.no_grad()
def sample_ldm_sr(unet, vqvae, scheduler, lr: Tensor, generators: list[torch.Generator], steps: int,
                  eta: float) -> Tensor:
    """DDIM sampling of the LDM SR model (diffusers ``LDMSuperResolutionPipeline.__call__``).

    Notation: c = LR image in [-1, 1] (B, 3, h, w); z_t latents (B, 3, h, w) at the LR resolution;
    eps_theta(cat[z_t, c], t) the UNet; D the VQ decoder (f x upsampling).

        z_T ~ N(0, I) * init_noise_sigma                  (per-image generators)
        for t in timesteps:  z_{t-1} = DDIM(eps_theta(cat[z_t, c], t), t, z_t; eta, noise ~ N(0, I))
        x = clamp(D(z_0), -1, 1)

    Returns x in [-1, 1], (B, 3, f*h, f*w).
    """
    dtype = next(unet.parameters()).dtype
    c = lr.to(dtype)
    scheduler.set_timesteps(steps, device=c.device)
    latent_shape = (unet.config.in_channels // 2, *c.shape[-2:])
    z = seeding.randn(generators, latent_shape, c.device, dtype) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        z_in = scheduler.scale_model_input(torch.cat([z, c], dim=1), t)
        eps = unet(z_in, t).sample
        noise = seeding.randn(generators, latent_shape, c.device, dtype) if eta > 0 else None
        z = scheduler.step(eps, t, z, eta=eta, variance_noise=noise).prev_sample
    x = vqvae.decode(z).sample
    return x.clamp(-1.0, 1.0)


def check_ldm_config(ldm: dict) -> dict:
    """Validate the ``method.ldm`` mapping: keys ``source`` (embedded | tiny | hub id), ``local_dir``, ``seed``."""
    ldm = dict(ldm or {})
    reject_unknown_keys("method.ldm", ldm, LDM_KEYS)
    source = ldm.get("source") or None
    local_dir = ldm.get("local_dir") or None
    if source is None and local_dir is None:
        raise ValueError(f"method.ldm needs source (embedded | tiny | {HUB_ID}) or local_dir=/path/to/diffusers-dir")
    if source is not None and source not in LOCAL_SOURCES and "/" not in str(source):
        close = difflib.get_close_matches(str(source), [*LOCAL_SOURCES, HUB_ID], 1, cutoff=0.5)
        raise ValueError(f"method.ldm.source={source!r} is neither 'embedded', 'tiny' nor a hub id 'owner/name'"
                         + (f"; did you mean {close[0]!r}?" if close else f"; e.g. {HUB_ID}"))
    return {"source": source, "local_dir": local_dir, "seed": int(ldm.get("seed") or 0)}


class SRLDM(Method):
    name = "srldm"
    tasks = None  # every task: SR measurements directly, others downscaled f x (module docstring)

    def __init__(self, ldm: dict, steps: int = 100, eta: float = 1.0):
        super().__init__()
        self.ldm_cfg = check_ldm_config(ldm)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"srldm: steps={steps!r} must be an integer in [1, 1000] (DDIM steps over "
                             f"1000 training timesteps). Fix: e.g. steps=100")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
            raise ValueError(f"srldm: eta={eta!r} must be a number >= 0 (0 = deterministic DDIM, 1 = "
                             f"CompVis notebook). Fix: e.g. method.eta=1.0")
        self.steps, self.eta = int(steps), float(eta)
        self.ldm: LDMSR | None = None

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        cfg = self.ldm_cfg
        if self.ldm is None:
            if cfg["local_dir"] is None and cfg["source"] == "embedded":  # the shipped GPU-trained model
                self.ldm = load_ldm_sr(None, str(EMBEDDED_DIR), device)
                self.ldm.origin = f"embedded:{self.ldm.origin}"
            elif cfg["local_dir"] or cfg["source"] != "tiny":
                self.ldm = load_ldm_sr(cfg["source"], cfg["local_dir"], device)
            else:
                self.ldm = tiny_ldm_sr(cfg["seed"], device)
        self.ldm.to(device)

    # ------------------------------------------------------------------ input
    def lr_input(self, picture: Tensor, target_hw: tuple[int, int]) -> tuple[Tensor, str]:
        """The LR conditioning image in [0, 1] and how it was obtained: "measurement", "downscaled" or
        "upsampled"."""
        f = self.ldm.scale_factor
        H, W = target_hw
        h, w = picture.shape[-2:]
        if (h * f, w * f) == (H, W):
            return picture, "measurement"
        if (h, w) == (H, W):
            size = (max(1, round(H / f)), max(1, round(W / f)))
            return F.interpolate(picture, size=size, mode="bicubic", antialias=True, align_corners=False), \
                "downscaled"
        if h * f < H and w * f < W and H % h == 0 and W % w == 0 and H // h == W // w:  # SR by k > f
            size = (H // f, W // f)
            return F.interpolate(picture, size=size, mode="bicubic", align_corners=False), "upsampled"
        raise ValueError(f"srldm: the measurement picture is {h}x{w} but the target is {H}x{W}; srldm needs "
                         f"either a {f}x smaller picture (SR), a k x smaller one with an integer k > {f} "
                         f"(upsampled to {f}x smaller first) or a full-size one (downscaled {f}x)")

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        if self.ldm is None:
            self.setup(y.device)
        picture = degradation.frame_image(y)
        op = degradation.operator
        target = tuple(op.x_shape[-2:]) if hasattr(op, "x_shape") else tuple(picture.shape[-2:])
        lr, _ = self.lr_input(picture, target)
        x = self.super_resolve(lr, generators)
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode="bicubic", align_corners=False)
        self.last_nfe = self.steps
        return x.clamp(0, 1)

    def super_resolve(self, lr: Tensor, generators: list[torch.Generator]) -> Tensor:
        """LR picture in [0, 1] (B, 3, h, w) -> f x larger picture in [0, 1] (pads to the UNet multiple)."""
        m, f = self.ldm.unet_multiple, self.ldm.scale_factor
        h, w = lr.shape[-2:]
        c = lr.clamp(0, 1) * 2 - 1
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            c = F.pad(c, (0, pw, 0, ph), mode="replicate")
        x = sample_ldm_sr(self.ldm.unet, self.ldm.vqvae, self.ldm.make_scheduler(), c, generators,
                          self.steps, self.eta)
        return (x[..., : f * h, : f * w] + 1) / 2

    def describe(self) -> dict:
        return {
            "name": self.name, "steps": self.steps, "eta": self.eta,
            "ldm": {**self.ldm_cfg, **(self.ldm.describe() if self.ldm is not None else {})},
            "sampler": "DDIM (diffusers DDIMScheduler.step), per-image generators for z_T and eta noise",
            "lr_input": "SR: measurement picture; other tasks: bicubic antialias downscale by the model factor",
            "lr_clip": "[0, 1] then *2-1", "nfe_per_image": self.steps,
        }
