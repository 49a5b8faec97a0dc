"""LowLight: a documented synthetic, non-linear darkening (not a DDRM operator)."""

from __future__ import annotations

import torch
from torch import Tensor

from .denoise import check_float, check_hw, check_int


class LowLight:
    """y = scale * x ** gamma on images x in [0, 1] (inputs are clamped to [0, 1] first).

    A synthetic stand-in for low-light capture: ``gamma > 1`` darkens mid-tones more than
    highlights and ``scale`` lowers the exposure. It is monotone increasing on [0, 1] and, for
    scale <= 1 and gamma >= 1, never brightens a pixel. Not linear (``linear = False``), so it has
    no SVD; methods that need one (DDRM) cannot use it. Official GDP's low-light script instead
    learns a per-image factor and mask; there is no official synthetic degradation to match.
    Defaults: ``scale=0.25``, ``gamma=2.0``.
    """

    linear = False
    name = "lowlight"
    #: a dataset's real low-light photos (LOL) are this task's measurements (bench.tasks.Degradation.degrade)
    real_inputs = True

    def __init__(
        self,
        channels: int,
        size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        scale: float = 0.25,
        gamma: float = 2.0,
    ):
        self.channels = check_int("channels", channels, 1, "pass the number of image channels, e.g. channels=3")
        # non-linear and pixel-wise: any (H, W) works, so non-square LOL photos (600x400) keep their size
        self.height, self.width = check_hw(size)
        self.size = self.height if self.height == self.width else (self.height, self.width)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.scale = check_float(
            "scale", scale, 0.0, 1.0, "pass an exposure factor such as scale=0.25", low_open=True
        )
        self.gamma = check_float(
            "gamma", gamma, 0.0, float("inf"), "pass a positive exponent such as gamma=2.0", low_open=True
        )

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - same name as the linear operators
        """(B, C, H, W) or (B, C*H*W) image in [0, 1] -> darkened (B, C, H, W) image, same dtype."""
        x = x.reshape(x.shape[0], *self.x_shape)
        if not x.is_floating_point():
            x = x.to(torch.float32)
        return self.scale * x.clamp(0.0, 1.0) ** self.gamma

    __call__ = A

    def inverse(self, y: Tensor) -> Tensor:
        """The exact inverse on [0, scale]: (y / scale) ** (1 / gamma), clamped to [0, 1]."""
        return (y.clamp_min(0.0) / self.scale).clamp(0.0, 1.0) ** (1.0 / self.gamma)

    def measurement_image(self, y: Tensor) -> Tensor:
        """The darkened image itself."""
        return y

    def describe(self) -> dict:
        return {
            "operator": self.name,
            "channels": self.channels,
            "size": self.size,
            "scale": self.scale,
            "gamma": self.gamma,
            "formula": "y = scale * clamp(x, 0, 1) ** gamma",
        }
