"""The embedded-prior trainers (bench/train/adm.py, bench/train/ldm.py): a few CPU steps on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.train.adm import ADMTrainConfig, ddpm_loss, train_adm
from bench.train.common import CONF_DIR, random_crops, step_generator, train_loop
from tests.conftest import write_smooth_images

TINY_ARCH = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                 num_head_channels=32, learn_sigma=False, use_scale_shift_norm=True)
#: a tiny diffusers VQModel (32 px -> 8x8 latents) and the latent SR UNet on it (bench/train/ldm.py)
TINY_VQ = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
               up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[8, 16, 16], layers_per_block=1,
               latent_channels=3, num_vq_embeddings=32, vq_embed_dim=3, norm_num_groups=4, sample_size=32)
TINY_UNET = dict(sample_size=8, in_channels=6, out_channels=3, layers_per_block=1, block_out_channels=[16, 32],
                 down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
                 norm_num_groups=8, attention_head_dim=8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six smooth 40x40 RGB images (seeded), enough for crops of 32."""
    return write_smooth_images(tmp_path_factory.mktemp("train_images"))


def test_random_crops_match_a_per_crop_loop():
    """The one-gather crop (used on the GPU) equals slicing each crop and flipping it, draw for draw."""
    imgs = torch.randint(0, 256, (5, 3, 11, 13), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    g1, g2 = step_generator(3, 7), step_generator(3, 7)
    got = random_crops(imgs, 64, 6, g1)
    idx, top, left = (torch.randint(0, 5, (64,), generator=g2), torch.randint(0, 6, (64,), generator=g2),
                      torch.randint(0, 8, (64,), generator=g2))
    flip = torch.rand(64, generator=g2) < 0.5
    ref = torch.stack([imgs[i, :, a:a + 6, b:b + 6] for i, a, b in zip(idx, top, left)]).float()
    ref[flip] = ref[flip].flip(-1)
    assert 0 < int(flip.sum()) < 64  # both branches are exercised
    torch.testing.assert_close(got, ref / 127.5 - 1.0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="larger than the training images"):
        random_crops(imgs, 2, 12, g1)


def test_train_loop_reads_losses_in_chunks_and_never_saves_a_diverged_state():
    losses, saved = [], []
    values = [1.0, 0.5, 0.25, 0.125, 0.0625]
    step = train_loop(lambda s: torch.tensor(values[s]), 0, 5, losses=losses, save=saved.append, ckpt_every=2,
                      max_minutes=None, progress=False, desc="t", sync_every=3)
    assert step == 5 and losses == values and saved == [2, 4, 5]  # checkpoints see every loss so far

    losses, saved = [], []
    bad = [1.0, 2.0, float("nan"), 3.0]
    with pytest.raises(FloatingPointError, match="nan at step 2"):
        train_loop(lambda s: torch.tensor(bad[s]), 0, 4, losses=losses, save=saved.append, ckpt_every=3,
                   max_minutes=None, progress=False, desc="t", sync_every=10)
    assert saved == []  # the NaN was found at the flush before the step-3 checkpoint


def adm_cfg(tmp_path, images, **kw) -> ADMTrainConfig:
    base = dict(name="t_adm", arch=TINY_ARCH, data_root=str(images), steps=4, batch_size=4, lr=2e-3, warmup=1,
                ckpt_dir=str(tmp_path / "ckpt"), ckpt_every=2, priors_dir=str(tmp_path / "priors"),
                model_conf_dir=str(tmp_path / "conf"), progress=False, device="cpu")
    return ADMTrainConfig(**{**base, **kw})


def test_ddpm_loss_decreases_on_a_fixed_batch(images):
    from bench.diffusion import alphas_cumprod, linear_betas
    from bench.models.adm_unet import create_model
    from bench.train.common import load_images

    imgs, _ = load_images(images)
    g = step_generator(0, 0)
    x0 = random_crops(imgs, 4, 32, g)
    assert x0.shape == (4, 3, 32, 32) and -1 <= x0.min() and x0.max() <= 1
    t, eps = torch.randint(0, 1000, (4,), generator=g), torch.randn(x0.shape, generator=g)
    abar = alphas_cumprod(linear_betas().float())
    torch.manual_seed(0)
    net = create_model(**TINY_ARCH)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    first = ddpm_loss(net, x0, t, eps, abar).item()
    for _ in range(12):
        loss = ddpm_loss(net, x0, t, eps, abar)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ddpm_loss(net, x0, t, eps, abar).item() < 0.8 * first


def test_adm_resume_is_exact_and_export_loads_strictly(tmp_path, images):
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from bench.models.adm_unet import create_model
    from bench.models.assets import sha256_file
    from bench.models.prior import clear_cache, load_prior

    straight = adm_cfg(tmp_path / "a", images)
    info = train_adm(straight)
    assert info["steps"] == 4 and np.isfinite(info["final_loss"])
    ref = torch.load(tmp_path / "a" / "ckpt" / "last.pt", weights_only=True)
    assert ref["step"] == 4 and len(ref["losses"]) == 4

    train_adm(adm_cfg(tmp_path / "b", images, steps=2))
    train_adm(adm_cfg(tmp_path / "b", images, steps=4))  # resumes at step 2
    got = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=True)
    assert got["step"] == 4 and got["losses"] == ref["losses"]
    for k, v in ref["ema"]["model"].items():
        torch.testing.assert_close(got["ema"]["model"][k], v, rtol=0, atol=0)

    weights = tmp_path / "a" / "priors" / "t_adm.safetensors"
    state = load_file(str(weights))
    assert all(v.dtype == torch.float16 for v in state.values())
    conf = OmegaConf.to_container(OmegaConf.load(tmp_path / "a" / "conf" / "t_adm.yaml"))
    assert conf["asset"]["sha256"] == sha256_file(weights) == info["sha256"]
    net = create_model(**conf["arch"])
    net.load_state_dict(state, strict=True)
    torch.testing.assert_close(net.input_blocks[0][0].weight, ref["ema"]["model"]["input_blocks.0.0.weight"],
                               rtol=1e-3, atol=1e-3)  # fp16 rounding of the EMA weights
    assert (tmp_path / "a" / "priors" / "t_adm.md").read_text().count(info["sha256"]) == 1
    assert (tmp_path / "a" / "priors" / "t_adm_loss.png").stat().st_size > 0
    clear_cache()
    prior = load_prior(conf, "cpu")
    assert prior.info["meaningful"] and not prior.learn_sigma
    assert prior.eps(torch.zeros(1, 3, 32, 32), torch.tensor([10])).shape == (1, 3, 32, 32)
    clear_cache()


def test_resume_refuses_a_different_architecture(tmp_path, images):
    train_adm(adm_cfg(tmp_path, images, steps=1))
    with pytest.raises(ValueError, match="another configuration"):
        train_adm(adm_cfg(tmp_path, images, steps=2, arch={**TINY_ARCH, "num_res_blocks": 2}))


def test_ldm_sr_trains_resumes_and_loads_with_diffusers(tmp_path, images):
    from bench.methods.srldm import sample_ldm_sr
    from bench.models.ldm import load_ldm_sr
    from bench.train.ldm import LDMTrainConfig

    def cfg(**kw):
        return LDMTrainConfig(**{**dict(vq=TINY_VQ, unet=TINY_UNET, data_root=str(images), crop=32, vq_steps=2,
                                        unet_steps=2, batch_size=2, warmup=1, ckpt_dir=str(tmp_path / "ckpt"),
                                        ckpt_every=1, priors_dir=str(tmp_path / "priors"), progress=False,
                                        device="cpu"), **kw})

    cfg(unet_steps=1).train()
    info = cfg().train()  # resumes: stage 1 done, stage 2 from step 1
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert (state["vq_step"], state["unet_step"]) == (2, 2) and len(state["unet_losses"]) == 2
    assert np.isfinite(info["final_vq_loss"]) and np.isfinite(info["final_unet_loss"])

    # a stage-1 time budget ends stage 1 early and stage 2 still runs and exports
    info = cfg(ckpt_dir=str(tmp_path / "ckpt_budget"), vq_steps=1000, vq_max_minutes=1e-6, unet_steps=1).train()
    assert info["vq_steps"] == 1 and info["unet_steps"] == 1

    out = tmp_path / "priors" / "ldm_sr_tiny"
    cfg().train()  # re-export the first run's model (already finished: resumes at the end)
    ldm = load_ldm_sr(None, str(out), "cpu")
    assert ldm.scale_factor == 4
    torch.testing.assert_close(ldm.unet.conv_in.weight, state["ema"]["model"]["conv_in.weight"], rtol=1e-3, atol=1e-3)
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    x = sample_ldm_sr(ldm.unet, ldm.vqvae, ldm.make_scheduler(), lr, [torch.Generator().manual_seed(0)], 2, 1.0)
    assert x.shape == (1, 3, 32, 32) and torch.isfinite(x).all()


@pytest.mark.parametrize("name", ["adm64", "ldm_sr", "gan64"])
def test_shipped_train_configs_build(name):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name)
    plain = {k: v for k, v in instantiate(cfg, _convert_="all").__dict__.items()}
    if name == "adm64":
        from bench.train.adm import build_adm

        n = sum(p.numel() for p in build_adm(plain["arch"]).parameters())
        assert n <= 20_000_000 and plain["arch"]["image_size"] == 64
    elif name == "gan64":
        from bench.models.biggan import finetune_groups
        from bench.train.gan import GANTrainConfig, trainable_biggan

        G = trainable_biggan(GANTrainConfig(**plain).generator)
        assert G.config.output_dim == 64 and G.config.num_classes == 1 and len(finetune_groups(G)) == 5
    else:
        from bench.train.ldm import LDMTrainConfig, build_parts

        vq, unet = build_parts(LDMTrainConfig(**plain))
        assert unet.config.in_channels == 6 and len(vq.config.block_out_channels) == 3


def test_ldm_codebook_care_and_decoder_only_fine_tuning(tmp_path, images):
    """Issue 17: dead codes move onto encoder outputs; vq_trainable=decoder leaves E (so the latent space a
    UNet was trained on) bit-identical while the decoder and codebook learn; unet_steps=0 exports the
    initial UNet unchanged; the card reports the held-out first-stage PSNR."""
    from safetensors.torch import load_file

    from bench.train.ldm import LDMTrainConfig, restart_codes

    codebook = torch.zeros(5, 3)
    z = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    dead = torch.tensor([True, False, True, False, False])
    assert restart_codes(codebook, z, dead, torch.Generator().manual_seed(0)) == 2
    vectors = {tuple(v) for v in z.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert tuple(codebook[0].tolist()) in vectors and tuple(codebook[2].tolist()) in vectors
    assert codebook[1].abs().sum() == 0

    base = dict(vq=TINY_VQ, unet=TINY_UNET, data_root=str(images), crop=32, batch_size=2, warmup=1, progress=False,
                device="cpu", ckpt_every=0)
    LDMTrainConfig(**base, vq_steps=1, unet_steps=1, ckpt_dir=str(tmp_path / "c0"),
                   priors_dir=str(tmp_path / "p0")).train()
    init = tmp_path / "p0" / "ldm_sr_tiny"
    with pytest.raises(ValueError, match="vq_init"):
        LDMTrainConfig(**base, vq_trainable="decoder", ckpt_dir=str(tmp_path / "cx")).train()
    info = LDMTrainConfig(**base, vq_steps=4, unet_steps=0, restart_every=2, vq_trainable="decoder",
                          vq_init=str(init / "vqvae"), unet_init=str(init / "unet"), ckpt_dir=str(tmp_path / "c1"),
                          priors_dir=str(tmp_path / "p1")).train()
    before, after = (load_file(str(d / "ldm_sr_tiny" / "vqvae" / "diffusion_pytorch_model.safetensors"))
                     for d in (tmp_path / "p0", tmp_path / "p1"))
    enc = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    u0, u1 = (load_file(str(d / "ldm_sr_tiny" / "unet" / "diffusion_pytorch_model.safetensors"))
              for d in (tmp_path / "p0", tmp_path / "p1"))
    assert all(torch.equal(u0[k], u1[k]) for k in u0)
    assert len(info["heldout_psnr"]) == 8 and 0 < info["codes_used"] <= 32
    assert "first stage on held-out photos" in (tmp_path / "p1" / "ldm_sr_tiny.md").read_text()
