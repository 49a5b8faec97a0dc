"""GDP's deblurring: a 9x9 Gaussian ``gkern(9, nsig=2)`` applied as a *valid* convolution (n -> n - 8).

Official GDP (Fei et al., CVPR 2023; ``scripts/sample_x0_blur.py``, ``sample_blur.py`` and
``imagenet_dataloader/save_random_images_blur.py``) does not use DDRM's ``Deblurring``. It blurs each
channel with ``F.conv2d(x, gkern(9, 2))`` and no padding, so a 256x256 image gives a 248x248
measurement, and its guidance compares ``blur((x + 1) / 2)`` with that 248x248 picture. Its ``gkern``::

    interval = (2 nsig + 1) / kernlen
    x = linspace(-nsig - interval / 2, nsig + interval / 2, kernlen + 1)
    kernel = sqrt(outer(d, d)) / sum(sqrt(outer(d, d))),   d = diff(Phi(x))   (Phi: standard normal cdf)

``sqrt(outer(d, d)) = outer(sqrt(d), sqrt(d))``, so the kernel is separable with 1-D taps
``sqrt(d) / sum(sqrt(d))`` (:func:`gdp_kernel`; std 2.18 px for (9, 2)). The 2-D operator is therefore
``Y = H1 X H1^T`` with H1 the (n - k + 1) x n Toeplitz matrix of a valid 1-D correlation
(:func:`valid_conv_matrix`), and its SVD comes from H1's small SVD through
:class:`~bench.operators.deblur.SeparableOperator`, as for DDRM's separable operators: like
super-resolution, the measurement (C (n-8)^2 values) is smaller than the image, and the 8 x n + n x 8
border directions of V are the null space.

Measurement picture: ``measurement_image(y)`` is y itself, (B, C, n - 8, n - 8), the picture official GDP
stores as its ``base_samples`` and guides with; it is not padded back to the image size (GDP's guidance
view compares H(x) with it at 248 px, see ``bench/methods/gdp.py``). Pixel (i, j) of it is centred on
image pixel (i + 4, j + 4); methods that need a full-size degraded picture (the ``bicubic`` baseline,
SRLDM) take ``frame_image(y)``: y edge-padded by k // 2 on every side, so each pixel stays where it was
measured (resizing 248 -> 256 would shift and stretch it: 20.07 dB against 21.76 padded, DDRM sample
photos measured by the i14 round); the others compare in this space (DDRM, GDP, DGP through the SVD
parts / measurement picture).

Differences from the official code: the taps are float64 (official casts the 2-D kernel to float32, a
relative difference below 1e-7), and the measurement is not rounded to 8 bit (official
``save_random_images_blur.py`` blurs 0..255 values and truncates them with ``.to(torch.uint8)``).
``zero_threshold`` defaults to 0 (A is exactly GDP's blur; the smallest 2-D singular value at 256 px is
about 6e-6); ``zero_threshold=0.03`` applies DDRM's 1-D threshold (then A, and every method's y, is the
thresholded operator, no longer GDP's blur).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .deblur import SeparableOperator, check_kernel_size, conv_matrix_1d
from .denoise import check_float, check_int


def gdp_kernel(kernel_size: int = 9, nsig: float = 2.0) -> Tensor:
    """The 1-D factor of official GDP's ``gkern(kernlen, nsig)`` (float64, sums to 1; see module doc)."""
    k = check_kernel_size(kernel_size)
    nsig = check_float("nsig", nsig, 0.0, float("inf"), "pass the kernel half-width in std units, e.g. 2",
                       low_open=True)
    interval = (2 * nsig + 1.0) / k
    x = torch.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, k + 1, dtype=torch.float64)
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    root = torch.diff(cdf).sqrt()
    return root / root.sum()


def valid_conv_matrix(kernel: Tensor, n: int) -> Tensor:
    """The (n - k + 1, n) float64 matrix of a 1-D *valid* correlation: row r reads pixels r .. r + k - 1
    with weights ``kernel[0 .. k-1]`` (``F.conv2d`` without padding)."""
    k = kernel.numel()
    m = n - k + 1
    if m < 1:
        raise ValueError(f"size={n} is too small for a valid convolution with {k} taps; use size >= {k}")
    # the rows of the same-size zero-padded correlation whose taps all fall inside the image
    return conv_matrix_1d(kernel, n, boundary="zero")[k // 2 : k // 2 + m]


class GDPDeblur(SeparableOperator):
    """Official GDP's blur: ``F.conv2d(x_c, gkern(kernel_size, nsig))`` per channel, no padding.

    M = C (size - kernel_size + 1)^2; measurements are the (C, m, m) blurred pictures, flattened.
    """

    name = "deblur_gdp"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        kernel_size: int = 9,
        nsig: float = 2.0,
        zero_threshold: float = 0.0,
        threshold_on: str = "1d",
    ):
        super().__init__(channels, size, device, seed=seed)
        self.kernel = gdp_kernel(kernel_size, nsig)
        self.kernel_size, self.nsig = int(kernel_size), float(nsig)
        check_int("size", size, self.kernel_size,
                  f"a valid {self.kernel_size}-tap blur needs images of at least {self.kernel_size} px")
        self._setup(valid_conv_matrix(self.kernel, size), zero_threshold, threshold_on)

    def frame_image(self, y: Tensor) -> Tensor:
        """The blurred picture edge-padded back to the image size (valid convolution: pixel (i, j) of y
        is centred on image pixel (i + k//2, j + k//2))."""
        pad = self.kernel_size // 2
        return torch.nn.functional.pad(self.measurement_image(y), (pad, pad, pad, pad), mode="replicate")

    def describe(self) -> dict:
        return {**super().describe(), "kernel": self.kernel.tolist(), "kernel_size": self.kernel_size,
                "nsig": self.nsig, "boundary": "valid", "measurement_size": self.small}
