"""FID / KID: closed forms, independent formulas, the reference cache and the real loading path."""

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from tests.conftest import save_random_inception

from bench.metrics import fid as fidmod
from bench.models.assets import AssetError
from bench.metrics.fid import (
    INCEPTION_NAME, INCEPTION_SHA256, InceptionFeatures, SmallSampleWarning, feature_stats, fid_from_features,
    frechet_distance, kid, reference_stats, stats_cache_key, to_uint8,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _spd(d, rng, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


# ----------------------------------------------------------------------------- (a) Frechet distance
def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-12)


def test_frechet_random_spd_vs_sqrtm():
    rng = np.random.default_rng(1)
    for d in (5, 40):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(d, rng), _spd(d, rng)
        covmean = scipy.linalg.sqrtm(s1 @ s2)  # independent: principal square root of the product
        want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
        got = frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(want, rel=1e-9)
        assert got == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)  # symmetric
        from torch_fidelity.metric_fid import fid_statistics_to_metric  # a third implementation

        tf = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
        assert got == pytest.approx(tf["frechet_inception_distance"], rel=1e-9)


def test_frechet_identical_and_rank_deficient():
    rng = np.random.default_rng(2)
    s = _spd(30, rng)
    mu = rng.standard_normal(30)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    f = rng.standard_normal((8, 200))  # N << D: covariance of rank 7, as for LOL eval15
    m, c = feature_stats(f)
    assert frechet_distance(m, c, m, c) == pytest.approx(0.0, abs=1e-8 * np.trace(c))
    g = f + 0.3
    assert frechet_distance(m, c, *feature_stats(g)) == pytest.approx(0.09 * 200, rel=1e-9)  # pure mean shift


# ----------------------------------------------------------------------------- (b) KID
def test_kid_identical_shifted_and_torch_fidelity():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2000, 64))
    same, _ = kid(a, a.copy(), subsets=10, subset_size=1000)
    fresh, _ = kid(a, rng.standard_normal((2000, 64)), subsets=10, subset_size=1000)  # same distribution
    shifted, _ = kid(a, a + 0.5, subsets=10, subset_size=1000)
    # same set: subsets overlap, a small negative bias (~-0.007); shift 0.5 per dim: ~0.97
    assert abs(same) < 0.02 * shifted and abs(fresh) < 0.02 * shifted and shifted > 0.5
    # subset = whole set: MMD^2 is permutation invariant, so sampling drops out -> torch-fidelity's value
    from torch_fidelity.metric_kid import kid_features_to_metric

    b = rng.standard_normal((60, 32)) + 0.2
    ours, std = kid(a[:60, :32], b, subsets=3, subset_size=60)
    tf = kid_features_to_metric(torch.from_numpy(a[:60, :32]), torch.from_numpy(b), kid_subsets=3,
                                kid_subset_size=60, verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=0)
    assert ours == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(0, abs=1e-12)


def test_kid_subsets_smaller_than_small_sets():
    """N <= 1000 (LOL eval15: 15): subsets of N // 2, so the std over subsets is the sampling spread, not 0."""
    from bench.metrics.fid import choose_kid_subset_size as kid_subset_size

    assert kid_subset_size(5000, 2000) == 1000 and kid_subset_size(1001, 1200) == 1000
    assert kid_subset_size(1000, 1000) == 500 and kid_subset_size(15, 15) == 7 and kid_subset_size(4, 9) == 2
    assert kid_subset_size(3, 100) is None
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((15, 16)), rng.standard_normal((15, 16)) + 0.3
    with pytest.warns(SmallSampleWarning):
        out = fid_from_features(a, b, kid_subsets=50)
    assert out["kid_subset_size"] == 7 and out["kid_std"] > 0 and out["kid_na"] == ""
    with pytest.warns(SmallSampleWarning):
        tiny = fid_from_features(a[:3], b[:3], kid_subsets=5)
    assert np.isnan(tiny["kid_mean"]) and "at least 4 images" in tiny["kid_na"] and np.isfinite(tiny["fid"])
    with pytest.raises(ValueError, match="subset_size=16"):
        kid(a, b, subset_size=16)


def test_kid_seeded_and_no_global_rng():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((50, 8)), rng.standard_normal((40, 8))
    np_state, t_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    assert kid(a, b, subsets=5, subset_size=20, seed=7) == kid(a, b, subsets=5, subset_size=20, seed=7)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), t_state)


# ----------------------------------------------------------------------------- conversions and reports
def test_to_uint8_rounds_not_truncates():
    x = torch.tensor([0.0, 0.999, 254.6 / 255, 0.5 / 255 + 1e-6, 1.0, 1.2, -0.1])
    assert to_uint8(x).tolist() == [0, 255, 255, 1, 255, 255, 0]
    assert (x.clamp(0, 1) * 255).byte().tolist()[1] == 254  # the torchmetrics normalize=True pitfall


def test_small_sample_warning_and_report():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((15, 64)), rng.standard_normal((15, 64)) + 0.1
    with pytest.warns(SmallSampleWarning, match="N < 2048"):
        out = fid_from_features(a, b, kid_subsets=5)
    assert set(out) == {"fid", "kid_mean", "kid_std", "kid_subset_size", "kid_na", "n_real", "n_fake", "warning"}
    assert out["n_real"] == out["n_fake"] == 15 and "LOL eval15" in out["warning"]
    assert np.isfinite(out["fid"]) and out["fid"] > 0


def test_reference_stats_cache(tmp_path):
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((20, 16))
    calls = []

    def features_fn():
        calls.append(1)
        return torch.from_numpy(feats)

    key = stats_cache_key("manifest-abc", 256, "6726825d")
    assert key != stats_cache_key("manifest-abc", 128, "6726825d") != stats_cache_key("other", 256, "6726825d")
    assert key != stats_cache_key("manifest-abc", 256, "deadbeef")
    first = reference_stats(features_fn, key, tmp_path / "cache")
    second = reference_stats(features_fn, key, tmp_path / "cache")
    assert len(calls) == 1 and not first["cached"] and second["cached"]
    np.testing.assert_array_equal(first["sigma"], second["sigma"])
    np.testing.assert_array_equal(second["features"], feats)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.npz"]  # no temp file left
    with pytest.raises(ValueError):
        reference_stats(features_fn, "../escape", tmp_path)


def test_inception_asset_pin():
    assets = pytest.importorskip("bench.models.assets")
    a = fidmod.INCEPTION_ASSET
    assert isinstance(a, assets.Asset) and a.name == INCEPTION_NAME and a.sha256 == INCEPTION_SHA256
    assert a.sha256.startswith("6726825d") and a.url.endswith(INCEPTION_NAME)


def test_missing_weights_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        InceptionFeatures(tmp_path / "none.pth")


def test_weights_that_are_not_a_plain_state_dict_are_refused_before_torch_fidelity(tmp_path):
    """torch-fidelity would torch.load(weights_only=False) the file; we refuse first, naming it."""
    bad = tmp_path / INCEPTION_NAME
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1)}, bad)
    with pytest.raises(AssetError, match="argparse.Namespace") as ei:
        InceptionFeatures(bad)
    assert str(bad) in str(ei.value)
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(AssetError, match="damaged or not a torch checkpoint"):
        InceptionFeatures(bad)


# ----------------------------------------------------------------------------- (c) end to end, real images
@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 architecture with random (variance-preserving) weights, saved with
    torch.save(state_dict) like the official file (566 tensors)."""
    path = save_random_inception(tmp_path_factory.mktemp("inception"), INCEPTION_NAME)
    assert len(torch.load(path, weights_only=True)) == 566
    return path


@pytest.fixture(scope="module")
def real_images():
    folder = DATA / "imagenet-sample-96"
    files = sorted(folder.glob("*.png"))[:: 125][:8] if folder.is_dir() else []
    if len(files) < 8:
        pytest.skip(f"real images not found in {folder} (see shared/data/README.md)")
    from PIL import Image

    arr = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2)


def _blur(x, sigma=2.0):
    t = torch.arange(13, dtype=torch.float32) - 6
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum())
    x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="reflect"), k.view(1, 1, 1, 13).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, 6, 6), mode="reflect"), k.view(1, 1, 13, 1).repeat(3, 1, 1, 1), groups=3)


def test_end_to_end_fid_real_images(random_inception, real_images, tmp_path, monkeypatch):
    ext = InceptionFeatures(random_inception, device="cpu", batch_size=8)
    assert ext.weights_sha256 == hashlib.sha256(random_inception.read_bytes()).hexdigest()
    sharp = ext(to_uint8(real_images))
    blurred = ext(to_uint8(_blur(real_images)))
    assert sharp.shape == (8, 2048) and sharp.dtype == torch.float64 and torch.isfinite(sharp).all()
    with pytest.raises(TypeError, match="uint8"):
        ext(real_images)

    with pytest.warns(SmallSampleWarning):
        same = fid_from_features(sharp, sharp, kid_subsets=10)
    with pytest.warns(SmallSampleWarning):
        diff = fid_from_features(sharp, blurred, kid_subsets=10)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6 * diff["fid"])
    assert np.isfinite(diff["fid"]) and diff["fid"] > 0 and diff["kid_mean"] > same["kid_mean"]
    assert diff["warning"] is not None and diff["n_real"] == 8

    # same features through the hash-pinned asset path (bench.models.assets.fetch with a local override)
    assets = pytest.importorskip("bench.models.assets")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    sha = hashlib.sha256(random_inception.read_bytes()).hexdigest()
    path = assets.fetch(assets.Asset(name=INCEPTION_NAME, url=None, sha256=sha, path=str(random_inception)),
                        offline=True)
    torch.testing.assert_close(InceptionFeatures(path)(to_uint8(real_images[:2])), sharp[:2])
    with pytest.raises(assets.AssetError):  # the official pin rejects these random weights
        fidmod.inception_weights(random_inception, offline=True)


def test_low_rank_fid_equals_the_covariance_route():
    """The small-N shortcut (nuclear norm of A B^T) is the same number as the eigen route."""
    from bench.metrics.fid import feature_stats, frechet_distance, frechet_distance_features

    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(20, 64))
    f2 = 0.7 * rng.normal(size=(30, 64)) + 0.3
    want = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert frechet_distance_features(f1, f2) == pytest.approx(want, rel=1e-7)
    assert frechet_distance_features(f1, f1) == pytest.approx(0.0, abs=1e-9)
