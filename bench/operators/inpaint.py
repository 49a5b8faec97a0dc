"""Inpainting: a random pixel mask (a missing pixel is missing in every channel)."""

from __future__ import annotations

import torch
from torch import Tensor

from .denoise import SpectralOperator, check_float, to_rgb


class Inpainting(SpectralOperator):
    """H keeps the entries of x at the kept pixels and drops the rest: y = x[kept].

    Matches official DDRM ``functions/svd_replacement.py::Inpainting`` (``--deg inp``): a missing
    pixel is missing in all channels, U = I, s = ones(M), and V^T is a permutation that puts the
    kept entries first and the missing ones after. Differences, all deliberate: the missing
    fraction is a parameter (official ``inp`` drops half the pixels, ``image_size**2 // 2``), the
    mask is drawn with ``torch.randperm`` from a CPU ``torch.Generator().manual_seed(seed)`` (so it is
    the same on every device and run), and entries are ordered channel-major, in (C, H, W) raster
    order, instead of DDRM's pixel-interleaved order.

    * ``mask`` (H, W) bool, True = kept; exactly ``round(missing * H * W)`` pixels are missing.
    * M = C * (number of kept pixels); y lists the kept entries in (C, H, W) raster order.
    """

    name = "inpaint"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        missing: float = 0.25,
    ):
        super().__init__(channels, size, device, seed=seed)
        self.missing = check_float(
            "missing", missing, 0.0, 1.0, "pass the fraction of pixels to drop, e.g. missing=0.25",
            high_open=True,
        )
        n_pix = size * size
        self.n_missing = int(round(self.missing * n_pix))
        gen = torch.Generator().manual_seed(self.seed)
        dropped = torch.randperm(n_pix, generator=gen)[: self.n_missing]
        mask = torch.ones(n_pix, dtype=torch.bool)
        mask[dropped] = False
        self.mask = mask.reshape(size, size).to(self.device)
        full = mask.repeat(channels)  # (C*H*W,) in (C, H, W) raster order
        perm = torch.cat([full.nonzero().squeeze(1), (~full).nonzero().squeeze(1)])
        self._perm = perm.to(self.device)
        self._inv_perm = torch.argsort(perm).to(self.device)
        self._register("s", torch.ones(int(full.sum()), dtype=torch.float64))

    # ---------------------------------------------------------------- SVD parts
    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        """Kept entries first, then missing ones (each group in (C, H, W) raster order)."""
        return self._flat(vec, self.N)[:, self._perm]

    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N)[:, self._inv_perm]

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    # ------------------------------------------------------------------ output
    def measurement_image(self, y: Tensor) -> Tensor:
        """The masked image, missing pixels set to 0 (pinv(y) reshaped), (B, C, H, W)."""
        return to_rgb(self.image(self.pinv(y)))

    def describe(self) -> dict:
        return {**super().describe(), "missing": self.missing, "n_missing": self.n_missing, "seed": self.seed}
