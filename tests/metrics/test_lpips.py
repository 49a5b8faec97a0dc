"""LPIPS through the harness's asset cache: equal to the lpips package's own call with the same weights."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.metrics import MetricUnavailable
from bench.metrics.lpips import BACKBONES, LPIPSMetric
from tests.conftest import compose, run_dirs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a RANDOM AlexNet saved like torchvision's alexnet-owt-7be5be79.pth
    (``torch.save(model.state_dict())``): torchvision's loader then uses it instead of downloading."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints" / BACKBONES["alex"][0]
    ckpt.parent.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torchvision.models.alexnet()
    torch.save(net.state_dict(), ckpt)
    return home, ckpt


def _library(torch_home, monkeypatch):
    import lpips

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return lpips.LPIPS(net="alex", verbose=False).eval()


def _photos(n=4, size=64):
    from bench.data import SampleDataset

    x = torch.stack([it.image for it in list(SampleDataset(image_size=size))[:n]])
    return (x * 255).round().to(torch.uint8)


def test_equals_the_library_call_and_zero_for_identical(torch_home, monkeypatch, tmp_path):
    home, ckpt = torch_home
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    ours = LPIPSMetric("alex", backbone_path=ckpt)
    lib = _library(home, monkeypatch)
    gt = _photos()
    g = torch.Generator().manual_seed(1)
    noisy = (gt.double() + 20 * torch.randn(gt.shape, generator=g, dtype=torch.float64)).clamp(0, 255).round()
    noisy = noisy.to(torch.uint8)
    got = ours(noisy, gt)
    with torch.no_grad():
        want = lib(noisy.float() / 255, gt.float() / 255, normalize=True).flatten().double()
    assert got.shape == (4,) and (got > 0).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours(gt, gt), torch.zeros(4, dtype=torch.float64))
    # provenance: the random backbone is recorded as not the official file; the linear layers are
    info = ours.info
    assert info["backbone"]["name"] == "alexnet-owt-7be5be79.pth" and info["backbone"]["standard"] is False
    assert len(info["backbone"]["sha256"]) == 64 and info["linear"]["standard"] is True


def test_unavailable_offline_is_a_reason_not_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MetricUnavailable) as err:
        LPIPSMetric("vgg", offline=True)
    reason = err.value.reason
    assert "vgg16-397923af.pth" in reason and "offline" in reason and "metrics.lpips.backbone_path" in reason
    assert str(tmp_path) not in reason  # reasons go into rows and reports: no absolute paths
    with pytest.raises(MetricUnavailable, match="does not point to a file"):
        LPIPSMetric("alex", backbone_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="net='squeeze'"):
        LPIPSMetric("squeeze")


def test_too_small_images_are_a_reason(torch_home, tmp_path, monkeypatch):
    """AlexNet's pooling stack needs >= 31 px: 16-px outputs get n/a with the reason, not a crash."""
    from bench.metrics.per_image import MetricsConfig, PerImageMetrics

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    pm = PerImageMetrics(MetricsConfig(lpips_backbone_path=str(torch_home[1])))
    x = _photos(2)
    small = pm.full_reference(x[..., :16, :16].contiguous(), x[..., :16, :16].contiguous())
    assert small["lpips"] == [None, None] and "too small for LPIPS-alex" in small["lpips_na"][0]
    ok = x[..., :31, :31].contiguous()
    assert all(v is not None for v in pm.full_reference(ok, ok)["lpips"])
    with pytest.raises(ValueError, match=">= 31 px"):
        pm.lpips(x[..., :30, :30].contiguous(), x[..., :30, :30].contiguous())


def test_not_a_backbone_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(MetricUnavailable, match="not a torchvision backbone state dict"):
        LPIPSMetric("alex", backbone_path=bad)


def test_run_stores_lpips_and_consistency_per_image(torch_home, tmp_path, monkeypatch):
    """The real CLI entry (in-process): rows/per_image.parquet hold LPIPS equal to the library's call on the
    saved PNGs; offline without weights the same cell stores None + the reason; the manifest has versions."""
    from bench.cli import run_from_config
    from bench.imageio import read_png_u8

    home, ckpt = torch_home
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    base = ["method=bicubic", "task=sr4", "dataset.limit=3", "run.progress=false", "run.device=cpu"]
    run_from_config(compose(*base, f"run.results_root={tmp_path / 'a'}", f"metrics.lpips.backbone_path={ckpt}"))
    run_from_config(compose(*base, f"run.results_root={tmp_path / 'b'}"))
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    df = pd.read_parquet(a / "per_image.parquet")
    lib = _library(home, monkeypatch)
    ref = next((tmp_path / "a" / "sample" / "_reference").iterdir())
    for _, row in df.iterrows():
        out = read_png_u8(a / "images" / f"{row['id']}.png")[None].float() / 255
        gt = read_png_u8(ref / f"{row['id']}.png")[None].float() / 255
        with torch.no_grad():
            assert row["lpips"] == pytest.approx(lib(out, gt, normalize=True).item(), rel=1e-5, abs=1e-6)
        assert row["lpips_na"] is None
    for col in ("consistency", "consistency_psnr", "consistency_gdp"):
        assert np.isfinite(df[col]).all(), col
    man = json.loads((a / "manifest.json").read_text())["metrics"]
    assert man["config"] == {"channel": "rgb", "crop_border": 0, "lpips_net": "alex",
                             "lpips_backbone_path": str(ckpt), "consistency": True}
    assert set(man["versions"]) == {"psnr", "ssim", "lpips", "consistency", "consistency_gdp"}
    assert man["lpips"]["backbone"]["standard"] is False
    off = pd.read_parquet(b / "per_image.parquet")
    assert off["lpips"].isna().all() and off["lpips_na"].str.contains("offline").all()
    assert "lpips" not in json.loads((b / "manifest.json").read_text())["metrics"]["versions"]
    assert np.allclose(off["psnr"], df["psnr"]) and np.allclose(off["consistency"], df["consistency"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
def test_cuda_equals_cpu(torch_home, tmp_path, monkeypatch):
    _, ckpt = torch_home
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    gt = _photos()
    out = gt.flip(0)
    cpu = LPIPSMetric("alex", backbone_path=ckpt)(out, gt)
    gpu = LPIPSMetric("alex", backbone_path=ckpt, device="cuda")(out.cuda(), gt.cuda())
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
