"""Super-resolution operators: block averaging and strided separable convolution (incl. bicubic).

All three are per-channel separable operators ``Y = H1 X H1^T`` with a 1-D matrix H1 of shape
(size/factor, size); see ``deblur.SeparableOperator`` for the Kronecker SVD and the ordering.
"""

from __future__ import annotations

import torch

from .deblur import SeparableOperator, conv_matrix_1d
from .denoise import as_kernel, check_int


def check_factor(name: str, factor, size: int) -> int:
    """An integer >= 1 that divides ``size``."""
    f = check_int(name, factor, 1, f"pass a positive integer downsampling factor, e.g. {name}=4")
    if size % f:
        lower, upper = size - size % f, size + f - size % f
        raise ValueError(
            f"size={size} is not divisible by {name}={f}: the low-resolution side would not be an "
            f"integer; crop or resize the images to a multiple of {f} (e.g. {lower} or {upper}) or "
            f"pick a {name} that divides {size}"
        )
    return f


def keys_cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel W(x) with parameter a (a = -0.5: Catmull-Rom / Matlab)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_kernel(factor: int, a: float = -0.5) -> torch.Tensor:
    """Official DDRM's ``sr_bicubic`` taps: 4*factor samples of W((t - 2*factor + 0.5) / factor),
    t = 0 .. 4*factor - 1, normalised to sum 1 (float64)."""
    f = check_int("factor", factor, 1, "pass a positive integer, e.g. factor=4")
    taps = torch.tensor([keys_cubic((t - 2 * f + 0.5) / f, a) for t in range(4 * f)], dtype=torch.float64)
    return taps / taps.sum()


class SRConv(SeparableOperator):
    """Strided separable convolution with mirrored boundaries: Y = H1 X H1^T, H1 (size/stride, size).

    Matches official DDRM ``functions/svd_replacement.py::SRConv`` (``--deg sr_bicubicF``):
    row r of H1 is centred at pixel ``i = r*stride + stride//2``, tap t reads pixel
    ``j = i - k//2 + t`` with weight ``kernel[t]``; out-of-range pixels are reflected
    (``j < 0 -> -j - 1``, ``j >= size -> 2*size - 1 - j``, i.e. half-sample symmetric padding)
    and their weights accumulate. 1-D singular values below ``zero_threshold`` (DDRM ``ZERO = 3e-2``)
    are zeroed. Differences: the 2-D singular values are sorted descending (DDRM keeps the unsorted
    outer product with its fixed permutation P_1; both are valid SVDs of the same operator), and
    all taps of an odd kernel are used (DDRM's loop bound ``range(i - k//2, i + k//2)`` drops the
    last one; ``official_taps=True`` reproduces it; even kernels such as bicubic are unaffected).
    M = C * (size/stride)^2.
    """

    name = "sr_conv"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        kernel,
        stride: int = 1,
        zero_threshold: float = 3e-2,
        threshold_on: str = "1d",
        official_taps: bool = False,
    ):
        super().__init__(channels, size, device, seed=seed)
        self.kernel = as_kernel(kernel)
        self.stride = check_factor("stride", stride, size)
        self.official_taps = bool(official_taps)
        h_small = conv_matrix_1d(
            self.kernel, size, stride=self.stride, boundary="reflect", official_taps=self.official_taps
        )
        self._setup(h_small, zero_threshold, threshold_on)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "kernel": self.kernel.tolist(),
            "stride": self.stride,
            "official_taps": self.official_taps,
        }


class BicubicDownsample(SRConv):
    """SRConv with official DDRM's bicubic kernel (``runners/diffusion.py``, ``sr_bicubic``):
    Keys a = -0.5, 4*factor taps at (t - 2*factor + 0.5)/factor, normalised, stride = factor.

    The kernel is centred on the middle of each factor x factor block (tap t reads pixel
    ``r*f + f//2 - 2f + t``, at distance ``(t - 2f + 0.5)/f`` low-res pixels from the block centre
    for even f). It is *not* torch's antialiased bicubic ``interpolate``."""

    name = "sr_bicubic"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        factor: int = 4,
        zero_threshold: float = 3e-2,
        threshold_on: str = "1d",
    ):
        self.factor = check_factor("factor", factor, size)
        super().__init__(
            channels, size, device, seed=seed, kernel=bicubic_kernel(self.factor), stride=self.factor,
            zero_threshold=zero_threshold, threshold_on=threshold_on,
        )

    def describe(self) -> dict:
        return {**super().describe(), "factor": self.factor}


class SuperResolution(SeparableOperator):
    """factor x factor block averaging per channel: y = mean of each block.

    Matches official DDRM ``functions/svd_replacement.py::SuperResolution`` (``--deg srF``) as an
    operator: every 2-D singular value is 1/factor, M = C*(size/factor)^2, y = the block means.
    DDRM builds the SVD per block from the 1 x f^2 row; here the same operator is written as the
    separable H1 (x) H1 with H1 (size/f, size) of 1/f entries (block-diagonal rows), an equally
    valid SVD (the singular subspace of 1/f is degenerate, so the bases differ). No threshold.
    """

    name = "sr_block"

    def __init__(
        self, channels: int, size: int, device: torch.device | str = "cpu", *, seed: int = 0, factor: int = 4
    ):
        super().__init__(channels, size, device, seed=seed)
        self.factor = check_factor("factor", factor, size)
        box = torch.full((self.factor,), 1.0 / self.factor, dtype=torch.float64)
        self._setup(conv_matrix_1d(box, size, stride=self.factor), zero_threshold=0.0)

    def describe(self) -> dict:
        return {**super().describe(), "factor": self.factor}
