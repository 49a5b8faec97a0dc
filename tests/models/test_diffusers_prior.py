"""``model.kind: diffusers``: a tiny random UNet2DModel + DDPMScheduler saved with save_pretrained loads as a
DiffusionPrior on its own schedule (eps equal to the UNet's, float64 betas, variance from variance_type,
v / x0 predictions converted), DDRM and DPS run on it through the Method API and the CLI, and a missing
hub model offline is a clear AssetError."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench import seeding
from bench.diffusion import alphas_cumprod, make_betas
from bench.methods.ddrm import DDRM
from bench.methods.dps import DPS
from bench.models import prior as prior_mod
from bench.models.assets import AssetError
from bench.models.prior import load_prior
from tests.conftest import CONF_DIR, compose, run_dirs
from tests.methods.test_ddrm import task


def tiny_unet(out_channels=3, seed=0):
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=16, in_channels=3, out_channels=out_channels, layers_per_block=1,
                           block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)


def save(directory, subfolders=False, out_channels=3, **sched):
    from diffusers import DDPMScheduler

    unet = tiny_unet(out_channels)
    unet.save_pretrained(directory / "unet" if subfolders else directory)
    DDPMScheduler(**sched).save_pretrained(directory / "scheduler" if subfolders else directory)
    return unet.eval()


def cfg(directory, **kw):
    return {"name": "tiny_ddpm", "kind": "diffusers", "image_size": 16, "source": None,
            "local_dir": str(directory), "diffusion": {"steps": 1000, "variance": None}, **kw}


@pytest.fixture
def fresh(isolated_prior_cache):
    yield


@pytest.mark.parametrize("subfolders", [False, True])
def test_loads_as_an_eps_prior_on_its_own_schedule(tmp_path, fresh, subfolders):
    unet = save(tmp_path, subfolders, variance_type="fixed_small", beta_start=2e-4, beta_end=0.03)
    prior = load_prior(cfg(tmp_path), "cpu")
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, t), unet(x, t).sample, rtol=0, atol=1e-5)
    assert prior.betas.dtype == torch.float64
    torch.testing.assert_close(prior.betas, make_betas("linear", 1000, 2e-4, 0.03), rtol=0, atol=0)
    assert prior.variance == "fixed_small" and not prior.learn_sigma and prior.image_size == 16
    assert prior.info["kind"] == "diffusers" and prior.info["asset"]["origin"].startswith("local:")
    assert not any(p.requires_grad for p in prior.net.parameters())


def test_variance_and_prediction_types(tmp_path, fresh):
    """fixed_large maps through; learned_range needs 6 output channels (returned as the variance values);
    v_prediction is converted to eps = sqrt(abar) v + sqrt(1 - abar) x; learned (raw) is rejected."""
    save(tmp_path / "large", variance_type="fixed_large")
    assert load_prior(cfg(tmp_path / "large"), "cpu").variance == "fixed_large"
    save(tmp_path / "lr", out_channels=6, variance_type="learned_range")
    p = load_prior(cfg(tmp_path / "lr"), "cpu")
    eps, v = p.model_output(torch.randn(1, 3, 16, 16), torch.tensor([5]))
    assert p.variance == "learned_range" and p.learn_sigma and v.shape == eps.shape
    unet = save(tmp_path / "v", prediction_type="v_prediction")
    p = load_prior(cfg(tmp_path / "v"), "cpu")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    a = alphas_cumprod(make_betas("linear", 1000))[t].float().view(-1, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(p.eps(x, t), a.sqrt() * unet(x, t).sample + (1 - a).sqrt() * x, rtol=0, atol=1e-5)
    save(tmp_path / "raw", variance_type="learned")
    with pytest.raises(AssetError, match="variance_type='learned'"):
        load_prior(cfg(tmp_path / "raw"), "cpu")
    with pytest.raises(ValueError, match="model.image_size=16"):
        load_prior(cfg(tmp_path / "large", image_size=32), "cpu")


def test_missing_files_are_clear_errors(tmp_path, fresh, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetError, match="lacks .*config.json"):
        load_prior(cfg(tmp_path / "empty"), "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    hub = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "ddpm_celebahq256.yaml"))
    with pytest.raises(AssetError) as err:
        load_prior(hub, "cpu")
    msg = str(err.value)
    assert "google/ddpm-celebahq-256" in msg and "downloads are off" in msg and "hf download" in msg
    assert "model.local_dir" in msg


def test_ddrm_and_dps_run_on_it(tmp_path, fresh):
    save(tmp_path, variance_type="fixed_small")
    deg = task("sr4").build(16)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ids = ["a", "b"]
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    for method in (DDRM(cfg(tmp_path), steps=4), DPS(cfg(tmp_path), steps=4)):
        method.setup(torch.device("cpu"))
        out = method.restore(y, deg, seeding.make_generators(0, ids, "restore"))
        assert out.shape == x.shape and torch.isfinite(out).all() and method.last_nfe == 4
    assert method.describe()["variance"] == "fixed_small"


@pytest.mark.slow
def test_cli_runs_dps_on_a_saved_diffusers_model(tmp_path, fresh):
    save(tmp_path / "m", variance_type="fixed_small")
    from bench.cli import run_from_config

    run_from_config(compose("method=dps", "task=sr4", "steps=2", "model=ddpm_celebahq256",
                            f"model.local_dir={tmp_path / 'm'}", "model.image_size=16", "dataset.image_size=16",
                            "dataset.limit=1", f"run.results_root={tmp_path / 'r'}", "run.progress=false"))
    (run,) = run_dirs(tmp_path / "r")
    import json

    man = json.loads((run / "manifest.json").read_text())
    assert man["method"]["model"]["kind"] == "diffusers" and man["method"]["backprop_through_prior"] is True
    assert len(list((run / "images").glob("*.png"))) == 1
    prior_mod.clear_cache()
