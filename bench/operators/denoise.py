"""Denoising (H = I) plus the small helpers every concrete operator in this package shares.

The helpers live here because this is the simplest operator module and every other one already
depends on it:

* ``SpectralOperator``: a ``LinearOperator`` whose SVD buffers are built once in float64 and handed out
  in the caller's dtype (float32 in -> float32 out, float64 in -> float64 out, at full precision), and
  whose ``A``/``At``/``pinv`` use singular values of the input's dtype.
* ``check_int`` / ``check_float`` / ``check_hw`` / ``as_kernel``: parameter checks that raise ``ValueError`` naming the
  bad value, the allowed range and the fix.
* ``to_rgb``: turns a (B, C, h, w) measurement picture into three channels for saving.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import LinearOperator


# ------------------------------------------------------------------------------------------ checks
def check_int(name: str, value, minimum: int, fix: str) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise a ValueError naming value, range and fix."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}; {fix}")
    return int(value)


def check_float(
    name: str, value, low: float, high: float, fix: str, *, low_open: bool = False, high_open: bool = False
) -> float:
    """Return ``value`` as a float inside the interval [low, high] (ends open when asked) or raise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}={value!r} is invalid: it must be a number in {interval}; {fix}")
    return float(value)


def check_hw(size) -> tuple[int, int]:
    """(height, width) from an int side or a (height, width) pair, each an integer >= 1 (pixel-wise,
    non-linear operators take any shape, e.g. 600x400 LOL photos)."""
    hw = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    fix = "pass the image side length in pixels, e.g. size=256, or (height, width)"
    if len(hw) != 2:
        raise ValueError(f"size={size!r} is invalid: it must be an int or a (height, width) pair; {fix}")
    return tuple(check_int("size", v, 1, fix) for v in hw)


def as_kernel(kernel, name: str = "kernel") -> Tensor:
    """A 1-D, non-empty, finite float64 CPU tensor from a sequence or tensor."""
    k = torch.as_tensor(kernel, dtype=torch.float64).detach().cpu()
    if k.dim() != 1 or k.numel() == 0 or not bool(torch.isfinite(k).all()):
        raise ValueError(
            f"{name}={kernel!r} is invalid: it must be a non-empty 1-D sequence of finite numbers; "
            "pass e.g. kernel=[0.25, 0.5, 0.25]"
        )
    return k


def to_rgb(img: Tensor) -> Tensor:
    """Repeat a one-channel picture (B, 1, h, w) to three channels; other shapes pass through."""
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img


def _float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.float32)


# -------------------------------------------------------------------------------- shared base
class SpectralOperator(LinearOperator):
    """``LinearOperator`` with float64 master buffers and dtype-matched ``A``, ``At``, ``pinv``.

    Subclasses register their SVD pieces with ``_register(name, tensor)`` (stored in float64 on
    ``self.device``) and read them back with ``_buf(name, dtype)`` (cast once per dtype and cached).
    ``singulars(dtype=torch.float32)`` returns ``s`` in the requested dtype; the base-class
    semantics (``H = U diag(s) V^T``, DDRM ``H_functions``) are unchanged.
    """

    def __init__(self, channels: int, size: int, device: torch.device | str = "cpu", *, seed: int = 0):
        check_int("channels", channels, 1, "pass the number of image channels, e.g. channels=3")
        check_int("size", size, 1, "pass the image side length in pixels, e.g. size=256")
        super().__init__(channels, size, device)
        self.seed = int(seed)
        self._masters: dict[str, Tensor] = {}
        self._casts: dict[tuple[str, torch.dtype], Tensor] = {}

    # ------------------------------------------------------------------ buffers
    def _register(self, name: str, tensor: Tensor) -> None:
        self._masters[name] = tensor.to(device=self.device, dtype=torch.float64)
        self._casts = {k: v for k, v in self._casts.items() if k[0] != name}

    def _buf(self, name: str, dtype: torch.dtype) -> Tensor:
        if dtype == torch.float64:
            return self._masters[name]
        key = (name, dtype)
        if key not in self._casts:
            self._casts[key] = self._masters[name].to(dtype)
        return self._casts[key]

    def singulars(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Singular values s (M,), non-negative, in ``dtype`` (float32 unless asked otherwise)."""
        return self._buf("s", dtype)

    def _flat(self, vec: Tensor, length: int) -> Tensor:
        vec = _float(vec).reshape(vec.shape[0], -1)
        if vec.shape[1] != length:
            raise ValueError(
                f"{self.name}: got a vector of {vec.shape[1]} entries per sample, expected {length} "
                f"(x is {self.x_shape}, M={self.M}); pass (B, {length}) or the matching image shape"
            )
        return vec

    # ------------------------------------------------------------- derived ops
    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """y = U diag(s) V^T x, (B, N) or (B, C, H, W) -> (B, M), in x's dtype."""
        x = self._flat(x, self.N)
        s = self.singulars(x.dtype)
        return self.U(s * self.Vt(x)[:, : s.numel()])

    def At(self, y: Tensor) -> Tensor:  # noqa: N802
        """The adjoint V diag(s) U^T y, (B, M) -> (B, N)."""
        y = self._flat(y, self.M)
        s = self.singulars(y.dtype)
        return self.V(self.add_zeros(s * self.Ut(y)))

    def pinv(self, y: Tensor) -> Tensor:
        """Moore-Penrose pseudo-inverse V diag(1/s) U^T y; zero singular values map to zero."""
        y = self._flat(y, self.M)
        s = self.singulars(y.dtype)
        s_inv = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        return self.V(self.add_zeros(s_inv * self.Ut(y)))


# ------------------------------------------------------------------------------------ denoising
class Denoising(SpectralOperator):
    """Identity degradation H = I (only the measurement noise sigma_0 degrades the image).

    Matches official DDRM ``functions/svd_replacement.py::Denoising`` (``--deg deno``):
    U = V = I and s = ones(N), so M = N = C*H*W.
    """

    name = "denoise"

    def __init__(self, channels: int, size: int, device: torch.device | str = "cpu", *, seed: int = 0):
        super().__init__(channels, size, device, seed=seed)
        self._register("s", torch.ones(self.N, dtype=torch.float64))

    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N).clone()

    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N).clone()

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N).clone()

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N).clone()

    def measurement_image(self, y: Tensor) -> Tensor:
        """The (noisy) image itself, (B, C, H, W) (one channel repeated to three)."""
        return to_rgb(y.reshape(y.shape[0], *self.x_shape))
