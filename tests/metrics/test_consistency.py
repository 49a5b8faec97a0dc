"""Measurement consistency ||A(x^) - y||^2 / M (ours) and GDP's consistency, from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench import seeding
from bench.metrics.consistency import gdp_consistency, measurement_consistency
from bench.metrics.per_image import MetricsConfig, PerImageMetrics
from tests.conftest import compose


def _degradation(task: str, size: int = 64, **over):
    from bench.cli import build_task

    cfg = OmegaConf.to_container(compose(f"task={task}", *[f"task.{k}={v}" for k, v in over.items()]).task)
    return build_task(cfg).build(size, "cpu", seed=0)


def _photos(n=4):
    from bench.data import SampleDataset

    return torch.stack([it.image for it in list(SampleDataset(image_size=64))[:n]])  # 8-bit valued floats


def _u8(x):
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _degrade(deg, x):
    ids = [str(i) for i in range(x.shape[0])]
    return deg.degrade(x, seeding.make_generators(0, ids, "degrade", torch.device("cpu")))


def test_sr4_against_block_averaging_written_out():
    deg = _degradation("sr4")
    x = _photos()
    y = _degrade(deg, x)
    mse, db = measurement_consistency(deg.operator, x, y)
    assert torch.all(mse < 1e-12)  # the ground truth explains a noiseless measurement
    out = F.interpolate(y.reshape(4, 3, 16, 16), size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    out = _u8(out).double() / 255
    got, got_db = measurement_consistency(deg.operator, out, y)
    want = (F.avg_pool2d(out, 4).reshape(4, -1) - y.double().reshape(4, -1)).square().mean(1)  # 4x4 block means
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(got_db, 10 * torch.log10(1 / want), rtol=1e-5, atol=1e-6)


def test_noisy_measurement_scores_about_sigma_squared_for_the_truth():
    deg = _degradation("denoise", sigma=0.05)
    x = _photos()
    mse, db = measurement_consistency(deg.operator, x, _degrade(deg, x))
    assert torch.allclose(mse, torch.full_like(mse, 0.05 ** 2), rtol=0.1)
    assert db.mean().item() == pytest.approx(-10 * math.log10(0.05 ** 2), abs=0.5)


def _gdp_reference(hr: np.ndarray, lr: np.ndarray) -> float:
    """GDP evaluations/cal_all_metrics.py::compute_consistency, transcribed (HW3 uint8 arrays)."""
    lr_h, lr_w = lr.shape[0], lr.shape[1]
    t = torch.from_numpy(hr).permute(2, 0, 1).unsqueeze(0).float() / 255
    t = F.interpolate(t, size=(lr_h, lr_w), mode="bicubic", antialias=True)[0].permute(1, 2, 0)
    t = torch.round(torch.clamp(t * 255, min=0, max=255))
    return torch.mean((t - torch.from_numpy(lr).float()) ** 2).item()


def test_gdp_consistency_equals_its_script():
    deg = _degradation("sr4")
    x = _photos()
    lr = _u8(deg.measurement_image(_degrade(deg, x)).clamp(0, 1))
    out = _u8(F.interpolate(lr.float() / 255, size=(64, 64), mode="bilinear", align_corners=False))
    got = gdp_consistency(out, lr)
    for i in range(4):
        want = _gdp_reference(out[i].permute(1, 2, 0).numpy(), lr[i].permute(1, 2, 0).numpy())
        assert got[i].item() == pytest.approx(want, rel=1e-6)
    assert got.min() > 0 and gdp_consistency(_u8(x), _u8(x)).max() == 0  # same size: identity resize


def test_per_image_metrics_consistency_for_linear_tasks_only():
    pm = PerImageMetrics(MetricsConfig(lpips_net=None))
    x = _photos(2)
    for task, linear, sr in (("sr4", True, True), ("deblur_gauss", True, False), ("lowlight", False, False)):
        deg = _degradation(task)
        y = _degrade(deg, x)
        vals = pm.consistency(deg, _u8(x), y, _u8(deg.measurement_image(y).clamp(0, 1)))
        assert set(vals) == {"consistency", "consistency_psnr", "consistency_gdp"}
        assert all((v is not None) == linear for k in ("consistency", "consistency_psnr") for v in vals[k]), task
        assert all((v is not None) == sr for v in vals["consistency_gdp"]), task  # GDP's: an LR image only
    off = PerImageMetrics(MetricsConfig(lpips_net=None, consistency=False))
    assert all(v is None for col in off.consistency(deg, _u8(x), y, _u8(x)).values() for v in col)
    assert off.lpips_na == "LPIPS switched off (metrics.lpips.net=null)"


def test_metrics_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown metrics config keys \\['chanel'\\]"):
        MetricsConfig.from_config({"chanel": "y"})
    with pytest.raises(ValueError, match="crop_border=-1"):
        MetricsConfig.from_config({"crop_border": -1})
    cfg = MetricsConfig.from_config(OmegaConf.to_container(compose("metrics=gdp").metrics))
    assert (cfg.crop_border, cfg.lpips_net, cfg.channel) == (4, "vgg", "rgb")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
def test_consistency_on_cuda_equals_cpu():
    pm = PerImageMetrics(MetricsConfig(lpips_net=None))
    x = _photos(2)
    cpu_deg = _degradation("sr4_noisy")
    y = _degrade(cpu_deg, x)  # one measurement (CPU noise), scored on both devices
    out = {}
    for dev in ("cpu", "cuda"):
        deg = cpu_deg.task.build(64, dev, seed=0)
        yd = y.to(dev)
        out[dev] = pm.consistency(deg, _u8(x.to(dev)), yd, _u8(deg.measurement_image(yd).clamp(0, 1)))
    for k in out["cpu"]:
        assert out["cuda"][k] == pytest.approx(out["cpu"][k], rel=1e-4, abs=1e-6), k
