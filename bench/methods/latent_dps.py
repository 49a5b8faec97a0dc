"""Latent-DPS: DPS's measurement gradient through the decoder of a latent diffusion prior.

The inner step of ReSample (Song et al., ICLR 2024; soominkwon/resample ``ldm/models/diffusion/ddim.py::
resample_sampling``, without its hard data consistency) and PSLD's update with the gluing weight gamma = 0 ("LDPS",
Rout et al., NeurIPS 2023; LituRout/PSLD ``psld.py``). Notes: notes/latent-conditional-tuning.md A.2.

Notation (x pictures in [-1, 1], z scaled latents, D / E the decoder / encoder of :class:`bench.models.latent.
LatentPrior`, a_t = abar_t, t_K > ... > t_1 the checkpoint's DDIM timesteps, a_{t_0} the final alpha)::

    z_{t_K} ~ N(0, I)
    for k = K .. 1:   eps = eps_theta(z_t)                    (CFG for an sd prior with guidance_scale > 1)
                      z0^ = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
                      z'  = sqrt(a_p) z0^ + sqrt(1 - a_p - s^2) eps + s xi     (DDIM, s = eta sigma_t, p = next t)
                      r   = ||y - A D(z0^)||_2                (NOT squared, per image; both official codes)
                      z_{t_{k-1}} = z' - zeta_t grad_{z_t} r  (through the UNet and the decoder)
    x = D(z_{t_0})  -> [0, 1], clamped

Step sizes (``zeta``): ``abar`` (default): zeta_t = scale * a_t with scale 0.5 (ReSample's hard-coded ``a_t * 0.5``,
the abar of the current DDIM step); ``constant``: zeta_t = scale (PSLD's ``omega``: CLI default 1, its run scripts
0.1 for SD box inpainting and for the LDM prior, 0.9 for LDM SR). Neither code rescales with the step count or the
image size, and neither do we (both officials run 500 / 1000 DDIM steps: fewer steps pull less in total).

Units: y is the harness's measurement converted once to [-1, 1] (:func:`bench.methods.prior_method.measurement_pm`),
as the official codes' operators act on [-1, 1] pictures. ``loss_noise`` (off by default) reproduces PSLD's
``noiser(A x^)``: fresh measurement noise (std 2 sigma in [-1, 1] units, from the image's generator) is added to
A D(z0^) before the norm at every step. ``official_pseudo_x0`` (off by default) reproduces ReSample's loss point: its
sampler evaluates the loss at ``pseudo_x0 = (z_t - (1 - a_t) eps) / sqrt(a_t)`` (``p_sample_ddim``; (1 - a_t) where
Tweedie has sqrt(1 - a_t)), not at the z0^ its DDIM step uses; PSLD uses z0^.

Cost per image (exact, counted): K UNet forwards (2K rows with CFG) + K UNet VJPs, K + 1 decoder forwards (the last
decodes the output) + K decoder VJPs, no encoder calls. ``last_nfe`` = UNet forward rows; ``last_cost`` has all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import ddim_step
from bench.methods.latent_method import LatentMethod
from bench.methods.prior_method import check_choice, check_number, check_steps
from bench.models.latent import LatentPrior
from bench.tasks import Degradation

ZETA_RULES = ("abar", "constant")
#: the official scale of each rule: ReSample's 0.5 (times abar_t), PSLD's CLI omega 1.0
DEFAULT_SCALES = {"abar": 0.5, "constant": 1.0}


def latent_dps_sample(prior: LatentPrior, A: Callable[[Tensor], Tensor], y_pm: Tensor, timesteps: list[int],
                      zeta: Callable[[int], float], z_T: Tensor, eta: float = 0.0,
                      noise: Callable[[], Tensor] | None = None,
                      loss_noise: Callable[[], Tensor] | None = None, pseudo_x0: bool = False) -> tuple[Tensor, int]:
    """Latent-DPS (module docstring). ``A``: flat (B, N) [-1, 1] pictures -> (B, M); ``y_pm`` (B, M); ``timesteps``
    descending; ``zeta(t)`` the step size; ``noise()`` a fresh latent-shaped standard normal (needed when eta > 0);
    ``loss_noise()`` a fresh (B, M) noise added to A D(z0^) (PSLD's noiser) or None; ``pseudo_x0``: the loss at
    ReSample's (z_t - (1 - a_t) eps) / sqrt(a_t) instead of z0^. Returns (z_0, VJPs made)."""
    z = z_T
    B = z.shape[0]
    for k, t in enumerate(timesteps):
        t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        a_t, a_p = float(prior.abar[t]), prior.abar_prev(t_prev)
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = prior.eps(z, t)
            xi = noise() if eta > 0 else None
            z_next, z0 = ddim_step(z, eps, a_t, a_p, eta, xi)
            if pseudo_x0:
                z0 = (z - (1 - a_t) * eps) / a_t ** 0.5
            Ax = A(prior.decode(z0).reshape(B, -1))
            if loss_noise is not None:
                Ax = Ax + loss_noise()
            r = (y_pm - Ax).norm(dim=1).sum()  # per-image norms: images do not couple
            (grad,) = torch.autograd.grad(r, z)
        z = z_next.detach() - zeta(t) * grad
    return z.detach(), len(timesteps)


class LatentDPS(LatentMethod):
    """Latent-DPS on a latent prior (``model.kind: ldm | sd``); ``scale: null`` = the rule's official value."""

    name = "latent_dps"

    def __init__(self, model: dict, steps: int = 500, zeta: str = "abar", scale: float | None = None,
                 eta: float = 0.0, loss_noise: bool = False, official_pseudo_x0: bool = False):
        super().__init__(model)
        T = int((self.model.get("diffusion") or {}).get("steps", 1000))
        self.steps = check_steps(self.name, steps, fix="steps=500 (ReSample's DDIM steps) or fewer for a quick run",
                                 maximum=T)
        self.zeta = check_choice(self.name, "zeta", zeta, ZETA_RULES)
        self.scale = check_number(self.name, "scale", scale, 0.0, allow_none=True,
                                  fix="method.scale=0.5 (zeta=abar, ReSample) or 1.0 (zeta=constant, PSLD's omega)")
        if self.scale is None:
            self.scale = DEFAULT_SCALES[self.zeta]
        self.eta = check_number(self.name, "eta", eta, 0.0, 1.0, fix="method.eta=0 (both officials' DDIM)")
        if not isinstance(loss_noise, bool):
            raise ValueError(f"latent_dps: loss_noise={loss_noise!r} must be true or false. Fix: method.loss_noise=false")
        if not isinstance(official_pseudo_x0, bool):
            raise ValueError(f"latent_dps: official_pseudo_x0={official_pseudo_x0!r} must be true or false. "
                             "Fix: method.official_pseudo_x0=false")
        self.loss_noise, self.official_pseudo_x0 = loss_noise, official_pseudo_x0

    def step_size(self, t: int) -> float:
        return self.scale * float(self.prior.abar[t]) if self.zeta == "abar" else self.scale

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        prior = self._require_prior()
        op = degradation.operator
        shape = self.latent_shape(degradation)
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
        B = y_pm.shape[0]
        noise = lambda: seeding.randn(generators, shape, self.device)  # noqa: E731
        loss_noise = None
        if self.loss_noise and sigma_y > 0:
            loss_noise = lambda: sigma_y * seeding.randn(generators, tuple(y_pm.shape[1:]), self.device)  # noqa: E731
        self.start_counting()
        z0, vjps = latent_dps_sample(prior, op.A, y_pm, prior.timesteps(self.steps), self.step_size,
                                     seeding.randn(generators, shape, self.device), self.eta, noise, loss_noise,
                                     self.official_pseudo_x0)
        with torch.no_grad():
            x = prior.decode(z0)
        self.add_vjp(unet=vjps * B * (2 if prior.text is not None and prior.text[0] is not None else 1),
                     decoder=vjps * B)
        self.stop_counting(B)
        return self.to_image(x)

    def expected_cost(self) -> dict[str, int]:
        """Per image, from the config alone: UNet forward rows and VJPs, decoder forwards and VJPs."""
        g = float(self.model.get("guidance_scale") or 1.0)
        rows = 2 if self.model.get("kind") == "sd" and g > 1 else 1
        K = self.steps
        return {"unet_forward": rows * K, "unet_vjp": rows * K, "decoder_forward": K + 1, "decoder_vjp": K,
                "encoder_forward": 0}

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "Latent-DPS (ReSample's inner step; PSLD with gamma = 0)",
                "steps": self.steps, "sampler": "DDIM on the checkpoint's timestep spacing", "eta": self.eta,
                "zeta": self.zeta, "scale": self.scale,
                "step_size": "scale * abar_t" if self.zeta == "abar" else "scale (constant)",
                "loss": "||y - A D(z0^)||_2 per image (not squared)", "loss_noise": self.loss_noise,
                "official_pseudo_x0": self.official_pseudo_x0,
                "nfe": self.expected_cost()["unet_forward"], "cost_per_image": self.expected_cost(),
                "model": self.model_info()}
