"""What the latent-space solvers (latent_dps, psld, resample) share: a latent diffusion prior (``model.kind: ldm |
sd``, :mod:`bench.models.latent`), the [0, 1] -> [-1, 1] measurement conversion, the geometry check and the cost
accounting.

:class:`LatentMethod` is a :class:`~bench.methods.base.Method` on ``model: ${model}`` (refused at construction unless
the model is a latent prior; pixel solvers refuse latent priors in turn). Units as the pixel solvers
(:func:`bench.methods.prior_method.measurement_pm`): ``y_pm = 2 y - A(1) = A x_pm + 2 sigma z`` with x_pm = D(z) in
[-1, 1], converted once. Linear tasks only (the solvers differentiate ``||y - A D(z0)||`` through the operator's A).

Cost accounting: ``last_nfe`` = UNet forward rows per image of the last restore (counted at the UNet by
:attr:`LatentPrior.counter`; a classifier-free-guidance call counts 2); ``last_cost`` = every counted forward
(``unet``, ``encoder``, ``decoder``) plus the VJPs (backward passes) the solver reports through :meth:`add_vjp`,
per image.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from bench.methods.base import Method
from bench.methods.prior_method import prior_measurement
from bench.models.latent import LatentPrior, load_latent_prior, require_latent
from bench.models.prior import to_plain
from bench.tasks import Degradation


class LatentMethod(Method):
    """A method on a latent diffusion prior; linear tasks only."""

    requires_linear = True
    backprop_through_prior = True

    def __init__(self, model: Mapping):
        super().__init__()
        self.model = to_plain(model)
        require_latent(self.model, self.name)
        self.prior: LatentPrior | None = None
        self._vjp: dict[str, int] = {}
        self._warned_size = False

    def setup(self, device: torch.device) -> None:
        self.use_prior(load_latent_prior(self.model, device), device)

    def use_prior(self, prior: LatentPrior, device) -> None:
        self.device, self.prior = torch.device(device), prior

    def _require_prior(self) -> LatentPrior:
        if self.prior is None:
            self.setup(self.device)
        return self.prior

    # ------------------------------------------------------------------------------------------ measurement
    def measurement(self, y: Tensor, degradation: Degradation) -> tuple[Tensor, float]:
        """``(y_pm, sigma_y)`` in [-1, 1] units (flat (B, M)); warns once when the images are not the prior's size."""
        return prior_measurement(self, y, degradation, "latent prior")

    def latent_shape(self, degradation: Degradation) -> tuple[int, int, int]:
        h, w = degradation.operator.x_shape[-2:]
        return self.prior.latent_shape(int(h), int(w))

    @staticmethod
    def to_image(x_pm: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], clamped, float32 (the harness's output convention)."""
        return ((x_pm.detach().clamp(-1, 1) + 1) / 2).to(torch.float32)

    # --------------------------------------------------------------------------------------------- cost
    def start_counting(self) -> None:
        self.prior.counter.reset()
        self._vjp = {}

    def add_vjp(self, **passes: int) -> None:
        """Record backward passes (rows) through ``unet`` / ``decoder`` / ``encoder``."""
        for k, v in passes.items():
            self._vjp[k] = self._vjp.get(k, 0) + int(v)

    def stop_counting(self, batch: int) -> None:
        fwd = self.prior.counter.per_image(batch)
        self.last_nfe = fwd["unet"]
        self.last_cost = {**{f"{k}_forward": v for k, v in fwd.items()},
                          **{f"{k}_vjp": (v / batch if v % batch else v // batch) for k, v in self._vjp.items()}}

    def model_info(self) -> dict:
        if self.prior is not None:
            return dict(self.prior.info)
        return {"model": self.model.get("name"), "kind": self.model.get("kind")}
