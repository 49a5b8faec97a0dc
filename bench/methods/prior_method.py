"""What DDRM, DPS, DDNM(+), PiGDM, DiffPIR and RED-diff share: a pixel-space diffusion prior, the [0, 1] ->
[-1, 1] measurement conversion, per-task defaults and validation helpers.

:class:`PriorMethod` is a thin :class:`~bench.methods.base.Method` that loads ``conf/model/<name>.yaml``
(any ``kind`` of :func:`bench.models.prior.load_prior`: the ADM UNet or a diffusers ``UNet2DModel``) in
:meth:`setup`, or takes an already built prior through :meth:`use_prior` (tests: analytic Gaussian eps).

Units (official DDRM doubles ``--sigma_0`` for the same reason): the task gives ``y = A x + sigma z`` with x in [0, 1]; with
``x_pm = 2x - 1`` that is ``y_pm = 2y - A(1) = A x_pm + 2 sigma z``, so every sampler here sees
``y_pm`` and ``sigma_y = 2 sigma`` in [-1, 1] units (:meth:`PriorMethod.measurement`), converted once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from bench.methods.base import Method
from bench.models.latent import refuse_latent
from bench.models.prior import DiffusionPrior, load_prior, to_plain
from bench.tasks import Degradation, per_task  # noqa: F401 (re-exported for the solvers)

log = logging.getLogger(__name__)


def check_number(method: str, key: str, value, low: float, high: float = math.inf, *, fix: str,
                 low_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a float in [low, high] (low open when asked), else a ValueError naming it and the fix."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        none = " or null (the per-task default)" if allow_none else ""
        raise ValueError(f"{method}: {key}={value!r} is invalid: it must be a number in {interval}{none}. "
                         f"Fix: {fix}")
    return float(value)


def check_steps(method: str, steps, minimum: int = 1, *, allow_none: bool = False, fix: str,
                maximum: int | None = None) -> int | None:
    """``steps`` as an int >= minimum (and <= ``maximum``, the prior's training steps T, when given)."""
    if steps is None and allow_none:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        none = " or null (the official per-task count)" if allow_none else ""
        raise ValueError(f"{method}: steps={steps!r} is invalid: it must be an integer >= {minimum}{none}. "
                         f"Fix: {fix}")
    if maximum is not None and steps > maximum:
        raise ValueError(f"{method}: steps={steps} exceeds the prior's {maximum} training steps. "
                         f"Fix: steps<={maximum}")
    return int(steps)


def check_choice(method: str, key: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{method}: {key}={value!r} is invalid; allowed: {', '.join(map(str, choices))}. "
                         f"Fix: method.{key}={next(iter(choices))}")
    return value


def measurement_pm(y: Tensor, degradation: Degradation, device: torch.device) -> tuple[Tensor, float]:
    """``(y_pm, sigma_y)`` = ``(2 y - A(1), 2 sigma)``: a [0, 1] measurement (flattened, float32, on ``device``)
    in [-1, 1] units and its noise std there (module docstring). Also used by the latent DDRM-SRLDM."""
    op = degradation.operator
    y = y.to(device, torch.float32).reshape(y.shape[0], -1)
    return 2 * y - op.A(torch.ones(1, op.N, device=device)), 2.0 * float(degradation.sigma)


def prior_measurement(method, y: Tensor, degradation: Degradation, prior_kind: str = "prior") -> tuple[Tensor, float]:
    """:func:`measurement_pm` for a method on a prior (pixel or latent): warns once per method when the images are not
    the size ``method.prior`` was trained at (``method._warned_size`` remembers it)."""
    op = degradation.operator
    if op.size != method.prior.image_size and not method._warned_size:
        method._warned_size = True
        log.warning("%s: images are %d px but %s %s was trained at %d px", method.name, op.size, prior_kind,
                    method.prior.info.get("model"), method.prior.image_size)
    return measurement_pm(y, degradation, method.device)


class PriorMethod(Method):
    """A method on a pixel-space diffusion prior (``model: ${model}`` in its YAML); linear tasks only."""

    requires_linear = True

    def __init__(self, model: Mapping):
        super().__init__()
        self.model = to_plain(model)  # Hydra passes a DictConfig; keep plain data
        if not isinstance(self.model, dict) or "name" not in self.model:
            raise ValueError(f"{self.name}: model={model!r} must be a model config (conf/model/*.yaml); "
                             "Fix: keep `model: ${model}` in the method YAML")
        refuse_latent(self.model, self.name)
        #: the prior's training steps T as configured (checked against the loaded prior in use_prior)
        self.train_steps = int((self.model.get("diffusion") or {}).get("steps", 1000))
        self.prior: DiffusionPrior | None = None
        self._warned_size = False

    # ------------------------------------------------------------------------------------ prior
    def setup(self, device: torch.device) -> None:
        self.use_prior(load_prior(self.model, device), device)

    def use_prior(self, prior: DiffusionPrior, device: torch.device | str) -> None:
        """Attach an already loaded prior (or a duck-typed one with ``model_output``, ``betas``, ``info``)."""
        self.device, self.prior = torch.device(device), prior
        T = int(prior.betas.numel())
        if T != self.train_steps:
            raise ValueError(f"{self.name}: model.diffusion.steps={self.train_steps} but the prior "
                             f"{prior.info.get('model')!r} has {T} training steps. Fix: model.diffusion.steps={T}")
        self._prepared()

    def _prepared(self) -> None:
        """Hook: precompute schedule tables once the prior is known."""

    def _require_prior(self) -> DiffusionPrior:
        if self.prior is None:
            self.setup(self.device)
        return self.prior

    def eps(self, x_t: Tensor, t: int) -> Tensor:
        """eps_theta(x_t, t) at one integer timestep for the whole batch (first C channels)."""
        return self.prior.model_output(x_t, torch.full((x_t.shape[0],), int(t), device=x_t.device,
                                                       dtype=torch.long))[0]

    # ------------------------------------------------------------------------------ measurement
    def measurement(self, y: Tensor, degradation: Degradation) -> tuple[Tensor, float]:
        """``(y_pm, sigma_y)``: the flat measurement in [-1, 1] units and its noise std there (2 sigma)."""
        return prior_measurement(self, y, degradation)

    @staticmethod
    def to_image(x_pm: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], clamped, float32 (the harness's output convention)."""
        return ((x_pm.detach().clamp(-1, 1) + 1) / 2).to(torch.float32)

    def model_info(self) -> dict:
        if self.prior is not None:
            return dict(self.prior.info)
        return {"model": self.model.get("name"), "kind": self.model.get("kind"),
                "asset": self.model.get("asset"), "init_seed": self.model.get("init_seed")}
