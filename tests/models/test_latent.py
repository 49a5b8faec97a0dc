"""The latent prior kinds (bench/models/latent.py) on tiny random parts written here with save_pretrained: loading
from local_dir (ldm: UNet2DModel + VQModel; sd: UNet2DConditionModel + AutoencoderKL + CLIP), eps equal to diffusers'
own calls (incl. classifier-free guidance with the pipeline's own prompt encoding), encode / decode, the DDIM step
against diffusers' DDIMScheduler, counted calls, and the refusals. Outputs are NOT meaningful."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from bench.diffusion import ddim_step
from bench.models.assets import AssetError
from bench.models.latent import LatentPrior, clear_cache, load_latent_prior

ROOT = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((ROOT / "conf/model/latent_tiny.yaml").read_text())


def cfg(**kw) -> dict:
    return {**TINY, **kw}


@pytest.fixture(scope="module")
def tiny() -> LatentPrior:
    return load_latent_prior(TINY, "cpu")


@pytest.fixture(scope="module")
def ldm_dir(tiny, tmp_path_factory) -> Path:
    from diffusers import DDIMScheduler

    root = tmp_path_factory.mktemp("ldm")
    tiny.unet.save_pretrained(root / "unet")
    tiny.vae.save_pretrained(root / "vqvae")
    DDIMScheduler.from_config(tiny.scheduler_config).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[sd]')")
    from tests.tiny_sd import tiny_sd

    return tiny_sd(tmp_path_factory.mktemp("sd"), 4)


def sd_cfg(root, **kw) -> dict:
    return {"name": "sd_tiny", "kind": "sd", "image_size": 32, "local_dir": str(root), **kw}


def test_ldm_local_dir_round_trip_and_eps_is_the_unet(tiny, ldm_dir):
    loaded = load_latent_prior({"name": "ldm_local", "kind": "ldm", "image_size": 64, "local_dir": str(ldm_dir)}, "cpu")
    assert loaded.info["asset"]["origin"].startswith("local:") and loaded.info["autoencoder"] == "VQModel"
    for a, b in zip(tiny.unet.state_dict().values(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(loaded.betas, tiny.betas, rtol=0, atol=0)
    z = torch.randn(2, *loaded.latent_shape(64), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(loaded.eps(z, t), loaded.unet(z, t).sample)
        assert torch.equal(loaded.eps(z, 7), loaded.unet(z, torch.tensor([7, 7])).sample)
        # decode = VQModel.decode(z / s) (quantised, as diffusers' LDMPipeline), encode = pre-quantisation latents * s
        x = loaded.decode(z)
        assert x.shape == (2, 3, 64, 64)
        torch.testing.assert_close(x, loaded.vae.decode(z / loaded.scaling_factor).sample)
        pic = torch.rand(2, 3, 64, 64) * 2 - 1
        torch.testing.assert_close(loaded.encode(pic), loaded.vae.encode(pic).latents * loaded.scaling_factor)
    # CompVis' LDM betas: linear in sqrt(beta) from 0.0015 to 0.0195
    assert loaded.betas[0].item() == pytest.approx(0.0015) and loaded.betas[-1].item() == pytest.approx(0.0195)


def test_decode_is_differentiable_and_calls_are_counted(tiny):
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    tiny.counter.reset()
    (g,) = torch.autograd.grad(tiny.decode(tiny.eps(z, 500)).square().sum(), z)
    assert g.abs().sum() > 0
    tiny.encode(torch.zeros(3, 3, 64, 64))
    assert tiny.counter.rows == {"unet": 1, "encoder": 3, "decoder": 1}


def test_geometry(tiny):
    assert (tiny.factor, tiny.latent_channels, tiny.multiple) == (4, 3, 8)
    assert tiny.latent_shape(64, 32) == (3, 16, 8)
    with pytest.raises(ValueError, match=r"multiples of 8.*Fix: dataset.image_size=64"):
        tiny.latent_shape(60)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(tiny, eta):
    """z_{t-1} of bench.diffusion.ddim_step with prior.timesteps / abar_prev == DDIMScheduler.step (max abs diff)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(tiny.scheduler_config)
    sched.set_timesteps(10)
    ts = tiny.timesteps(10)
    assert ts == [int(t) for t in sched.timesteps]
    gen = torch.Generator().manual_seed(2)
    worst = 0.0
    for i, t in enumerate(ts):
        z, eps, xi = (torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64) for _ in range(3))
        ref = sched.step(eps, t, z, eta=eta, variance_noise=xi).prev_sample
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        ours, _ = ddim_step(z, eps, tiny.abar[t].item(), tiny.abar_prev(t_prev), eta, xi)
        worst = max(worst, (ours - ref).abs().max().item())
    print(f"max |ddim_step - DDIMScheduler.step| over 10 steps (eta={eta}): {worst:.2e}")
    assert worst < 1e-5  # diffusers keeps alphas_cumprod in float32


def test_sd_eps_equals_diffusers_with_and_without_guidance(sd_dir):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    plain = load_latent_prior(sd_cfg(sd_dir, prompt="!"), "cpu")
    guided = load_latent_prior(sd_cfg(sd_dir, prompt="!", negative_prompt="", guidance_scale=3.0), "cpu")
    assert plain.latent_shape(32) == (4, 16, 16) and plain.factor == 2
    assert plain.scaling_factor == pytest.approx(0.18215)
    pipe = StableDiffusionPipeline(vae=plain.vae, text_encoder=guided_text_encoder(sd_dir), tokenizer=tokenizer(sd_dir),
                                   unet=plain.unet, scheduler=DDIMScheduler.from_config(plain.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    cond, uncond = pipe.encode_prompt("!", "cpu", 1, True, "")
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([999, 999])
    with torch.no_grad():
        e_c = plain.unet(z, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        e_u = plain.unet(z, t, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
        torch.testing.assert_close(plain.eps(z, 999), e_c)
        guided.counter.reset()
        torch.testing.assert_close(guided.eps(z, 999), e_u + 3.0 * (e_c - e_u))
    assert guided.counter.per_image(2)["unet"] == 2  # a guided call is 2 UNet rows per image
    with torch.no_grad():
        pic = torch.rand(1, 3, 32, 32) * 2 - 1
        torch.testing.assert_close(plain.encode(pic), plain.vae.encode(pic).latent_dist.mode() * 0.18215)
        assert plain.decode(plain.encode(pic)).shape == (1, 3, 32, 32)


def guided_text_encoder(root):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(root / "text_encoder").eval()


def tokenizer(root):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(root / "tokenizer")


def test_sd_refuses_an_inpainting_unet(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed")
    from tests.tiny_sd import tiny_sd

    with pytest.raises(AssetError, match="9-channel UNet"):
        load_latent_prior(sd_cfg(tiny_sd(tmp_path, 9)), "cpu")


def test_refusals(tmp_path):
    clear_cache()
    with pytest.raises(ValueError, match=r"kind='adm' is not a latent prior kind; allowed: ldm, sd"):
        load_latent_prior({"name": "x", "kind": "adm", "image_size": 32}, "cpu")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['promt \(did you mean prompt\?\)'\]"):
        load_latent_prior(cfg(promt="a face"), "cpu")
    with pytest.raises(ValueError, match="takes no prompt"):
        load_latent_prior(cfg(prompt="a face"), "cpu")
    with pytest.raises(AssetError, match=r"model.local_dir=.*missing subfolder"):
        load_latent_prior(cfg(local_dir=str(tmp_path), arch=None), "cpu")
    with pytest.raises(AssetError, match=r"no pinned revision(.|\n)*model.local_dir"):
        load_latent_prior(yaml.safe_load((ROOT / "conf/model/ldm_celebahq256.yaml").read_text()), "cpu")
    with pytest.raises(ValueError, match="40-hex"):
        load_latent_prior({**yaml.safe_load((ROOT / "conf/model/sd15.yaml").read_text()), "revision": "main"}, "cpu")
    with pytest.raises(ValueError, match="model.diffusion.steps=1000"):
        load_latent_prior(cfg(diffusion={"steps": 500}), "cpu")


def test_pixel_solvers_refuse_a_latent_prior():
    from bench.methods.dps import DPS
    from bench.methods.gdp import GDP
    from bench.models.prior import load_prior

    with pytest.raises(ValueError, match=r"dps is a pixel-space solver.*latent.*Fix: a latent solver"):
        DPS(model=TINY)
    with pytest.raises(ValueError, match="gdp is a pixel-space solver"):
        GDP(model=TINY)
    with pytest.raises(ValueError, match="is a latent diffusion prior"):
        load_prior(TINY, "cpu")
