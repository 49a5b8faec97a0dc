"""NIQE (Mittal, Soundararajan & Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013),
the Ma et al. score (optional) and the PIRM-2018 perceptual index.

Algorithm (paper notation; lower NIQE = more natural):

1. Luminance ``I``: the Y channel of MATLAB ``rgb2ycbcr`` on the 0..255 scale,
   ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in [0, 1] (:func:`bench.metrics.pixel.rgb_to_y`),
   **rounded to integers** (``variant="matlab"``, the default; see below). ``crop_border`` pixels are removed
   from every edge, then the image is cropped (top-left anchored) to a whole number of 96x96 blocks, as in
   BasicSR / MATLAB ``computequality.m``.
2. MSCN coefficients (Eq. 1): ``Î = (I - μ) / (σ + 1)`` with ``μ = w * I``, ``σ = sqrt(|w * I² - μ²|)``,
   ``w`` the 7x7 Gaussian window stored in the parameter file, replicate ('nearest') borders.
3. Per 96x96 block (48x48 at the second scale), 18 features: the GGD shape/scale of ``Î`` (AGGD fit, ``α``
   and ``(β_l+β_r)/2``) and, for the four neighbour products ``Î·roll(Î, s)`` with
   ``s ∈ {(0,1), (1,0), (1,1), (1,-1)}`` (circular shift *inside the block*), the AGGD
   ``(α, η, β_l, β_r)`` with ``η = (β_r - β_l) Γ(2/α)/Γ(1/α)`` (Eq. 8). ``α`` is found by the standard
   moment-matching lookup over ``α ∈ {0.2, 0.201, ..., 10}`` (Lasmar et al.).
4. Second scale: the luminance down-sampled by 2 and steps 2-3 repeated -> 36 features per block.
5. A multivariate Gaussian ``(ν_2, Σ_2)`` is fitted to the block features (NaN-mean; covariance over the
   blocks without NaN), and ``NIQE = sqrt((ν_1-ν_2)ᵀ ((Σ_1+Σ_2)/2)⁺ (ν_1-ν_2))`` (Eq. 10) against the pristine
   model ``(ν_1, Σ_1)`` from ``niqe_pris_params.npz`` (XPixelGroup/BasicSR ``basicsr/metrics/``, itself the
   MATLAB ``modelparameters.mat`` of ``niqe_release``).

Variants (:data:`VARIANTS`):

* ``"matlab"`` (default) = current BasicSR ``calculate_niqe`` (since 2021-08, "same results as MATLAB"):
  Y rounded to integers before feature extraction (``numpy.round``: half to even; exact halves do not occur
  for 8-bit inputs in float64) and the second scale from MATLAB ``imresize(I, 0.5)`` (bicubic, antialiased,
  mirror borders; :func:`imresize_matlab`); pyiqa rounds the same way. On BasicSR's ``tests/data/baboon.png``
  MATLAB gives 5.72957; this code measured 5.72996 there with rounding and 5.636 without it (issue 15), so the
  rounding is what matters. baboon.png is not available offline; ``tests/metrics/test_niqe.py`` checks the
  implementation against an independent per-block transcription of the algorithm on real photographs.
* ``"basicsr_pre2021"``: BasicSR before that fix, kept to reproduce numbers computed with it: Y not
  rounded and the second scale from ``cv2.resize(INTER_LINEAR)`` at exactly 1/2, i.e. a 2x2 box mean.

Image size: at least two 96x96 blocks after the border crop (a covariance needs two samples); callers check
every image with :func:`niqe_size_problem` before computing.

Perceptual index (Blau et al., "The 2018 PIRM challenge on perceptual image super-resolution"):
``PI = ((10 - Ma) + NIQE) / 2`` with Ma = NRQM (Ma et al., CVIU 2017). PIRM convention: Y channel and
``crop_border = 4`` for both terms (:data:`PIRM_CROP_BORDER`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import gamma as _gamma_fn
from torch import Tensor

from bench.metrics import MetricUnavailable
from bench.metrics.pixel import rgb_to_y

__all__ = ["NIQEParams", "niqe", "niqe_features", "niqe_size_problem", "imresize_matlab", "rgb_to_y", "ma_score",
           "perceptual_index", "pi_score", "PIRM_CROP_BORDER", "VARIANTS", "niqe_version"]

PIRM_CROP_BORDER = 4
_BLOCK = 96
VARIANTS = ("matlab", "basicsr_pre2021")
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))

# AGGD lookup table (same grid as MATLAB estimateaggdparam / BasicSR): α = 0.2:0.001:10
_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = torch.from_numpy(_gamma_fn(2.0 / _GAM) ** 2 / (_gamma_fn(1.0 / _GAM) * _gamma_fn(3.0 / _GAM)))
_BETA_FACTOR = torch.from_numpy(np.sqrt(_gamma_fn(1.0 / _GAM) / _gamma_fn(3.0 / _GAM)))
_MEAN_FACTOR = torch.from_numpy(_gamma_fn(2.0 / _GAM) / _gamma_fn(1.0 / _GAM))
_GAM_T = torch.from_numpy(_GAM)


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class NIQEParams:
    """Pristine MVG model: ``mu`` (36,), ``cov`` (36, 36) and the 7x7 Gaussian ``window`` (float64)."""

    mu: Tensor
    cov: Tensor
    window: Tensor

    @classmethod
    def load(cls, path: str | Path) -> "NIQEParams":
        """Read ``niqe_pris_params.npz`` (keys ``mu_pris_param``, ``cov_pris_param``, ``gaussian_window``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"NIQE pristine parameters not found at '{path}'. Fix: download niqe_pris_params.npz from "
                "XPixelGroup/BasicSR (basicsr/metrics/niqe_pris_params.npz, Apache-2.0) and pass its path "
                "(in this workspace a copy lives at ../shared/data/niqe/niqe_pris_params.npz).")
        with np.load(path) as data:
            missing = {"mu_pris_param", "cov_pris_param", "gaussian_window"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks keys {sorted(missing)}; expected BasicSR's niqe_pris_params.npz")
            mu = torch.from_numpy(np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1))
            cov = torch.from_numpy(np.asarray(data["cov_pris_param"], dtype=np.float64))
            win = torch.from_numpy(np.asarray(data["gaussian_window"], dtype=np.float64))
        if mu.shape != (36,) or cov.shape != (36, 36) or win.ndim != 2:
            raise ValueError(f"{path}: unexpected shapes mu {tuple(mu.shape)}, cov {tuple(cov.shape)}, "
                             f"window {tuple(win.shape)}")
        return cls(mu=mu, cov=cov, window=win)


# --------------------------------------------------------------------------- MATLAB imresize
def _cubic(t: Tensor) -> Tensor:
    """Keys cubic kernel with a = -0.5 (MATLAB ``imresize`` 'bicubic')."""
    a = t.abs()
    a2, a3 = a * a, a * a * a
    return ((1.5 * a3 - 2.5 * a2 + 1) * (a <= 1)
            + (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    """Dense (out_len, in_len) weights of MATLAB ``imresize``'s ``contributions`` along one dimension."""
    width = 4.0
    if scale < 1 and antialias:  # widen the kernel: h(t) = scale * cubic(scale * t)
        width = width / scale
        kernel = lambda t: scale * _cubic(scale * t)  # noqa: E731
    else:
        kernel = _cubic
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]  # 1-based input indices
    w = kernel(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    m = torch.remainder(idx - 1, 2 * in_len).long()  # symmetric padding: [1..n, n..1] repeated
    src = torch.where(m < in_len, m, 2 * in_len - 1 - m)
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, src, w)


def _round_u8(x: Tensor) -> Tensor:
    """MATLAB's conversion of a double to uint8: round half away from zero, saturate to 0..255.

    Integer images under a symmetric kernel produce exact halves (k + 0.5) that float summation order turns
    into k + 0.5 ± 1e-14, so values within 1e-9 of a half are taken as that half (rounded up): the result
    does not depend on the order of the additions (MATLAB's own order is not documented)."""
    x = x.clamp(0, 255)
    return torch.floor(torch.round(x * 1e9) / 1e9 + 0.5).clamp(0, 255)


def imresize_matlab(x: Tensor, size: tuple[int, int] | None = None, scale: float | None = None,
                    antialias: bool = True, uint8: bool = False) -> Tensor:
    """MATLAB ``imresize(x, scale)`` / ``imresize(x, [h w])`` with the default bicubic kernel.

    ``x``: (..., H, W) float. Antialiasing (kernel stretched by 1/scale) when down-scaling, symmetric
    (mirror) boundary, as MATLAB's ``contributions``. Computed in float64 as separable dense matrices,
    returned in ``x``'s dtype. Output size from a scale is ``ceil(scale * H)`` (MATLAB).

    ``uint8=True`` reproduces ``imresize`` of a *uint8* image (``x`` holding 0..255 integer values):
    ``imresize.m`` resizes one dimension at a time (``dimensionOrder``: the smaller scale first, rows first
    on a tie) with ``imresizemex``, which returns the input's class, so each pass is rounded (half away from
    zero) and saturated to 0..255.
    """
    if (size is None) == (scale is None):
        raise ValueError("give exactly one of size=(h, w) or scale=")
    h, w = x.shape[-2:]
    if size is None:
        size = (int(np.ceil(scale * h)), int(np.ceil(scale * w)))
        sh = sw = float(scale)
    else:
        sh, sw = size[0] / h, size[1] / w
    wh = _resize_matrix(h, size[0], sh, antialias).to(x.device)
    ww = _resize_matrix(w, size[1], sw, antialias).to(x.device)
    out = x.to(torch.float64)
    if not uint8:
        out = wh @ out @ ww.T
    else:
        for dim in ((0, 1) if sh <= sw else (1, 0)):
            out = _round_u8(wh @ out if dim == 0 else out @ ww.T)
    return out.to(x.dtype) if x.is_floating_point() else out


# --------------------------------------------------------------------------- features
def niqe_version(variant: str = "matlab", crop_border: int = 0) -> str:
    """The ``version`` string recorded next to NIQE values."""
    return f"niqe:bench.metrics.niqe,variant={variant},crop_border={int(crop_border)},block=96;v2"


def niqe_size_problem(h: int, w: int, crop_border: int = 0, block: int = _BLOCK) -> str | None:
    """None when an h x w image gives at least two ``block`` x ``block`` blocks after the border crop, else why."""
    ch, cw = h - 2 * crop_border, w - 2 * crop_border
    if ch <= 0 or cw <= 0 or (ch // block) * (cw // block) < 2:
        return (f"{w}x{h} gives fewer than two {block}x{block} blocks after a {crop_border}-pixel border crop "
                f"(NIQE needs e.g. >= {2 * block + 2 * crop_border}x{block + 2 * crop_border})")
    return None


def _aggd(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row-wise AGGD fit of (n, m) samples -> (α, β_l, β_r, lookup index), each (n,)."""
    neg, pos = x < 0, x > 0
    sq = x * x
    left_std = torch.sqrt((sq * neg).sum(1) / neg.sum(1))  # 0/0 -> NaN, as numpy's mean of an empty set
    right_std = torch.sqrt((sq * pos).sum(1) / pos.sum(1))
    g = left_std / right_std
    rhat = x.abs().mean(1) ** 2 / sq.mean(1)
    rhatnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    idx = torch.empty(x.shape[0], dtype=torch.long)
    for s in range(0, x.shape[0], 256):  # bounded (256 x 9801) distance table
        d = (_R_GAM[None] - rhatnorm[s:s + 256, None]) ** 2
        idx[s:s + 256] = torch.nan_to_num(d, nan=float("inf")).argmin(1)  # all-NaN row -> 0 (numpy argmin)
    f = _BETA_FACTOR[idx]
    return _GAM_T[idx], left_std * f, right_std * f, idx


def _block_features(blocks: Tensor) -> Tensor:
    """(n, bh, bw) MSCN blocks -> (n, 18) NIQE features."""
    n = blocks.shape[0]
    alpha, bl, br, _ = _aggd(blocks.reshape(n, -1))
    feats = [alpha, (bl + br) / 2]
    for s in _SHIFTS:
        prod = blocks * torch.roll(blocks, shifts=s, dims=(1, 2))
        alpha, bl, br, idx = _aggd(prod.reshape(n, -1))
        feats += [alpha, (br - bl) * _MEAN_FACTOR[idx], bl, br]
    return torch.stack(feats, dim=1)


def _mscn(y: Tensor, window: Tensor) -> Tensor:
    """(H, W) -> MSCN coefficients (Eq. 1) with replicate borders (scipy ``convolve(mode='nearest')``)."""
    k = window.flip(0, 1)[None, None]  # true convolution, as scipy.ndimage.convolve
    ph, pw = k.shape[-2] // 2, k.shape[-1] // 2
    pad = lambda t: F.pad(t[None, None], (pw, pw, ph, ph), mode="replicate")  # noqa: E731
    mu = F.conv2d(pad(y), k)[0, 0]
    sigma = torch.sqrt((F.conv2d(pad(y * y), k)[0, 0] - mu * mu).abs())
    return (y - mu) / (sigma + 1)


def _to_blocks(x: Tensor, nh: int, nw: int) -> Tensor:
    bh, bw = x.shape[0] // nh, x.shape[1] // nw
    return x.reshape(nh, bh, nw, bw).permute(0, 2, 1, 3).reshape(nh * nw, bh, bw)


def niqe_features(y: Tensor, window: Tensor, variant: str = "matlab", block: int = _BLOCK) -> Tensor:
    """(H, W) luminance on 0..255 -> (n_blocks, 36) features of the two scales (block order shared)."""
    h, w = y.shape
    nh, nw = h // block, w // block
    if nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {block}x{block} blocks (a covariance), got a {h}x{w} image")
    y = y[: nh * block, : nw * block]
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(_to_blocks(_mscn(y, window), nh, nw)))
        if scale == 1:
            if variant == "matlab":
                y = imresize_matlab(y, scale=0.5)
            else:  # basicsr_pre2021: cv2.resize INTER_LINEAR at exactly 1/2 == 2x2 mean
                y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(dim=(1, 3))
    return torch.cat(feats, dim=1)


def niqe(img: Tensor, params: NIQEParams, crop_border: int = 0, variant: str = "matlab") -> Tensor:
    """NIQE of each image; ``img`` (B,3,H,W) RGB in [0,1] (or (B,1,H,W) gray). Returns (B,) float64 on CPU.

    Lower is better. An image whose blocks are all degenerate (e.g. constant) gives NaN, as BasicSR.
    ``variant``: ``"matlab"`` (rounded Y, MATLAB imresize; default) or ``"basicsr_pre2021"`` (module doc).
    """
    if variant not in VARIANTS:
        raise ValueError(f"NIQE variant={variant!r} is not one of {VARIANTS}. Fix: use 'matlab' (MATLAB / "
                         "current BasicSR, the default) or 'basicsr_pre2021' (BasicSR before 2021-08)")
    problem = niqe_size_problem(img.shape[-2], img.shape[-1], crop_border)
    if problem:
        raise ValueError(f"NIQE: {problem}")
    y = rgb_to_y(img).cpu()
    if variant == "matlab":
        y = torch.round(y)  # BasicSR: "round is necessary for being consistent with MATLAB's result"
    if crop_border:
        y = y[:, crop_border:-crop_border, crop_border:-crop_border]
    mu_p, cov_p = params.mu.to(torch.float64), params.cov.to(torch.float64)
    window = params.window.to(torch.float64)
    out = torch.empty(y.shape[0], dtype=torch.float64)
    for i in range(y.shape[0]):
        feat = niqe_features(y[i], window, variant)
        mu_d = torch.nanmean(feat, dim=0)
        clean = feat[~torch.isnan(feat).any(dim=1)]
        cov_d = torch.cov(clean.T) if clean.shape[0] > 1 else torch.full_like(cov_p, float("nan"))
        d = mu_p - mu_d
        if torch.isfinite(cov_d).all() and torch.isfinite(d).all():
            out[i] = torch.sqrt(d @ torch.linalg.pinv((cov_p + cov_d) / 2) @ d)
        else:
            out[i] = float("nan")
    return out


# --------------------------------------------------------------------------- Ma and PI
def ma_score(img: Tensor, weights_path: str | Path | None = None, crop_border: int = PIRM_CROP_BORDER,
             device: str | torch.device | None = None) -> Tensor:
    """Ma et al. (NRQM) score via the optional ``pyiqa`` package, PIRM convention (Y, ``crop_border=4``).

    ``weights_path``: a local ``NRQM_model.mat``; ``None`` lets pyiqa fetch it into ``$TORCH_HOME/hub/pyiqa``.
    Raises :class:`MetricUnavailable` when pyiqa or the weights are missing (never returns a stand-in).
    """
    try:
        import pyiqa  # type: ignore[import-not-found]
    except ImportError as err:
        raise MetricUnavailable(
            f"the Ma et al. (NRQM) score needs the optional package pyiqa (pip install pyiqa) and its "
            f"NRQM_model.mat weights; import failed: {err}", metric="ma") from err
    kwargs: dict = {"crop_border": crop_border, "color_space": "ycbcr"}
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise MetricUnavailable(f"NRQM weights not found at '{weights_path}' (pyiqa NRQM_model.mat)",
                                    metric="ma")
        kwargs["pretrained_model_path"] = str(weights_path)
    try:
        metric = pyiqa.create_metric("nrqm", device=torch.device(device or img.device), **kwargs)
    except (OSError, RuntimeError, ValueError) as err:  # download impossible offline, bad file
        raise MetricUnavailable(f"pyiqa could not load the NRQM model ({err}); pre-place NRQM_model.mat under "
                                "$TORCH_HOME/hub/pyiqa or pass weights_path", metric="ma") from err
    with torch.no_grad():
        return metric(img).reshape(-1).detach().cpu().to(torch.float64)


def perceptual_index(niqe_value, ma_value):
    """PIRM-2018 perceptual index ``PI = ((10 - Ma) + NIQE) / 2`` (lower is better).

    Works on floats or tensors. A :class:`MetricUnavailable` passed for either term is re-raised, so PI
    is recorded as missing with that reason, never as a number.
    """
    for name, v in (("NIQE", niqe_value), ("Ma", ma_value)):
        if isinstance(v, MetricUnavailable):
            raise MetricUnavailable(f"PI needs {name}: {v.reason}", metric="pi")
    return 0.5 * ((10 - ma_value) + niqe_value)


def pi_score(img: Tensor, params: NIQEParams, ma_weights_path: str | Path | None = None) -> Tensor:
    """PI with the PIRM convention (Y channel, ``crop_border=4`` for NIQE and Ma). Raises MetricUnavailable."""
    try:
        ma = ma_score(img, ma_weights_path, crop_border=PIRM_CROP_BORDER)
    except MetricUnavailable as err:
        raise MetricUnavailable(f"PI needs Ma: {err.reason}", metric="pi") from err
    return perceptual_index(niqe(img, params, crop_border=PIRM_CROP_BORDER), ma)
