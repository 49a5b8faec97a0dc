"""The seed tables' baseline (Liu, §5.2): "bicubic upscaling interpolation for super-resolution tasks,
and the degraded image itself for other restoration tasks".

Per task: ``sr4``/``sr4_bicubic``/``sr4_noisy``/``sr8`` -> bicubic upsampling
(``torch.nn.functional.interpolate``, ``mode="bicubic"``, ``align_corners=False``, Keys a=-0.75 as
PyTorch/OpenCV) of the low-resolution picture; ``deblur_*``/``denoise`` -> the blurred / noisy image;
``inpaint``/``inpaint_*`` -> the masked image (missing pixels 0); ``colorize`` -> the gray image replicated to
RGB; ``lowlight`` -> the low-light input; ``jpeg`` -> the decoded JPEG; ``deblur_gdp`` (a valid convolution,
y is 8 px smaller) -> the blurred picture edge-padded back in place (``Degradation.frame_image``). The output is
clamped to [0, 1]. It is deterministic and uses no generator.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bench.methods.base import Method
from bench.tasks import Degradation


class Bicubic(Method):
    name = "bicubic"

    def __init__(self, mode: str = "bicubic"):
        super().__init__()
        allowed = ("bicubic", "bilinear", "nearest")
        if mode not in allowed:
            raise ValueError(f"bicubic baseline: mode={mode!r} not in {allowed}. Fix: method.mode=bicubic")
        self.mode = mode

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        img = degradation.frame_image(y)
        size = degradation.operator.x_shape[-2:] if hasattr(degradation.operator, "x_shape") else img.shape[-2:]
        if tuple(img.shape[-2:]) != tuple(size):
            kw = {} if self.mode == "nearest" else {"align_corners": False}
            img = F.interpolate(img, size=tuple(size), mode=self.mode, **kw)
        self.last_nfe = 0
        return img.clamp(0, 1)

    def describe(self) -> dict:
        return {"name": self.name, "mode": self.mode}
