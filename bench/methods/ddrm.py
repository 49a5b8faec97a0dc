"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon & Song, NeurIPS 2022).

:func:`ddrm_sample` is the sampler, one function mirroring official ``functions/denoising.py::
efficient_generalized_steps`` (bahjat-kawar/ddrm); :class:`DDRM` wraps it in the Method API.

Notation (paper §3-4, eq. (7)-(8); code names in brackets):

* ``a_t`` = abar_t [at], padded so that a_{-1} = 1; model steps ``seq`` walked in reverse with
  ``t_next`` = the previous entry of ``seq`` (-1 after the last), as official.
* the "scaled" variable x~_t = x_t / sqrt(a_t) = x_0 + sigma_t eps, sigma_t = sqrt(1 - a_t) / sqrt(a_t).
* ``H = U diag(s) V^T``; spectral coordinates are ``Vt`` outputs (bar): x0bar = V^T x0_t [V_t_x0],
  ybar_i = (U^T y)_i / s_i [Sig_inv_U_t_y] for s_i > 0; sigma_y the noise std of y in [-1, 1] units.
* three cases per coordinate at every step (eq. (8); eta [etaA = etaC] and eta_b [etaB]):
  (a) missing, s_i = 0:   x0bar + sqrt(1-eta^2) sigma_next epsbar + eta sigma_next z
  (b) "less noisy than y", s_i sigma_next < sigma_y:
                          x0bar + sqrt(1-eta^2) sigma_next (ybar - x0bar) s_i / sigma_y + eta sigma_next z
  (c) "noisier than y",   s_i sigma_next >= sigma_y:
                          eta_b ybar + (1-eta_b) x0bar + sqrt(sigma_next^2 - sigma_y^2 eta_b^2 / s_i^2) z
  then x_next = sqrt(a_next) V x~bar_next.
* init (official, exactly): x~bar_T,i = ybar_i + sqrt(sigma_T^2 - sigma_y^2/s_i^2) z_i where
  s_i sigma_T > sigma_y, else sigma_T z_i; and x_T = V(x~bar_T) / sigma_T. Official divides by sigma_T
  where sqrt(a_T) V(x~bar_T) is exact: they differ by 1/sqrt(1 - a_T), 1 + 2e-5 for 20 steps (t_T = 950),
  but 100x for steps = 1 (seq = [0]), where official DDRM (and this code) is degenerate.

Deliberate differences from the official code (both are the paper's eq. (8)):

1. Ties ``s_i sigma_next == sigma_y`` go to case (c) (paper: "sigma_t >= sigma_y / s_i"); official uses
   strict inequalities on both sides, so a tie falls through to case (a). A tie happens at the last step
   of a noiseless task (sigma_next = sigma_y = 0): official returns the network's unconstrained x0
   prediction there, here the observed coordinates are set to ybar, so with eta_b = 1 the output is
   consistent, A x = y (to float error). Noisy tasks are unaffected.
2. Zero singular values among the first M (thresholded deblurring) are always case (a); official puts
   them in case (b) when sigma_y > 0. No division by a zero s_i happens anywhere (no inf / NaN).

Also: x0_t is not clipped inside the loop (as official); one noise draw z per coordinate per step serves
all three (disjoint) cases (official draws three tensors: same distribution); all noise comes from the
per-image generators. The loop keeps everything on the device and never synchronises with the host.

Distance from the exact posterior (tests/methods/test_ddrm.py, measured, not asserted): for a Gaussian
prior N(0.1, 0.5^2 I) with its exact eps, every step is affine + Gaussian per spectral coordinate, and
with 20 steps, eta = 0.85, eta_b = 1 (sampler moments match that recursion within 5 standard errors):
* unobserved coordinates: mean = mu (to 3e-7 relative), std 0.379 vs 0.500 (-24 %; a per-step variance loss of DDRM's
  eta, a constant fraction of sigma_next, so more steps do not remove it: 0.434 at 1000 steps; eta = 0
  tends to the exact 0.500);
* denoise (s = 1, sigma_y = 0.1): std 0.122 vs 0.098; the mean's gain on ybar g = 0.895 vs 0.962
  (20 uniform steps jump from sigma = 0.18 to 0.01, so the last x0 prediction loses part of y);
* sr4_noisy (s = 1/4, sigma_y = 0.05): std 0.157 vs 0.186, g 0.744 vs 0.862;
* noiseless observed coordinates: exactly ybar, as the posterior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import eps_to_x0, padded_alphas_cumprod, timesteps
from bench.methods.prior_method import PriorMethod
from bench.operators import SpectralOperator
from bench.tasks import Degradation


def _spectral_setup(operator, y_pm: Tensor):
    """s padded to N (zeros beyond M), the observed mask s > 0, ybar = U^T y / s (0 where s = 0)."""
    dtype = y_pm.dtype  # SpectralOperator keeps float64 masters and casts them per dtype
    s = operator.singulars(dtype) if isinstance(operator, SpectralOperator) else operator.singulars().to(dtype)
    s = operator.add_zeros(s.unsqueeze(0))[0]
    observed = s > 0
    s_safe = torch.where(observed, s, torch.ones_like(s))
    ybar = operator.add_zeros(operator.Ut(y_pm)) / s_safe * observed
    return s, observed, s_safe, ybar


def ddrm_sample(eps_fn, operator, y_pm: Tensor, sigma_y: float, abar_padded: Tensor, seq, eta: float,
                eta_b: float, generators: list[torch.Generator]) -> Tensor:
    """DDRM (Algorithm of Kawar et al. 2022, eq. (7)-(8)); see the module docstring for the notation.

    eps_fn(x_t (B,C,H,W), t (B,) long) -> eps; operator: a linear operator with SVD parts (DDRM
    ``H_functions`` semantics); y_pm (B, M): measurement in [-1, 1] units; sigma_y: its noise std in the
    same units; abar_padded (T+1,): [1, abar_0, ...]; seq: increasing model steps. Returns x_0 (B,C,H,W)
    in [-1, 1] space, not clipped.
    """
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    shape = (B, *operator.x_shape)
    s, observed, s_safe, ybar = _spectral_setup(operator, y_pm)
    inv_sigma_y = 1.0 / sigma_y if sigma_y > 0 else 0.0  # case (b) is empty when sigma_y = 0
    abar = abar_padded.to(dev, dt)  # abar[t + 1] = a_t, abar[0] = a_{-1} = 1 (official compute_alpha)

    def sigma(a: Tensor) -> Tensor:
        return (1 - a).sqrt() / a.sqrt()

    def noise() -> Tensor:
        return seeding.randn(generators, (operator.N,), dev, dt)

    # init, p(x_T | y): official formula (see the module docstring)
    sig_T = sigma(abar[seq[-1] + 1])
    informative = observed & (s * sig_T > sigma_y)
    r = (sig_T**2 - (sigma_y / s_safe) ** 2).clamp_min(0).sqrt()
    xbar = torch.where(informative, ybar + r * noise(), sig_T * noise())
    x = operator.V(xbar / sig_T).reshape(shape)

    seq_next = [-1] + list(seq[:-1])
    for t, t_next in zip(reversed(seq), reversed(seq_next)):
        a_t, a_next = abar[t + 1], abar[t_next + 1]
        sig_next = sigma(a_next)
        eps = eps_fn(x, torch.full((B,), t, device=dev, dtype=torch.long))
        x0 = eps_to_x0(x, eps, a_t)
        x0bar, epsbar = operator.Vt(x0.reshape(B, -1)), operator.Vt(eps.reshape(B, -1))
        z = noise()
        # (a) missing
        missing = x0bar + (1 - eta**2) ** 0.5 * sig_next * epsbar + eta * sig_next * z
        # (b) less noisy than y
        after = x0bar + (1 - eta**2) ** 0.5 * sig_next * (ybar - x0bar) * s * inv_sigma_y + eta * sig_next * z
        # (c) noisier than y
        std_c = (sig_next**2 - (sigma_y * eta_b / s_safe) ** 2).clamp_min(0).sqrt()
        before = eta_b * ybar + (1 - eta_b) * x0bar + std_c * z
        is_before = observed & (s * sig_next >= sigma_y)
        is_after = observed & ~is_before
        xbar = torch.where(is_before, before, torch.where(is_after, after, missing))
        x = (a_next.sqrt() * operator.V(xbar)).reshape(shape)
    return x


class DDRM(PriorMethod):
    """DDRM with a guided-diffusion prior (``conf/method/ddrm.yaml``; defaults as the official CLI:
    20 uniform steps, eta = 0.85, eta_b = 1). Prior loading, the [0, 1] -> [-1, 1] measurement
    (``sigma_y = 2 sigma``, as official DDRM doubles ``--sigma_0``) and the output conversion are
    :class:`~bench.methods.prior_method.PriorMethod`'s."""

    name = "ddrm"

    def __init__(self, model: dict, steps: int = 20, eta: float = 0.85, eta_b: float = 1.0,
                 schedule: str = "uniform"):
        super().__init__(model)
        for key, val in (("eta", eta), ("eta_b", eta_b)):
            if not isinstance(val, (int, float)) or not 0.0 <= val <= 1.0:
                raise ValueError(f"ddrm: {key}={val!r} must be a number in [0, 1]. Fix: method.{key}=0.85")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ddrm: steps={steps!r} must be a positive integer. Fix: steps=20")
        self.steps, self.eta, self.eta_b, self.schedule = steps, float(eta), float(eta_b), schedule
        self.seq = timesteps(steps, self.train_steps, schedule)  # validates steps / schedule now, not mid-sweep
        self.abar_padded: Tensor | None = None

    def _prepared(self) -> None:
        # official DDRM casts the float64 betas to float32 before the cumprod (runners/diffusion.py)
        self.abar_padded = padded_alphas_cumprod(self.prior.betas.float())

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
            x0 = ddrm_sample(self.prior.eps, degradation.operator, y_pm, sigma_y, self.abar_padded, self.seq,
                             self.eta, self.eta_b, generators)
        self.last_nfe = len(self.seq)
        return self.to_image(x0)

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps, "schedule": self.schedule, "nfe": len(self.seq),
                "timesteps": list(self.seq), "eta": self.eta, "eta_b": self.eta_b, "model": self.model_info(),
                "sigma_y_units": "[-1, 1] (2 x task sigma)"}
