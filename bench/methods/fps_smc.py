"""FPS / FPS-SMC: filtering posterior sampling (Dou & Song, ICLR 2024, "Diffusion Posterior Sampling for Linear
Inverse Problem Solving: A Filtering Perspective").

:func:`fps_smc_sample` is the sampler, one function mirroring official ZehaoDou-official/FPS-SMC-2023
``guided_diffusion/gaussian_diffusion.py`` (``GaussianDiffusion.p_sample_loop``, ``p_mean_variance``,
``DDIM.p_sample``) with ``posterior_mean_variance.py::EpsilonXMeanProcessor`` and the ``get_mean`` / ``get_noise``
additions of ``svd_replacement.py``; :class:`FPSSMC` wraps it. ``particles=1`` is plain FPS (official
``--particle_size 1``).

Notation, x in [-1, 1], A = U diag(s) V^T (the task's SVD operator), y = A x + sigma_y n with sigma_y = 2 sigma
(:func:`~bench.methods.prior_method.measurement_pm`), c = ``c_rate``. The K = ``steps`` model timesteps
tau_0 < ... < tau_{K-1} are guided-diffusion's ``space_timesteps(T, [K])`` (official ``timestep_respacing``;
K = T = 1000 officially) and a_j = abar_{tau_j}, a_{-1} = 1; spectral coordinates are bars (xbar = V^T x,
u = U^T y_j on the M measurement rows, observed where s_i > 0).

1. Noisy-measurement sequence (``p_sample_loop``, a DDIM bridge in measurement space, drawn backward):
   y_{K-1} = A z, y_{j-1} = sqrt(a_{j-1}) y + sqrt((1 - c)(1 - a_{j-1}) / (1 - a_j)) (y_j - sqrt(a_j) y)
   + sqrt(c (1 - a_{j-1})) A z_j, so y_j ~ sqrt(a_j) y + N(0, (1 - a_j) A A^T); drawn lazily, in the order the loop
   consumes it.
2. Init (no network call): x_{K-2} ~ N(0, I) conditioned on y_{K-2} = A x + N(0, a_{K-2} sigma_y^2): per observed
   coordinate mean s u / (a + s^2), variance a / (a + s^2) (a = a_{K-2} sigma_y^2); N(0, 1) elsewhere.
3. For j = K-2 .. 0 (all particles batched; the net is called at tau_j):
   x0^ = clamp((x_j - sqrt(1 - a_j) eps) / sqrt(a_j)), m = sqrt(a_{j-1}) x0^ + sqrt((1 - a_{j-1})(1 - c)) eps
   (DDIM with variance v = c (1 - a_{j-1})). At j = 0 the output is m = x0^ of particle 0. Otherwise the
   proposal is the exact Gaussian conditional of N(m, v I) given y_{j-1} = A x_{j-1} + N(0, a I), a = a_{j-1}
   sigma_y^2:
       xbar'_i ~ N((a mbar_i + v s_i u_i) / (a + v s_i^2), v a / (a + v s_i^2))   (observed; N(mbar_i, v) elsewhere)
   (official ``get_mean`` (I + A^T A / r)^-1 (m + A^T y / r) and ``get_noise`` with r = a / v, written so that
   sigma_y = 0 is the exact limit: xbar'_i = u_i / s_i). The log-weight, official log N(y_{j-1}; A x', a I) +
   log N(x'; m, v I) - log q(x'), collapses to the particle's predictive likelihood
       log w = -1/2 sum_i (u_i - s_i mbar_i)^2 / (a + v s_i^2)
   and all particles are resampled (multinomial, every step; official ``random.choices``: inverse CDF on uniforms,
   here from the per-image generator). NFE = (K - 1) x particles exactly (official 999 x 5 = 4,995).

Deliberate differences from the official code, each reproducible where it changes results:

* the step index (``official_index=true`` reproduces it): official proposes x_{j-1} from y_j (one level too early,
  ``Y = ys[idx]`` with the net at ``idx``) with noise a_j sigma_y^2 (``variance_diff[t]``), weighs it with
  a_{j-1} sigma_y^2 (``model_variance``), which adds 1/2 (1/a_j - 1/a_{j-1}) sum_i ((u_i - s_i xbar'_i) / sigma_y)^2
  to log w (computed from the proposal noise: finite as sigma_y -> 0), and initialises at level K-1 from
  y_{K-1} before calling the net at tau_{K-2}; y_0 is never used. Here the levels agree (x_{j-1} given y_{j-1},
  one noise variance), y_0 conditions the last proposal.
* sigma_y comes from the task (official hard-codes ``self.sigma = 0.05`` in [-1, 1] units whatever the noise
  of y): ``official_sigma_y=true`` uses 0.05.
* the init: official's SVD path (SR, blur) computes (I + A^T A / a)^-1 A^T y (no 1/a, so the observed
  coordinates start near 0 instead of at u / s) and draws ONE noise for all particles; its inpainting branch
  initialises as ours. ``official_init=true`` reproduces the SVD path for every operator.
* official adds 1e-6 to v in r = a / (v + 1e-6) (``ex_values``) but not in its weights; we use r = a / v
  (1 % of r at the last step of 1000, less elsewhere).
* the operators: official SR measures y with DPS's bicubic ``Resizer`` (also in its y-sequence and weights) but
  proposes through DDRM's block-average SVD; here one task operator serves the measurement, the proposal and the
  weights. ``official_sr_operator=true`` reproduces the mismatch on a convolutional SR task (``task=sr4_bicubic``:
  init and proposal through the block average of the same factor, y-sequence and weights with the task's
  bicubic operator, official's three weight terms as written, :func:`literal_log_weights`; it needs sigma_y > 0:
  noiseless tasks are skipped with that reason unless ``official_sigma_y=true``). Official's deblur weights
  also mix the SVD blur with the reflect-padded conv: not reproduced.
* noise: all randomness from the per-image generators; the y-sequence is drawn lazily between the steps
  (official draws all of it first), the uniforms of the resampling come from the same generator.

Sampling accuracy (measured on an analytic Gaussian prior N(0.3, 0.2^2 I), tests/methods/test_fps_smc.py): FPS-SMC
(8 particles, 100 steps, inpaint with sigma_y = 0.2) averages to the closed-form posterior mean within sampling
error, plain FPS (1 particle) is biased on the observed pixels (~8 standard errors); both under-disperse (output
std ~0.7 of the posterior's). With few steps the DDIM(c) transition ignores the uncertainty of x0^, so the
filter loses the measurement (20 steps, sigma_y = 0.05: observed pixels off by ~0.18): FPS is a many-step method.

Measured (embedded 64-px prior, ``python -m bench method=fps_smc task=<task> dataset.limit=2``: 20 steps x 5
particles = 95 NFE per image, the 2 sample photos, PSNR dB input -> output; input = the ``bicubic`` baseline;
30 s (load ~5) to 70-85 s (load ~9) per image on one thread of a shared 2-core machine): sr4 20.94 -> 20.88,
deblur_gauss 22.90 -> 37.30, inpaint 11.99 -> 29.33, denoise 26.18 -> 28.24. ``official_index=true`` (official's
step offset) on deblur_gauss: 21.91, below its input (the offset conditions every x_{t-1} on the measurement one
level too noisy; negligible at 1000 steps, ruinous at 20); on sr4 20.38. 50 steps (245 NFE) on deblur_gauss: 37.44
(~140 s per image).

Cost: NFE = (steps - 1) x particles, no backprop through the prior; per step one V^T, one U^T and one V per
particle (the operator's SVD), plus two A for the y-sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import alphas_cumprod, timesteps
from bench.methods.ddrm import _spectral_setup
from bench.methods.prior_method import PriorMethod, check_number, check_steps
from bench.operators import SRConv, SuperResolution
from bench.tasks import Degradation, Task

#: official ``GaussianDiffusion.__init__``: self.sigma = 0.05 ([-1, 1] units), whatever the task's noise
OFFICIAL_SIGMA_Y = 0.05


def fps_schedule(betas: Tensor, steps: int) -> tuple[list[int], Tensor]:
    """(model timesteps tau_0 < ... < tau_{K-1}, a_j = abar_{tau_j} float64): official ``SpacedDiffusion`` with
    ``timestep_respacing = K`` (guided-diffusion ``space_timesteps(T, [K])``; all T steps when K = T)."""
    ts = timesteps(steps, int(betas.numel()), "respaced")
    return ts, alphas_cumprod(betas.to(torch.float64).cpu())[ts]


def measurement_sequence(operator, y_pm: Tensor, abar: Tensor, c: float,
                         noise_y: Callable[[], Tensor]) -> Iterator[Tensor]:
    """y_{K-1}, y_{K-2}, ..., y_0 (B, M) of step 1 of the module docstring, lazily; noise_y() -> (B, N) standard
    normals."""
    a = abar.tolist()
    y_j = operator.A(noise_y())
    yield y_j
    for j in range(len(a) - 1, 0, -1):
        k = math.sqrt((1 - c) * (1 - a[j - 1]) / (1 - a[j]))
        y_j = (math.sqrt(a[j - 1]) * y_pm + k * (y_j - math.sqrt(a[j]) * y_pm)
               + math.sqrt(c * (1 - a[j - 1])) * operator.A(noise_y()))
        yield y_j


def proposal(mbar: Tensor, u: Tensor, s: Tensor, observed: Tensor, v: float, a: float) -> tuple[Tensor, Tensor]:
    """(mean, std) per spectral coordinate of N(m, v I) conditioned on y = A x' + N(0, a I) (module docstring);
    mbar (..., N), u (..., N) = U^T y padded with zeros; exact at a = 0."""
    den = torch.where(observed, a + v * s**2, torch.ones_like(s))
    mean = torch.where(observed, (a * mbar + v * s * u) / den, mbar)
    std = torch.where(observed, (v * a / den).sqrt(), torch.full_like(s, math.sqrt(v)))
    return mean, std


def log_weights(mbar: Tensor, z: Tensor, u: Tensor, s: Tensor, observed: Tensor, v: float, sigma_y: float,
                a_q: float, a_w: float) -> Tensor:
    """Log importance weights (B, P) up to a per-image constant (module docstring): log N(y; A x', a_w sigma_y^2) +
    log N(x'; m, v) - log q(x') for the proposal q conditioned with noise variance a_q sigma_y^2; mbar, z (B, P, N):
    the particles' DDIM means and the proposal noise that drew them; u (B, 1, N)."""
    a = a_q * sigma_y**2
    den = torch.where(observed, a + v * s**2, torch.ones_like(s))
    r = (u - s * mbar) * observed
    logw = -0.5 * (r**2 / den).sum(-1)
    if a_w != a_q:  # + 1/2 (1/a_q - 1/a_w) |(u - s xbar') / sigma_y|^2, written without dividing by sigma_y
        rho = (a_q * sigma_y * r / den - s * (v * a_q / den).sqrt() * z) * observed
        logw = logw + 0.5 * (1 / a_q - 1 / a_w) * (rho**2).sum(-1)
    return logw


def resample(logw: Tensor, uniforms: Tensor) -> Tensor:
    """Multinomial ancestor indices (B, P) from log-weights (B, P) and uniforms in [0, 1) (B, P): official
    ``random.choices(range(P), weights=exp(logw - max), k=P)`` = bisect_right on the cumulative weights."""
    w = (logw.double() - logw.double().amax(-1, keepdim=True)).exp()
    cum = w.cumsum(-1)
    idx = torch.searchsorted(cum, uniforms.double() * cum[:, -1:], right=True)
    return idx.clamp(max=logw.shape[-1] - 1)


def literal_log_weights(op_w, xp: Tensor, m: Tensor, mu: Tensor, y: Tensor, v: float, var_q: float,
                        var_w: float) -> Tensor:
    """Official's three terms as written, log N(y; A_w x', var_w) + log N(x'; m, v) - log q(x') with
    log q(x') = -|x' - mu|^2 / (2 v) - |A_w (x' - mu)|^2 / (2 var_q) (+ const), in float64, for a weight operator A_w
    that is not the proposal's (``official_sr_operator``); xp, m, mu (B, P, N) pixels, y (B, M). Needs var_q > 0."""
    B, P, N = xp.shape
    xp, m, mu, y = xp.double(), m.double(), mu.double(), y.double()

    def A(t: Tensor) -> Tensor:  # noqa: N802
        return op_w.A(t.reshape(B * P, N)).reshape(B, P, -1)

    return (-(y.unsqueeze(1) - A(xp)).pow(2).sum(-1) / (2 * var_w) - (xp - m).pow(2).sum(-1) / (2 * v)
            + (xp - mu).pow(2).sum(-1) / (2 * v) + A(xp - mu).pow(2).sum(-1) / (2 * var_q))


def fps_smc_sample(eps_fn: Callable[[Tensor, int], Tensor], operator, y_pm: Tensor, sigma_y: float, ts: list[int],
                   abar: Tensor, *, c: float, particles: int, clip: bool, official_index: bool,
                   official_init: bool, noise_y: Callable[[], Tensor], noise_x: Callable[[tuple[int, ...]], Tensor],
                   uniform: Callable[[], Tensor], measure_op=None) -> tuple[Tensor, int]:
    """FPS-SMC (module docstring). eps_fn(x (B*P, C, H, W), t) -> eps; y_pm (B, M) in [-1, 1] units; ts, abar from
    :func:`fps_schedule`; noise_y() -> (B, N), noise_x(shape) -> (B, *shape) standard normals, uniform() -> (B, P)
    in [0, 1). ``measure_op`` (official SR): the operator that made y, used for the y-sequence and the weights
    (:func:`literal_log_weights`) while ``operator`` serves the init and the proposal. Returns (particle 0's x0^ at
    tau_0 (B, C, H, W), NFE)."""
    B, P, N, dt = y_pm.shape[0], particles, operator.N, y_pm.dtype
    s, observed, _, _ = _spectral_setup(operator, y_pm)
    a = abar.tolist()
    K = len(a)

    def spectral_u(y_j: Tensor) -> Tensor:
        return operator.add_zeros(operator.Ut(y_j)).unsqueeze(1)  # (B, 1, N)

    def to_image(xbar: Tensor) -> Tensor:
        return operator.V(xbar.reshape(B * P, N)).reshape(B, P, N)

    ys = measurement_sequence(measure_op or operator, y_pm, abar, c, noise_y)
    # 2. init (no network call): official conditions on y_{K-1} (level K-1) and then calls the net at tau_{K-2};
    # aligned, the init is x_{K-2} given y_{K-2} (y_{K-1} only starts the bridge)
    k0 = K - 1 if official_index else K - 2
    if not official_index:
        next(ys)
    u = spectral_u(next(ys))
    var_a = a[k0] * sigma_y**2
    den = torch.where(observed, var_a + s**2, torch.ones_like(s))
    gain = var_a if official_init else 1.0  # official SVD path: (I + A^T A / a)^-1 A^T y, without the 1/a
    mean = torch.where(observed, gain * s * u / den, torch.zeros_like(s))
    std = torch.where(observed, (var_a / den).sqrt(), torch.ones_like(s))
    z = noise_x((1, N)) if official_init else noise_x((P, N))
    x = to_image(mean + std * z.expand(B, P, N))
    nfe = 0
    for j in range(K - 2, -1, -1):
        a_j, a_prev = a[j], (a[j - 1] if j > 0 else 1.0)
        eps = eps_fn(x.reshape(B * P, *operator.x_shape), ts[j]).reshape(B, P, N).to(dt)
        nfe += B * P
        x0 = (x - math.sqrt(1 - a_j) * eps) / math.sqrt(a_j)
        if clip:
            x0 = x0.clamp(-1, 1)
        m = math.sqrt(a_prev) * x0 + math.sqrt((1 - a_prev) * (1 - c)) * eps
        if j == 0:
            return m[:, 0].reshape(B, *operator.x_shape), nfe // B
        y_t = next(ys)  # y_j (official) or y_{j-1} (aligned)
        u, v = spectral_u(y_t), c * (1 - a_prev)
        a_q = a_j if official_index else a_prev
        mbar = operator.Vt(m.reshape(B * P, N)).reshape(B, P, N)
        mean, std = proposal(mbar, u, s, observed, v, a_q * sigma_y**2)
        z = noise_x((P, N))
        xbar = mean + std * z
        if P > 1 and measure_op is not None:
            logw = literal_log_weights(measure_op, to_image(xbar), m, to_image(mean), y_t, v, a_q * sigma_y**2,
                                       a_prev * sigma_y**2)
        elif P > 1:
            logw = log_weights(mbar, z, u, s, observed, v, sigma_y, a_q, a_prev)
        if P > 1:
            idx = resample(logw, uniform())
            xbar = xbar.gather(1, idx.unsqueeze(-1).expand(B, P, N))
        x = to_image(xbar)
    raise AssertionError("unreachable: the loop returns at j = 0")


class FPSSMC(PriorMethod):
    """FPS-SMC on a pixel eps prior (``particles=1``: FPS); ``steps`` = K respaced timesteps; see the module
    docstring."""

    name = "fps_smc"

    def __init__(self, model: dict, steps: int = 1000, particles: int = 5, c_rate: float = 0.95,
                 clip_denoised: bool = True, official_sigma_y: bool = False, official_index: bool = False,
                 official_init: bool = False, official_sr_operator: bool = False):
        super().__init__(model)
        n = self.name
        self.steps = check_steps(n, steps, 2, fix="steps=1000 (official: every training step) or fewer, >= 2",
                                 maximum=self.train_steps)
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise ValueError(f"{n}: particles={particles!r} is invalid: it must be an integer >= 1 (1 = FPS without "
                             "SMC). Fix: method.particles=5 (official --particle_size)")
        self.particles = particles
        self.c_rate = check_number(n, "c_rate", c_rate, 0.0, 1.0, low_open=True,
                                   fix="method.c_rate=0.95 (official --c_rate; 0: a deterministic proposal)")
        self.clip_denoised = bool(clip_denoised)
        self.official_sigma_y = bool(official_sigma_y)
        self.official_index = bool(official_index)
        self.official_init = bool(official_init)
        self.official_sr_operator = bool(official_sr_operator)
        self.ts: list[int] | None = None
        self.abar: Tensor | None = None
        self.last_params: dict | None = None

    def unsupported_reason(self, task: Task) -> str | None:
        reason = super().unsupported_reason(task)
        if (reason is None and self.official_sr_operator and issubclass(task.operator_class, SRConv)
                and task.sigma == 0 and not self.official_sigma_y):
            reason = (f"fps_smc: official_sr_operator=true weighs with the measurement operator, which needs sigma_y > "
                      f"0, and task {task.name!r} is noiseless. Fix: method.official_sigma_y=true (official's 0.05) "
                      "or a noisy task")
        return reason

    def sampler_operator(self, op):
        """(proposal operator, measurement operator or None): with ``official_sr_operator`` a convolutional SR task
        (``sr4_bicubic``) is sampled through the block-average SVD of the same factor, as official's SR branch."""
        if self.official_sr_operator and isinstance(op, SRConv):
            return SuperResolution(op.channels, op.size, op.device, factor=op.stride), op
        return op, None

    @property
    def nfe(self) -> int:
        return (self.steps - 1) * self.particles

    def _prepared(self) -> None:
        self.ts, self.abar = fps_schedule(self.prior.betas, self.steps)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        op, dev = degradation.operator, self.device
        reason = self.unsupported_reason(degradation.task)
        if reason is not None:
            raise ValueError(reason)
        sampler_op, measure_op = self.sampler_operator(op)
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
            if self.official_sigma_y:
                sigma_y = OFFICIAL_SIGMA_Y
            x0, nfe = fps_smc_sample(
                self.eps, sampler_op, y_pm, sigma_y, self.ts, self.abar, c=self.c_rate, particles=self.particles,
                clip=self.clip_denoised, official_index=self.official_index,
                official_init=self.official_init, noise_y=lambda: seeding.randn(generators, (op.N,), dev),
                noise_x=lambda shape: seeding.randn(generators, shape, dev),
                uniform=lambda: seeding.rand(generators, (self.particles,), dev), measure_op=measure_op)
        self.last_nfe = nfe
        self.last_params = {"sigma_y": sigma_y, "sampler_operator": sampler_op.describe()}
        return self.to_image(x0)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "FPS-SMC (filtering posterior sampling, exact SVD proposal, "
                "multinomial resampling every step)" if self.particles > 1 else "FPS (one particle, no SMC)",
                "steps": self.steps, "particles": self.particles, "nfe": self.nfe,
                "nfe_rule": "(steps - 1) x particles; no backprop through the prior", "c_rate": self.c_rate,
                "clip_denoised": self.clip_denoised, "official_sigma_y": self.official_sigma_y,
                "official_index": self.official_index, "official_init": self.official_init,
                "official_sr_operator": self.official_sr_operator,
                "timesteps": self.ts, "model": self.model_info(),
                "sigma_y_units": "[-1, 1] (2 x task sigma)" if not self.official_sigma_y else "[-1, 1], fixed 0.05"}
