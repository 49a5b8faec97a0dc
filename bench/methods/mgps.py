"""MGPS: variational diffusion posterior sampling with midpoint guidance (Moufad, Janati, Bedin, Durmus, Olsson,
Moulines & Corff, ICLR 2025).

:func:`mgps_sample` is the sampler, one function mirroring official ``src/posterior_samplers/mgps.py::mgps`` with
``mgps_vi_step``, ``mgps_vi_tmid_step`` (loss ``_rb_elbo`` + ``kl_mvn``), ``mgps_vi_t0_step`` (loss ``_elbo``) and
``diffusion_utils.py::bridge_kernel_statistics`` of YazidJanati/mgps (``configs/experiments/sampler/mgps.yaml``);
:class:`MGPS` wraps it. Notation, x in [-1, 1]:

* levels: abar(0) = 1 (clean), abar(k) = abar_{k-1} of the prior for k = 1..T (official prepends 1.0 to the
  table, clipped to [1e-6, 1]); the grid is t_i = ``linspace(0, T - 1, steps)`` truncated to integers (float32, as
  official), i = 0..n-1. x_{t_{n-1}} ~ N(0, I) and x0^ = x0(x_{t_{n-1}}, t_{n-1}).
* x0(x, k) = (x - sqrt(1 - abar(k)) eps(x, k - 1)) / sqrt(abar(k)) (no clipping). Official calls the network with
  k itself while using abar(k) = abar_{k-1}: a one-step offset, ``official_time_offset=true``.
* bridge q(x_t | x_l, x_s) for s < t < l (DDPM, eta = 1): std^2 = (1 - a_tl)(1 - a_st) / (1 - a_sl),
  mean = c_l x_l + c_s x_s with c_l = sqrt((1 - a_st - std^2) / (1 - a_sl)), c_s = sqrt(a_st) - c_l sqrt(a_sl),
  a_uv = abar(v) / abar(u).
* for i = n-1 .. 2: t = t_i, t' = t_{i-1}, midpoint l = min(floor(alpha t'), t') (``alpha``, official 0.5; at
  least 1 here, official would divide by zero at l = 0), warm = (t >= ``threshold``), K = gradient steps(i):
  1. prior at the midpoint: N(m_l, s_l^2 I) = q(x_l | x_t, x0(x_t, t)) (s = 0);
  2. variational q = N(mu, diag e^{2 lambda}) initialised at the bridge q(x_l | x_t, x0^) from the previous x0^
     (s = 1 when warm, else 0), lambda = log of its std;
  3. K Adam steps (lr ``lr``, official 0.03, x 300 / steps with ``rescale``; torch defaults) on
     L = KL(q || N(m_l, s_l^2)) + ||y - A x0(x~, l)||^2 / (2 sigma_y^2), x~ = mu + e^lambda z (one fresh z per
     step; x0(x~, l) replaced by x~ itself when l <= 1): one forward and one VJP through the network per step;
  4. x_l = mu + e^lambda z;
  5. not warm: x_{t'} ~ q(x_{t'} | x_t, x_l) (s = l), x0^ = x0(x_l, l);
     warm (warm start): a second fit, of x_1 given x_l: q1 = N(mu1, e^{2 lambda1}) from q(x_1 | x_l, x0(x_l, l)),
     K Adam steps on -log g(x~1) - sum lambda1 + (||x_l - sqrt(a) mu1||^2 + a sum e^{2 lambda1}) / (2 (1 - a))
     - <x~1, score(x~1)>_sg, a = abar(l) / abar(1), score(x) = (sqrt(abar(1)) x0(x, 1) - x) / (1 - abar(1)) without
     gradient (a forward per step, no VJP); x0^ = x_1 ~ q1 and x_{t'} ~ q(x_{t'} | x_t, x_1) (s = 1).
* output x0(x_{t_1}, t_1), clamped to [-1, 1].
* gradient steps(i) (official ``gradient_steps_fn`` rules, first match wins): i <= ``plain_last`` -> ``grad_steps``;
  i >= n - ``noisy_count`` -> ``noisy_grad_steps``; ``every`` > 0 and i % every == 0 -> ``every_grad_steps``;
  else ``grad_steps``. Official default 20 / 10 / 10 / 2 (the ``every`` rule returns 2, i.e. off); its FFHQ block:
  ``noisy_count=5 noisy_grad_steps=20 every=10 every_grad_steps=20``; ImageNet: ``plain_last=10 noisy_count=5
  noisy_grad_steps=20 every=20 every_grad_steps=10`` (the public ``test_images.py`` never merges these blocks).

Step count (``rescale``, default true): Adam moves each value by about lr per step whatever the gradient's scale, so
the pull a run can exert grows like lr x its number of Adam steps, and the official lr 0.03 goes with the official
300-step grid. With ``rescale`` the Adam lr is lr x 300 / ``steps`` (the official value at 300 steps), which keeps
the official run's total displacement on coarser grids (as DPS's ``rescale`` keeps its total pull);
``rescale=false`` uses ``lr`` as is. Measured on the embedded prior, 20 steps, deblur_gauss, one sample photo
(input 20.58 dB): lr 0.03 unscaled 14.6 dB (the output is a prior sample that ignores y), 0.3 21.7 dB, 0.45 (the
rescaled default) 20.2 dB (single-photo numbers move by ~1 dB with the noise); 10 Adam steps per step at
lr 0.03 22.6 dB (3x the NFE); ``sigma_y_min=0.005`` at lr 0.03 14.6 dB. On the Gaussian prior (tests) the
rescaled lr brings the mean from 0.77 to 0.12 of the prior-to-posterior distance.

Measured (``python -m bench method=mgps task=... dataset.limit=2``: embedded 64-px prior, its 20 steps, 86 forwards
and 36 VJPs per image, the 2 sample photos, PSNR dB input -> output; CPU, one thread on 2 shared cores at load 7-12,
so seconds are pessimistic): sr4 bicubic 20.94 -> 18.53 (59 s per image), deblur_gauss 22.90 -> 20.90 (48 s),
inpaint 11.99 -> 23.96 (38 s), denoise 26.18 -> 24.81 (42 s); with ``rescale=false`` (official lr 0.03 at 20
steps) 12.64 / 14.25 / 13.33 / 13.59: prior samples. 20 steps stay far from the official 300 (1,532 forwards);
the lr, alpha and sigma_y_min of the tuning space are untuned here. Peak memory ~1.2 GB (the VJP keeps the
network's activations).

Likelihood: log g(x) = -||y - A x||^2 / (2 sigma_y^2), y and sigma_y in [-1, 1] units (``measurement_pm``:
sigma_y = 2 sigma), floored at ``sigma_y_min`` (default 0.05, the sigma_y of every official run), since the
noiseless tasks here would make it infinite; autograd through A. No tempering.

NFE (exact, :func:`mgps_cost`, reported in ``last_nfe`` = forward evaluations and ``last_vjp``): per i one
forward for m_l, K forwards + K VJPs for the fit (none when l <= 1), then one forward (x0(x_l, l)), plus K more
forwards when warm; 2 more (start, output). Official defaults (300 steps, T = 1000): 1,532 forwards, of which
674 with a VJP (the facts note's "about 1,532 + 676" counts 2 at i = 2, where l = 1 and no network is called).

Not reproduced: ``optimizer: sgd`` (normalised gradient steps; every official config uses Adam), the latent
(LDM) variant. Noise comes from the per-image generators (official: global RNG, same draw order).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from bench import seeding
from bench.methods.prior_method import PriorMethod, check_number, check_steps
from bench.tasks import Degradation

#: the official grid size, for which the official lr was set
OFFICIAL_STEPS = 300


def level_grid(steps: int, T: int) -> list[int]:
    """Official ``torch.linspace(0, T - 1, steps).long()`` (float32, truncated), as a list."""
    return [int(v) for v in torch.linspace(0, T - 1, steps).long()]


def midpoint(t_prev: int, alpha: float) -> int:
    """l = min(floor(alpha t'), t'), at least 1."""
    return max(1, min(int(alpha * t_prev), t_prev))


def gradient_steps(i: int, n: int, *, grad_steps: int = 2, noisy_count: int = 10, noisy_grad_steps: int = 10,
                   every: int = 0, every_grad_steps: int = 2, plain_last: int = 20) -> int:
    """Adam steps at loop index i of n (official ``gradient_steps_fn`` rules in order, module docstring)."""
    if i <= plain_last:
        return grad_steps
    if i >= n - noisy_count:
        return noisy_grad_steps
    if every > 0 and i % every == 0:
        return every_grad_steps
    return grad_steps


def mgps_cost(levels: list[int], alpha: float, threshold: int, steps_fn: Callable[[int], int]) -> tuple[int, int]:
    """(forward evaluations, VJPs) per image of :func:`mgps_sample` on ``levels``, computed without running it."""
    fwd, vjp, n = 2, 0, len(levels)
    for i in range(n - 1, 1, -1):
        k, mid = steps_fn(i), midpoint(levels[i - 1], alpha)
        fwd += 2 + (k if mid > 1 else 0) + (k if levels[i] >= threshold else 0)
        vjp += k if mid > 1 else 0
    return fwd, vjp


def padded_abar(betas: Tensor) -> Tensor:
    """Official table: [1, abar_0, ..., abar_{T-1}] in float32, clipped to [1e-6, 1]."""
    abar = torch.cumprod(1 - betas.to(torch.float64).cpu(), 0).float().clip(1e-6, 1)
    return torch.cat([torch.ones(1), abar])


def bridge(abar: Tensor, x_l: Tensor, x_s: Tensor, ell: int, t: int, s: int) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDPM bridge q(x_t | x_l, x_s), s < t < l (official ``bridge_kernel_statistics``)."""
    a_st, a_tl, a_sl = abar[t] / abar[s], abar[ell] / abar[t], abar[ell] / abar[s]
    std = ((1 - a_tl) * (1 - a_st) / (1 - a_sl)) ** 0.5
    c_l = ((1 - a_st - std**2) / (1 - a_sl)) ** 0.5
    c_s = a_st**0.5 - c_l * a_sl**0.5
    return c_l * x_l + c_s * x_s, std


def kl_diag(mean: Tensor, logstd: Tensor, prior_mean: Tensor, prior_logstd: Tensor) -> Tensor:
    """KL(N(mean, e^{2 logstd}) || N(prior_mean, e^{2 prior_logstd} I)) up to a constant (official ``kl_mvn``)."""
    return 0.5 * (-2 * logstd.sum() + ((mean - prior_mean).pow(2).sum() + (2 * logstd).exp().sum())
                  / (2 * prior_logstd).exp())


def adam_fit(mean: Tensor, logstd: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], steps: int,
             lr: float, losses: list | None = None) -> tuple[Tensor, Tensor]:
    """``steps`` Adam steps (torch defaults, ``lr``) on loss_fn(mean, logstd) from the given start; detached result."""
    mean, logstd = mean.detach().clone().requires_grad_(True), logstd.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mean, logstd], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = loss_fn(mean, logstd)
            mean.grad, logstd.grad = torch.autograd.grad(loss, [mean, logstd])  # not into the network's weights
            opt.step()
            if losses is not None:
                losses.append(float(loss))
    return mean.detach(), logstd.detach()


def midpoint_loss(mean: Tensor, logstd: Tensor, *, prior_mean: Tensor, prior_logstd: Tensor, x0_fn, mid: int,
                  log_lik: Callable[[Tensor], Tensor], noise: Callable[[], Tensor]) -> Tensor:
    """One-sample estimate of KL(q || N(prior_mean, e^{2 prior_logstd})) - log g(x0(x~, mid)), x~ ~ q (official
    ``_rb_elbo``); x~ itself replaces x0(x~, mid) when mid <= 1. Counts a VJP when the network is called."""
    sample = mean + logstd.exp() * noise()
    if mid > 1:
        x0_fn.vjp += 1
        sample = x0_fn(sample, mid)
    return -log_lik(sample) + kl_diag(mean, logstd, prior_mean, prior_logstd)


def warm_start_loss(mean: Tensor, logstd: Tensor, *, x_mid: Tensor, mid: int, x0_fn,
                    log_lik: Callable[[Tensor], Tensor], noise: Callable[[], Tensor]) -> Tensor:
    """One-sample surrogate of KL(q || p(x_1 | x_mid, y)) (official ``_elbo`` with t_mid = 1): -log g(x~) - entropy
    - log q(x_mid | mean) (in expectation over q) - <x~, score_1(x~)> with the score at level 1 detached, so its
    gradient is the reparameterised one of E_q[-log p_1(x~)] (a forward per call, no VJP)."""
    abar = x0_fn.abar
    ratio = abar[mid] / abar[1]
    sample = mean + logstd.exp() * noise()
    with torch.no_grad():
        score = (-sample + abar[1] ** 0.5 * x0_fn(sample, 1)) / (1 - abar[1])
    log_fwd = -0.5 * ((x_mid - ratio**0.5 * mean) ** 2 + ratio * (2 * logstd).exp()).sum() / (1 - ratio)
    return -log_lik(sample) - logstd.sum() - log_fwd - (sample * score).sum()


class Counter:
    """x0(x, level) of an eps function (module docstring), counting forward evaluations and VJPs."""

    def __init__(self, eps_fn: Callable[[Tensor, int], Tensor], abar: Tensor, official_time_offset: bool = False):
        self.eps_fn, self.abar, self.offset = eps_fn, abar, official_time_offset
        self.forward = self.vjp = 0

    def __call__(self, x: Tensor, level: int) -> Tensor:
        self.forward += 1
        a = self.abar[level] / self.abar[0]
        eps = self.eps_fn(x, level if self.offset else level - 1)
        return (x - (1 - a) ** 0.5 * eps) / a**0.5


def mgps_sample(x0_fn: Counter, log_lik: Callable[[Tensor], Tensor], levels: list[int], x_T: Tensor, *,
                alpha: float, lr: float, threshold: int, steps_fn: Callable[[int], int],
                noise: Callable[[], Tensor], losses: list | None = None) -> Tensor:
    """MGPS (module docstring). x0_fn: a :class:`Counter`; log_lik(x) -> log g summed over the batch (differentiable);
    noise() -> a fresh standard normal like x_T. Returns x0(x_{t_1}, t_1) (not clamped)."""
    abar, n, x = x0_fn.abar, len(levels), x_T
    with torch.no_grad():
        x0 = x0_fn(x, levels[-1])
    for i in range(n - 1, 1, -1):
        t, t_prev = levels[i], levels[i - 1]
        mid, warm, k = midpoint(t_prev, alpha), t >= threshold, steps_fn(i)
        with torch.no_grad():
            init_mean, init_std = bridge(abar, x, x0, t, mid, 1 if warm else 0)
            prior_mean, prior_std = bridge(abar, x, x0_fn(x, t), t, mid, 0)
        loss = partial(midpoint_loss, prior_mean=prior_mean, prior_logstd=prior_std.log(), x0_fn=x0_fn, mid=mid,
                       log_lik=log_lik, noise=noise)
        mean, logstd = adam_fit(init_mean, init_std.log() * torch.ones_like(x), loss, k, lr, losses)
        x_mid = mean + logstd.exp() * noise()
        with torch.no_grad():
            if not warm:
                b_mean, b_std = bridge(abar, x, x_mid, t, t_prev, mid)
                x = b_mean + b_std * noise()
                x0 = x0_fn(x_mid, mid)
                continue
            m1, s1 = bridge(abar, x_mid, x0_fn(x_mid, mid), mid, 1, 0)
        loss = partial(warm_start_loss, x_mid=x_mid, mid=mid, x0_fn=x0_fn, log_lik=log_lik, noise=noise)
        mean1, logstd1 = adam_fit(m1, s1.log() * torch.ones_like(x), loss, k, lr, losses)
        with torch.no_grad():
            x0 = mean1 + logstd1.exp() * noise()
            b_mean, b_std = bridge(abar, x, x0, t, t_prev, 1)
            x = b_mean + b_std * noise()
    with torch.no_grad():
        return x0_fn(x, levels[1])


class MGPS(PriorMethod):
    """MGPS on a pixel eps prior; ``steps`` = the grid size n (official 300). Back-propagates through the prior."""

    name = "mgps"
    backprop_through_prior = True

    def __init__(self, model: dict, steps: int = 300, alpha: float = 0.5, lr: float = 0.03, rescale: bool = True,
                 threshold: int = 700,
                 grad_steps: int = 2, noisy_count: int = 10, noisy_grad_steps: int = 10, every: int = 0,
                 every_grad_steps: int = 2, plain_last: int = 20, sigma_y_min: float = 0.05,
                 official_time_offset: bool = False):
        super().__init__(model)
        n = self.name
        self.steps = check_steps(n, steps, 3, fix="steps=300 (official); at least 3 (the loop runs i = steps-1 .. 2)",
                                 maximum=self.train_steps)
        self.alpha = check_number(n, "alpha", alpha, 0.0, 1.0, low_open=True, fix="method.alpha=0.5 (official)")
        self.lr = check_number(n, "lr", lr, 0.0, low_open=True, fix="method.lr=0.03 (official)")
        self.sigma_y_min = check_number(n, "sigma_y_min", sigma_y_min, 0.0, low_open=True,
                                        fix="method.sigma_y_min=0.05 (the official runs' sigma_y, [-1, 1] units)")
        ints = {}
        for key, value, low, fix in (("threshold", threshold, 0, "method.threshold=700 (official; > T-1 disables)"),
                                     ("grad_steps", grad_steps, 0, "method.grad_steps=2 (official)"),
                                     ("noisy_count", noisy_count, 0, "method.noisy_count=10 (official)"),
                                     ("noisy_grad_steps", noisy_grad_steps, 0, "method.noisy_grad_steps=10 (official)"),
                                     ("every", every, 0, "method.every=0 (off, official default)"),
                                     ("every_grad_steps", every_grad_steps, 0, "method.every_grad_steps=2"),
                                     ("plain_last", plain_last, 0, "method.plain_last=20 (official)")):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{n}: {key}={value!r} is invalid: it must be an integer >= {low}. Fix: {fix}")
            ints[key] = value
        self.threshold = ints.pop("threshold")
        self.rule = ints
        if not isinstance(rescale, bool):
            raise ValueError(f"{n}: rescale={rescale!r} is invalid: it must be true or false. Fix: method.rescale=true")
        self.official_time_offset, self.rescale = bool(official_time_offset), rescale
        self.levels = level_grid(self.steps, self.train_steps)
        self.abar: Tensor | None = None
        #: after restore: VJPs through the network per image (last_nfe counts every forward evaluation)
        self.last_vjp = 0
        self.last_sigma_y: float | None = None

    @property
    def step_lr(self) -> float:
        """The Adam lr used: ``lr`` x (300 / steps) with ``rescale`` (module docstring), else ``lr``."""
        return self.lr * (OFFICIAL_STEPS / self.steps) if self.rescale else self.lr

    def steps_fn(self, i: int) -> int:
        return gradient_steps(i, self.steps, **self.rule)

    def cost(self) -> tuple[int, int]:
        """(forward evaluations, VJPs) per image at the current settings."""
        return mgps_cost(self.levels, self.alpha, self.threshold, self.steps_fn)

    def _prepared(self) -> None:
        self.abar = padded_abar(self.prior.betas).to(self.device)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        op = degradation.operator
        with torch.no_grad():
            y_pm, sigma_y = self.measurement(y, degradation)
        sigma_y = max(sigma_y, self.sigma_y_min)
        B = y_pm.shape[0]

        def log_lik(x: Tensor) -> Tensor:
            return -0.5 * (y_pm - op.A(x.reshape(B, -1))).pow(2).sum() / sigma_y**2

        x0_fn = Counter(self.eps, self.abar, self.official_time_offset)
        x_T = seeding.randn(generators, op.x_shape, self.device)
        x0 = mgps_sample(x0_fn, log_lik, self.levels, x_T, alpha=self.alpha, lr=self.step_lr, threshold=self.threshold,
                         steps_fn=self.steps_fn, noise=lambda: seeding.randn(generators, op.x_shape, self.device))
        self.last_nfe, self.last_vjp, self.last_sigma_y = x0_fn.forward, x0_fn.vjp, sigma_y
        self.last_cost = {"unet_forward": x0_fn.forward, "unet_vjp": x0_fn.vjp}
        return self.to_image(x0)

    def describe(self) -> dict:
        fwd, vjp = self.cost()
        return {"name": self.name, "algorithm": "MGPS (midpoint Gaussian VI by Adam + DDPM bridge, warm start)",
                "steps": self.steps, "nfe": fwd, "vjp": vjp, "alpha": self.alpha, "lr": self.lr,
                "rescale": self.rescale, "adam_lr_used": self.step_lr,
                "optimizer": "adam", "threshold": self.threshold, "gradient_steps": self.rule,
                "sigma_y": f"max(2 sigma, {self.sigma_y_min}) in [-1, 1] units",
                "official_time_offset": self.official_time_offset, "model": self.model_info()}
