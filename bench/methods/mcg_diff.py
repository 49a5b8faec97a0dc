"""MCG-diff: Monte Carlo guided diffusion (Cardoso, Janati, Le Corff & Moulines, ICLR 2024, "Monte Carlo guided
diffusion for Bayesian linear inverse problems").

:func:`mcg_diff_sample` is the sampler, one function mirroring official ``mcg_diff/particle_filter.py::mcg_diff``
plus the driver's last steps (``scripts/hugging_faces_models.py::run_mcg_diff``: one particle drawn from the final
weights, mapped back with V, clamped) of gabrielvc/mcg_diff; :class:`MCGDiff` wraps it in the Method API.

A sequential Monte Carlo sampler (N = ``particles`` per image) in the operator's SVD coordinates: with
A = U diag(s) V^T, the state is x^ = V^T x (the network is called on V x^ and its eps mapped back with V^T, official
``EpsilonNetSVD``), the observation ybar_i = (U^T y)_i / s_i on the observed coordinates (s_i > 0; zero singular
values, e.g. thresholded blur, are free coordinates as in the official deblur driver). Notation (code names in
brackets), a_t = abar_t of the prior (clipped to [1e-6, 1] as the official driver does), kappa [gaussian_var]:

* grid: t_0 = 0 < t_1 < ... < t_S = T - 1, t_k = floor(k (T - 1) / S) (official ``linspace(0, 999, n).long()``
  with n = S + 1 points; S = ``steps``, the DDIM transitions). Particles start as N(0, I) at t_S.
* observation times [taus]: tau_i = the grid point minimising |sigma_y^2 a_t - (1 - a_t) s_i^2| (the SNR match of
  y_i / s_i = x0_i + (sigma_y / s_i) eps with x_t / sqrt(a_t)); every tau_i = t_0 = 0 when sigma_y = 0 (first
  minimum, as torch.argmin). Rescaled target [rescaled_observations] y~_i = sqrt(a_tau_i) ybar_i.
* per transition t -> t' (t' = the previous grid point) while t' >= min tau: DDIM (``eta``, official 1) proposal
  mean m = sqrt(a_t'/a_t) x + (sqrt(1 - a_t' - sig^2) - sqrt(a_t'/a_t) sqrt(1 - a_t)) eps(x, t), std
  sig = eta sqrt((1 - a_t')/(1 - a_t) (1 - a_t/a_t')). Coordinate i is active at t' when t' >= tau_i, with
  g_i = y~_i sqrt(a_t'/a_tau_i), v_i = 1 - (1 - kappa) a_t'/a_tau_i. Weights (fully adapted, computed on every
  particle before resampling): log w = log N(m[act]; g, sig^2 + v) - log N(x[act at t]; y~ sqrt(a_t/a_tau),
  1 - (1 - kappa) a_t/a_tau) (Gaussian log densities without their constants, official ``gauss_loglik``); ancestors
  ~ Multinomial(softmax(log w)) (official ``Categorical``); free coordinates m_a + sig z; active coordinates
  K g + (1 - K) m_a + sqrt(v K) z with K = sig^2 / (sig^2 + v).
* below min tau (noisy tasks only): plain DDIM, then log w = log N(s x^_obs; U^T y, sigma_y^2) - the last
  filtering term; noiseless: log w = - the last filtering term. One particle ~ softmax(log w) is returned.

Units: sigma_y is the task's noise in [-1, 1] units (2 sigma, :func:`~bench.methods.prior_method.measurement_pm`).

Where we differ (``official_last_step`` restores the official behaviour): in the noiseless case the official
returned particle keeps the last filtering step's observed coordinates, K g + (1 - K) m + sqrt(kappa K) z with
g = sqrt(a_0) ybar (K is about 1/2 at the last step), so A x != y by about sqrt(kappa) = 0.01; the noiseless
posterior puts all its mass on x^_obs = ybar, so by default the returned particle's observed coordinates are set
to ybar (A x = y exactly, before the final clamp). Noisy tasks are unaffected. Also: all noise comes from the
per-image generators (official: torch's global generator, same draws in the same order for one image); the
network is evaluated in chunks of ``max_batch`` particles (official ``n_samples_per_gpu``); the driver's y
clipping to [-1, 1] is the task's business here (measurements are never clipped).

NFE (exact, :attr:`MCGDiff.last_nfe`): steps x particles per image (every particle takes one network call per
transition; no backprop through the prior). Official (``ddim_100.yaml``, ``mcg_diff/default.yaml``): 100 grid
points = 99 transitions x 64 particles = 6,336 (the facts note's 6,400 counts 100 transitions). Defaults here:
the prior's default steps (20 for the embedded prior, official 99 otherwise) and 4 particles, so a CPU run stays
short; ``method.particles=64`` is the official count (``outpainting.yaml``: 10,000).

Coarse grids and noisy tasks (official behaviour, kept): tau is chosen on the grid, so when the grid is coarse a
noisy coordinate's tau can round to t_0 = 0 (denoise, sigma_y = 0.1, at 20 steps: grid 0, 49, ...; the SNR match is
t ~ 27); the filter then treats y as noiseless at t = 0 and the final likelihood weights never run. On the
analytic Gaussian prior that biases the sample mean by ~20 standard errors at 20 steps and not measurably at 99
(tests/methods/test_mcg_diff.py). Also measured there (denoise, 99 steps): the sample std is ~0.06 against the
posterior's 0.098 for 8 to 256 particles, the variance lost by DDIM's large steps below tau.

Measured (embedded 64-px prior, ``python -m bench method=mcg_diff task=... dataset.limit=2``: 20 steps x 4
particles = 80 NFE per image, PSNR dB of the bicubic / degraded input -> output, the 2 sample photos; one CPU
thread on a shared machine, load 3-10, so seconds are pessimistic): sr4 20.94 -> 20.75 (49 s per image; DDRM's 20
steps 20.87; 16 particles 20.69, 226 s per image), deblur_gauss 22.90 -> 34.57 (61 s), inpaint 11.99 -> 26.14
(69 s), denoise 26.18 -> 27.63 (82 s; its tau rounds to t = 0 at 20 steps, see above: ``steps=99
method.particles=2``, 198 NFE, gives 31.03 dB). One posterior sample, not the posterior mean: more particles do not
raise the PSNR.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from bench import seeding
from bench.methods.ddrm import _spectral_setup
from bench.methods.prior_method import PriorMethod, check_number, check_steps
from bench.tasks import Degradation

log = logging.getLogger(__name__)

#: the official driver clips alphas_cumprod to [ABAR_MIN, 1]
ABAR_MIN = 1e-6


def mcg_grid(steps: int, T: int) -> list[int]:
    """Official ``torch.linspace(0, T - 1, steps + 1).long()``: steps + 1 increasing timesteps from 0 to T - 1."""
    return [int(v) for v in torch.linspace(0, T - 1, steps + 1).long()]


def observation_times(abar: Tensor, grid: list[int], s_obs: Tensor, var: float) -> Tensor:
    """Official ``get_taus_from_singular_values``: per observed coordinate the index into ``grid`` minimising
    |var a_t - (1 - a_t) s_i^2| (all 0 when var = 0). abar (T,), s_obs (d,) -> (d,) long."""
    a = abar[grid].to(s_obs)
    dist = var * a[None, :] - (1 - a)[None, :] * s_obs[:, None] ** 2
    return (dist * (var > 0)).abs().argmin(dim=1)


def ddim_coefficients(a_t: float, a_prev: float, eta: float) -> tuple[float, float, float]:
    """Official ``generate_coefficients_ddim``: (std, coefficient of x, coefficient of eps)."""
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    c_x = (a_prev / a_t) ** 0.5
    return std, c_x, (1 - a_prev - std**2) ** 0.5 - c_x * (1 - a_t) ** 0.5


def _loglik(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Official ``gauss_loglik``: -||(x - mean) / std||^2 / 2 over the last dim (std clipped to [1e-10, 1e10])."""
    return -0.5 * ((x - mean) / std.clip(1e-10, 1e10)).pow(2).sum(-1)


def mcg_diff_sample(eps_fn, operator, y_pm: Tensor, sigma_y: float, abar: Tensor, steps: int, particles: int,
                    generators: list[torch.Generator], eta: float = 1.0, kappa: float = 1e-4,
                    max_batch: int | None = None, official_last_step: bool = False) -> tuple[Tensor, dict]:
    """MCG-diff (module docstring). eps_fn(x (n,C,H,W), t int) -> eps; operator: linear with SVD parts;
    y_pm (B, M) in [-1, 1] units; sigma_y its noise std there; abar (T,) the prior's cumulative alphas.
    Returns (x (B, C, H, W) in [-1, 1] space, not clamped; info with the NFE and the effective sample sizes)."""
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    n, D = particles, operator.N
    s, observed, _, ybar = _spectral_setup(operator, y_pm)
    obs_idx = torch.nonzero(observed).flatten()
    s_obs, ybar_obs = s[obs_idx], ybar[:, obs_idx]  # (d,), (B, d)
    abar = abar.to(dev, dt).clip(ABAR_MIN, 1)
    grid = mcg_grid(steps, abar.numel())
    var = float(sigma_y) ** 2
    tau_idx = observation_times(abar, grid, s_obs, var)
    tau = torch.tensor(grid, device=dev)[tau_idx]  # (d,) timesteps
    a_tau = abar[tau]
    target = a_tau.sqrt() * ybar_obs  # (B, d), official rescaled_observations
    k_min = int(tau_idx.min()) if obs_idx.numel() else 0
    nfe = 0

    def eps_v(x: Tensor, t: int) -> Tensor:
        """eps in V coordinates for (B, n, D) particles, in chunks of max_batch (official EpsilonNetSVD)."""
        nonlocal nfe
        flat = x.reshape(B * n, D)
        chunk = max_batch or flat.shape[0]
        out = []
        for i in range(0, flat.shape[0], chunk):
            img = operator.V(flat[i:i + chunk]).reshape(-1, *operator.x_shape)
            out.append(operator.Vt(eps_fn(img, t).reshape(img.shape[0], -1).to(dt)))
        nfe += 1
        return torch.cat(out).reshape(B, n, D)

    def prior_term(x: Tensor, t: int) -> Tensor:
        """log N(x[act at t]; y~ sqrt(a_t/a_tau), 1 - (1 - kappa) a_t/a_tau), (B, n)."""
        act = t >= tau
        ratio = abar[t] / a_tau[act]
        mean = (target[:, act] * ratio.sqrt())[:, None]
        return _loglik(x[:, :, obs_idx[act]], mean, (1 - (1 - kappa) * ratio).sqrt())

    def resample(log_w: Tensor, count: int) -> Tensor:
        """(B, count) ancestor indices ~ softmax(log_w) per image (official Categorical(logits).sample)."""
        probs = torch.softmax(log_w, dim=-1)
        return torch.stack([torch.multinomial(probs[b], count, True, generator=g) for b, g in enumerate(generators)])

    def noise() -> Tensor:
        return seeding.randn(generators, (n, D), dev, dt)

    x = noise()
    ess = []
    for k in range(len(grid) - 1, k_min, -1):
        t, t_prev = grid[k], grid[k - 1]
        std, c_x, c_eps = ddim_coefficients(float(abar[t]), float(abar[t_prev]), eta)
        mean = c_x * x + c_eps * eps_v(x, t)
        act = t_prev >= tau
        ratio = abar[t_prev] / a_tau[act]
        g = target[:, act] * ratio.sqrt()  # (B, d_act)
        v = 1 - (1 - kappa) * ratio
        cols = obs_idx[act]
        log_w = _loglik(mean[:, :, cols], g[:, None], (std**2 + v).sqrt()) - prior_term(x, t)
        w = torch.softmax(log_w, dim=-1)
        ess.append(float((1 / w.pow(2).sum(-1)).mean()))
        anc = resample(log_w, n)
        z = noise()
        m = torch.gather(mean, 1, anc[:, :, None].expand(-1, -1, D))
        gain = (std**2 / (std**2 + v)).clip(1e-10, 1e10)
        new = m + std * z  # free (and now inactive) coordinates
        new[:, :, cols] = gain * g[:, None] + (1 - gain) * m[:, :, cols] + (v * gain).sqrt() * z[:, :, cols]
        x = new
    last = prior_term(x, grid[k_min])
    if k_min > 0:
        for k in range(k_min, 0, -1):
            t, t_prev = grid[k], grid[k - 1]
            std, c_x, c_eps = ddim_coefficients(float(abar[t]), float(abar[t_prev]), eta)
            x = c_x * x + c_eps * eps_v(x, t) + std * noise()
        fit = _loglik(s_obs * x[:, :, obs_idx], s_obs * ybar_obs[:, None], torch.full_like(s_obs, var**0.5))
        log_w = fit - last
    else:
        log_w = -last
    pick = resample(log_w, 1)[:, 0]
    out = x[torch.arange(B, device=dev), pick]  # (B, D)
    if var == 0 and not official_last_step:
        out[:, obs_idx] = ybar_obs
    return operator.V(out).reshape(B, *operator.x_shape), {"nfe_per_particle": nfe, "ess": ess,
                                                          "timesteps": grid, "min_tau": grid[k_min]}


class MCGDiff(PriorMethod):
    """MCG-diff (SMC in the SVD coordinates of the operator) on an eps prior; see the module docstring."""

    name = "mcg_diff"

    def __init__(self, model: dict, steps: int | None = 99, particles: int = 4, eta: float = 1.0,
                 kappa: float = 1e-4, max_batch: int | None = 64, official_last_step: bool = False):
        super().__init__(model)
        self.steps = check_steps(self.name, 99 if steps is None else steps, 1, allow_none=False,
                                 fix="steps=99 (official: 100 grid points)")
        if self.steps > self.train_steps - 1:
            raise ValueError(f"{self.name}: steps={self.steps} needs {self.steps + 1} distinct grid points but the "
                             f"prior has {self.train_steps} training steps. Fix: steps<={self.train_steps - 1}")
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise ValueError(f"{self.name}: particles={particles!r} is invalid: it must be an integer >= 1. "
                             "Fix: method.particles=64 (official) or 4 (the quick default)")
        self.particles = particles
        self.eta = check_number(self.name, "eta", eta, 0.0, 1.0, fix="method.eta=1 (official)")
        self.kappa = check_number(self.name, "kappa", kappa, 0.0, 1.0, low_open=True,
                                  fix="method.kappa=1e-4 (official gaussian_var)")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"{self.name}: max_batch={max_batch!r} is invalid: it must be an integer >= 1 or null "
                             "(all particles at once). Fix: method.max_batch=64")
        self.max_batch = max_batch
        self.official_last_step = bool(official_last_step)
        self.last_info: dict | None = None
        self._warned_tau = False

    @property
    def nfe(self) -> int:
        """Network evaluations per image: steps x particles."""
        return self.steps * self.particles

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        abar = torch.cumprod(1 - self.prior.betas.double(), 0)
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
            x, info = mcg_diff_sample(self.eps, degradation.operator, y_pm, sigma_y, abar, self.steps,
                                      self.particles, generators, self.eta, self.kappa, self.max_batch,
                                      self.official_last_step)
        self.last_nfe = info["nfe_per_particle"] * self.particles
        if sigma_y > 0 and info["min_tau"] == 0 and not self._warned_tau:
            self._warned_tau = True
            log.warning("%s: sigma_y=%g but the smallest observation time rounds to t=0 on the %d-step grid: those "
                        "coordinates are treated as noiseless and the final likelihood weights are skipped (official "
                        "behaviour; module docstring). Fix: more steps, e.g. steps=99 (official)", self.name, sigma_y,
                        self.steps)
        self.last_info = {**info, "sigma_y": sigma_y}
        return self.to_image(x)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "MCG-diff (SMC in the operator's SVD coordinates, DDIM proposal)",
                "steps": self.steps, "particles": self.particles, "nfe": self.nfe, "eta": self.eta,
                "kappa": self.kappa, "max_batch": self.max_batch, "official_last_step": self.official_last_step,
                "backprop_through_prior": False, "model": self.model_info(),
                "sigma_y_units": "[-1, 1] (2 x task sigma)"}
