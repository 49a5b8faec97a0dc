"""What PSLD and ReSample share on a latent prior (:mod:`bench.models.latent`): the CompVis DDIM tables they step
through, and :class:`LatentSolver`, a :class:`~bench.methods.latent_method.LatentMethod` (prior, measurement, counted
forwards) that draws per-image noise and adds the sampler's VJPs and optimiser iterations to ``last_cost``.

The DDIM tables of CompVis ``ldm/models/diffusion/ddim.py::DDIMSampler`` (``make_schedule``), which both official
codes run on the prior's cumulative alphas ``abar`` (T,) (the step itself is :func:`bench.diffusion.ddim_step`):

Both official codes use CompVis ``ldm/models/diffusion/ddim.py::DDIMSampler`` (``make_schedule`` +
``p_sample_ddim``) on the prior's cumulative alphas ``abar`` (T,):

* model timesteps ``tau_i = c*i + 1`` for i = 0..K-1 with ``c = T // K`` (``make_ddim_timesteps`` "uniform",
  the "+1" that "gets the final alpha values right"), so K = ``len(range(0, T, c))`` (more than asked when K
  does not divide T, as :func:`bench.diffusion.timesteps`);
* ``a[i] = abar[tau_i]``, ``a_prev[i] = abar[tau_{i-1}]`` with ``a_prev[0] = abar[0]`` (not 1);

At K = T the "+1" would index abar[T]: PSLD's patched ``make_ddim_sampling_parameters`` then subtracts 1 from
the indices of the alphas but still feeds the net ``tau = 1..T``. Here K = T uses ``tau_i = i`` for both
(the net never sees t = T, outside its training range); ReSample's code has no such case (its default is
K = 500).

The step index runs from ``i = K-1`` (noisiest) down to 0, as the official ``index``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import timesteps as uniform_timesteps
from bench.methods.latent_method import LatentMethod
from bench.methods.prior_method import check_number, check_steps
from bench.models.latent import LatentPrior
from bench.tasks import Degradation


@dataclass
class LatentDDIM:
    """Per-step tables, index i = 0..K-1 (i = K-1 first): model timestep, abar there, abar after."""

    tau: list[int]
    a: list[float]
    a_prev: list[float]

    @property
    def num_steps(self) -> int:
        return len(self.tau)


def latent_ddim(abar: Tensor, steps: int) -> LatentDDIM:
    """The CompVis DDIM tables (module docstring) for ``steps`` steps over ``abar`` (T,)."""
    T = int(abar.numel())
    base = uniform_timesteps(steps, T, "uniform")
    tau = [t + 1 for t in base] if base[-1] + 1 < T else list(base)
    ab = abar.float()  # CompVis registers alphas_cumprod as float32 buffers (``register_schedule``)
    a = [float(ab[t]) for t in tau]
    return LatentDDIM(tau=tau, a=a, a_prev=[float(ab[0])] + a[:-1])


class LatentSolver(LatentMethod):
    """A PSLD / ReSample-style solver: CompVis DDIM tables over ``steps``, DDIM ``eta``, a :meth:`sample` (latents in,
    clean latents out) that reports its VJPs and optimiser iterations in a ``counts`` dict; forwards are counted at
    the prior (:class:`~bench.methods.latent_method.LatentMethod`)."""

    #: the official step count (messages)
    official_steps = 1000

    def __init__(self, model: Mapping, steps: int, eta: float = 0.0):
        super().__init__(model)
        T = int((self.model.get("diffusion") or {}).get("steps", 1000))
        self.steps = check_steps(self.name, steps, maximum=T,
                                 fix=f"steps={self.official_steps} (official) or fewer for a quick run")
        self.eta = check_number(self.name, "eta", eta, 0.0, 1.0, fix="method.eta=0 (official)")
        self.tab: LatentDDIM | None = None

    def use_prior(self, prior: LatentPrior, device) -> None:
        super().use_prior(prior, device)
        self.tab = latent_ddim(prior.abar, self.steps)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        prior = self._require_prior()
        shape = self.latent_shape(degradation)
        with torch.no_grad():
            y_pm, sigma_pm = self.measurement(y, degradation)
        B = y_pm.shape[0]
        self.start_counting()
        counts: dict = {}
        z0 = self.sample(y_pm, sigma_pm, degradation, seeding.randn(generators, shape, self.device),
                         lambda: seeding.randn(generators, shape, self.device), generators, counts)
        with torch.no_grad():
            x = self.finish(prior.decode(z0), y_pm, degradation)
        cfg_rows = 2 if prior.text is not None and prior.text[0] is not None else 1  # a CFG call is 2 UNet rows
        vjps = {k[:-4]: v for k, v in counts.items() if k.endswith("_vjp")}
        vjps["unet"] = vjps.get("unet", 0) * cfg_rows
        self.add_vjp(**vjps)
        self.stop_counting(B)
        self.last_cost.update({k: (v // B if v % B == 0 else v / B) for k, v in counts.items()
                               if k.endswith("_iterations")})
        return self.to_image(x)

    def sample(self, y_pm, sigma_pm, degradation, z_T, noise, generators, counts) -> Tensor:
        raise NotImplementedError

    def finish(self, x_pm: Tensor, y_pm: Tensor, degradation: Degradation) -> Tensor:
        """Hook on the decoded output in [-1, 1] (PSLD: paste the measured pixels)."""
        return x_pm

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps, "eta": self.eta, "nfe": "counted per image (last_cost)",
                "sampler": "CompVis DDIM (latent): tau = range(0, T, T // steps) + 1, last step to abar_0",
                "model": self.model_info()}
