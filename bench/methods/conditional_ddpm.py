"""Ancestral sampling of a conditional pixel DDPM with continuous noise-level conditioning (SR3, Palette).

Algorithm (SR3 ``GaussianDiffusion.p_sample_loop``; Palette ``Network.restoration``), with c the condition
image in [-1, 1] (B, 3, H, W), ``gamma_j`` the noise level the net was trained on (SR3: sqrt(abar_j),
Palette: abar_j) and, for Palette's inpainting, ``y0`` the known pixels and ``keep`` their mask (1 = known):

    x_K ~ N(0, I)                                  (Palette inpainting: x_K = c, the masked image with noise)
    for j = K-1, ..., 0:
        eps    = eps_theta(cat[c, x_j], gamma_j)
        x0_hat = clip(sqrt(1/abar_j) x_j - sqrt(1/abar_j - 1) eps, -1, 1)
        x      = coef1_j x0_hat + coef2_j x_j + [j > 0] sigma_j z,   sigma_j^2 = beta~_j (posterior variance)
        (Palette inpainting: x = keep * y0 + (1 - keep) * x)

Respacing (``steps`` < T): the K kept steps are guided-diffusion's ``space_timesteps(T, [K])`` (evenly spaced,
rounded; :func:`bench.diffusion.space_timesteps`), the betas become ``1 - abar_{t_j} / abar_{t_{j-1}}`` so the
K-step chain has exactly the marginals abar_{t_j} of the T-step one, and the net is called with the *exact*
continuous noise level of t_j (no rounding to an integer step: these nets never see step indices). With K = T
the tables are the official ones (same float64 computation, cast to float32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench import seeding
from bench.diffusion import RespacedSchedule, alphas_cumprod, timesteps
from bench.methods.base import Method
from bench.methods.prior_method import check_steps
from bench.models.conditional import ConditionalDDPM, check_kind, load_conditional
from bench.models.prior import to_plain

NOISE_LEVELS = ("sqrt_abar", "abar")


@dataclass(frozen=True)
class ConditionalSchedule:
    """The K-step tables (index j = 0..K-1, ascending noise) and the noise levels fed to the net."""

    tables: RespacedSchedule
    gamma: Tensor  # (K,) float32: sqrt(abar_{t_j}) or abar_{t_j}

    @property
    def num_steps(self) -> int:
        return self.tables.num_steps


def conditional_schedule(betas: Tensor, steps: int, noise_level: str, device) -> ConditionalSchedule:
    """Tables for ``steps`` respaced steps of the T-step ``betas`` (module docstring); ``steps = T``: all.

    Computed in float64 from the kept ``abar`` directly (``alpha'_j = abar_j / abar_{j-1}``), not from the
    cumulative product of the respaced betas: with few steps ``beta'`` rounds to 1 (Palette's test schedule
    ends at abar = 7e-21) and that product would be 0. The posterior log-variance is clipped at 1e-20 as
    upstream (it only matters at j = 0, where no noise is added)."""
    if noise_level not in NOISE_LEVELS:
        raise ValueError(f"noise_level={noise_level!r}; allowed: {', '.join(NOISE_LEVELS)}")
    kept = timesteps(steps, int(betas.numel()), kind="respaced")
    abar = alphas_cumprod(betas.to(torch.float64).cpu())[kept]
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    alpha = abar / abar_prev
    beta = 1 - alpha
    post_var = beta * (1 - abar_prev) / (1 - abar)
    log_beta = torch.log(beta)
    tables = dict(sqrt_recip_abar=(1 / abar).sqrt(), sqrt_recipm1_abar=(1 / abar - 1).sqrt(),
                  coef1=beta * abar_prev.sqrt() / (1 - abar), coef2=(1 - abar_prev) * alpha.sqrt() / (1 - abar),
                  log_var_min=post_var.clamp_min(1e-20).log(), log_var_max=log_beta, log_var_large=log_beta)
    gamma = abar.sqrt() if noise_level == "sqrt_abar" else abar
    return ConditionalSchedule(
        RespacedSchedule(torch.tensor(kept, dtype=torch.long, device=device),
                         **{k: v.to(device=device, dtype=torch.float32) for k, v in tables.items()}),
        gamma.to(device=device, dtype=torch.float32))


def p_sample(net: nn.Module, x: Tensor, c: Tensor, sched: ConditionalSchedule, j: int, z: Tensor | None,
             clip_denoised: bool = True) -> Tensor:
    """One ancestral step j -> j-1 (SR3 ``p_sample``; Palette ``p_sample``) with the given noise ``z``
    (ignored at j = 0, where no noise is added)."""
    t = sched.tables
    gamma = sched.gamma[j].expand(x.shape[0])
    eps = net(torch.cat([c, x], dim=1), gamma)
    x0 = t.sqrt_recip_abar[j] * x - t.sqrt_recipm1_abar[j] * eps
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
    mean = t.coef1[j] * x0 + t.coef2[j] * x
    if j == 0 or z is None:
        return mean
    return mean + torch.exp(0.5 * t.log_var_min[j]) * z


@torch.no_grad()
def sample(net: nn.Module, c: Tensor, sched: ConditionalSchedule, generators: list[torch.Generator],
           x_init: Tensor | None = None, y0: Tensor | None = None, keep: Tensor | None = None,
           clip_denoised: bool = True) -> Tensor:
    """The loop of the module docstring. ``x_init`` (default: per-image N(0, I)); ``y0``/``keep`` (both or
    neither): re-paste the known pixels after every step, as Palette's inpainting and uncropping do."""
    if (y0 is None) != (keep is None):
        raise ValueError("sample: y0 and keep go together (known pixels and their mask)")
    shape = tuple(c.shape[1:])
    x = seeding.randn(generators, shape, c.device, c.dtype) if x_init is None else x_init
    for j in reversed(range(sched.num_steps)):
        z = seeding.randn(generators, shape, c.device, c.dtype) if j > 0 else None
        x = p_sample(net, x, c, sched, j, z, clip_denoised)
        if keep is not None:
            x = keep * y0 + (1 - keep) * x
    return x


class ConditionalDDPMMethod(Method):
    """What SR3 and Palette share: the model (``model: ${model}``, a ``kind: sr3 | palette`` config), the step
    count (null = every step of the model's sampling schedule, as official; N = N respaced steps), the
    size check, NFE (one net call per step) and provenance."""

    kind = "?"

    def __init__(self, model: Mapping, steps: int | None = None, clip_denoised: bool = True):
        super().__init__()
        self.model_cfg = to_plain(model)
        check_kind(self.model_cfg, self.kind)  # at construction, before any data is read
        T = int(self.model_cfg.get("schedule", {}).get("n_timestep") or 0)
        self.steps = check_steps(self.kind, steps, allow_none=True, maximum=T or None,
                                 fix=f"steps=null (all {T} steps, official) or a smaller count, e.g. steps=100")
        if not isinstance(clip_denoised, bool):
            raise ValueError(f"{self.kind}: clip_denoised={clip_denoised!r} must be true or false "
                             f"(official: true). Fix: method.clip_denoised=true")
        self.clip_denoised = clip_denoised
        self.ddpm: ConditionalDDPM | None = None

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if self.ddpm is None:
            self.ddpm = load_conditional(self.model_cfg, device, self.kind)
        self.ddpm.net.to(device)

    def schedule(self, device) -> ConditionalSchedule:
        T = int(self.ddpm.betas.numel())
        return conditional_schedule(self.ddpm.betas, self.steps or T, self.ddpm.noise_level, device)

    def check_size(self, hw: tuple[int, int]) -> None:
        m = self.ddpm.multiple
        if hw[0] % m or hw[1] % m:
            raise ValueError(f"{self.kind}: the image is {hw[0]}x{hw[1]} but model {self.ddpm.info['model']!r} "
                             f"needs sides divisible by {m} (its UNet halves the size {m.bit_length() - 1} "
                             f"times). Fix: dataset.image_size=<a multiple of {m}>")

    def run_sampler(self, c: Tensor, generators: list[torch.Generator], **kw) -> Tensor:
        """c in [-1, 1] -> the sample in [0, 1]; records NFE."""
        self.check_size(tuple(c.shape[-2:]))
        sched = self.schedule(c.device)
        x = sample(self.ddpm.net, c, sched, generators, clip_denoised=self.clip_denoised, **kw)
        self.last_nfe = sched.num_steps
        return ((x + 1) / 2).clamp(0, 1)

    def describe(self) -> dict:
        T = int(self.model_cfg["schedule"]["n_timestep"])
        return {"name": self.name, "steps": self.steps, "clip_denoised": self.clip_denoised,
                "model": self.ddpm.info if self.ddpm is not None else self.model_cfg.get("name"),
                "sampler": "ancestral DDPM, posterior variance, x0 clipped; continuous noise level "
                           f"{'sqrt(abar)' if self.kind == 'sr3' else 'abar'}",
                "respacing": "none (official)" if self.steps in (None, T) else
                             f"guided-diffusion space_timesteps({T}, [{self.steps}])",
                "nfe_per_image": self.steps or T}
