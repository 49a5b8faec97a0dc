"""The method interface.

A method is constructed from ``conf/method/<name>.yaml`` (typed keyword arguments only), declares which
tasks it supports, loads its weights in :meth:`Method.setup` (timed separately from restoration), and
restores a batch with :meth:`Method.restore`::

    x = method.restore(y, degradation, generators)   # (B, 3, H, W) in [0, 1]

``y`` is the measurement in [0, 1] image units as produced by :meth:`bench.tasks.Degradation.degrade`
(flat (B, M) for linear operators, an image for non-linear ones); ``generators`` holds one per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.tasks import Degradation, Task


class Method:
    #: registry name (the config group option)
    name = "method"
    #: tasks this method can run (None = any task that passes the linearity check)
    tasks: tuple[str, ...] | None = None
    #: whether the method needs a linear operator with SVD parts
    requires_linear = False
    #: sampling steps (None for non-iterative methods)
    steps: int | None = None
    #: whether restore() back-propagates through the prior network (memory ~2-3x plain sampling)
    backprop_through_prior = False

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        #: network function evaluations per image of the last restore call
        self.last_nfe = 0
        #: the other counted work per image of the last restore call, where a method counts it (backward passes
        #: through the prior ``unet_vjp``, decoder / encoder calls, optimiser iterations); the run manifest keeps it
        self.last_cost: dict[str, float] = {}

    def unsupported_reason(self, task: Task) -> str | None:
        """None when the method can run ``task``; otherwise a human-readable reason."""
        if self.tasks is not None and task.name not in self.tasks:
            return f"{self.name} supports tasks {sorted(self.tasks)}, not {task.name!r}"
        if self.requires_linear and not task.linear:
            return f"{self.name} needs a linear degradation with SVD parts; {task.name!r} is non-linear"
        return None

    def setup(self, device: torch.device) -> None:
        """Load weights / move to ``device``. Called once before the first batch."""
        self.device = device

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """Hyper-parameters and checkpoint identities for provenance."""
        return {"name": self.name, "steps": self.steps}
