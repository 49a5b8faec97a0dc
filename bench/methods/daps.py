"""DAPS: decoupled annealing posterior sampling (Zhang et al., CVPR 2025, "Improving Diffusion Inverse Problem
Solving with Decoupled Noise Annealing").

:func:`daps_sample` is the sampler, one function mirroring official ``sampler.py::DAPS.sample`` with
``cores/scheduler.py::DiffusionPFODE`` (Euler) and ``cores/mcmc.py::MCMCSampler`` (``prior_solver:
gaussian``) of zhangbingliang2019/DAPS (``main``, ``configs/sampler/edm_daps.yaml`` + ``configs/task/*``
group ``pixel``); :class:`DAPS` wraps it.

Notation (paper Algorithm 1; code names in brackets), x in [-1, 1], K = ``steps`` annealing steps:

* annealing grid [EDMScheduler(num_steps=K)]: sigma_k = (smax^(1/rho) + k/K (smin^(1/rho) - smax^(1/rho)))^rho
  for k = 0..K-1 and sigma_K = 0 (official builds K+1 poly-rho points and drops the last, so sigma_min itself
  is never visited: the last level is sigma_{K-1} = 0.106 for the defaults). x_0 ~ N(0, smax^2 I).
* per k: (1) x0^ = Euler probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma from sigma_k down to
  ``ode_sigma_min`` on the ``ode_steps``-interval poly-rho grid (no final denoise; NFE = ``ode_steps``);
  (2) Langevin on x0, started at x0^, targeting p(x0 | x0^, y) ~ N(x0^, r^2 I) p_tau(y | x0) with r = sigma_k:
  x <- x + eta_k s(x) + sqrt(2 eta_k) eps, s(x) = -w A^T(A x - y) / tau^2 + (x0^ - x) / r^2, eta_k = lr (1 + k/(K+1)
  (lr_min_ratio - 1)); w = 1 is the paper's (and the ``legacy`` branch's) likelihood N(A x, tau^2 I);
  ``official_data_weight: true`` uses official ``main``'s w = 2 (its loss sum (A x - y)^2 has no 1/2, with the
  same lr and tau in the task YAMLs). ``mc_algo: hmc`` (official ``pixel_hmc``): v_0 ~ N(0, I), v <- m v +
  sqrt(eta) s + sqrt(2 (1 - m)) eps, x <- x + sqrt(eta) v; (3) re-noise x_{k+1} = x0y + sigma_{k+1} z.
  The output is x0y of the last step (sigma_K = 0), clamped.
* VP -> EDM wrapping of an eps prior [model/precond.py::VPPrecond]: D(x; sigma) = x - sigma eps(x / sqrt(1 +
  sigma^2), t(sigma)) (x_t = sqrt(abar) x_edm with sigma = sqrt(1/abar - 1)). ``time_map: discrete`` (default):
  t(sigma) interpolates log sigma linearly in the prior's own table sigma_t = sqrt(1/abar_t - 1), t = 0..T-1
  (exact at integer t, any beta schedule), clamped to [0, T-1]; the net gets fractional t. ``time_map: vp``
  (official): t = (T - 1) (sqrt(b0^2 + 2 bd log(1 + sigma^2)) - b0) / bd with b0 = 0.1, bd = 19.9, the
  continuous VP-SDE that approximates a 1000-step linear schedule (0.9 at sigma = 0.01 where ours is ~0).

Units: y and tau are in [-1, 1] units (``measurement_pm``); the tempered likelihood uses tau = 0.01, never the task's
sigma_y (official: tau 0.01 with sigma_y 0.05). The data gradient is A^T(A x - y) from the operator (official:
autograd through A, the same value for a linear A).

Defaults (DAPS-1K, ``commands/pixel_*.sh``): K = 200, 5 ODE steps (NFE = K * ode_steps = 1000), sigma 100 -> 0.1,
ODE to 0.01, rho 7, 100 Langevin steps, lr 1e-4, tau 0.01, lr_min_ratio 0.01: the ``pixel`` values of SR x4,
Gaussian blur and random inpainting (motion blur and box inpainting, tasks we do not have, use lr 5e-5); denoise
and colorize (no official config) take the same. Cost: NFE = K * ode_steps, no backprop through the prior, plus
K * langevin_steps A / A^T pairs.

Measured (embedded 64-px prior, deblur_gauss, the 2 sample photos, input 22.90 dB; CPU, 2 threads shared with other
jobs, load ~5-7, so seconds are pessimistic): steps=20 (its default, 20 x 5 = 100 NFE, 100 Langevin steps) 27.15 dB,
254 s per image; DAPS-100 (50 x 2) 27.67 dB, 174 s per image; light ``steps=10 method.ode_steps=2
method.langevin_steps=20`` (20 NFE) 26.38 dB, 21 s per image. The Langevin stage dominates on this small prior.

Differences: the net is called through the prior's own schedule (``time_map``); a NaN in the Langevin chain raises
(official returns an all-zero image); noise comes from the per-image generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import alphas_cumprod
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps
from bench.tasks import Degradation

MC_ALGOS = ("langevin", "hmc")
TIME_MAPS = ("discrete", "vp")
#: official VPPrecond constants (beta_min, beta_d)
VP_BETA_MIN, VP_BETA_D = 0.1, 19.9


def edm_grid(n: int, sigma_max: float, sigma_min: float, rho: float) -> Tensor:
    """n + 1 poly-rho points from sigma_max to sigma_min inclusive (float64) [EDMScheduler.get_discrete_time_steps]."""
    r = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + r * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def annealing_sigmas(steps: int, sigma_max: float, sigma_min: float, rho: float) -> Tensor:
    """sigma_0..sigma_{K-1} of the K+1-point grid, then sigma_K = 0 (official ``discretize``); K + 1 values."""
    return torch.cat([edm_grid(steps, sigma_max, sigma_min, rho)[:-1], torch.zeros(1, dtype=torch.float64)])


class EDMDenoiser:
    """D(x; sigma) of an eps prior in EDM form (module docstring); counts its network calls in ``nfe``."""

    def __init__(self, eps_fn: Callable[[Tensor, Tensor], Tensor], betas: Tensor, time_map: str = "discrete"):
        self.eps_fn, self.time_map, self.nfe = eps_fn, time_map, 0
        abar = alphas_cumprod(betas.to(torch.float64).cpu())
        self.T = int(abar.numel())
        #: log sigma_t of the prior's table, increasing in t
        self.log_sigmas = (0.5 * torch.log(1 / abar - 1))

    def sigma_to_t(self, sigma: float) -> float:
        """The (fractional) model timestep for noise level sigma (EDM units), by ``time_map``."""
        if self.time_map == "vp":
            t = (math.sqrt(VP_BETA_MIN**2 + 2 * VP_BETA_D * math.log1p(sigma**2)) - VP_BETA_MIN) / VP_BETA_D
            return (self.T - 1) * t
        ls, table = math.log(sigma), self.log_sigmas
        if ls <= table[0]:
            return 0.0
        if ls >= table[-1]:
            return float(self.T - 1)
        hi = int(torch.searchsorted(table, torch.tensor(ls, dtype=table.dtype)))
        lo = hi - 1
        return lo + (ls - float(table[lo])) / float(table[hi] - table[lo])

    def t_to_sigma(self, t: int) -> float:
        """sigma_t = sqrt(1/abar_t - 1) of the prior's table at an integer timestep."""
        return math.exp(float(self.log_sigmas[int(t)]))

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        t = torch.full((x.shape[0],), self.sigma_to_t(sigma), device=x.device, dtype=torch.float32)
        self.nfe += 1
        return x - sigma * self.eps_fn(x / math.sqrt(1 + sigma**2), t).to(x.dtype)


def pf_ode_x0(denoise: Callable[[Tensor, float], Tensor], x: Tensor, sigma: float, ode_steps: int,
              ode_sigma_min: float, rho: float) -> Tensor:
    """x0^: Euler steps of dx/dsigma = (x - D(x; sigma)) / sigma over edm_grid(ode_steps, sigma, ode_sigma_min)."""
    grid = edm_grid(ode_steps, sigma, ode_sigma_min, rho).tolist()
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = x + (s_next - s) * (x - denoise(x, s)) / s
    return x


def langevin_x0(x0hat: Tensor, data_grad: Callable[[Tensor], Tensor], r: float, lr: float, steps: int,
                noise: Callable[[], Tensor], algo: str = "langevin", momentum: float = 0.9) -> Tensor:
    """MCMC on x0 for p(x0) ~ N(x0^, r^2 I) exp(-U_y(x0)), data_grad = grad U_y; started at x0^ (module docstring)."""
    x = x0hat.clone()
    v = noise() if algo == "hmc" else None
    for _ in range(steps):
        score = (x0hat - x) / r**2 - data_grad(x)
        if algo == "langevin":
            x = x + lr * score + math.sqrt(2 * lr) * noise()
        else:
            v = momentum * v + math.sqrt(lr) * score + math.sqrt(2 * (1 - momentum)) * noise()
            x = x + math.sqrt(lr) * v
    if torch.isnan(x).any():
        raise FloatingPointError(f"daps: the {algo} chain diverged (NaN) at r={r:.4g}, lr={lr:.3g}. "
                                 "Fix: a smaller method.lr (official 1e-4) or a larger method.tau")
    return x


def daps_sample(denoise: Callable[[Tensor, float], Tensor], operator, y_pm: Tensor, sigmas: Tensor, *,
                ode_steps: int, ode_sigma_min: float, rho: float, langevin_steps: int, lr: float,
                lr_min_ratio: float, tau: float, data_weight: float, mc_algo: str, momentum: float,
                noise: Callable[[], Tensor]) -> Tensor:
    """DAPS (Algorithm 1), see the module docstring; sigmas from :func:`annealing_sigmas` (K + 1 values, last 0).
    y_pm (B, M) in [-1, 1] units; noise() -> a fresh (B, C, H, W) standard normal. Returns x0y of the last step."""
    shape, K = operator_shape(operator, y_pm), sigmas.numel() - 1

    def data_grad(x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return (data_weight / tau**2 * operator.At(operator.A(flat) - y_pm)).reshape(shape)

    x = float(sigmas[0]) * noise()
    for k in range(K):
        sigma = float(sigmas[k])
        x0hat = pf_ode_x0(denoise, x, sigma, ode_steps, ode_sigma_min, rho)
        lr_k = lr * (1 + k / (K + 1) * (lr_min_ratio - 1))
        x0y = langevin_x0(x0hat, data_grad, sigma, lr_k, langevin_steps, noise, mc_algo, momentum)
        x = x0y + float(sigmas[k + 1]) * noise() if k + 1 < K else x0y
    return x


def operator_shape(operator, y_pm: Tensor) -> tuple[int, ...]:
    return (y_pm.shape[0], *operator.x_shape)


class DAPS(PriorMethod):
    """DAPS on a pixel eps prior; ``steps`` = K annealing steps (NFE = steps * ode_steps)."""

    name = "daps"

    def __init__(self, model: dict, steps: int = 200, ode_steps: int = 5, sigma_max: float = 100.0,
                 sigma_min: float = 0.1, ode_sigma_min: float = 0.01, rho: float = 7.0, langevin_steps: int = 100,
                 lr: float = 1e-4, lr_min_ratio: float = 0.01, tau: float = 0.01, mc_algo: str = "langevin",
                 momentum: float = 0.9, official_data_weight: bool = False, time_map: str = "discrete"):
        super().__init__(model)
        n = self.name
        self.steps = check_steps(n, steps, fix="steps=200 (DAPS-1K) or fewer annealing steps for a quick run")
        self.ode_steps = check_steps(n, ode_steps, fix="method.ode_steps=5 (DAPS-1K)")
        self.langevin_steps = check_steps(n, langevin_steps, fix="method.langevin_steps=100 (official)")
        self.ode_sigma_min = check_number(n, "ode_sigma_min", ode_sigma_min, 0.0, low_open=True,
                                          fix="method.ode_sigma_min=0.01")
        self.sigma_min = check_number(n, "sigma_min", sigma_min, self.ode_sigma_min, low_open=True,
                                      fix="method.sigma_min=0.1 (it must exceed ode_sigma_min: the ODE runs downward)")
        self.sigma_max = check_number(n, "sigma_max", sigma_max, self.sigma_min, low_open=True,
                                      fix="method.sigma_max=100 (it must exceed sigma_min)")
        self.rho = check_number(n, "rho", rho, 0.0, low_open=True, fix="method.rho=7")
        self.lr = check_number(n, "lr", lr, 0.0, low_open=True, fix="method.lr=1e-4")
        self.lr_min_ratio = check_number(n, "lr_min_ratio", lr_min_ratio, 0.0, 1.0, low_open=True,
                                         fix="method.lr_min_ratio=0.01")
        self.tau = check_number(n, "tau", tau, 0.0, low_open=True, fix="method.tau=0.01")
        self.mc_algo = check_choice(n, "mc_algo", mc_algo, MC_ALGOS)
        self.momentum = check_number(n, "momentum", momentum, 0.0, 1.0, fix="method.momentum=0.9")
        if self.momentum == 1.0:
            raise ValueError("daps: momentum=1.0 is invalid: it must be in [0, 1) (no noise enters at 1). "
                             "Fix: method.momentum=0.9")
        self.official_data_weight = bool(official_data_weight)
        self.time_map = check_choice(n, "time_map", time_map, TIME_MAPS)
        self.denoiser: EDMDenoiser | None = None

    @property
    def nfe(self) -> int:
        return self.steps * self.ode_steps

    def _prepared(self) -> None:
        prior = self.prior
        self.denoiser = EDMDenoiser(lambda x, t: prior.model_output(x, t)[0], prior.betas, self.time_map)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        op = degradation.operator
        y_pm, _ = self.measurement(y, degradation)
        sigmas = annealing_sigmas(self.steps, self.sigma_max, self.sigma_min, self.rho)
        self.denoiser.nfe = 0
        with torch.no_grad():
            x0 = daps_sample(self.denoiser, op, y_pm, sigmas, ode_steps=self.ode_steps,
                             ode_sigma_min=self.ode_sigma_min, rho=self.rho, langevin_steps=self.langevin_steps,
                             lr=self.lr, lr_min_ratio=self.lr_min_ratio, tau=self.tau,
                             data_weight=2.0 if self.official_data_weight else 1.0, mc_algo=self.mc_algo,
                             momentum=self.momentum,
                             noise=lambda: seeding.randn(generators, op.x_shape, self.device))
        self.last_nfe = self.denoiser.nfe
        return self.to_image(x0)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "DAPS (Algorithm 1, pixel, Gaussian prior term)",
                "steps": self.steps, "ode_steps": self.ode_steps, "nfe": self.nfe, "sigma_max": self.sigma_max,
                "sigma_min": self.sigma_min, "ode_sigma_min": self.ode_sigma_min, "rho": self.rho,
                "langevin_steps": self.langevin_steps, "lr": self.lr, "lr_min_ratio": self.lr_min_ratio,
                "tau": self.tau, "mc_algo": self.mc_algo, "momentum": self.momentum if self.mc_algo == "hmc" else None,
                "official_data_weight": self.official_data_weight, "time_map": self.time_map,
                "model": self.model_info()}
