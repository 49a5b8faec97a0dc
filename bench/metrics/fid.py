"""FID and KID on torch-fidelity's Inception-v3 features.

* FID (Heusel et al., NeurIPS 2017): with Gaussian fits ``(μ_r, Σ_r)``, ``(μ_g, Σ_g)`` of the 2048-D pool3
  features, ``FID = ||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^{1/2})``.
* KID (Bińkowski et al., ICLR 2018): unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (xᵀy / d + 1)³``, averaged over random subsets (mean and std reported); subsets of 1000 images,
  or of ``N // 2`` when a set has at most 1000 (:func:`choose_kid_subset_size`), so the std is never a fake 0.

Feature extractor: ``torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3`` (the network
torchmetrics' ``FrechetInceptionDistance`` wraps), loaded from a local weights file, always - never an
implicit download. Obtain the file with :func:`inception_weights` (hash-pinned download/cache via
``bench.models.assets``). The extractor takes **uint8** (B,3,H,W) and resizes to 299x299 internally with
TF1-compatible bilinear interpolation.

8-bit pitfall: torchmetrics' ``normalize=True`` path converts with ``(imgs * 255).byte()``, which
*truncates* (0.999 -> 254). :func:`to_uint8` rounds, as the saved PNGs are rounded; use it for every
image fed to :class:`InceptionFeatures`.

Sample size: with N images the covariance has rank <= N - 1, so FID is strongly biased and noisy for
N < 2048 (LOL eval15 has 15 images). :func:`fid_from_features` warns and records the warning; report N,
prefer KID for small sets.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from bench.imageio import atomic_write_bytes

__all__ = ["INCEPTION_SHA256", "INCEPTION_URL", "INCEPTION_NAME", "inception_weights", "InceptionFeatures",
           "to_uint8", "feature_stats", "frechet_distance", "kid", "choose_kid_subset_size", "fid_from_features",
           "stats_cache_key",
           "reference_stats", "save_npz", "SmallSampleWarning", "MIN_FID_SAMPLES"]

INCEPTION_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
# 95,628,359 bytes. Full digest as published independently by several projects that pin this exact release
# file (and the identical pytorch-fid ``pt_inception-2015-12-05-6726825d.pth``); the ``6726825d`` in the
# name is torch.hub's sha256-prefix convention, which this value satisfies.
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: below this many images the 2048-D covariance is rank-deficient
MIN_FID_SAMPLES = 2048


def __getattr__(name: str):
    """``INCEPTION_ASSET`` is built on first access so this module imports without ``bench.models.assets``."""
    if name == "INCEPTION_ASSET":
        from bench.models.assets import Asset

        return Asset(name=INCEPTION_NAME, url=INCEPTION_URL, sha256=INCEPTION_SHA256,
                     override="python -m bench.report --inception-weights")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def inception_weights(path: str | Path | None = None, offline: bool | None = None) -> Path:
    """Verified local path of the Inception weights: ``path`` if given (hash-checked), else cache/download."""
    from bench.models.assets import fetch

    asset = __getattr__("INCEPTION_ASSET")
    if path is not None:
        asset = replace(asset, path=str(path))
    return fetch(asset, offline=offline)


class SmallSampleWarning(UserWarning):
    """FID computed from fewer than :data:`MIN_FID_SAMPLES` images."""


def to_uint8(x01: Tensor) -> Tensor:
    """[0,1] float -> uint8 by rounding (``round(255 x)``), not torchmetrics' truncating ``.byte()``."""
    return (x01.detach() * 255).round().clamp(0, 255).to(torch.uint8)


class InceptionFeatures:
    """2048-D pool3 features of torch-fidelity's Inception-v3, loaded from ``weights_path``.

    ``__call__(images_uint8)``: (B,3,H,W) uint8 -> (B,2048) float64 (CPU numpy-compatible tensor),
    evaluated in batches of ``batch_size``. ``weights_sha256`` (computed on first access) identifies the
    extractor in reference-statistics cache keys.
    """

    def __init__(self, weights_path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = Path(weights_path)
        if not self.weights_path.is_file():
            raise FileNotFoundError(
                f"Inception weights not found at '{self.weights_path}'. Fix: bench.metrics.fid.inception_weights() "
                f"downloads and verifies {INCEPTION_NAME} (sha256 {INCEPTION_SHA256}) from {INCEPTION_URL}; "
                "offline, place that file there or pass its path.")
        # torch-fidelity calls torch.load(weights_only=False): the project's safe loader refuses first
        # (AssetError naming the file and the fix) anything that is not a plain tensor dict
        from bench.models.assets import load_state_dict

        load_state_dict(self.weights_path)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(self.weights_path)
        ).to(self.device)
        self._sha: str | None = None

    @property
    def weights_sha256(self) -> str:
        if self._sha is None:
            from bench.models.assets import sha256_file  # the one file-hash helper

            self._sha = sha256_file(self.weights_path)
        return self._sha

    @torch.no_grad()
    def __call__(self, images_uint8: Tensor) -> Tensor:
        if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
            raise TypeError(f"expected (B,3,H,W) uint8 (use to_uint8), got {images_uint8.dtype} "
                            f"{tuple(images_uint8.shape)}")
        out = [self.model(images_uint8[s:s + self.batch_size].to(self.device))[0].to("cpu", torch.float64)
               for s in range(0, images_uint8.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, 2048, dtype=torch.float64)


# --------------------------------------------------------------------------- statistics
def _np64(x) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(np.float64)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (μ (D,), Σ (D, D)), float64, unbiased covariance (ddof = 1)."""
    f = _np64(feats)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N>=2, D) features, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``||μ1-μ2||² + Tr(Σ1) + Tr(Σ2) - 2 Tr((Σ1 Σ2)^{1/2})`` in float64.

    The trace term uses ``Tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(Σ1^{1/2} Σ2 Σ1^{1/2}))``: both factors are
    symmetric PSD, so the eigenvalues are real and non-negative (no complex parts from ``sqrtm`` to
    discard, and rank-deficient covariances from small N are handled: eigenvalues below the round-off
    tolerance count as 0). A tiny negative total from round-off is returned as 0.
    """
    mu1, mu2 = _np64(mu1).reshape(-1), _np64(mu2).reshape(-1)
    s1, s2 = _np64(sigma1), _np64(sigma2)
    if s1.shape != s2.shape or mu1.shape != mu2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    # eigenvalues at round-off level (rank-deficient Σ from N < D samples) are zero: sqrt would inflate
    # their ~eps noise to ~sqrt(eps) each (numpy matrix_rank's tolerance)
    tol = max(lam.max(initial=0.0), 0.0) * lam.size * np.finfo(np.float64).eps
    tr_covmean = np.sqrt(np.where(lam > tol, lam, 0.0)).sum()
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean), 0.0)


def frechet_distance_features(f1, f2) -> float:
    """FID between two feature sets; the same value as ``frechet_distance(*feature_stats(f1),
    *feature_stats(f2))`` but exact in O(N^2 D) when both sets have fewer rows than dimensions.

    With centred, scaled features A = (F1 - mu1)/sqrt(N1-1), B = (F2 - mu2)/sqrt(N2-1) the covariances are
    A^T A and B^T B, and the non-zero eigenvalues of Sigma1 Sigma2 are the squared singular values of
    A B^T (N1 x N2), so Tr((Sigma1 Sigma2)^{1/2}) = ||A B^T||_* (nuclear norm): no 2048 x 2048
    eigendecompositions for the small-N runs the harness mostly computes (LOL eval15, shards, smoke runs).
    """
    f1, f2 = _np64(f1), _np64(f2)
    (n1, d), n2 = f1.shape, f2.shape[0]
    if max(n1, n2) >= d or min(n1, n2) < 2:
        return frechet_distance(*feature_stats(f1), *feature_stats(f2))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a, b = (f1 - mu1) / np.sqrt(n1 - 1), (f2 - mu2) / np.sqrt(n2 - 1)
    sv = np.linalg.svd(a @ b.T, compute_uv=False)
    tol = max(sv.max(initial=0.0), 0.0) * max(n1, n2) * np.finfo(np.float64).eps
    tr_covmean = sv[sv > tol].sum()
    diff = mu1 - mu2
    return max(float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * tr_covmean), 0.0)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.sum() / (m * m))


def choose_kid_subset_size(n1: int, n2: int, requested: int = 1000) -> int | None:
    """The KID subset size used for sets of ``n1`` and ``n2`` images (None: KID is n/a).

    torch-fidelity's rule is ``requested`` (1000) and an error when a set is smaller. With ``N = min(n1, n2)
    <= requested`` the harness uses subsets of ``N // 2`` images instead (every subset = the full set would
    give the same MMD² each time and a std of exactly 0, as LOL eval15's 15 images did): the std over the
    subsets then measures the sampling spread. Fewer than 4 images (subsets of < 2, no unbiased MMD²) -> None.
    """
    n = min(int(n1), int(n2))
    if n > requested:
        return int(requested)
    return n // 2 if n // 2 >= 2 else None


def kid(feats1, feats2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over ``subsets`` random subsets of ``subset_size`` rows of each set.

    Unbiased MMD² with the polynomial kernel ``(xᵀy/d + 1)³`` (torch-fidelity / Bińkowski et al.);
    subsets drawn without replacement from a local ``numpy.random.default_rng(seed)``. ``subset_size`` must
    not exceed either set (choose it with :func:`choose_kid_subset_size`).
    """
    f1, f2 = _np64(feats1), _np64(feats2)
    m = int(subset_size)
    if m < 2 or m > min(f1.shape[0], f2.shape[0]):
        raise ValueError(f"KID subset_size={subset_size} must be in [2, min(N1, N2)] = [2, "
                         f"{min(f1.shape[0], f2.shape[0])}]; use choose_kid_subset_size() to choose it")
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_unbiased(f1[rng.choice(f1.shape[0], m, replace=False)],
                                    f2[rng.choice(f2.shape[0], m, replace=False)]) for _ in range(subsets)])
    return float(vals.mean()), float(vals.std())


def fid_from_features(real, fake, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """FID and KID between two (N, 2048) feature sets.

    Returns ``{fid, kid_mean, kid_std, kid_subset_size, kid_na, n_real, n_fake, warning}``; ``warning`` is the
    text of the :class:`SmallSampleWarning` (also emitted with ``warnings.warn``) when either set has < 2048
    images; ``kid_na`` is the reason KID is missing (NaN values) when the sets are too small for it.
    """
    fr, ff = _np64(real), _np64(fake)
    n_real, n_fake = int(fr.shape[0]), int(ff.shape[0])
    warning = None
    if min(n_real, n_fake) < MIN_FID_SAMPLES:
        warning = (f"FID is biased/noisy with N < {MIN_FID_SAMPLES} images (n_real={n_real}, n_fake={n_fake}; "
                   f"the covariance has rank <= N-1; LOL eval15 has 15): report N and prefer KID")
        warnings.warn(warning, SmallSampleWarning, stacklevel=2)
    fid = frechet_distance_features(fr, ff)
    m = choose_kid_subset_size(n_real, n_fake, kid_subset_size)
    if m is None:
        kid_mean = kid_std = float("nan")
        kid_na = f"KID needs at least 4 images (subsets of N // 2 >= 2), have {min(n_real, n_fake)}"
    else:
        kid_mean, kid_std = kid(fr, ff, subsets=kid_subsets, subset_size=m, seed=seed)
        kid_na = ""
    return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "kid_subset_size": m, "kid_na": kid_na,
            "n_real": n_real, "n_fake": n_fake, "warning": warning}


# --------------------------------------------------------------------------- reference-statistics cache
def stats_cache_key(manifest_sha256: str, image_size: int | tuple[int, int], extractor_sha256: str) -> str:
    """File-name-safe key for (dataset manifest hash, image size, extractor weights sha256)."""
    size = list(image_size) if isinstance(image_size, (tuple, list)) else [int(image_size)] * 2
    blob = json.dumps({"manifest": manifest_sha256, "size": size, "extractor": extractor_sha256}, sort_keys=True)
    return f"fidref-{size[0]}x{size[1]}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def reference_stats(features_fn: Callable[[], Tensor | np.ndarray], cache_key: str, cache_dir: Path) -> dict:
    """Reference ``{mu, sigma, features, cached}``: loaded from ``cache_dir/<cache_key>.npz`` or computed
    with ``features_fn()`` (-> (N, D) features) and written atomically (:func:`save_npz`).

    Build ``cache_key`` with :func:`stats_cache_key` so a different dataset, size or extractor never hits a
    stale entry. Features are kept for KID.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", cache_key):
        raise ValueError(f"cache_key must be file-name safe, got {cache_key!r}")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {"mu": z["mu"], "sigma": z["sigma"], "features": z["features"], "cached": True}
    feats = _np64(features_fn())
    mu, sigma = feature_stats(feats)
    save_npz(path, {"mu": mu, "sigma": sigma, "features": feats})
    return {"mu": mu, "sigma": sigma, "features": feats, "cached": False}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` of ``arrays`` to ``path`` through :func:`bench.imageio.atomic_write_bytes` (temp file +
    ``os.replace``, readable by others: the caches are shared)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())
