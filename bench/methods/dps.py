"""DPS: diffusion posterior sampling for general noisy inverse problems (Chung et al., ICLR 2023).

:func:`dps_sample` is the sampler, one function mirroring official ``guided_diffusion/gaussian_diffusion.py
::p_sample_loop`` with ``DDPM.p_sample`` and ``condition_methods.py::PosteriorSampling`` (``ps``) of
DPS2022/diffusion-posterior-sampling; :class:`DPS` wraps it.

Notation (paper Algorithm 1, eq. (16); code names in brackets), x in [-1, 1]:

* guided-diffusion DDPM ancestral steps over the prior's schedule, respaced to K = ``steps`` kept steps
  (official: K = T = 1000, no respacing) with SpacedDiffusion's betas (:func:`bench.diffusion.
  respaced_schedule`); j = K-1 .. 0, the network is called with the original index t_j.
* x0^ = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), -1, 1)  [pred_xstart], clamp inside autograd.
* x'_{t-1} = mu_t(x0^, x_t) + sigma_t z (no z at j = 0), mu = coef1 x0^ + coef2 x_t; log sigma_t^2 =
  f log beta_t + (1 - f) log beta~_t, f = (v + 1)/2 from the net's variance channels [learned_range];
  nets without them use ``prior.variance``: fixed_small (beta~_t, beta~_0 := beta~_1) or fixed_large
  (beta_t, with beta~_1 at t = 0, guided-diffusion's FIXED_LARGE).
* r = ||y - A x0^||_2, the NON-squared norm (paper footnote 5; issue #20), per image here;
  x_{t-1} = x'_{t-1} - zeta grad_{x_t} r  (the gradient goes through the UNet and the clamp), then detach.
  Since grad r = grad r^2 / (2 r), this is the paper's zeta_t = zeta' / ||y - A x0^|| with zeta' = zeta / 2.

Scales (zeta, official ``scale`` of each ``configs/*_config.yaml``, all for 1000 steps at 256 px):
super-resolution 0.3, Gaussian (and motion) deblur 0.3, inpainting 0.5. Our choice for tasks without an
official config: denoise and colorize 0.3, the value of every official config that is not inpainting
(inpainting's larger scale goes with its 30-70 % missing pixels). ``method.scale`` overrides all.

Keeping the scale meaningful (``rescale: true``, default): per kept step we use
``zeta_eff = zeta * (T / K) * sqrt(N / N_ref)`` with N = C*H*W and N_ref = 3*256*256.
T / K: each respaced step stands for T / K original steps, each of which subtracted zeta grad r, so the
total pull is kept (as for GDP's scale). sqrt(N / N_ref): grad_x r = -J^T A^T r / ||r|| has O(1) norm
whatever the image size, spread over N values, so its per-pixel effect scales like 1/sqrt(N); the
factor keeps the official per-pixel step at any size. At K = T = 1000 and 256 px, zeta_eff = zeta exactly.
``rescale: false`` uses zeta as is. The normalised step does not shrink as r -> 0: a large zeta_eff makes
x0^ oscillate around the data fit with amplitude ~ zeta_eff per step, so few steps stay coarse.
``method.variance`` overrides the prior's variance rule. Measured with the embedded 64-px prior (whose rule
is fixed_large) on deblur_gauss, 2 sample photos (input 22.93 dB): the rescaled official scale gives 15.0 /
17.2 / 18.7 dB at 20 / 50 / 100 steps, 20.2 / 19.5 / 20.0 with ``variance=fixed_small`` (few respaced
fixed_large steps inject too much noise), and 24.6 at 20 steps with fixed_small and ``scale=10,
rescale=false``: for this weak prior the transferred official scale under-guides by ~3x. 1000-step runs
were not affordable on the shared CPU, so the official setting itself is not measured here.

Deliberate differences: norms are per image (``batch_coupled_norm=true`` reproduces the official
Frobenius norm of the whole batch tensor, which couples the images when B > 1; official runs B = 1);
y is the harness's y (official adds noise in [-1, 1] with its config sigma, i.e. 0.05 there is 0.025 in
[0, 1] units; sigma_y never enters the update); the output is the final x_0 clamped to [0, 1] (official
saves a per-image min-max normalisation, ``clear_color``, which also distorts its labels).

Cost: NFE = K, each with a backward pass through the UNet: activations of the whole forward are kept,
about 2-3x the memory of plain sampling at the same batch size and ~2x the time per step (CPU, embedded
64-px prior, batch 2: 0.12 s forward, 0.21 s forward + backward). ``backprop_through_prior = True``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import VARIANCES, RespacedSchedule, resolve_variance, respaced_schedule
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps, per_task
from bench.tasks import Degradation, Task

#: official config scales (sr, deblur, inpaint) + ours for denoise / colorize (module docstring)
SCALES = {"sr": 0.3, "deblur": 0.3, "inpaint": 0.5, "denoise": 0.3, "colorize": 0.3}
#: the official image size the scales were set for (3 x 256 x 256)
REFERENCE_PIXELS = 3 * 256 * 256


def effective_scale(scale: float, train_steps: int, steps: int, n_pix: int) -> float:
    """zeta * (T / K) * sqrt(N / (3*256*256)) (== zeta for 1000 steps at 256 px)."""
    return float(scale) * (train_steps / steps) * math.sqrt(n_pix / REFERENCE_PIXELS)


def dps_sample(model_output, operator, y_pm: Tensor, sched: RespacedSchedule, variance: str, scale: float,
               x_T: Tensor, noise, batch_coupled_norm: bool = False) -> Tensor:
    """DPS (Algorithm 1); see the module docstring. model_output(x_t, t (B,)) -> (eps, v or None);
    y_pm (B, M) in [-1, 1] units; noise() -> a fresh (B, C, H, W) standard normal. Returns x_0."""
    x = x_T
    B = x.shape[0]
    for j in reversed(range(sched.num_steps)):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            eps, v = model_output(x, sched.timesteps[j].expand(B))
            x0 = (sched.sqrt_recip_abar[j] * x - sched.sqrt_recipm1_abar[j] * eps).clamp(-1, 1)
            residual = y_pm - operator.A(x0.reshape(B, -1))
            norm = residual.norm() if batch_coupled_norm else residual.norm(dim=1).sum()
            grad = torch.autograd.grad(norm, x)[0]
        with torch.no_grad():
            mean = sched.coef1[j] * x0 + sched.coef2[j] * x
            if j > 0:
                log_var = sched.log_variance(variance, j, None if v is None else v.detach())
                mean = mean + torch.exp(0.5 * log_var) * noise()
            x = mean - scale * grad
    return x.detach()


class DPS(PriorMethod):
    """DPS on a pixel prior; ``scale: null`` = the per-task scale of :data:`SCALES`."""

    name = "dps"
    backprop_through_prior = True

    def __init__(self, model: dict, steps: int = 1000, scale: float | None = None, rescale: bool = True,
                 batch_coupled_norm: bool = False, variance: str | None = None):
        super().__init__(model)
        self.steps = check_steps(self.name, steps, fix="steps=1000 (official) or fewer for a quick run",
                                 maximum=self.train_steps)
        self.scale = check_number(self.name, "scale", scale, 0.0, allow_none=True, fix="method.scale=0.3")
        self.rescale, self.batch_coupled_norm = bool(rescale), bool(batch_coupled_norm)
        if variance is not None:
            check_choice(self.name, "variance", variance, VARIANCES)
        self.variance = variance
        self.sched: RespacedSchedule | None = None
        #: after restore: the per-step scale actually used
        self.last_scale: float | None = None

    def unsupported_reason(self, task: Task) -> str | None:
        reason = super().unsupported_reason(task)
        if reason is None and self.scale is None and per_task(SCALES, task.name) is None:
            reason = (f"dps has no default scale for task {task.name!r} (defaults for {sorted(SCALES)}); "
                      "pass one, e.g. method.scale=0.3")
        return reason

    def _prepared(self) -> None:
        self.sched = respaced_schedule(self.prior.betas, self.steps, self.device)

    def variance_rule(self) -> str:
        """``method.variance`` if set, else the prior's (learned_range needs the net's variance channels)."""
        return resolve_variance(self.variance, self.prior, self.name)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        op = degradation.operator
        scale = self.scale if self.scale is not None else per_task(SCALES, degradation.task.name)
        if scale is None:
            raise ValueError(self.unsupported_reason(degradation.task))
        if self.rescale:
            scale = effective_scale(scale, self.train_steps, self.steps, op.N)
        self.last_scale = float(scale)
        with torch.no_grad():
            y_pm, _ = self.measurement(y, degradation)
        x_T = seeding.randn(generators, op.x_shape, self.device)
        x0 = dps_sample(self.prior.model_output, op, y_pm, self.sched, self.variance_rule(), scale, x_T,
                        lambda: seeding.randn(generators, op.x_shape, self.device), self.batch_coupled_norm)
        self.last_nfe = self.sched.num_steps
        return self.to_image(x0)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "DPS (Algorithm 1, Gaussian noise, non-squared norm)",
                "steps": self.steps, "nfe": self.steps, "scale": self.scale if self.scale is not None
                else "official per task", "scales_per_task": SCALES, "rescale": self.rescale,
                "scale_rule": ("zeta*(T/steps)*sqrt(C*H*W/(3*256*256)) per step" if self.rescale
                               else "zeta per step"),
                "batch_coupled_norm": self.batch_coupled_norm, "sampler": "DDPM ancestral, respaced",
                "variance": self.variance or getattr(self.prior, "variance", None), "model": self.model_info()}
