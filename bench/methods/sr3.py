"""SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement") as a restorer, in the layout of
Janspiry's unofficial code (the only public SR3 weights): an end-to-end conditional DDPM, no zero-shot prior.

Condition (Janspiry ``data/prepare_data.py``: ``sr_{l}_{r}`` = the LR image resized to the HR size with PIL's
``Image.BICUBIC``): c = :func:`pil_bicubic_upsample` of the task's low-resolution picture
(``degradation.frame_image(y)``, clipped to [0, 1]) to the target size, then mapped to [-1, 1]. The
upsampling is PIL's own bicubic (Keys a = -0.5, PIL's edge handling) on float32 data, so c equals the
official pipeline's up to the 8-bit rounding the official PNG/LMDB files add; ``torch``'s bicubic (a = -0.75,
the ``bicubic`` baseline) would feed the net a sharper image than it was trained on.

Sampling: :func:`bench.methods.conditional_ddpm.sample` from x_T ~ N(0, I), noise level sqrt(abar) (SR3
``p_sample_loop``); ``steps=null`` runs every step of the model's schedule (official: 2000), ``steps=N`` N
respaced steps. Tasks: the 4x and 8x SR tasks (the released models are 8x, 16->128 and 64->512; they run on any
factor since the net only sees the upsampled c, but they were not trained for 4x).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bench.methods.conditional_ddpm import ConditionalDDPMMethod
from bench.tasks import Degradation

SR_TASKS = ("sr4", "sr4_bicubic", "sr4_noisy", "sr8")


def pil_bicubic_upsample(img: Tensor, size: tuple[int, int]) -> Tensor:
    """``img`` (B, C, h, w) resized to ``size`` (H, W) per channel with PIL ``Image.BICUBIC`` on float32 ("F"
    mode, no 8-bit rounding); returned on ``img``'s device and dtype."""
    H, W = int(size[0]), int(size[1])
    arr = img.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*arr.shape[:2], H, W), dtype=np.float32)
    for b in range(arr.shape[0]):
        for ch in range(arr.shape[1]):
            out[b, ch] = np.asarray(Image.fromarray(arr[b, ch], mode="F").resize((W, H), Image.BICUBIC))
    return torch.from_numpy(out).to(img.device, img.dtype)


class SR3(ConditionalDDPMMethod):
    name = "sr3"
    kind = "sr3"
    tasks = SR_TASKS

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        if self.ddpm is None:
            self.setup(y.device)
        lr = degradation.frame_image(y).clamp(0, 1)
        op = degradation.operator
        target = tuple(op.x_shape[-2:]) if hasattr(op, "x_shape") else tuple(lr.shape[-2:])
        h, w = lr.shape[-2:]
        if target[0] % h or target[1] % w or target[0] // h != target[1] // w:
            raise ValueError(f"sr3: the low-resolution picture is {h}x{w} but the target is {target[0]}x"
                             f"{target[1]}; sr3 needs an integer upscaling factor (tasks {', '.join(SR_TASKS)})")
        c = pil_bicubic_upsample(lr, target) * 2 - 1
        return self.run_sampler(c, generators)

    def describe(self) -> dict:
        return {**super().describe(),
                "condition": "PIL Image.BICUBIC upsample (float32) of frame_image(y) clipped to [0, 1], *2-1"}
