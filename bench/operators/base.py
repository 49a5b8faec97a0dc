"""Linear degradation operators in the DDRM convention.

Notation (Kawar et al. 2022, official ``functions/svd_replacement.py::H_functions``):
``H = U diag(s) V^T`` acts on flattened per-sample vectors ``x`` of length ``N = C*H*W`` and returns
measurements ``y`` of length ``M = len(s)``.

* ``Vt(x)``  (B, N) -> (B, N): spectral coordinates of x; the first M entries pair with ``s``.
* ``V(v)``   (B, N) -> (B, N): inverse of ``Vt`` (V is orthogonal).
* ``Ut(y)``  (B, M) -> (B, M) and ``U(u)`` (B, M) -> (B, M): orthogonal maps on the measurement space.
* ``singulars()`` (M,): singular values, non-negative; zeros mark directions the operator removes.

``A``, ``At`` and ``pinv`` are derived from those parts once, here, so every subclass only implements
its matrix-free SVD. Everything is batched and stays on the operator's device.

Images enter as (B, C, H, W) or (B, N); measurements are flat (B, M). ``measurement_image`` turns a
measurement into a picture (B, 3, h, w) for saving and for the "degraded image" baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LinearOperator:
    """Base class: subclasses implement ``V, Vt, U, Ut, singulars`` and ``measurement_image``."""

    linear = True
    #: a short name used in errors and provenance
    name = "linear"

    def __init__(self, channels: int, size: int, device: torch.device | str = "cpu"):
        self.channels, self.size = channels, size
        self.device = torch.device(device)

    # ------------------------------------------------------------------ shapes
    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def N(self) -> int:  # noqa: N802 - paper notation
        return self.channels * self.size * self.size

    @property
    def M(self) -> int:  # noqa: N802 - paper notation
        return int(self.singulars().numel())

    # ---------------------------------------------------------- the SVD parts
    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def singulars(self) -> Tensor:
        raise NotImplementedError

    def measurement_image(self, y: Tensor) -> Tensor:
        """A picture of the measurement, (B, 3, h, w), in the same value units as ``y``."""
        raise NotImplementedError

    def frame_image(self, y: Tensor) -> Tensor:
        """The degraded picture in the image's frame, for methods that need a picture rather than the
        measurement (the ``bicubic`` baseline, SRLDM): ``measurement_image`` unless a subclass knows a
        better alignment (valid convolutions pad it back around the image centre). Smaller pictures
        (super-resolution) stay small: their pixels tile the image."""
        return self.measurement_image(y)

    # ------------------------------------------------------------ derived ops
    def add_zeros(self, vec: Tensor) -> Tensor:
        """Pad a spectral vector (B, M) to (B, N) with zeros (DDRM ``add_zeros``)."""
        out = vec.new_zeros(vec.shape[0], self.N)
        out[:, : vec.shape[1]] = vec
        return out

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """y = U diag(s) V^T x, (B, N) or (B, C, H, W) -> (B, M)."""
        x = x.reshape(x.shape[0], -1)
        s = self.singulars()
        return self.U(s * self.Vt(x)[:, : s.numel()])

    def At(self, y: Tensor) -> Tensor:  # noqa: N802
        """The adjoint: V diag(s) U^T y, (B, M) -> (B, N)."""
        s = self.singulars()
        return self.V(self.add_zeros(s * self.Ut(y)))

    def pinv(self, y: Tensor) -> Tensor:
        """Moore-Penrose pseudo-inverse V diag(1/s) U^T y, (B, M) -> (B, N).

        Zero singular values map to zero (official DDRM divides by them and yields inf for the
        thresholded deblurring kernels; we do not).
        """
        s = self.singulars()
        s_inv = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        return self.V(self.add_zeros(s_inv * self.Ut(y)))

    def image(self, vec: Tensor) -> Tensor:
        """Reshape a flat (B, N) vector to (B, C, H, W)."""
        return vec.reshape(vec.shape[0], *self.x_shape)

    def describe(self) -> dict:
        """Parameters for provenance (subclasses extend)."""
        return {"operator": self.name, "channels": self.channels, "size": self.size}
