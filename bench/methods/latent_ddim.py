"""The CompVis DDIM sampler tables and step that PSLD and ReSample run in latent space.

Both official codes use CompVis ``ldm/models/diffusion/ddim.py::DDIMSampler`` (``make_schedule`` +
``p_sample_ddim``) on the prior's cumulative alphas ``abar`` (T,):

* model timesteps ``tau_i = c*i + 1`` for i = 0..K-1 with ``c = T // K`` (``make_ddim_timesteps`` "uniform",
  the "+1" that "gets the final alpha values right"), so K = ``len(range(0, T, c))`` (more than asked when K
  does not divide T, as :func:`bench.diffusion.timesteps`);
* ``a[i] = abar[tau_i]``, ``a_prev[i] = abar[tau_{i-1}]`` with ``a_prev[0] = abar[0]`` (not 1);
* ``sigma[i] = eta sqrt((1 - a_prev)/(1 - a) (1 - a/a_prev))``.

At K = T the "+1" would index abar[T]: PSLD's patched ``make_ddim_sampling_parameters`` then subtracts 1 from
the indices of the alphas but still feeds the net ``tau = 1..T``. Here K = T uses ``tau_i = i`` for both
(the net never sees t = T, outside its training range); ReSample's code has no such case (its default is
K = 500).

The step index runs from ``i = K-1`` (noisiest) down to 0, as the official ``index``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.diffusion import timesteps as uniform_timesteps


@dataclass
class LatentDDIM:
    """Per-step tables, index i = 0..K-1 (i = K-1 first): model timestep, abar there, abar after, DDIM sigma."""

    tau: list[int]
    a: Tensor
    a_prev: Tensor
    sigma: Tensor

    @property
    def num_steps(self) -> int:
        return len(self.tau)


def latent_ddim(abar: Tensor, steps: int, eta: float = 0.0, device="cpu") -> LatentDDIM:
    """The CompVis DDIM tables (module docstring) for ``steps`` steps over ``abar`` (T,), float32 on ``device``."""
    T = int(abar.numel())
    base = uniform_timesteps(steps, T, "uniform")
    tau = [t + 1 for t in base] if base[-1] + 1 < T else list(base)
    ab = abar.double()
    a = ab[tau]
    a_prev = torch.cat([ab[:1], a[:-1]])
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    f = lambda v: v.to(device=device, dtype=torch.float32)  # noqa: E731
    return LatentDDIM(tau=tau, a=f(a), a_prev=f(a_prev), sigma=f(sigma))


def tweedie(z: Tensor, eps: Tensor, a: Tensor) -> Tensor:
    """z0^ = (z - sqrt(1 - a) eps) / sqrt(a)."""
    return (z - (1 - a).sqrt() * eps) / a.sqrt()


def ddim_step(z0: Tensor, eps: Tensor, a_prev: Tensor, sigma: Tensor, noise: Tensor | None) -> Tensor:
    """CompVis ``p_sample_ddim``: sqrt(a_prev) z0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise."""
    out = a_prev.sqrt() * z0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
    if noise is not None and float(sigma) > 0:
        out = out + sigma * noise
    return out
