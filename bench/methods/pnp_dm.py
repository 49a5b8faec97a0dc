"""PnP-DM: split Gibbs sampling with a diffusion model as plug-and-play prior (Wu et al., NeurIPS 2024).

:func:`pnp_dm_sample` is the sampler (official zihuiwu/PnP-DM-public ``PnPEDM.__call__`` with
``LinearSVDOperator.proximal_generator`` and ``Denoiser_EDM``, the Euler EDM discretisation); :class:`PnPDM`
wraps it on the project's eps priors. Notation, x in [-1, 1], y = A x + sigma_y n (sigma_y = 2 sigma, see
:func:`~bench.methods.prior_method.measurement_pm`), A = U diag(s) V^T, v = V^T x, u = U^T y (0 where s = 0):

* init x = A^+ y (official ``initialize`` of the SVD operators).
* rho schedule: rho_k = max(rho_0 d^k, rho_min), k = 0..K-1. ``steps`` = K, the Gibbs iterations (each one
  likelihood draw + one prior reverse run; official 100). With ``rescale_decay`` (default; identical at K = 100)
  d = rho_decay^(100 / K), so a shorter run anneals rho over the same fraction of its iterations.
  ``burn_in`` / ``num_samples`` null: 40% of K / min(20, K - 1 - burn_in) (official 40 / 20 at K = 100).
* likelihood step (:func:`likelihood_sample`), EXACT: z ~ p(z | x, y) prop. to N(y; A z, sigma_y^2 I) N(z; x, rho_k^2 I).
  In V coordinates the posterior is diagonal: precision q_i = s_i^2 / sigma_y^2 + 1 / rho^2, so with w = V^T z

      w_i ~ N( (s_i u_i rho^2 + sigma_y^2 v_i) / (s_i^2 rho^2 + sigma_y^2),  sigma_y^2 rho^2 / (s_i^2 rho^2 + sigma_y^2) )

  for observed coordinates (s_i > 0) and w_i ~ N(v_i, rho^2) for the others. Written this way sigma_y = 0 is
  the exact limit (no floor): w_i = u_i / s_i, deterministic, on observed coordinates.
* prior step (:func:`edm_prior_step`): z is treated as a noisy image at level rho_k. EDM grid
  sigma_i = (smax^(1/r) + i/(N-1) (smin^(1/r) - smax^(1/r)))^r, i = 0..N-1, sigma_N = 0 (r = 7, N = ``edm_steps``,
  smax = min(80, the prior's largest sigma), smin = max(0.002, its smallest)); start at the first i0 with
  sigma_i0 < rho_k (strictly) and run Euler to 0 with the denoiser D:
  ODE (``sde=false``): x <- x + (sigma_{i+1} - sigma_i) (x - D(x; sigma_i)) / sigma_i;
  SDE (``sde=true``, lambda = 2): x <- x + 2 (sigma_{i+1} - sigma_i) (x - D) / sigma_i
  + sqrt(2 sigma_i (sigma_i - sigma_{i+1})) n, no noise on the grid's last step (i = N - 1).
* VP-to-EDM (official ``VPPrecond``): D(x; sigma) = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma)), where t(sigma)
  inverts sigma_t = sqrt((1 - abar_t) / abar_t). Ours (default): the prior's own discrete abar table,
  interpolated linearly in log sigma between integer steps (exact at integer t, any beta schedule; the net gets
  non-integer t, as upstream). ``official_vp_time=true``: upstream's continuous VP inverse
  t(sigma) = (M - 1) (sqrt(b0^2 + 2 bd log(1 + sigma^2)) - b0) / bd with b0 = 0.1, bd = 19.9, M = 1000 and its
  sigma range (smin = sigma_VP(1e-3) = 0.0105, in float32 as upstream), which is about one step off the discrete table at the low end.
* output (``output``): official's primary figure is the LAST sample (``samples[[-1]]``, "statistics based on one
  sample"); ``output=mean`` averages the samples kept at iterations linspace(B, K-1, S+1)[1:] (B = ``burn_in``,
  S = ``num_samples``), upstream's second figure.

NFE (exact, :attr:`PnPDM.last_nfe`): sum over k of (N - i0(rho_k)). Official defaults here are the paper's
commands.sh FFHQ settings (rho 10, decay 0.9, rho_min 0.3, 100 iterations, 100-step grid, ``edm_sde``):
3,032 NFE (facts note §3.5; the yaml default rho 0.1 constant, ODE: 1,500).

Measured (embedded 64-px prior, ``python -m bench method=pnp_dm task=... dataset.limit=2 method.edm_steps=20``:
20 Gibbs iterations, 129 NFE per image, PSNR dB input -> output, the 2 sample photos; ~60-80 s per image on one
shared CPU thread): deblur_gauss 22.90 -> 22.71 (last) / 27.76 (mean), with ``method.rho_min=0.05`` 34.53 (last,
96 NFE); denoise 26.18 -> 22.47 (last) / 27.33 (mean), with ``method.rho_min=0.1`` 27.75 (last) / 31.05 (mean, 106 NFE). Split Gibbs targets the posterior at noise
sqrt(sigma_y^2 + rho_min^2), so the official rho_min = 0.3 (tuned for sigma_y = 0.05 on 256-px FFHQ) blurs noiseless
and low-noise tasks here: rho_min is in the tuning space.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench import seeding
from bench.methods.ddrm import _spectral_setup
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps
from bench.tasks import Degradation

OUTPUTS = ("last", "mean")
#: upstream VPPrecond constants (beta_min, beta_d, M, epsilon_t)
VP_B0, VP_BD, VP_M, VP_EPS_T = 0.1, 19.9, 1000, 1e-3


def vp_sigma(t: float | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Upstream's continuous VP sigma(t) = sqrt(exp(bd t^2 / 2 + b0 t) - 1), t in [0, 1]. Upstream evaluates its
    range (``VPPrecond.sigma_min``) in float32: 0.0104838 instead of 0.0104860."""
    t = torch.as_tensor(t, dtype=dtype)
    return ((0.5 * VP_BD * t**2 + VP_B0 * t).exp() - 1).sqrt()


def vp_time(sigma: Tensor) -> Tensor:
    """Upstream's model time (M - 1) t(sigma) of the continuous VP inverse."""
    return (VP_M - 1) * ((VP_B0**2 + 2 * VP_BD * (1 + sigma**2).log()).sqrt() - VP_B0) / VP_BD


def table_time(sigma: Tensor, log_sigmas: Tensor) -> Tensor:
    """Continuous t with sigma_t = sigma on the prior's discrete table (log-sigma linear interpolation, clamped
    to [0, T-1]); ``log_sigmas`` (T,) increasing: log sqrt((1 - abar_t) / abar_t)."""
    ls = sigma.to(log_sigmas).log().clamp(log_sigmas[0], log_sigmas[-1])
    hi = torch.searchsorted(log_sigmas, ls).clamp(1, log_sigmas.numel() - 1)
    lo = hi - 1
    frac = (ls - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
    return lo.to(frac) + frac


def edm_grid(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM noise levels sigma_0 > ... > sigma_{N-1} = sigma_min, then sigma_N = 0; float64 (N + 1,)."""
    i = torch.arange(num_steps, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def start_index(grid: Tensor, rho: float) -> int:
    """The first grid index with sigma < rho (strictly), as upstream; ValueError when none is."""
    below = torch.nonzero(grid[:-1] < rho)
    if below.numel() == 0:
        raise ValueError(f"pnp_dm: rho={rho} is not above the grid's smallest sigma {float(grid[-2]):.4g}. "
                         "Fix: method.rho_min>=0.02")
    return int(below[0])


def prior_nfe(grid: Tensor, rhos: list[float]) -> int:
    """Network evaluations of the prior steps: sum_k (N - i0(rho_k))."""
    n = grid.numel() - 1
    return sum(n - start_index(grid, r) for r in rhos)


def rho_schedule(rho: float, decay: float, rho_min: float, iters: int) -> list[float]:
    """rho_k = max(rho d^k, rho_min), k = 0..iters-1 (upstream ``rho_iter``)."""
    return [max(rho * decay**k, rho_min) for k in range(iters)]


def sample_iterations(iters: int, burn_in: int, num_samples: int) -> list[int]:
    """Upstream ``iters_count_as_sample``: linspace(burn_in, iters - 1, num_samples + 1, int)[1:]."""
    return [int(v) for v in torch.linspace(burn_in, iters - 1, num_samples + 1, dtype=torch.float64).floor()[1:]]


def likelihood_sample(operator, x: Tensor, s: Tensor, observed: Tensor, u: Tensor, sigma_y: float, rho: float,
                      noise: Tensor) -> Tensor:
    """One exact draw of z ~ N(y; A z, sigma_y^2) N(z; x, rho^2) (module docstring). x, noise (B, N) flat;
    s, observed (N,); u (B, N) = U^T y padded with zeros. Returns z (B, N)."""
    v = operator.Vt(x)
    den = torch.where(observed, s**2 * rho**2 + sigma_y**2, torch.ones_like(s))
    mean = torch.where(observed, (s * u * rho**2 + sigma_y**2 * v) / den, v)
    std = torch.where(observed, (sigma_y * rho) / den.sqrt(), torch.full_like(s, rho))
    return operator.V(mean + std * noise)


def edm_prior_step(denoise, z: Tensor, rho: float, grid: Tensor, sde: bool, noise_fn) -> tuple[Tensor, int]:
    """Euler EDM reverse from the first grid level below rho to 0 (module docstring). denoise(x, sigma) -> D;
    noise_fn() -> a standard normal like z. Returns (x, NFE)."""
    i0, n = start_index(grid, rho), grid.numel() - 1
    lam = 2.0 if sde else 1.0
    x = z
    for i in range(i0, n):
        s_cur, s_next = float(grid[i]), float(grid[i + 1])
        d = lam * (x - denoise(x, s_cur)) / s_cur
        x = x + (s_next - s_cur) * d
        if sde and i != n - 1:
            x = x + math.sqrt(2 * s_cur * (s_cur - s_next)) * noise_fn()
    return x, n - i0


def pnp_dm_sample(denoise, operator, y_pm: Tensor, sigma_y: float, rhos: list[float], grid: Tensor, sde: bool,
                  keep: list[int], output: str, generators: list[torch.Generator]) -> tuple[Tensor, int]:
    """PnP-DM split Gibbs (module docstring). denoise(x (B,C,H,W), sigma float) -> D(x; sigma); y_pm (B, M);
    rhos: :func:`rho_schedule`; keep: iterations whose x are samples (:func:`sample_iterations`, the last
    iteration among them). Returns (x in [-1, 1] (B, C, H, W), NFE)."""
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    shape = (B, *operator.x_shape)
    s, observed, _, ybar = _spectral_setup(operator, y_pm)
    u = s * ybar  # U^T y on the observed coordinates, 0 elsewhere

    def noise() -> Tensor:
        return seeding.randn(generators, operator.x_shape, dev, dt)

    x = operator.pinv(y_pm).reshape(shape)
    nfe, total, count = 0, torch.zeros(shape, device=dev, dtype=dt), 0
    for k, rho in enumerate(rhos):
        z = likelihood_sample(operator, x.reshape(B, -1), s, observed, u, sigma_y, rho,
                              noise().reshape(B, -1)).reshape(shape)
        x, n = edm_prior_step(denoise, z, rho, grid, sde, noise)
        nfe += n
        if k in keep:
            total, count = total + x, count + 1
    return (x if output == "last" else total / count), nfe


def _count(key: str, value, minimum: int, fix: str, allow_none: bool = False) -> int | None:
    """An integer hyper-parameter >= minimum (None allowed when asked), else a ValueError naming it and the fix."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or null" if allow_none else ""
        raise ValueError(f"pnp_dm: {key}={value!r} is invalid: it must be an integer >= {minimum}{none}. Fix: {fix}")
    return value


class PnPDM(PriorMethod):
    """PnP-DM (split Gibbs, exact SVD likelihood step, EDM prior step) on an eps prior; see the module docstring."""

    name = "pnp_dm"

    def __init__(self, model: dict, steps: int | None = 100, rho: float = 10.0, rho_decay: float = 0.9,
                 rho_min: float = 0.3, rescale_decay: bool = True, edm_steps: int = 100, sde: bool = True,
                 burn_in: int | None = None, num_samples: int | None = None, output: str = "last",
                 official_vp_time: bool = False):
        super().__init__(model)
        self.steps = check_steps(self.name, 100 if steps is None else steps, 1, fix="steps=100 (official)")
        self.rho = check_number(self.name, "rho", rho, 0.0, low_open=True, fix="method.rho=10 (official)")
        self.rho_decay = check_number(self.name, "rho_decay", rho_decay, 0.0, 1.0, low_open=True,
                                      fix="method.rho_decay=0.9 (official; 1 = constant rho)")
        self.rho_min = check_number(self.name, "rho_min", rho_min, 0.0, fix="method.rho_min=0.3 (official)")
        self.rescale_decay = bool(rescale_decay)
        self.edm_steps = _count("edm_steps", edm_steps, 2, "method.edm_steps=100 (official)")
        K = self.steps
        b = _count("burn_in", burn_in, 0, "method.burn_in=40 (official) or null", allow_none=True)
        self.burn_in = int(0.4 * K) if b is None else b
        if self.burn_in >= K:
            raise ValueError(f"pnp_dm: burn_in={burn_in} must be < steps={K} (samples are kept after the "
                             f"burn-in). Fix: method.burn_in=null (40% of steps) or a value < {K}")
        after = K - 1 - self.burn_in
        n = _count("num_samples", num_samples, 1, "method.num_samples=20 (official) or null", allow_none=True)
        self.num_samples = max(1, min(20, after)) if n is None else n
        if after > 0 and self.num_samples > after:
            raise ValueError(f"pnp_dm: num_samples={num_samples} exceeds the {after} iterations after "
                             f"burn_in={self.burn_in}. Fix: method.num_samples<={after} or null")
        self.output = check_choice(self.name, "output", output, OUTPUTS)
        self.sde = bool(sde)
        self.official_vp_time = bool(official_vp_time)
        self.grid: Tensor | None = None
        self.log_sigmas: Tensor | None = None
        self.last_params: dict | None = None

    def _prepared(self) -> None:
        abar = torch.cumprod(1 - self.prior.betas.double().cpu(), 0)
        self.log_sigmas = 0.5 * ((1 - abar) / abar).log()
        if self.official_vp_time:
            smin, smax = float(vp_sigma(VP_EPS_T, torch.float32)), float(vp_sigma(1.0, torch.float32))
        else:
            smin, smax = float(self.log_sigmas[0].exp()), float(self.log_sigmas[-1].exp())
        self.grid = edm_grid(self.edm_steps, max(0.002, smin), min(80.0, smax))
        start_index(self.grid, min(self.rhos()))  # a clear error before any work

    def decay(self) -> float:
        """The per-iteration rho decay: rho_decay, or with rescale_decay rho_decay^(100 / steps), which keeps the
        official 100-iteration annealing shape (rho_min reached at the same fraction of the run)."""
        return self.rho_decay ** (100 / self.steps) if self.rescale_decay else self.rho_decay

    def rhos(self) -> list[float]:
        return rho_schedule(self.rho, self.decay(), self.rho_min, self.steps)

    def expected_nfe(self) -> int:
        """The exact NFE per image for the current settings (needs the prior's schedule: after setup/use_prior)."""
        return prior_nfe(self.grid, self.rhos())

    def denoiser(self, x: Tensor, sigma: float) -> Tensor:
        """VP-to-EDM wrapping of the eps prior: D(x; sigma) = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma))."""
        sig = torch.tensor([sigma], dtype=torch.float64)
        t = vp_time(sig) if self.official_vp_time else table_time(sig, self.log_sigmas)
        t = t.to(x.device, torch.float32).expand(x.shape[0])
        eps = self.prior.model_output((x / math.sqrt(1 + sigma**2)).float(), t)[0].to(x.dtype)
        return x - sigma * eps

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        rhos = self.rhos()
        keep = sample_iterations(self.steps, self.burn_in, self.num_samples)
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
            x, nfe = pnp_dm_sample(self.denoiser, degradation.operator, y_pm, sigma_y, rhos, self.grid, self.sde,
                                   keep, self.output, generators)
        self.last_nfe = nfe
        self.last_params = {"rhos": rhos, "sample_iterations": keep, "sigma_y": sigma_y}
        return self.to_image(x)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "PnP-DM split Gibbs (exact SVD likelihood, EDM Euler prior step)",
                "steps": self.steps, "rho": self.rho, "rho_decay": self.rho_decay, "rho_min": self.rho_min,
                "rescale_decay": self.rescale_decay, "decay_per_iteration": self.decay(),
                "edm_steps": self.edm_steps, "sde": self.sde, "burn_in": self.burn_in,
                "num_samples": self.num_samples, "output": self.output, "official_vp_time": self.official_vp_time,
                "nfe": "sum over Gibbs iterations of the EDM grid steps below rho_k", "model": self.model_info(),
                "sigma_units": "sigma_y = 2 sigma in [-1, 1] units"}
