"""What PSLD and ReSample share on a latent prior (:mod:`bench.models.latent`): the CompVis DDIM tables they step
through, and :class:`LatentSolver`, a thin method that loads the prior, converts the measurement, draws per-image
noise and records the per-image cost (UNet / decoder / encoder rows from the prior's call counter; VJPs and
optimiser iterations from the sampler).

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
from bench.methods.base import Method
from bench.methods.prior_method import check_number, check_steps, measurement_pm
from bench.models.latent import LatentPrior, load_latent_prior, require_latent
from bench.models.prior import to_plain
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


class LatentSolver(Method):
    """A solver on a latent prior (``model: ${model}``, kind ldm | sd); linear tasks. Subclasses implement
    :meth:`sample` (latents in, clean latents out) and fill ``self.last_cost``."""

    requires_linear = True
    backprop_through_prior = True
    #: the official step count the step-size rescaling refers to
    official_steps = 1000

    def __init__(self, model: Mapping, steps: int, eta: float = 0.0):
        super().__init__()
        self.model = to_plain(model)
        require_latent(self.model, self.name)
        T = int((self.model.get("diffusion") or {}).get("steps", 1000))
        self.steps = check_steps(self.name, steps, maximum=T,
                                 fix=f"steps={self.official_steps} (official) or fewer for a quick run")
        self.eta = check_number(self.name, "eta", eta, 0.0, 1.0, fix="method.eta=0 (official)")
        self.prior: LatentPrior | None = None
        self.tab: LatentDDIM | None = None
        #: per-image cost of the last restore call (:meth:`record_counts`)
        self.last_cost: dict = {}

    def setup(self, device: torch.device) -> None:
        self.use_prior(load_latent_prior(self.model, device), device)

    def use_prior(self, prior: LatentPrior, device) -> None:
        self.device, self.prior = torch.device(device), prior
        self.tab = latent_ddim(prior.abar, self.steps)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        if self.prior is None:
            self.setup(self.device)
        op = degradation.operator
        shape = self.prior.latent_shape(op.size)  # ValueError with the fix for sizes the autoencoder cannot take
        with torch.no_grad():
            y_pm, sigma_pm = measurement_pm(y, degradation, self.device)
        self.prior.counter.reset()
        counts: dict = {}
        z_T = seeding.randn(generators, shape, self.device)
        z0 = self.sample(y_pm, sigma_pm, degradation, z_T, lambda: seeding.randn(generators, shape, self.device),
                         generators, counts)
        with torch.no_grad():
            x = self.finish(self.prior.decode(z0), y_pm, degradation)
        self.record_counts(counts, y.shape[0])
        return ((x.clamp(-1, 1) + 1) / 2).to(torch.float32)

    def sample(self, y_pm, sigma_pm, degradation, z_T, noise, generators, counts) -> Tensor:
        raise NotImplementedError

    def finish(self, x_pm: Tensor, y_pm: Tensor, degradation: Degradation) -> Tensor:
        """Hook on the decoded output in [-1, 1] (PSLD: paste the measured pixels)."""
        return x_pm

    def record_counts(self, counts: dict, batch: int) -> None:
        """Forward rows from the prior's counter (CFG counts 2), the rest from the sampler's ``counts``; per image."""
        rows = self.prior.counter.per_image(batch)
        per = {k: v / batch for k, v in counts.items()}
        per.update(unet_forward=rows["unet"], decoder_forward=rows["decoder"], encoder_forward=rows["encoder"])
        self.last_cost = {k: (int(v) if float(v).is_integer() else float(v)) for k, v in per.items()}
        self.last_nfe = self.last_cost["unet_forward"]

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps, "eta": self.eta, "sampler": "CompVis DDIM (latent)",
                "model": dict(self.prior.info) if self.prior is not None else {"model": self.model.get("name")}}
