"""Zero-DCE: strict loading of the official Epoch99.pth, enhancement of real low-light photos, task
support, asset errors, and one CLI run on the real photos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.imageio import load_image
from bench.methods.zero_dce import WEIGHTS_SHA256, DCENet, ZeroDCE, load_dce_net, weights_asset
from bench.models.assets import AssetError, sha256_file
from bench.operators.lowlight import LowLight
from bench.tasks import Degradation, Task

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
WEIGHTS = SHARED / "zero-dce" / "Epoch99.pth"
LOWLIGHT = SHARED / "lowlight"

needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"Zero-DCE weights not found at {WEIGHTS} (shared data absent)")
needs_photos = pytest.mark.skipif(
    not LOWLIGHT.is_dir(), reason=f"real low-light photos not found at {LOWLIGHT} (shared data absent)")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")


@pytest.fixture
def method() -> ZeroDCE:
    if not WEIGHTS.is_file():
        pytest.skip(f"Zero-DCE weights not found at {WEIGHTS} (shared data absent)")
    m = ZeroDCE(weights={"path": str(WEIGHTS)})
    m.setup(torch.device("cpu"))
    return m


def luminance(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).flatten(1).mean(1)


def lowlight_degradation(h: int, w: int) -> Degradation:
    return Degradation(Task("lowlight", 1, LowLight), LowLight(3, (h, w)), 0.0)


@needs_weights
def test_pinned_sha256_matches_shared_file():
    assert sha256_file(WEIGHTS) == WEIGHTS_SHA256


@needs_weights
def test_weights_load_strictly(method):
    ref = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    sd = method.net.state_dict()
    assert sorted(sd) == sorted(ref) == sorted(f"e_conv{i}.{p}" for i in range(1, 8) for p in ("weight", "bias"))
    tiny = torch.finfo(torch.float32).tiny
    for k in ref:  # equal except subnormals, which are flushed to 0
        keep = ref[k].abs() >= tiny
        assert torch.equal(sd[k][keep], ref[k][keep]) and (sd[k][~keep] == 0).all(), k
    assert method.net.flushed_subnormals > 0 and method.describe()["subnormal_weights_zeroed"] > 0


@needs_weights
@needs_photos
def test_flushing_subnormals_does_not_change_outputs(method):
    exact = DCENet()
    exact.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    low = torch.nn.functional.interpolate(load_image(LOWLIGHT / "lol_eval_low_1.png")[None], size=(40, 60),
                                          mode="area")
    with torch.no_grad():
        ref = exact(low)[0].clamp(0, 1)
    torch.testing.assert_close(method.enhance(low), ref, atol=1e-6, rtol=0)


@needs_weights
@needs_photos
def test_brightens_real_lowlight_photos(method):
    files = sorted(p for p in LOWLIGHT.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})
    assert files
    for f in files:
        low = load_image(f)[None]
        scale = 256 / max(low.shape[-2:])  # keep CPU time small (shared CPUs); the net is fully convolutional
        if scale < 1:
            low = torch.nn.functional.interpolate(low, scale_factor=scale, mode="area")
        deg = lowlight_degradation(*low.shape[-2:])
        out = method.restore(low, deg, generators=[])
        assert out.shape == low.shape, f.name
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, f.name
        assert luminance(out) > luminance(low) + 0.02, f"{f.name}: {luminance(low)} -> {luminance(out)}"
        assert method.last_nfe == 1


def test_curve_iterations_follow_official_form():
    net = DCENet()
    x = torch.rand(1, 3, 8, 8)
    out, r = net(x)
    le = x
    for n in range(8):
        rn = r[:, 3 * n:3 * n + 3]
        le = le + rn * (le.pow(2) - le)
    assert r.shape == (1, 24, 8, 8) and r.abs().max() <= 1
    torch.testing.assert_close(out, le)


def test_supports_only_lowlight():
    m = ZeroDCE()
    sr4 = Task("sr4", 1, LowLight)  # only the name matters for the support check
    assert m.unsupported_reason(sr4) is not None and "lowlight" in m.unsupported_reason(sr4)
    assert m.unsupported_reason(Task("lowlight", 1, LowLight)) is None


def test_missing_weights_error_names_the_override(tmp_path):
    with pytest.raises(AssetError, match=r"method\.weights\.path="):
        load_dce_net(weights_asset(None))
    with pytest.raises(AssetError, match="does not exist"):
        load_dce_net(weights_asset({"path": str(tmp_path / "nope.pth")}))
    with pytest.raises(ValueError, match="unknown method.weights"):
        weights_asset({"pth": "x"})


def test_wrong_checkpoint_is_rejected(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, p)
    with pytest.raises(AssetError, match="sha256"):
        load_dce_net(weights_asset({"path": str(p)}))
    with pytest.raises(AssetError, match="enhance_net_nopool"):
        load_dce_net(weights_asset({"path": str(p), "sha256": sha256_file(p)}))


@pytest.mark.slow
@needs_weights
@needs_photos
def test_cli_zero_dce_lowlight(tmp_path):
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "BENCH_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "bench", "method=zero_dce", "task=lowlight", "dataset=lol",
           f"dataset.root={LOWLIGHT}", "dataset.limit=2", f"method.weights.path={WEIGHTS}",
           f"run.results_root={tmp_path / 'results'}", "run.progress=false"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    pngs = sorted((tmp_path / "results").glob("lol/lowlight/zero_dce/*/images/*.png"))
    assert len(pngs) == 2, r.stdout
