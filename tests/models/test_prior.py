"""bench.models.prior.load_prior: random init, strict checkpoint loading, verification, caching."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.diffusion import make_betas
from bench.models.adm_unet import create_model, random_init_
from bench.models.assets import AssetError, sha256_file
from bench.models.prior import DiffusionPrior, load_prior

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("isolated_prior_cache")


@pytest.fixture
def tiny():
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "adm_tiny.yaml"))


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 900])


def test_random_init(tiny):
    p = load_prior(tiny, "cpu")
    assert isinstance(p, DiffusionPrior)
    assert p.info["meaningful"] is False and p.info["asset"] is None and p.info["init_seed"] == 0
    assert p.info["model"] == "adm_tiny" and p.info["parameters"] == sum(x.numel() for x in p.net.parameters())
    assert not p.net.training and not any(x.requires_grad for x in p.net.parameters())
    assert p.image_size == 32 and p.learn_sigma is True
    assert p.betas.dtype == torch.float64 and torch.equal(p.betas, make_betas("linear", 1000))
    x, t = _inputs()
    with torch.no_grad():
        eps, v = p.model_output(x, t)
        assert eps.shape == v.shape == x.shape and torch.equal(p.eps(x, t), eps)
    ref = random_init_(create_model(**tiny["arch"]), seed=0).eval()
    with torch.no_grad():
        torch.testing.assert_close(eps, ref(x, t)[:, :3], rtol=0, atol=0)


def test_cache_reuses_per_config(tiny):
    a = load_prior(tiny, "cpu")
    assert load_prior(copy.deepcopy(tiny), torch.device("cpu")) is a
    assert load_prior(OmegaConf.create(tiny), "cpu") is a  # a DictConfig works too
    other = {**tiny, "init_seed": 1}
    assert load_prior(other, "cpu") is not a


def _checkpoint(tiny, tmp_path):
    net = random_init_(create_model(**tiny["arch"]), seed=123).eval()
    path = tmp_path / "tiny_adm.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_local_checkpoint_strict_load(tiny, tmp_path):
    net, path = _checkpoint(tiny, tmp_path)
    model = {**tiny, "asset": {"name": "tiny_adm.pt", "url": None, "sha256": sha256_file(path), "path": str(path)}}
    p = load_prior(model, "cpu")
    x, t = _inputs()
    with torch.no_grad():
        assert torch.equal(p.net(x, t), net(x, t))
    assert p.info["meaningful"] is True and p.info["asset"]["sha256"] == sha256_file(path)
    assert p.info["asset"]["source"] == "path" and p.info["asset"]["verified"] is True


def test_wrong_sha_is_an_asset_error(tiny, tmp_path):
    _, path = _checkpoint(tiny, tmp_path)
    model = {**tiny, "asset": {"name": "tiny_adm.pt", "url": None, "sha256": "0" * 64, "path": str(path)}}
    with pytest.raises(AssetError, match="sha256"):
        load_prior(model, "cpu")


def test_architecture_mismatch_is_an_asset_error(tiny, tmp_path):
    _, path = _checkpoint(tiny, tmp_path)
    arch = {**tiny["arch"], "num_channels": 64}
    model = {**tiny, "arch": arch, "asset": {"name": "tiny_adm.pt", "sha256": sha256_file(path), "path": str(path)}}
    with pytest.raises(AssetError, match="does not match"):
        load_prior(model, "cpu")


def test_offline_missing_asset_says_where_to_place_it(tiny, tmp_path):
    model = {**tiny, "asset": {"name": "absent.pt", "url": "https://example.invalid/absent.pt", "sha256": "1" * 64}}
    with pytest.raises(AssetError, match="place at"):
        load_prior(model, "cpu")


def test_unknown_kind_lists_allowed(tiny):
    with pytest.raises(ValueError, match=r"allowed kinds: adm"):
        load_prior({**tiny, "kind": "unet2d"}, "cpu")


def test_learn_sigma_mismatch(tiny):
    bad = {**tiny, "diffusion": {**tiny["diffusion"], "learn_sigma": False}}
    with pytest.raises(ValueError, match="learn_sigma"):
        load_prior(bad, "cpu")


def test_imagenet_config_names_its_checkpoint():
    """The real config fails offline with the download hint (no 2 GB download, no build of the net)."""
    model = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "adm_imagenet256.yaml"))
    with pytest.raises(AssetError, match="256x256_diffusion_uncond.pt"):
        load_prior(model, "cpu")


def test_variance_rule_follows_the_config(tiny):
    assert load_prior(tiny, "cpu").variance == "learned_range"
    fixed = copy.deepcopy(tiny)
    fixed["arch"]["learn_sigma"] = fixed["diffusion"]["learn_sigma"] = False
    fixed["diffusion"].pop("variance")
    p = load_prior(fixed, "cpu")  # guided-diffusion's default without learned sigma
    assert p.variance == "fixed_large" and p.info["variance"] == "fixed_large"
    fixed["diffusion"]["variance"] = "fixed_small"
    assert load_prior(fixed, "cpu").variance == "fixed_small"
    for bad in ("learned_range", "large"):
        fixed["diffusion"]["variance"] = bad
        with pytest.raises(ValueError, match="diffusion.variance"):
            load_prior(fixed, "cpu")
