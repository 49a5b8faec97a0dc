"""JPEGCompression: y = decode(encode_JPEG(x, quality)) through PIL, a non-linear operator."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, features
from torch import Tensor

from .denoise import check_hw, check_int


class JPEGCompression:
    """y = the decoded JPEG of x at quality ``quality`` (PIL / libjpeg), in [0, 1], same shape as x.

    Per image, deterministic, no randomness (``seed`` is accepted and ignored): x is clamped to [0, 1] and
    quantised to 8 bits as ``round(255 * x)`` (``torch.round``: halves to even, which only matters at exact
    half levels), encoded with ``PIL.Image.save(format="JPEG", quality=quality)`` and PIL's other defaults
    (baseline, standard IJG tables scaled by ``quality``, 4:2:0 chroma subsampling for RGB, no
    ``optimize``), decoded, and divided by 255. 3-channel images are RGB, 1-channel ones grayscale. The
    bytes depend on the libjpeg build (recorded in :meth:`describe`); libjpeg-turbo gives the same file on
    every machine for the same build.

    Default ``quality=10``: the "JPEG QF = 10" setting of DDRM's JPEG follow-up (Kawar et al., "JPEG
    artifact correction using denoising diffusion restoration models") and of PiGDM's JPEG experiments,
    the strongest compression those papers restore. Not linear (``linear = False``): no SVD, so methods
    that need one skip the task; not differentiable either (the gradient of a PIL round trip does not
    exist), so guidance must model it (GDP's blind ``f x + M``). Any (H, W) works.
    """

    linear = False
    #: autograd cannot go through the PIL round trip
    differentiable = False
    name = "jpeg"

    def __init__(
        self,
        channels: int,
        size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        quality: int = 10,
    ):
        self.channels = check_int("channels", channels, 1, "pass the number of image channels, e.g. channels=3")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={channels!r} is invalid for JPEG: use 1 (grayscale) or 3 (RGB)")
        self.height, self.width = check_hw(size)
        self.size = self.height if self.height == self.width else (self.height, self.width)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.quality = check_int("quality", quality, 1, "pass a JPEG quality in 1..95, e.g. quality=10")
        if self.quality > 95:
            raise ValueError(f"quality={quality!r} is invalid: use 1..95 (PIL advises against above 95), "
                             "e.g. quality=10")

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def _round_trip(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> the decoded JPEG, (H, W, C) uint8."""
        pil = Image.fromarray(img[..., 0] if self.channels == 1 else img, mode="L" if self.channels == 1 else "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=self.quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("L" if self.channels == 1 else "RGB"))
        return out.reshape(self.height, self.width, self.channels)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - same name as the linear operators
        """(B, C, H, W) or (B, C*H*W) image in [0, 1] -> decoded JPEG (B, C, H, W), x's dtype and device."""
        x = x.reshape(x.shape[0], *self.x_shape)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        q = torch.round(x.detach().to(torch.float64).clamp(0.0, 1.0) * 255).to(torch.uint8)
        q = q.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([self._round_trip(img) for img in q])
        return (torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float64) / 255).to(x.device, dtype)

    __call__ = A

    def measurement_image(self, y: Tensor) -> Tensor:
        """The decoded JPEG itself."""
        return y

    def describe(self) -> dict:
        return {
            "operator": self.name,
            "channels": self.channels,
            "size": self.size,
            "quality": self.quality,
            "formula": "y = decode(PIL JPEG(round(255 * clamp(x, 0, 1)), quality)) / 255",
            "libjpeg": features.version("libjpeg_turbo") or features.version("jpg"),
        }
