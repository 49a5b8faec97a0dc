"""The GAN trainer of the embedded DGP generator (bench/train/gan.py) and DiffAugment (bench/train/diffaugment.py):
tiny 32-px models, a few CPU steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench.cli import build_task
from bench.train.diffaugment import check_policy, color, cutout, diff_augment, translation
from bench.train.common import step_generator
from bench.train.gan import (Discriminator, GANTrainConfig, trainable_biggan, generate, latents, stats_indices,
                             standing_stats, train_gan)
from tests.conftest import CONF_DIR, write_smooth_images

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_G = dict(output_dim=32, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=1,
              layers=[[False, 16, 16], [True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1], [True, 1, 1]],
              attention_layer_position=4, eps=1e-4, n_stats=11)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six smooth 40x40 RGB images (seeded)."""
    return write_smooth_images(tmp_path_factory.mktemp("gan_images"))


def cfg(tmp_path, images, **kw) -> GANTrainConfig:
    base = dict(generator=TINY_G, d_channels=4, data_root=str(images), resize=36, steps=3, batch_size=4,
                stats_batches=1, stats_batch=8, ckpt_dir=str(tmp_path / "ckpt"), ckpt_every=2,
                priors_dir=str(tmp_path / "priors"), progress=False, device="cpu", name="t_gan")
    return GANTrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------ DiffAugment
def test_diffaugment_is_seeded_differentiable_and_does_what_it_says():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x.requires_grad_(True)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G gets gradients through T
    with torch.no_grad():
        # translation moves content by whole pixels with zero fill: every output value is an input value or 0
        t = translation(x, torch.Generator().manual_seed(2))
        assert torch.isin(t, torch.cat([x.flatten(), torch.zeros(1)])).all()
        assert not torch.equal(t, x)
        # cutout zeroes at most an (8 x 8) square per image, at least a quarter of it (clipped at corners)
        c = cutout(x, torch.Generator().manual_seed(3))
        zeros = (c == 0).all(dim=1).flatten(1).sum(1)
        assert ((zeros >= 16) & (zeros <= 64)).all(), zeros
        assert torch.equal(c[c != 0], x[c != 0])
        # colour: brightness/saturation/contrast are per-image affine maps, not the identity
        k = color(x, torch.Generator().manual_seed(4))
        assert not torch.allclose(k, x)
    assert diff_augment(x, "", torch.Generator()) is x
    with pytest.raises(ValueError, match="allowed"):
        check_policy("color,flip")


# ------------------------------------------------------------------------------------------ batch norm
def test_train_batchnorm_uses_batch_statistics_and_eval_uses_the_stored_ones():
    G = trainable_biggan(TINY_G)
    bn = G.generator.layers[0].bn_0
    x = torch.randn(6, bn.num_features, 4, 4) * 3 + 2
    cond = torch.randn(6, 16)
    bn.train()
    out = bn(x, 1.0, cond)
    bn.eval()  # the spectral-norm affine maps, now without another power iteration (same u, v as above)
    ref = F.batch_norm(x, None, None, training=True, eps=bn.eps)
    ref = ref * (1 + bn.scale(cond))[..., None, None] + bn.offset(cond)[..., None, None]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        bn.running_means.fill_(2.0)
        bn.running_vars.fill_(9.0)
        stored = bn(x, 1.0, cond)
    expected = (x - 2) / (9 + bn.eps) ** 0.5 * (1 + bn.scale(cond))[..., None, None] + bn.offset(cond)[..., None, None]
    torch.testing.assert_close(stored, expected, rtol=1e-4, atol=1e-4)


def test_standing_stats_fill_the_rows_the_package_reads():
    G = trainable_biggan(TINY_G)
    standing_stats(G, step_generator(0, 0), 1, 16, indices=stats_indices(0.4, 11))
    bn = G.generator.layers[1].bn_1
    assert stats_indices(0.4, 11) == [4]
    assert not torch.equal(bn.running_vars[4], torch.ones_like(bn.running_vars[4]))
    assert torch.equal(bn.running_vars[5], torch.ones_like(bn.running_vars[5]))  # not asked for
    # in eval mode, at the measured truncation, the stored statistics standardise fresh inputs of that BN
    inputs = []
    h = bn.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        G.eval()
        generate(G, latents(step_generator(1, 0), 64, 8, 0.4), 0.4)
    h.remove()
    std = (inputs[0] - bn.running_means[4][:, None, None]) / (bn.running_vars[4][:, None, None] + bn.eps).sqrt()
    assert std.mean(dim=(0, 2, 3)).abs().max() < 0.3
    assert 0.6 < float(std.var(dim=(0, 2, 3)).min()) and float(std.var(dim=(0, 2, 3)).max()) < 1.6
    assert bn.running_means[4].abs().max() > 0.05  # something was stored
    assert stats_indices(0.43, 11) == [4, 5]


# ------------------------------------------------------------------------------------------- trainer
def test_gan_trains_resumes_exactly_and_exports_a_strictly_loadable_generator(tmp_path, images):
    from safetensors import safe_open

    from bench.methods.dgp import DGP
    from bench.models.biggan import finetune_groups, load_embedded

    info = train_gan(cfg(tmp_path / "a", images, steps=4))
    assert info["steps"] == 4 and np.isfinite(info["final_d_loss"]) and np.isfinite(info["final_g_loss"])
    ref = torch.load(tmp_path / "a" / "ckpt" / "last.pt", weights_only=True)
    assert len(ref["d_losses"]) == len(ref["g_losses"]) == 4
    train_gan(cfg(tmp_path / "b", images, steps=2))
    train_gan(cfg(tmp_path / "b", images, steps=4))  # resumes at step 2
    got = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=True)
    assert got["d_losses"] == ref["d_losses"] and got["g_losses"] == ref["g_losses"]
    for k, v in ref["ema"]["model"].items():
        torch.testing.assert_close(got["ema"]["model"][k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another configuration"):
        train_gan(cfg(tmp_path / "b", images, steps=5, d_channels=8))

    weights = tmp_path / "a" / "priors" / "t_gan.safetensors"
    with safe_open(str(weights), "pt") as f:
        assert json.loads(f.metadata()["config"])["num_classes"] == 1
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys() if f.get_tensor(k).is_floating_point())
    G, prov = load_embedded({"path": str(weights), "sha256": info["sha256"]})
    assert prov["sha256"] == info["sha256"] and prov["verified"] and not prov["conditional"]
    assert len(finetune_groups(G)) == 4  # the package's layout: DGP's groups work unchanged
    assert (tmp_path / "a" / "priors" / "t_gan.md").read_text().count(info["sha256"]) == 1
    assert (tmp_path / "a" / "priors" / "t_gan_samples.png").stat().st_size > 0
    assert (tmp_path / "a" / "priors" / "t_gan_loss.png").stat().st_size > 0
    # DGP runs on it; an unconditional generator ignores labels (one class) with or without class search
    asset = {"path": str(weights), "sha256": info["sha256"]}
    for search in (True, False):
        m = DGP({"source": "embedded", "asset": asset}, candidates=2, iterations=[1], stages=[1],
                class_search=search)
        m.setup(torch.device("cpu"))
        y = torch.rand(1, 3 * 8 * 8)
        deg = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "sr4.yaml"))).build(32)
        m.restore(y, deg, [torch.Generator().manual_seed(0)], labels=[417])
        assert m.last_losses[0]["class"] == 0
        d = m.describe()["generator"]
        assert d["source"] == "embedded" and d["sha256"] == info["sha256"] and d["path"] == str(weights)


def test_reconstruction_term_continues_from_a_gan_checkpoint(tmp_path, images):
    """recon_weight > 0 (GLO term) starting from a GAN checkpoint (init_from): G starts from that checkpoint's
    weights, the per-image latents are stored and resumed, and the reconstruction loss falls on its images."""
    train_gan(cfg(tmp_path / "a", images, steps=2))
    first = tmp_path / "a" / "ckpt" / "last.pt"
    kw = dict(init_from=str(first), recon_weight=1.0, recon_lr=0.05, lr_g=2e-3, ckpt_dir=str(tmp_path / "ckpt_r"))
    G0 = torch.load(first, weights_only=True)["G"]
    info = train_gan(cfg(tmp_path / "r", images, steps=12, ckpt_every=6, **kw))
    state = torch.load(tmp_path / "ckpt_r" / "last.pt", weights_only=True)
    rec = state["rec_losses"]
    assert len(rec) == 12 and sum(rec[-3:]) / 3 < sum(rec[:3]) / 3, rec
    assert state["z_table"].shape == (6, 8) and state["z_table"].abs().max() <= 2.0
    assert info["final_rec_loss"] is not None
    assert "GLO reconstruction" in (tmp_path / "r" / "priors" / "t_gan.md").read_text()
    fresh = trainable_biggan(TINY_G, 0)
    init = cfg(tmp_path / "i", images, steps=0, **{**kw, "ckpt_dir": str(tmp_path / "ckpt_i")})
    train_gan(init)
    G_init = torch.load(tmp_path / "ckpt_i" / "last.pt", weights_only=True)["G"]
    assert all(torch.equal(G_init[k], G0[k]) for k in G0)
    assert not all(torch.equal(fresh.state_dict()[k], G0[k]) for k in G0)


def test_bad_generator_configs_name_the_fix(tmp_path, images):
    with pytest.raises(ValueError, match="num_classes=1"):
        trainable_biggan({**TINY_G, "num_classes": 1000})
    with pytest.raises(ValueError, match="output_dim"):
        trainable_biggan({**TINY_G, "output_dim": 64})
    with pytest.raises(ValueError, match="allowed"):
        train_gan(cfg(tmp_path, images, diffaugment="colour"))


def test_discriminator_scores_a_batch():
    D = Discriminator(4, 32)
    assert D(torch.zeros(3, 3, 32, 32)).shape == (3,)
