"""DDNM and DDNM+: zero-shot restoration by range-null space decomposition (Wang, Yu & Zhang, ICLR 2023).

:func:`ddnm_sample` is the sampler, one function mirroring official ``functions/svd_ddnm.py::
ddnm_diffusion`` (noise-free) and ``::ddnm_plus_diffusion`` (noisy y, SVD path) of wyhuai/DDNM, with
``get_schedule_jump`` (RePaint's time travel) as :func:`repaint_schedule`; :class:`DDNM` wraps it
(``method=ddnm``: noiseless tasks; ``method=ddnm_plus``: the SVD DDNM+ for any linear task).

Notation (paper §3-4; code names in brackets), x in [-1, 1], A = U diag(s) V^T (DDRM ``H_functions``):

* steps T' [T_sampling], skip = T // T' ; the RePaint list of sampling indices i, mapped to model steps
  t = i * skip (t = 990, 980, ..., 0 for T' = 100), "next" s = the following entry (-1: abar = 1).
* a = sqrt(abar_s), sigma_s = sqrt(1 - abar_s), sigma' = sigma_y = 2 x task sigma ([-1, 1] units).
* x0|t = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (eq. 12; raw eps[:, :3], never clipped).
* DDNM (sigma_y = 0, Algorithm 1, eq. 13):  x^0|t = x0|t - A^+ (A x0|t - y)
  x_s = a x^0|t + sigma_s (eta z + sqrt(1 - eta^2) eps)      (DDRM-style eta mix, raw eps)
* DDNM+ (sigma_y > 0, eq. 17-19 as implemented, per spectral coordinate i of V^T):
  x^0|t = x0|t - V Lambda V^T A^+ (A x0|t - y),  Lambda_i = 1 unless sigma_s < a sigma'/s_i, then
  Lambda_i = s_i sigma_s sqrt(1 - eta^2) / (a sigma')   (the paper's eq. 19 has no sqrt(1 - eta^2));
  x_s = a x^0|t + V (d1 * z + d2 * V^T eps) with
  s_i = 0: d1 = eta sigma_s, d2 = sqrt(1 - eta^2) sigma_s;   sigma_s > a sigma'/s_i: d1 = sqrt(sigma_s^2 -
  a^2 sigma'^2 / s_i^2), d2 = 0;   sigma_s < a sigma'/s_i: d1 = eta sigma_s, d2 = 0 (official: sigma_y = 0
  skips these cases, so DDNM+ with sigma_y = 0 *is* DDNM, bit for bit; tested).
* time travel (RePaint, travel_length l, travel_repeat r): on an "up" pair the chain is re-noised from the
  last (un-rectified, as official) x0|t: x_j = sqrt(abar_j) x0|t + sqrt(1 - abar_j) z. NFE = the number of
  "down" pairs, counted as they run: 100 for (l, r) = (1, 1), 280 for (10, 3) at T' = 100.
* output: x at s = -1, mapped to [0, 1] and clamped (official ``inverse_data_transform``).

Defaults (official ``main.py`` + ``configs/imagenet_256.yml``): T' = 100, eta = 0.85, travel (1, 1) (no
time travel; ``hq_demo/confs/inet256.yml`` uses (10, 3), 280 NFE). Abar from float32 betas, as official.

Deliberate differences from the official code:

1. DDNM+'s noise term: official ``Lambda_noise`` puts eps into the spectral slots merely permuted /
   patch-unfolded, WITHOUT V^T (a bug for SR, deblurring and colorization, where V is not a permutation;
   inpainting and denoising are unaffected). Here d2 multiplies V^T eps, as eq. 51 says.
   ``official_noise_basis=true`` reproduces the nature of the bug (eps enters unrotated, in its flat
   pixel order; for Inpainting / Denoising, whose V^T is a permutation, upstream is right and so is
   this), not upstream's exact per-operator slot order.
2. ``method=ddnm`` refuses noisy tasks (official ``main.py`` switches to DDNM+ when sigma_y > 0, i.e. to
   ``method=ddnm_plus``); on noiseless tasks ``ddnm_plus`` equals ``ddnm`` exactly, as official.
3. The ``--simplified`` (no-SVD) path is not reproduced: it uses sqrt(1 - abar_s^2) for sigma_s, tests
   sigma_s >= abar_s sigma' with abar instead of sqrt(abar), multiplies gamma_t into coefficients that
   already hold sqrt(1 - abar_s) (over-shrinking the noise even at sigma_y = 0) and, in the version the
   notes describe, never noises y. The SVD path above is the one official ``evaluation.sh`` runs.
4. Zero singular values among the first M (thresholded deblurring) are "missing" coordinates (as
   official's pinv, which maps them to 0); all randomness comes from the per-image generators; the loop
   stays on the device (official moves every x_t and x0|t to the CPU and back).

Measured (embedded 64-px prior, 2 sample photos, 20 steps, PSNR dB input -> output): deblur_gauss 22.93 ->
37.41 (ddnm = ddnm_plus), denoise (ddnm_plus) 26.19 -> 29.75 (tests/methods/test_ddnm.py).

Cost: NFE = steps (x travel), no backprop: the same network cost as DDRM at equal NFE.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import eps_to_x0, padded_alphas_cumprod
from bench.methods.ddrm import _spectral_setup
from bench.methods.prior_method import PriorMethod, check_number, check_steps
from bench.methods.repaint_schedule import jump_schedule
from bench.operators import Denoising, Inpainting
from bench.tasks import Degradation, Task


def repaint_schedule(steps: int, travel_length: int = 1, travel_repeat: int = 1) -> list[int]:
    """RePaint's ``get_schedule_jump`` (official DDNM copy, n_sample = 1): sampling indices from steps-1 down to
    -1, with ``travel_repeat - 1`` jumps of ``travel_length`` up at every multiple of ``travel_length``."""
    return jump_schedule(t_T=steps, jump_length=travel_length, jump_n_sample=travel_repeat)


def ddnm_coefficients(s: Tensor, observed: Tensor, s_safe: Tensor, a: Tensor, sigma_s: Tensor,
                      sigma_y: float, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """(Lambda, d1, d2) per spectral coordinate (official ``Lambda`` / ``Lambda_noise``, module docstring)."""
    one = torch.ones_like(s)
    d1, d2 = eta * sigma_s * one, (1 - eta**2) ** 0.5 * sigma_s * one
    if sigma_y == 0:  # official: "if a != 0 and sigma_y != 0" guards every case below -> plain DDNM
        return one, d1, d2
    thresh = a * sigma_y / s_safe  # a sigma' / s_i on observed coordinates
    below, above = observed & (sigma_s < thresh), observed & (sigma_s > thresh)
    lam = torch.where(below, s * sigma_s * (1 - eta**2) ** 0.5 / (a * sigma_y), one)
    d1 = torch.where(above, (sigma_s**2 - thresh**2).clamp_min(0).sqrt(), d1)
    d2 = torch.where(below | above, torch.zeros_like(s), d2)
    return lam, d1, d2


def _eps_spectral(operator, eps_flat: Tensor, official_basis: bool) -> Tensor:
    if not official_basis or isinstance(operator, (Inpainting, Denoising)):
        return operator.Vt(eps_flat)
    return eps_flat  # upstream's Lambda_noise: eps in spectral slots without V^T (see the docstring)


def ddnm_sample(eps_fn, operator, y_pm: Tensor, sigma_y: float, abar_padded: Tensor, times: list[int],
                skip: int, eta: float, generators: list[torch.Generator],
                official_noise_basis: bool = False) -> tuple[Tensor, int]:
    """DDNM / DDNM+ (Algorithm 1 + eq. 17-19 + time travel); see the module docstring for the notation.

    eps_fn(x_t, t: int) -> eps; y_pm (B, M) in [-1, 1] units with noise std sigma_y there; abar_padded
    (T+1,): [1, abar_0, ...]; times: :func:`repaint_schedule` (sampling indices, model step = i * skip).
    Returns (x_{-1} in [-1, 1] space, not clipped; the number of network evaluations).
    """
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    shape = (B, *operator.x_shape)
    s, observed, s_safe, ybar = _spectral_setup(operator, y_pm)
    abar = abar_padded.to(dev, dt)
    x = seeding.randn(generators, operator.x_shape, dev, dt)
    x0_last, nfe = None, 0
    for i, j in zip(times[:-1], times[1:]):
        t, t_next = i * skip, (j * skip if j >= 0 else -1)
        if j < i:  # a denoising step t -> t_next
            a_t, a_s = abar[t + 1], abar[t_next + 1]
            eps = eps_fn(x, t)
            nfe += 1
            x0 = eps_to_x0(x, eps, a_t)  # eq. 12
            a, sigma_s = a_s.sqrt(), (1 - a_s).sqrt()
            lam, d1, d2 = ddnm_coefficients(s, observed, s_safe, a, sigma_s, sigma_y, eta)
            x0bar = operator.Vt(x0.reshape(B, -1))
            # eq. 17: V^T A^+ (A x0 - y) = x0bar - ybar on observed coordinates, 0 elsewhere
            xbar = x0bar - lam * observed * (x0bar - ybar)
            epsbar = _eps_spectral(operator, eps.reshape(B, -1), official_noise_basis)
            z = seeding.randn(generators, (operator.N,), dev, dt)
            x = operator.V(a * xbar + d1 * z + d2 * epsbar).reshape(shape)  # eq. 51 (DDNM: eta mix)
            x0_last = x0
        else:  # time travel back up: q(x_j | x0|t) from the last (un-rectified) x0|t, as official
            a_j = abar[t_next + 1]
            x = a_j.sqrt() * x0_last + (1 - a_j).sqrt() * seeding.randn(generators, operator.x_shape, dev, dt)
    return x, nfe


class DDNM(PriorMethod):
    """DDNM (``plus=false``: noiseless tasks) / DDNM+ (``plus=true``: SVD path with noise) on a pixel prior."""

    name = "ddnm"

    def __init__(self, model: dict, steps: int = 100, eta: float = 0.85, travel_length: int = 1,
                 travel_repeat: int = 1, plus: bool = False, official_noise_basis: bool = False):
        super().__init__(model)
        if plus:
            self.name = "ddnm_plus"
        self.steps = check_steps(self.name, steps, fix="steps=100 (official T_sampling)",
                                 maximum=self.train_steps)
        self.eta = check_number(self.name, "eta", eta, 0.0, 1.0, fix="method.eta=0.85 (official)")
        self.travel_length = check_steps(self.name, travel_length, fix="method.travel_length=1 (no travel)")
        self.travel_repeat = check_steps(self.name, travel_repeat, fix="method.travel_repeat=1 (no travel)")
        if self.travel_length >= self.steps and self.travel_repeat > 1:
            raise ValueError(f"{self.name}: travel_length={self.travel_length} must be < steps={self.steps} "
                             "for time travel to happen. Fix: method.travel_length=10 (hq_demo) or 1")
        self.plus, self.official_noise_basis = bool(plus), bool(official_noise_basis)
        self.skip = self.train_steps // self.steps
        self.times = repaint_schedule(self.steps, self.travel_length, self.travel_repeat)
        self.abar_padded: Tensor | None = None

    def unsupported_reason(self, task: Task) -> str | None:
        reason = super().unsupported_reason(task)
        if reason is None and not self.plus and task.sigma > 0:
            reason = (f"ddnm is the noise-free DDNM and task {task.name!r} has sigma={task.sigma}; "
                      "use method=ddnm_plus (official main.py switches to DDNM+ when sigma_y > 0)")
        return reason

    def _prepared(self) -> None:
        # official DDNM: betas cast to float32 before the cumprod (guided_diffusion/diffusion.py)
        self.abar_padded = padded_alphas_cumprod(self.prior.betas.float())

    @property
    def nfe(self) -> int:
        return sum(1 for i, j in zip(self.times[:-1], self.times[1:]) if j < i)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
            if not self.plus and sigma_y > 0:
                raise ValueError(self.unsupported_reason(degradation.task))
            x, nfe = ddnm_sample(self.eps, degradation.operator, y_pm, sigma_y if self.plus else 0.0,
                                 self.abar_padded, self.times, self.skip, self.eta, generators,
                                 self.official_noise_basis)
        self.last_nfe = nfe
        return self.to_image(x)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "DDNM+ (eq. 17-19, SVD path)" if self.plus else
                "DDNM (Algorithm 1)", "steps": self.steps, "nfe": self.nfe, "skip": self.skip,
                "timesteps": [i * self.skip for i in self.times[:-1]], "eta": self.eta,
                "travel_length": self.travel_length, "travel_repeat": self.travel_repeat,
                "official_noise_basis": self.official_noise_basis, "model": self.model_info(),
                "sigma_y_units": "[-1, 1] (2 x task sigma)"}
