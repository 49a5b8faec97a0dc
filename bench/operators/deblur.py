"""Separable convolutions through the SVD of a small 1-D matrix, and the deblurring operators.

A separable per-channel operator acts on each channel X (n x n) as ``Y = H1 X H1^T`` with a 1-D
matrix H1 (m x n), i.e. ``H = I_C (x) H1 (x) H1``. With ``H1 = U1 S1 V1^T`` (float64 SVD, once) its
SVD is ``(U1 (x) U1)(S1 (x) S1)(V1 (x) V1)^T``: the spectral coordinates of X are
``Z = V1^T X V1`` and the (a, b) entry (a, b < m) pairs with singular value ``s1[a] * s1[b]``.
Singular values are sorted descending (stable) and the permutation kept; spectral vectors are
pixel-major / channel-minor (entry ``k*C + c``), so the C-fold repeated ``s`` stays descending.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoise import SpectralOperator, as_kernel, check_float, check_int, to_rgb

THRESHOLD_MODES = ("1d", "2d")


def conv_matrix_1d(
    kernel: Tensor, n: int, *, stride: int = 1, boundary: str = "zero", official_taps: bool = False
) -> Tensor:
    """The (n // stride, n) float64 matrix of a 1-D strided correlation with ``kernel``.

    Row r is centred at ``i = r*stride + stride//2`` and tap t (0 <= t < k) reads pixel
    ``j = i - k//2 + t`` with weight ``kernel[t]`` (cross-correlation, as ``F.conv2d``). This is
    official DDRM's indexing (``Deblurring`` / ``SRConv``: ``H_small[i, j] = kernel[j - i + k//2]``).
    ``official_taps=True`` reproduces DDRM's loop bound ``range(i - k//2, i + k//2)``, which uses
    only the first ``2*(k//2)`` taps: all taps of an even kernel, all but the last of an odd one.

    ``boundary``: "zero" (out-of-range taps are dropped, DDRM ``Deblurring``) or "reflect" (DDRM
    ``SRConv``: ``j < 0 -> -j - 1``, ``j >= n -> 2n - 1 - j``, weights accumulate).
    """
    k = kernel.to(torch.float64)
    ntaps = 2 * (k.numel() // 2) if official_taps else k.numel()
    m = n // stride
    rows = torch.arange(m).unsqueeze(1).expand(m, ntaps)
    cols = rows * stride + stride // 2 - k.numel() // 2 + torch.arange(ntaps)
    weights = k[:ntaps].expand(m, ntaps)
    if boundary == "reflect":
        cols = torch.where(cols < 0, -cols - 1, cols)
        cols = torch.where(cols >= n, 2 * n - 1 - cols, cols)
        if bool((cols < 0).any() or (cols >= n).any()):
            raise ValueError(
                f"kernel of {k.numel()} taps is too long for reflect padding of a {n}-pixel side; "
                f"use a kernel with at most {n} taps or a larger image"
            )
    elif boundary != "zero":
        raise ValueError(f"boundary={boundary!r} is invalid: use 'zero' or 'reflect'")
    keep = (cols >= 0) & (cols < n)
    out = torch.zeros(m, n, dtype=torch.float64)
    out.index_put_((rows[keep], cols[keep]), weights[keep], accumulate=True)
    return out


class SeparableOperator(SpectralOperator):
    """Per-channel ``Y = H1 X H1^T`` from a small 1-D matrix H1 (m x n), via its Kronecker SVD.

    Subclasses call ``_setup(h_small, zero_threshold, threshold_on)`` from ``__init__``.
    Measurements y are the (C, m, m) output images, flattened. ``threshold_on="1d"`` zeroes the
    1-D singular values below ``zero_threshold`` before forming products, exactly as official
    DDRM (``singulars_small[singulars_small < ZERO] = 0``); "2d" zeroes products s1[a]*s1[b]
    below it instead. The operator A *is* the thresholded ``U diag(s) V^T``.
    """

    def _setup(self, h_small: Tensor, zero_threshold: float, threshold_on: str = "1d") -> None:
        self.zero_threshold = check_float(
            "zero_threshold", zero_threshold, 0.0, float("inf"), "pass e.g. 3e-2 (DDRM) or 0 (exact)"
        )
        if threshold_on not in THRESHOLD_MODES:
            raise ValueError(f"threshold_on={threshold_on!r} is invalid: use one of {THRESHOLD_MODES}")
        self.threshold_on = threshold_on
        m, n = h_small.shape
        self.small = m
        u1, s1, v1h = torch.linalg.svd(h_small.to(torch.float64), full_matrices=True)
        if threshold_on == "1d":
            s1 = torch.where(s1 < self.zero_threshold, torch.zeros_like(s1), s1)
        s2 = torch.outer(s1, s1).reshape(-1)
        if threshold_on == "2d":
            s2 = torch.where(s2 < self.zero_threshold, torch.zeros_like(s2), s2)
        s_sorted, order = torch.sort(s2, descending=True, stable=True)
        in_block = (order // m) * n + order % m  # (a, b) -> index in the n x n spectral grid
        outside = torch.ones(n, n, dtype=torch.bool)
        outside[:m, :m] = False
        perm_v = torch.cat([in_block, outside.reshape(-1).nonzero().squeeze(1)])
        self._perm_v, self._inv_perm_v = perm_v.to(self.device), torch.argsort(perm_v).to(self.device)
        self._perm_u, self._inv_perm_u = order.to(self.device), torch.argsort(order).to(self.device)
        self._register("h_small", h_small)
        self._register("u1", u1)
        self._register("v1", v1h.T)
        self._register("s", s_sorted.repeat_interleave(self.channels))

    # ------------------------------------------------------------- helpers
    def _to_spec(self, img: Tensor, mat: Tensor, perm: Tensor) -> Tensor:
        """(B, C, d, d) image -> mat^T img mat, permuted, pixel-major flat (B, C*d*d)."""
        z = (mat.T @ img @ mat).reshape(img.shape[0], self.channels, -1)[:, :, perm]
        return z.transpose(1, 2).reshape(img.shape[0], -1)

    def _from_spec(self, vec: Tensor, mat: Tensor, inv_perm: Tensor, d: int) -> Tensor:
        """Inverse of ``_to_spec``: flat spectral (B, C*d*d) -> mat Z mat^T, flat (B, C*d*d)."""
        z = vec.reshape(vec.shape[0], d * d, self.channels).transpose(1, 2)[:, :, inv_perm]
        img = z.reshape(vec.shape[0], self.channels, d, d)
        return (mat @ img @ mat.T).reshape(vec.shape[0], -1)

    # ------------------------------------------------------------- SVD parts
    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        x = self._flat(vec, self.N)
        img = x.reshape(x.shape[0], *self.x_shape)
        return self._to_spec(img, self._buf("v1", x.dtype), self._perm_v)

    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        z = self._flat(vec, self.N)
        return self._from_spec(z, self._buf("v1", z.dtype), self._inv_perm_v, self.size)

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        y = self._flat(vec, self.M)
        img = y.reshape(y.shape[0], self.channels, self.small, self.small)
        return self._to_spec(img, self._buf("u1", y.dtype), self._perm_u)

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        w = self._flat(vec, self.M)
        return self._from_spec(w, self._buf("u1", w.dtype), self._inv_perm_u, self.small)

    def measurement_image(self, y: Tensor) -> Tensor:
        """y reshaped to (B, C, m, m) (one channel repeated to three)."""
        return to_rgb(y.reshape(y.shape[0], self.channels, self.small, self.small))

    def describe(self) -> dict:
        return {**super().describe(), "zero_threshold": self.zero_threshold, "threshold_on": self.threshold_on}


def check_kernel_size(kernel_size) -> int:
    """An odd integer >= 1 (so the kernel has a centre tap)."""
    fix = "pass an odd number of taps, e.g. kernel_size=5"
    k = check_int("kernel_size", kernel_size, 1, fix)
    if k % 2 == 0:
        raise ValueError(f"kernel_size={k} is invalid: it must be an odd integer >= 1; {fix}")
    return k


def gaussian_kernel(kernel_size: int, sigma: float) -> Tensor:
    """Normalised taps exp(-x^2 / (2 sigma^2)) at x = -(k//2) .. k//2 (float64)."""
    k = check_kernel_size(kernel_size)
    sigma = check_float("kernel_sigma", sigma, 0.0, float("inf"), "pass a width in pixels, e.g. 1.0", low_open=True)
    x = torch.arange(k, dtype=torch.float64) - k // 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


class Deblurring(SeparableOperator):
    """Same-size separable blur with zero padding: Y = H1 X H1^T, H1 = conv_matrix_1d(kernel, n).

    Matches official DDRM ``functions/svd_replacement.py::Deblurring`` (``--deg deblur_uni`` /
    ``deblur_gauss``): 1-D matrix with zero padding, float SVD, 1-D singular values below
    ``zero_threshold`` (DDRM ``ZERO = 3e-2``) set to 0, 2-D singular values = products sorted
    descending with the permutation kept. A is defined through this thresholded SVD, i.e. it is
    the operator DDRM restores against; with ``zero_threshold=0`` A is the exact zero-padded
    correlation with ``outer(kernel, kernel)`` (``F.conv2d(..., padding=k//2)`` for odd k).

    Deliberate differences from the official code:
    * all k taps are used; official DDRM's ``range(i - k//2, i + k//2)`` drops the last tap of an
      odd kernel (``official_taps=True`` reproduces that);
    * official ``singulars()`` tiles ``s`` with ``.repeat(1, 3)`` although its V^T output is
      pixel-major/channel-minor, which pairs entry k with s[k mod n^2] instead of s[k // 3];
      here s is ``repeat_interleave``-d so A really is the (thresholded) blur.
    M = N = C*n*n (zeroed singular values included).
    """

    name = "deblur"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        kernel,
        zero_threshold: float = 3e-2,
        threshold_on: str = "1d",
        official_taps: bool = False,
    ):
        super().__init__(channels, size, device, seed=seed)
        self.kernel = as_kernel(kernel)
        self.official_taps = bool(official_taps)
        h_small = conv_matrix_1d(self.kernel, size, boundary="zero", official_taps=self.official_taps)
        self._setup(h_small, zero_threshold, threshold_on)

    def describe(self) -> dict:
        return {**super().describe(), "kernel": self.kernel.tolist(), "official_taps": self.official_taps}


class GaussianDeblur(Deblurring):
    """Deblurring with a normalised Gaussian kernel: ``kernel_size`` taps at -(k//2)..k//2.

    Official DDRM ``deblur_gauss`` (``runners/diffusion.py``) uses ``sigma = 10`` over 5 taps at
    x = -2..2, pdf exp(-0.5 (x/sigma)^2), normalised (nearly a 5-tap box), and, through its loop
    bound, only the first 4 of them. The defaults here are ``kernel_sigma=1`` px over 5 taps;
    the official setting is ``GaussianDeblur(..., kernel_sigma=10, kernel_size=5,
    official_taps=True)``.
    """

    name = "deblur_gauss"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        kernel_sigma: float = 1.0,
        kernel_size: int = 5,
        zero_threshold: float = 3e-2,
        threshold_on: str = "1d",
        official_taps: bool = False,
    ):
        self.kernel_sigma, self.kernel_size = float(kernel_sigma), kernel_size
        super().__init__(
            channels, size, device, seed=seed, kernel=gaussian_kernel(kernel_size, kernel_sigma),
            zero_threshold=zero_threshold, threshold_on=threshold_on, official_taps=official_taps,
        )

    def describe(self) -> dict:
        return {**super().describe(), "kernel_sigma": self.kernel_sigma, "kernel_size": self.kernel_size}


class UniformDeblur(Deblurring):
    """Deblurring with a box kernel of ``kernel_size`` taps 1/k (official DDRM ``deblur_uni``: 9 taps
    of 1/9, of which its loop bound uses the first 8; ``official_taps=True`` reproduces that)."""

    name = "deblur_uniform"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        kernel_size: int = 9,
        zero_threshold: float = 3e-2,
        threshold_on: str = "1d",
        official_taps: bool = False,
    ):
        k = check_kernel_size(kernel_size)
        self.kernel_size = k
        super().__init__(
            channels, size, device, seed=seed, kernel=torch.full((k,), 1.0 / k, dtype=torch.float64),
            zero_threshold=zero_threshold, threshold_on=threshold_on, official_taps=official_taps,
        )

    def describe(self) -> dict:
        return {**super().describe(), "kernel_size": self.kernel_size}
