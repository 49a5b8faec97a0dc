"""ReSample (Song et al., ICLR 2024, "Solving inverse problems with latent diffusion models via hard data
consistency"; official soominkwon/resample ``ldm/models/diffusion/ddim.py::resample_sampling``).

:func:`resample_sample` is the sampler (one function, the official loop); its pieces need no prior: the event
schedule (:func:`event_schedule`), the stochastic resampling (paper eq. (10), :func:`stochastic_resample`), and
the two hard data-consistency optimisations as functions of a decoder callable (:func:`pixel_consistency`,
:func:`latent_consistency`). :class:`ReSample` runs it on a latent prior.

Notation: ``a = abar_{t-1}`` (the level resampled to), ``z'`` the DDIM(+DPS) iterate at that level, ``z0^`` the
data-consistent clean latent, ``sigma2`` the paper's sigma_t^2 (code variable ``sigma``). Images are in
[-1, 1] units (the official operators' and ours after :func:`bench.methods.prior_method.measurement_pm`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.diffusion import ddim_step, eps_to_x0
from bench.methods.latent_solver import LatentDDIM, LatentSolver
from bench.methods.prior_method import check_number
from bench.operators.denoise import check_int

#: official values (all hard-coded in ``resample_sampling``; ``sample_condition.py --ddim_steps 500``)
OFFICIAL_STEPS, OFFICIAL_EVERY, OFFICIAL_LOOKAHEAD, OFFICIAL_SPLITS, OFFICIAL_GAMMA = 500, 10, 5, 3, 40.0


@dataclass(frozen=True)
class Event:
    """A hard data-consistency event after the step with official ``index`` (K-1 .. 0): ``stage`` "pixel"
    (middle part of the steps) or "latent" (last part), with ``lookahead`` extra DDIM steps first."""

    index: int
    stage: str
    lookahead: int


def scaled(official: int, steps: int) -> int:
    """An official step count (at 500 steps) at ``steps`` steps: max(1, round(official * steps / 500)), so events
    sit at the same noise levels (every 10th of 500 steps = every 20 training steps)."""
    return max(1, round(official * steps / OFFICIAL_STEPS))


def event_schedule(steps: int, every: int = OFFICIAL_EVERY, lookahead: int = OFFICIAL_LOOKAHEAD,
                   splits: int = OFFICIAL_SPLITS) -> list[Event]:
    """Official ``resample_sampling``: ``index_split = K // splits``; an event at every ``0 < index <= K -
    index_split`` with ``index % every == 0``; "pixel" if ``index >= index_split`` else "latent"; look-ahead
    ``min(lookahead, index)`` steps (the official loop stops at the last timestep). K = 500 gives 33 events (17
    pixel, 16 latent)."""
    split = steps // splits
    return [Event(i, "pixel" if i >= split else "latent", min(lookahead, i))
            for i in range(steps - 1, 0, -1) if i <= steps - split and i % every == 0]


def resample_sigma2(gamma: float, a_t: Tensor, a_prev: Tensor) -> Tensor:
    """sigma_t^2 = gamma (1 - a_prev)/(1 - a_t) (1 - a_t/a_prev): gamma times the DDPM posterior variance of the
    step (official gamma = 40, "change the 40 value for each task")."""
    return gamma * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)


def resample_moments(z0: Tensor, z_prime: Tensor, a: Tensor, sigma2: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of the stochastic resampling distribution (paper eq. (10))::

        N( (sigma2 sqrt(a) z0^ + (1 - a) z') / (sigma2 + 1 - a),  sigma2 (1 - a) / (sigma2 + 1 - a) I )

    the product of q(z_{t-1} | z0^) = N(sqrt(a) z0^, (1 - a) I) and N(z', sigma2 I): sigma2 -> 0 keeps z',
    sigma2 -> inf re-noises z0^ to level a."""
    denom = sigma2 + 1 - a
    return (sigma2 * a**0.5 * z0 + (1 - a) * z_prime) / denom, sigma2 * (1 - a) / denom


def stochastic_resample(z0: Tensor, z_prime: Tensor, a: Tensor, sigma2: Tensor, noise: Tensor) -> Tensor:
    """One draw of :func:`resample_moments` with the given standard normal ``noise``."""
    mean, var = resample_moments(z0, z_prime, a, sigma2)
    return mean + var**0.5 * noise


@dataclass
class OptimSettings:
    """AdamW (PyTorch defaults otherwise, weight decay 0.01 included, as official) on the MSE mean_m (y - A x)^2.

    Stops when the loss < tol^2 (official eps = 1e-3) or after ``max_iters``; ``patience`` > 0 also stops when
    the loss is above the one ``patience`` iterations earlier (official latent optimisation: 200)."""

    lr: float
    max_iters: int
    tol: float = 1e-3
    patience: int = 0


PIXEL = OptimSettings(lr=1e-2, max_iters=2000)          # official pixel_optimization
LATENT = OptimSettings(lr=5e-3, max_iters=500, patience=200)  # official latent_optimization


def hard_consistency(v0: Tensor, loss_fn: Callable[[Tensor], Tensor], s: OptimSettings) -> tuple[Tensor, int]:
    """Official ``pixel_optimization`` / ``latent_optimization`` for ONE image: minimise ``loss_fn(v)`` (a scalar
    MSE) from ``v0`` with AdamW; returns (v, iterations run). As official, each iteration steps the optimiser
    before checking the stop rules on the loss it just computed."""
    v = v0.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([v], lr=s.lr)
    window: list[float] = []
    it = 0
    for it in range(1, s.max_iters + 1):
        opt.zero_grad()
        with torch.enable_grad():
            loss = loss_fn(v)
            loss.backward()
        opt.step()
        cur = float(loss.detach())
        if s.patience:
            window.append(cur)
            if len(window) > s.patience:
                if window[0] < cur:
                    break
                window.pop(0)
        if cur < s.tol**2:
            break
    return v.detach(), it


def pixel_consistency(x0: Tensor, y: Tensor, A: Callable[[Tensor], Tensor], s: OptimSettings = PIXEL):
    """argmin_x mean (y - A x)^2 from x0, per image; x0 (B, ...) and y (B, M). Returns (x, iterations per image)."""
    outs, iters = [], []
    for b in range(x0.shape[0]):
        x, n = hard_consistency(x0[b:b + 1], lambda v, b=b: (y[b:b + 1] - A(v)).pow(2).mean(), s)
        outs.append(x)
        iters.append(n)
    return torch.cat(outs), iters


def latent_consistency(z0: Tensor, y: Tensor, A: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                       s: OptimSettings = LATENT):
    """argmin_z mean (y - A D(z))^2 from z0, per image (1 decoder forward + VJP per iteration)."""
    outs, iters = [], []
    for b in range(z0.shape[0]):
        z, n = hard_consistency(z0[b:b + 1], lambda v, b=b: (y[b:b + 1] - A(decode(v))).pow(2).mean(), s)
        outs.append(z)
        iters.append(n)
    return torch.cat(outs), iters


def official_pseudo_x0(z: Tensor, eps: Tensor, a: Tensor) -> Tensor:
    """The official ``pseudo_x0`` ("Tweedie"): (z - (1 - a) eps) / sqrt(a), i.e. (1 - a) where Tweedie's formula
    (:func:`bench.diffusion.eps_to_x0`) has sqrt(1 - a). Used only with ``official_pseudo_x0=True``."""
    return (z - (1 - a) * eps) / a**0.5


COUNT_KEYS = ("unet_forward", "unet_vjp", "decoder_forward", "decoder_vjp", "encoder_forward",
              "pixel_iterations", "latent_iterations")


def resample_sample(eps_fn, decode, encode, A, y: Tensor, tab: LatentDDIM, z_T: Tensor, noise, *,
                    events: list[Event], eta: float = 0.0, scale: float = 0.5, gamma: float = OFFICIAL_GAMMA,
                    pixel: OptimSettings = PIXEL, latent: OptimSettings = LATENT, final_latent: bool = True,
                    official_pseudo_x0_formula: bool = False, official_lookahead_alphas: bool = False,
                    counts: dict | None = None) -> Tensor:
    """ReSample (Algorithm 1 with the official code's schedule); returns the final clean latent z_0.

    eps_fn(z, t: int) -> eps; decode(z) -> image in [-1, 1] (differentiable); encode(x) -> z; A(x) -> (B, M)
    flat measurement of an image (differentiable); y (B, M) in [-1, 1] units; noise() -> a fresh standard normal
    of z's shape. ``counts`` (optional dict) accumulates :data:`COUNT_KEYS` summed over the batch's images.

    Every step i = K-1 .. 0 (official ``index``):

    1. DDIM step z' = DDIM(z_t) from eps = eps_fn(z_t, tau_i) and z0^ = Tweedie(z_t);
    2. latent DPS: z' -= scale * a_i * grad_{z_t} ||y - A D(z0^)||_2 (per-image norm, not squared; official
       scale 0.5, i.e. ``scale=a_t*.5``);
    3. at an event (:func:`event_schedule`): ``lookahead`` more DDIM steps from z' without guidance give a better
       z0^ (Tweedie at the last look-ahead state); then the "pixel" stage solves argmin_x ||y - A x||^2 from
       D(z0^) and encodes, z0^ = E(x); the "latent" stage solves argmin_z ||y - A D(z)||^2 from z0^; and
       z_{t-1} ~ :func:`stochastic_resample` (z0^, z', a_prev_i, sigma2 = :func:`resample_sigma2`).

    After the loop a last latent optimisation from z_0 (``final_latent``), as official.
    ``official_lookahead_alphas``: the official look-ahead evaluates the net at tau_{j} but takes the DDIM and
    Tweedie coefficients of step j+1 (an index off by one); off here.
    """
    counts = counts if counts is not None else {}
    for k in COUNT_KEYS:
        counts.setdefault(k, 0)
    B = z_T.shape[0]
    pseudo = official_pseudo_x0 if official_pseudo_x0_formula else eps_to_x0
    by_index = {e.index: e for e in events}
    z = z_T
    for i in reversed(range(tab.num_steps)):
        a, a_prev = tab.a[i], tab.a_prev[i]
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = eps_fn(z, tab.tau[i])
            z_prime, _ = ddim_step(z, eps, a, a_prev, eta, noise() if eta > 0 else None)
            residual = (y - A(decode(pseudo(z, eps, a)))).norm(dim=1)
            grad = torch.autograd.grad(residual.sum(), z)[0]
        z = (z_prime - scale * a * grad).detach()
        for k in ("unet_forward", "unet_vjp", "decoder_forward", "decoder_vjp"):
            counts[k] += B
        if i not in by_index:
            continue
        event, z_prime = by_index[i], z
        with torch.no_grad():
            for m in range(event.lookahead):
                j = i - 1 - m
                ja = j + 1 if official_lookahead_alphas else j
                eps = eps_fn(z, tab.tau[j])
                z0_hat = pseudo(z, eps, tab.a[ja])
                z, _ = ddim_step(z, eps, tab.a[ja], tab.a_prev[ja], eta, noise() if eta > 0 else None)
            counts["unet_forward"] += event.lookahead * B
            if event.stage == "pixel":
                x, iters = pixel_consistency(decode(z0_hat), y, A, pixel)
                z0_hat = encode(x)
                counts["pixel_iterations"] += sum(iters)
                counts["decoder_forward"] += B
                counts["encoder_forward"] += B
        if event.stage == "latent":
            z0_hat, iters = latent_consistency(z0_hat, y, A, decode, latent)
            _count_latent(counts, iters)
        z = stochastic_resample(z0_hat, z_prime, a_prev, resample_sigma2(gamma, a, a_prev), noise()).detach()
    if final_latent:
        z, iters = latent_consistency(z, y, A, decode, latent)
        _count_latent(counts, iters)
    return z.detach()


def _count_latent(counts: dict, iters: list[int]) -> None:
    n = sum(iters)
    counts["latent_iterations"] += n
    counts["decoder_forward"] += n
    counts["decoder_vjp"] += n


class ReSample(LatentSolver):
    """ReSample on a latent prior. ``every`` / ``lookahead`` null: the official 10 / 5 (at 500 steps) scaled to
    ``steps`` by :func:`scaled`; ``rescale: true`` multiplies the DPS step 0.5 a_t by 500 / steps (the official
    total pull over fewer, larger steps; off by default, as latent_dps: neither official code rescales)."""

    name = "resample"
    official_steps = OFFICIAL_STEPS

    def __init__(self, model: dict, steps: int = OFFICIAL_STEPS, eta: float = 0.0, scale: float = 0.5,
                 rescale: bool = False, gamma: float = OFFICIAL_GAMMA, every: int | None = None,
                 lookahead: int | None = None, splits: int = OFFICIAL_SPLITS, pixel_lr: float = PIXEL.lr,
                 pixel_iters: int = PIXEL.max_iters, latent_lr: float = LATENT.lr,
                 latent_iters: int = LATENT.max_iters, tol: float = PIXEL.tol, patience: int = LATENT.patience,
                 final_latent: bool = True, official_pseudo_x0: bool = False,
                 official_lookahead_alphas: bool = False):
        super().__init__(model, steps, eta)
        n = self.name
        self.scale = check_number(n, "scale", scale, 0.0, fix="method.scale=0.5 (official: 0.5 a_t)")
        self.gamma = check_number(n, "gamma", gamma, 0.0, low_open=True, fix="method.gamma=40 (official)")
        self.every = scaled(OFFICIAL_EVERY, self.steps) if every is None else check_int(
            f"{n}: method.every", every, 1, "Fix: method.every=null (official 10 at 500 steps, scaled)")
        self.lookahead = scaled(OFFICIAL_LOOKAHEAD, self.steps) if lookahead is None else check_int(
            f"{n}: method.lookahead", lookahead, 1, "Fix: method.lookahead=null (official 5 at 500 steps, scaled)")
        self.splits = check_int(f"{n}: method.splits", splits, 1, "Fix: method.splits=3 (official)")
        self.pixel = OptimSettings(
            check_number(n, "pixel_lr", pixel_lr, 0.0, low_open=True, fix="method.pixel_lr=0.01 (official)"),
            check_int(f"{n}: method.pixel_iters", pixel_iters, 1, "Fix: method.pixel_iters=2000 (official)"),
            check_number(n, "tol", tol, 0.0, fix="method.tol=0.001 (official)"))
        self.latent = OptimSettings(
            check_number(n, "latent_lr", latent_lr, 0.0, low_open=True, fix="method.latent_lr=0.005 (official)"),
            check_int(f"{n}: method.latent_iters", latent_iters, 1, "Fix: method.latent_iters=500 (official)"),
            self.pixel.tol, check_int(f"{n}: method.patience", patience, 0, "Fix: method.patience=200 (official)"))
        self.rescale, self.final_latent = bool(rescale), bool(final_latent)
        self.official_pseudo_x0, self.official_lookahead_alphas = bool(official_pseudo_x0), bool(
            official_lookahead_alphas)
        self.events = event_schedule(self.steps, self.every, self.lookahead, self.splits)

    def use_prior(self, prior, device) -> None:
        super().use_prior(prior, device)
        self.events = event_schedule(self.tab.num_steps, self.every, self.lookahead, self.splits)

    def effective_scale(self) -> float:
        return self.scale * (OFFICIAL_STEPS / self.tab.num_steps if self.rescale else 1.0)

    def sample(self, y_pm, sigma_pm, degradation, z_T, noise, generators, counts) -> Tensor:
        p, op = self.prior, degradation.operator
        return resample_sample(p.eps, p.decode, p.encode, op.A, y_pm, self.tab, z_T, noise, events=self.events,
                               eta=self.eta, scale=self.effective_scale(), gamma=self.gamma, pixel=self.pixel,
                               latent=self.latent, final_latent=self.final_latent,
                               official_pseudo_x0_formula=self.official_pseudo_x0,
                               official_lookahead_alphas=self.official_lookahead_alphas, counts=counts)

    def describe(self) -> dict:
        ev = self.events
        return {**super().describe(), "algorithm": "ReSample (Algorithm 1, official schedule)",
                "scale": self.scale, "rescale": self.rescale, "gamma": self.gamma, "every": self.every,
                "lookahead": self.lookahead, "splits": self.splits, "events": len(ev),
                "pixel_events": sum(e.stage == "pixel" for e in ev), "pixel": vars(self.pixel),
                "latent": vars(self.latent), "final_latent": self.final_latent,
                "official_pseudo_x0": self.official_pseudo_x0,
                "official_lookahead_alphas": self.official_lookahead_alphas}
