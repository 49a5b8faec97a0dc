"""Noise-schedule helpers shared by the DDRM and GDP samplers (pure functions, no config objects).

Notation (Ho et al. 2020; DDIM, Song et al. 2021): ``beta_t`` for t = 0..T-1 (0-based, as in code),
``alpha_t = 1 - beta_t``, ``abar_t = prod_{s<=t} alpha_s`` and

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I).

Conventions checked against the official code:

* DDRM (bahjat-kawar/ddrm ``runners/diffusion.py``): ``skip = T // steps; seq = range(0, T, skip)``
  and betas are computed in float64 then cast with ``.float()`` before the cumprod, so
  bit-parity needs ``alphas_cumprod(betas.float())``. ``functions/denoising.py::compute_alpha``
  pads betas with a leading 0, so ``a(t) = cumprod(1 - b)[t + 1]`` and ``a(-1) = 1`` (the "next"
  step after t = seq[0] is -1, i.e. clean data): see :func:`padded_alphas_cumprod` / :func:`abar_at`.
* guided-diffusion (openai ``guided_diffusion/respace.py``), used by GDP: :func:`space_timesteps`
  and the respaced betas ``1 - abar_i / abar_prev`` of ``SpacedDiffusion`` (:func:`respaced_betas`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("linear", "scaled_linear", "quad")
#: reverse-process variance rules (guided-diffusion ``ModelVarType``; diffusers ``variance_type``):
#: interpolation learned by the net, the posterior variance beta~_t ("small"), or beta_t ("large")
VARIANCES = ("learned_range", "fixed_small", "fixed_large")


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM linear schedule: ``beta_t = linspace(beta_start, beta_end, T)`` in float64."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def make_betas(schedule: str, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """``"linear"`` or ``"scaled_linear"`` (LDM; DDRM calls it ``"quad"``):
    ``beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``. float64, shape (T,)."""
    if schedule == "linear":
        return linear_betas(T, beta_start, beta_end)
    if schedule in ("scaled_linear", "quad"):
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def alphas_cumprod(betas: Tensor) -> Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, same shape and dtype as ``betas``."""
    return torch.cumprod(1.0 - betas, dim=0)


def padded_alphas_cumprod(betas: Tensor) -> Tensor:
    """DDRM's padded table, shape (T+1,): ``[1, abar_0, ..., abar_{T-1}]`` (leading beta of 0)."""
    return alphas_cumprod(torch.cat([betas.new_zeros(1), betas]))


def abar_at(abar_padded: Tensor, t: int | Tensor) -> Tensor:
    """``abar_t`` from a :func:`padded_alphas_cumprod` table with DDRM's ``compute_alpha`` indexing:
    ``abar_padded[t + 1]``, so ``t = -1`` gives 1.0 (x_{-1} := x_0, the clean image).

    ``t`` is an int (returns a 0-dim tensor) or an integer tensor (returns ``t.shape``). DDRM's own
    helper additionally reshapes to (-1, 1, 1, 1); broadcasting here is left to :func:`eps_to_x0`.
    """
    idx = torch.as_tensor(t, device=abar_padded.device).long() + 1
    if (idx < 0).any() or (idx >= abar_padded.numel()).any():
        raise IndexError(f"t must lie in [-1, {abar_padded.numel() - 2}], got {t}")
    return abar_padded[idx]


def timesteps(num_steps: int, T: int = 1000, kind: str = "uniform") -> list[int]:
    """Increasing model timesteps to visit (the sampler walks them in reverse).

    * ``"uniform"``: official DDRM, ``skip = T // num_steps; range(0, T, skip)``. Matched exactly,
      so when ``num_steps`` does not divide ``T`` there are MORE than ``num_steps`` steps (T=1000,
      steps=300 -> skip 3 -> 334 steps). Use ``len()`` of the result as the true NFE.
    * ``"respaced"``: guided-diffusion ``timestep_respacing="N"``, i.e. ``space_timesteps(T, [N])``.
    * ``"ddim"``: guided-diffusion ``"ddimN"`` (integer stride giving exactly N steps, else error).
    """
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, T={T}], got {num_steps}")
    if kind == "uniform":
        return list(range(0, T, T // num_steps))
    if kind == "respaced":
        return space_timesteps(T, [num_steps])
    if kind == "ddim":
        return space_timesteps(T, f"ddim{num_steps}")
    raise ValueError(f"unknown timestep kind {kind!r}; allowed: uniform, respaced, ddim")


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """guided-diffusion's ``space_timesteps`` (returns a sorted list instead of a set).

    ``T`` is cut into ``len(section_counts)`` near-equal sections (the first ``T % k`` one step
    longer); section i of ``size`` steps keeps ``count_i`` of them at fractional stride
    ``(size-1)/(count_i-1)``, Python-``round``-ed from a running float sum (as upstream, so that e.g.
    ``7 * 99/14`` accumulates to 49.4999... and rounds to 49). ``section_counts`` may be a list,
    a comma string ``"10,15,20"``, or ``"ddimN"``: the smallest integer stride i with
    ``len(range(0, T, i)) == N``.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {want} steps from {num_timesteps} "
                             "with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, set()
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.add(start + round(cur))
            cur += stride
        start += size
    return sorted(steps)


def respaced_betas(alphas_cumprod: Tensor, use_timesteps: Iterable[int]) -> Tensor:
    """Betas of guided-diffusion's ``SpacedDiffusion``: for kept steps i (ascending),
    ``beta'_j = 1 - abar_i / abar_prev`` with ``abar_prev`` the previous kept abar (1 at start),
    so ``cumprod(1 - beta') == abar[kept]``. The model is called with original index ``kept[j]``.
    """
    keep = sorted(set(int(i) for i in use_timesteps))
    abar = alphas_cumprod[keep]
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return 1.0 - abar / prev


def _per_batch(abar_t: float | Tensor, x: Tensor) -> Tensor:
    a = torch.as_tensor(abar_t, dtype=x.dtype, device=x.device)
    if a.ndim == 1 and x.ndim > 1:  # (B,) -> (B, 1, 1, ...)
        a = a.view(-1, *([1] * (x.ndim - 1)))
    return a


def eps_to_x0(x_t: Tensor, eps: Tensor, abar_t: float | Tensor) -> Tensor:
    """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``; ``abar_t`` scalar or shape (B,)."""
    a = _per_batch(abar_t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x0_to_eps(x_t: Tensor, x0: Tensor, abar_t: float | Tensor) -> Tensor:
    """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``; ``abar_t`` scalar or shape (B,)."""
    a = _per_batch(abar_t, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def ddim_step(x_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, eta: float = 0.0,
              noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One DDIM step (Song et al. 2021, eq. 12; diffusers ``DDIMScheduler.step`` without clipping) from x_t to
    x_prev: returns ``(x_prev, x0)`` with x0 = :func:`eps_to_x0`, sigma = eta sqrt((1 - a') / (1 - a) (1 - a / a')),
    x_prev = sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma noise (a = abar_t, a' = abar_prev; ``noise`` needed
    when sigma > 0). Differentiable in x_t and eps."""
    a, ap = float(abar_t), float(abar_prev)
    x0 = eps_to_x0(x_t, eps, a)
    sigma = float(eta) * ((1 - ap) / (1 - a) * (1 - a / ap)) ** 0.5
    x_prev = ap ** 0.5 * x0 + max(1 - ap - sigma ** 2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs noise (a standard normal like x_t)")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def split_model_output(out: Tensor, channels: int = 3) -> tuple[Tensor, Tensor | None]:
    """Split a UNet output into ``(eps, var_values_or_None)``.

    Learned-sigma models (guided-diffusion ``learn_sigma=True``) return 2C channels: the first C are
    eps, the last C the variance interpolation values v in [-1, 1]. DDRM/DDIM-style samplers ignore
    v (DDRM keeps ``et[:, :3]``); GDP's ancestral sampler uses it. C-channel outputs give ``None``.
    """
    c = out.shape[1]
    if c == channels:
        return out, None
    if c == 2 * channels:
        return out[:, :channels], out[:, channels:]
    raise ValueError(f"model output has {c} channels; expected {channels} or {2 * channels} (learned sigma)")


@dataclass(frozen=True)
class RespacedSchedule:
    """guided-diffusion ``SpacedDiffusion`` tables for K kept steps (index j = 0..K-1, ascending)."""

    timesteps: Tensor  # (K,) long: the original index t_j the model is called with
    sqrt_recip_abar: Tensor
    sqrt_recipm1_abar: Tensor
    coef1: Tensor  # posterior mean = coef1 * x0 + coef2 * x_t
    coef2: Tensor
    log_var_min: Tensor  # log posterior variance (clipped at j = 0): "fixed small"
    log_var_max: Tensor  # log beta'_j (the learned range's upper end)
    log_var_large: Tensor  # log [beta~_1, beta'_1, ..., beta'_{K-1}]: guided-diffusion "fixed large"

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())

    def log_variance(self, rule: str, j: int, v: Tensor | None = None) -> Tensor:
        """log sigma_j^2 of step j under ``rule`` (:data:`VARIANCES`): guided-diffusion's learned range
        ``frac log beta'_j + (1 - frac) log beta~_j`` with ``frac = (v + 1) / 2`` from the net's variance
        channels ``v`` (a tensor like v), or the fixed small / large tables (a 0-d tensor)."""
        if rule == "learned_range":
            if v is None:
                raise ValueError("variance=learned_range needs the net's variance channels (a learned-sigma prior, "
                                 "2C outputs). Fix: method.variance=fixed_small (or null for the prior's own rule)")
            frac = (v + 1) / 2
            return frac * self.log_var_max[j] + (1 - frac) * self.log_var_min[j]
        if rule == "fixed_small":
            return self.log_var_min[j]
        if rule == "fixed_large":
            return self.log_var_large[j]
        raise ValueError(f"unknown variance rule {rule!r}; allowed: {', '.join(VARIANCES)}")


def respaced_schedule(betas: Tensor, steps: int, device, dtype=torch.float32) -> RespacedSchedule:
    """guided-diffusion ``SpacedDiffusion(space_timesteps(T, [steps]))`` tables for the ancestral samplers
    (GDP, DPS), computed in float64 and cast to ``dtype`` on ``device``."""
    T = int(betas.numel())
    kept = timesteps(steps, T, kind="respaced")
    b = respaced_betas(alphas_cumprod(betas.to(torch.float64).cpu()), kept)
    abar = alphas_cumprod(b)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    post_var = b * (1 - abar_prev) / (1 - abar)
    one = len(kept) == 1  # no beta~_1: both fixed rules fall back to beta'_0 (never used: j = 0 adds no noise)
    log_min = torch.log(b) if one else torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    log_large = torch.log(b) if one else torch.log(torch.cat([post_var[1:2], b[1:]]))
    tables = dict(
        sqrt_recip_abar=(1 / abar).sqrt(), sqrt_recipm1_abar=(1 / abar - 1).sqrt(),
        coef1=b * abar_prev.sqrt() / (1 - abar), coef2=(1 - abar_prev) * (1 - b).sqrt() / (1 - abar),
        log_var_min=log_min, log_var_max=torch.log(b), log_var_large=log_large,
    )
    return RespacedSchedule(torch.tensor(kept, dtype=torch.long, device=device),
                            **{k: v.to(device=device, dtype=dtype) for k, v in tables.items()})




def resolve_variance(override: str | None, prior, who: str) -> str:
    """The variance rule a sampler uses: ``override`` (a method's ``variance`` option) or the prior's own
    rule (:attr:`bench.models.prior.DiffusionPrior.variance`); learned_range needs variance channels."""
    learned = bool(getattr(prior, "learn_sigma", False))
    rule = override or getattr(prior, "variance", "learned_range" if learned else "fixed_large")
    if rule not in VARIANCES:
        raise ValueError(f"{who}: variance={rule!r} is invalid; allowed: null (the prior's rule), "
                         f"{', '.join(VARIANCES)}")
    if rule == "learned_range" and not learned:
        raise ValueError(f"{who}: variance=learned_range but prior {getattr(prior, 'info', {}).get('model')!r} "
                         "has no variance channels (learn_sigma=false). Fix: method.variance=fixed_small, or "
                         "model.diffusion.variance=fixed_small | fixed_large")
    return rule
