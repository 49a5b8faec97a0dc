"""Colorization: each pixel's grey value is a fixed weighted sum of its R, G, B values."""

from __future__ import annotations

import torch
from torch import Tensor

from .denoise import SpectralOperator, to_rgb

#: official DDRM's per-pixel weights (``Colorization``: ``[[0.3333, 0.3334, 0.3333]]``), not BT.601
DDRM_GRAY_WEIGHTS = (0.3333, 0.3334, 0.3333)


class Colorization(SpectralOperator):
    """y_p = w . (r_p, g_p, b_p) for every pixel p, w = (0.3333, 0.3334, 0.3333).

    Matches official DDRM ``functions/svd_replacement.py::Colorization`` (``--deg color``), same
    weights. The 1x3 row w has the SVD w = u s v^T with s = ||w|| (~0.57735) and u = +1 (signs
    are chosen so U is the identity; DDRM multiplies by the computed ``U_small[0, 0]`` = +-1).
    The padded 3x3 ``V_small`` (first column w / ||w||) acts on every pixel's colour vector.

    * ``Vt(x)``: the H*W singular components (w/||w|| . colour) first, then the two
      null-space components of every pixel ((B, 3, H*W) flattened, component-major).
    * M = H*W, s = ||w|| repeated; y is the grey image in the image's value units.
    """

    name = "colorize"

    def __init__(self, channels: int, size: int, device: torch.device | str = "cpu", *, seed: int = 0):
        if channels != 3:
            raise ValueError(
                f"channels={channels!r} is invalid for colorization: it must be 3 (RGB); pass channels=3"
            )
        super().__init__(channels, size, device, seed=seed)
        w = torch.tensor([DDRM_GRAY_WEIGHTS], dtype=torch.float64)
        u, s, vh = torch.linalg.svd(w, full_matrices=True)  # u (1,1), s (1,), vh (3,3)
        if u[0, 0] < 0:  # make U = +1 so that U and Ut are the identity
            vh = vh.clone()
            vh[0] = -vh[0]
        self._register("vh", vh)  # rows: right singular vectors, first = w / ||w||
        self._register("s", s.repeat(size * size))

    def _needles(self, vec: Tensor) -> Tensor:
        return self._flat(vec, self.N).reshape(vec.shape[0], 3, self.size * self.size)

    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        x = self._needles(vec)
        return (self._buf("vh", x.dtype) @ x).reshape(x.shape[0], -1)

    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        z = self._needles(vec)
        return (self._buf("vh", z.dtype).T @ z).reshape(z.shape[0], -1)

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    def measurement_image(self, y: Tensor) -> Tensor:
        """The grey image y (not divided by s) replicated to 3 channels, (B, 3, H, W)."""
        return to_rgb(y.reshape(y.shape[0], 1, self.size, self.size))

    def describe(self) -> dict:
        return {**super().describe(), "weights": list(DDRM_GRAY_WEIGHTS)}
