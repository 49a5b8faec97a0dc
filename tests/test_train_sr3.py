"""The SR3 trainer (bench/train/sr3.py): the training batch math, a few CPU steps on a tiny net, and the export
that method=sr3 loads strictly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.methods.sr3 import pil_bicubic_upsample
from bench.train.common import CONF_DIR
from bench.train.sr3 import SR3TrainConfig, sr3_batch, train_sr3
from tests.conftest import write_smooth_images

TINY = dict(in_channel=6, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=[1, 2], attn_res=[8],
            res_blocks=1, dropout=0.0, image_size=16)


def test_sr3_batch_is_janspirys_p_losses():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(3, 3, 16, 16, generator=g)
    lo, hi, u = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.6, 1.0]), torch.tensor([0.0, 0.5, 1.0])
    inp, gamma, _ = sr3_batch(x0, 4, lo, hi, u, eps)
    torch.testing.assert_close(gamma, torch.tensor([0.1, 0.55, 1.0]))
    c = pil_bicubic_upsample(F.avg_pool2d(x0, 4), (16, 16))
    torch.testing.assert_close(inp[:, :3], c)
    torch.testing.assert_close(inp[1, 3:], 0.55 * x0[1] + (1 - 0.55**2) ** 0.5 * eps[1])
    torch.testing.assert_close(inp[2, 3:], x0[2])  # gamma = 1: no noise


def test_train_export_and_load_through_the_method(tmp_path):
    from bench.methods.sr3 import SR3
    from omegaconf import OmegaConf

    (tmp_path / "imgs").mkdir()
    data = write_smooth_images(tmp_path / "imgs")
    cfg = SR3TrainConfig(name="t_sr3", arch=TINY, crop=16, data_root=str(data), steps=2, batch_size=1, lr=1e-3,
                         warmup=1, ckpt_dir=str(tmp_path / "ckpt"), ckpt_every=0, priors_dir=str(tmp_path / "p"),
                         model_conf_dir=str(tmp_path / "conf"), progress=False, device="cpu")
    info = train_sr3(cfg)
    assert info["steps"] == 2 and np.isfinite(info["final_loss"])
    conf = OmegaConf.to_container(OmegaConf.load(tmp_path / "conf" / "t_sr3.yaml"))
    assert conf["kind"] == "sr3" and conf["asset"]["sha256"] == info["sha256"]
    m = SR3(conf, steps=2)
    m.setup(torch.device("cpu"))
    ema = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["ema"]["model"]
    torch.testing.assert_close(m.ddpm.net.downs[0].weight, ema["downs.0.weight"], rtol=1e-3, atol=1e-3)  # fp16
    assert m.ddpm.info["meaningful"]


def test_shipped_sr3_train_config_builds():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from bench.models.sr3_unet import SR3UNet

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = instantiate(compose(config_name="sr3_64"), _convert_="all")
    assert isinstance(cfg, SR3TrainConfig) and cfg.factor == 4
    assert sum(p.numel() for p in SR3UNet(**cfg.arch).parameters()) < 2_000_000
