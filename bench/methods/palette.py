"""Palette (Saharia et al. 2022, "Palette: Image-to-Image Diffusion Models") as a restorer, in the layout of
Janspiry's unofficial code (the only public Palette weights): an end-to-end conditional DDPM.

Inpainting (Janspiry ``data/dataset.py::InpaintDataset`` and ``models/model.py::test``), with m = 1 in the
hole (our operator's mask is 1 where a pixel is kept: m = 1 - keep) and y0 the measurement's known pixels:

    c   = y0 (1 - m) + m z,  z ~ N(0, I)          (the masked image with noise in the hole)
    x_T = c                                       (``restoration(cond_image, y_t=cond_image, y_0=gt, mask)``)
    after every step: x = y0 (1 - m) + m x        (so the output is composited with the known region)

The official test passes the ground truth as y_0 and reads only its known pixels; here they come from the
measurement (the same numbers for a noiseless task). Colorization (``ColorizationDataset``): c = the grey
image as 3 channels, x_T ~ N(0, I), no re-pasting. Noise level abar (Palette ``p_sample``); ``steps=null``
runs every step of the model's sampling schedule (official ``beta_schedule.test``: 1000), ``steps=N`` N
respaced steps (:mod:`bench.methods.conditional_ddpm`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.methods.conditional_ddpm import ConditionalDDPMMethod
from bench.tasks import Degradation, Task

class Palette(ConditionalDDPMMethod):
    """Palette for the inpainting tasks (any mask: ``Task.masked``) and ``colorize``."""

    name = "palette"
    kind = "palette"

    def unsupported_reason(self, task: Task) -> str | None:
        if task.masked or task.name == "colorize":
            return None
        return (f"palette runs the inpainting tasks (inpaint, inpaint_box, ...) and colorize, not {task.name!r}")

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        if self.ddpm is None:
            self.setup(y.device)
        picture = degradation.frame_image(y).clamp(0, 1) * 2 - 1  # (B, 3, H, W) in [-1, 1]
        if degradation.task.masked:
            keep = degradation.operator.mask.to(picture.device, picture.dtype)[None, None]
            self.check_size(tuple(picture.shape[-2:]))
            z = seeding.randn(generators, tuple(picture.shape[1:]), picture.device, picture.dtype)
            c = picture * keep + (1 - keep) * z
            return self.run_sampler(c, generators, x_init=c, y0=picture, keep=keep)
        if degradation.name == "colorize":
            return self.run_sampler(picture, generators)
        raise ValueError(self.unsupported_reason(degradation.task))

    def describe(self) -> dict:
        return {**super().describe(),
                "condition": "inpaint: known pixels of frame_image(y) in [-1, 1], N(0, I) in the hole, also x_T, "
                             "known pixels re-pasted after every step; colorize: the grey image, x_T ~ N(0, I)"}
