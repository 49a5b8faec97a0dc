"""Tasks: one versioned definition per degradation, shared by every method.

A :class:`Task` comes from ``conf/task/<name>.yaml``: a name and version, an operator factory (a
``functools.partial`` of a class in :mod:`bench.operators`, built per image size / device / run seed), and
the measurement noise ``sigma`` in [0, 1] image units: y = A(x) + sigma * z, z ~ N(0, I), with 0 <= sigma <= 1
(NaN, infinities and sigma > 1, noise beyond the whole intensity range, are rejected: a value meant in
8-bit levels or in [-1, 1] units is the usual cause, and the error says how to convert). Methods that
work in [-1, 1] convert once (official DDRM's ``--sigma_0`` is doubled internally for that reason).

:meth:`Task.build` returns a :class:`Degradation` bound to one operator instance; every method of a run
sees the same y because the noise is drawn from the per-image "degrade" generator of the run seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench import seeding


def per_task(table: Mapping[str, object], task_name: str):
    """The value of ``table`` for the first key that prefixes ``task_name`` (None when none does).

    Tables are keyed by task-name prefix ("sr" covers sr4, sr4_bicubic, sr4_noisy; "deblur" covers
    deblur_gauss, deblur_uniform and deblur_gdp), e.g. :data:`bench.methods.gdp.OFFICIAL_SCALES`.
    """
    for prefix, value in table.items():
        if task_name.startswith(prefix):
            return value
    return None


@dataclass
class Task:
    name: str
    version: int
    operator: Callable[..., Any]
    sigma: float = 0.0
    description: str = ""
    conventions: str = ""
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 1:
            raise ValueError(
                f"task {self.name!r}: task.sigma={s!r} must be a number >= 0 and <= 1, not NaN/inf: sigma is the "
                "noise std in [0, 1] image units (above 1 the noise exceeds the whole intensity range). Fix: "
                "e.g. task.sigma=0.05; a sigma in 8-bit levels is divided by 255 (25 -> 0.098), "
                "one in [-1, 1] units is halved (0.1 -> 0.05)."
            )

    @property
    def operator_class(self):
        """The operator's class (known before building it, for fast support checks)."""
        return getattr(self.operator, "func", self.operator)

    @property
    def linear(self) -> bool:
        """Whether the operator class is linear."""
        return bool(getattr(self.operator_class, "linear", False))

    @property
    def masked(self) -> bool:
        """Whether the operator keeps a pixel mask (``bench.operators.Inpainting``: every ``inpaint*`` task), the
        tasks of the mask-only inpainters (RePaint, Palette, SD inpainting)."""
        from bench.operators import Inpainting

        cls = self.operator_class
        return isinstance(cls, type) and issubclass(cls, Inpainting)

    def build(self, image_size: int, device: torch.device | str = "cpu", seed: int = 0) -> "Degradation":
        op = self.operator(channels=3, size=image_size, device=device, seed=seed)
        return Degradation(self, op, float(self.sigma))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "sigma": self.sigma, **self.params}


@dataclass
class Degradation:
    """A task bound to one operator instance (image size, device, and random mask if any)."""

    task: Task
    operator: Any
    sigma: float

    @property
    def linear(self) -> bool:
        return bool(getattr(self.operator, "linear", False))

    @property
    def name(self) -> str:
        return self.task.name

    def degrade(self, x: torch.Tensor | None, generators: list[torch.Generator],
                low: torch.Tensor | None = None) -> torch.Tensor:
        """y = A(x) + sigma z. For an operator that takes real inputs (``real_inputs``: LowLight) with real
        paired/unpaired data (``low`` given), y is that real measurement and no synthetic degradation or
        noise is applied; other tasks refuse such data."""
        if low is not None:
            if not getattr(self.operator, "real_inputs", False):
                kind = "linear" if self.linear else "not low-light"
                raise ValueError(f"task {self.name!r} is {kind} but the dataset supplies real low-light "
                                 "inputs; use task=lowlight with LOL data")
            return low
        if x is None:
            raise ValueError(f"task {self.name!r} needs clean images, but the dataset has none")
        y = self.operator.A(x)
        if self.sigma > 0:
            y = y + self.sigma * seeding.randn(generators, tuple(y.shape[1:]), y.device, y.dtype)
        return y

    def measurement_image(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.measurement_image(y)

    def frame_image(self, y: torch.Tensor) -> torch.Tensor:
        """The degraded picture aligned with the image (:meth:`LinearOperator.frame_image`)."""
        frame = getattr(self.operator, "frame_image", None)
        return frame(y) if frame is not None else self.operator.measurement_image(y)

    def describe(self) -> dict:
        op = self.operator.describe() if hasattr(self.operator, "describe") else {}
        return {**self.task.describe(), "operator": op}
