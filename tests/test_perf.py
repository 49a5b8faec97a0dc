"""Speed settings of the diffusion prior (bench.models.prior.Precision) and ``python -m bench.perf`` (CPU)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.models.prior import Precision, load_prior
from bench.perf import parse_mode

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated_prior_cache")


def model(name: str = "adm_tiny", **speed) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))
    if speed:
        cfg["speed"] = {**(cfg.get("speed") or {}), **speed}
    return cfg


def inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([20, 700])


def outputs(prior):
    x, t = inputs()
    with torch.no_grad():
        eps, v = prior.model_output(x, t)
    return torch.cat([eps, v], dim=1)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_default_speed_is_fp32_eager_and_recorded():
    cfg = model()
    assert cfg["speed"] == {"precision": "fp32", "channels_last": False, "compile": False}
    p = load_prior(cfg, "cpu")
    assert p.forward is None  # the plain net call: results identical to before the speed block
    sp = p.info["speed"]
    assert sp["precision"] == "fp32" and sp["autocast"] == "none" and sp["compile"] is False
    assert sp["channels_last"] is False and sp["sdpa"] == "always" and sp["notes"] == []
    assert sp["requested"]["precision"] == "fp32"
    # no speed block at all: the same numbers, also recorded
    bare = {k: v for k, v in cfg.items() if k != "speed"}
    q = load_prior(bare, "cpu")
    assert q.info["speed"]["precision"] == "fp32" and q.info["speed"]["requested"]["precision"] is None
    torch.testing.assert_close(outputs(q), outputs(p), rtol=0, atol=0)


def test_channels_last_fp32_matches_eager():
    ref = outputs(load_prior(model(), "cpu"))
    p = load_prior(model(channels_last=True), "cpu")
    assert p.forward is not None and p.info["speed"]["channels_last"] is True
    assert p.net.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    out = outputs(p)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_bf16_on_cpu_falls_back_with_a_note(caplog):
    ref = outputs(load_prior(model(), "cpu"))
    with caplog.at_level(logging.WARNING, logger="bench.models.prior"):
        p = load_prior(model(precision="bf16", compile=True), "cpu")
    sp = p.info["speed"]
    assert sp["precision"] == "fp32" and sp["compile"] is False and sp["autocast"] == "none"
    assert any("bf16" in n for n in sp["notes"]) and any("compile" in n for n in sp["notes"])
    assert "cpu_autocast" in caplog.text
    torch.testing.assert_close(outputs(p), ref, rtol=0, atol=0)


def test_bf16_cpu_autocast_is_close_to_fp32():
    ref = outputs(load_prior(model(), "cpu"))
    p = load_prior(model(precision="bf16", cpu_autocast=True, channels_last=True), "cpu")
    assert p.info["speed"]["precision"] == "bf16" and p.info["speed"]["autocast"] == "whole"
    out = outputs(p)
    assert out.dtype == torch.float32
    err = rel_l2(out, ref)
    assert 0 < err < 5e-2, err  # bf16 really ran (not bit-equal) and stays close


def test_gradients_flow_through_the_fast_path():
    """GDP-style use: d eps / d x_t under bf16 autocast + channels_last."""
    p = load_prior(model(precision="bf16", cpu_autocast=True, channels_last=True), "cpu")
    x, t = inputs()
    x.requires_grad_(True)
    p.eps(x, t).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ddrm_restore_fast_vs_eager_and_provenance():
    """The real method path: DDRM sr4 with the speed settings, against fp32 eager."""
    from bench import seeding
    from bench.cli import build_task
    from bench.methods.ddrm import DDRM

    deg = build_task(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "sr4.yaml"))).build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = deg.degrade(x, seeding.make_generators(0, ["a", "b"], "degrade"))
    outs = {}
    for name, speed in {"eager": {}, "cl": {"channels_last": True},
                        "bf16": {"precision": "bf16", "cpu_autocast": True}}.items():
        method = DDRM(model(**speed), steps=4)
        method.setup(torch.device("cpu"))
        outs[name] = method.restore(y, deg, seeding.make_generators(0, ["a", "b"], "restore"))
        assert method.describe()["model"]["speed"]["precision"] == ("bf16" if name == "bf16" else "fp32")
    assert outs["eager"].dtype == outs["bf16"].dtype == torch.float32
    torch.testing.assert_close(outs["cl"], outs["eager"], rtol=0, atol=1e-4)
    diff = (outs["bf16"] - outs["eager"]).abs()
    assert 0 < diff.mean() < 1e-2 and diff.max() < 0.1


def test_imagenet_speed_block_is_gpu_bf16_compile():
    cfg = model("adm_imagenet256")
    assert cfg["speed"] == {"precision": "bf16", "channels_last": True, "compile": True}
    sp = Precision.from_config(cfg["speed"])
    net = torch.nn.Conv2d(3, 3, 1)
    net.autocast_dtype = torch.float16  # duck-typed ADM net (torso autocast)
    cuda = sp.resolve(net, "cuda")
    assert (cuda["precision"], cuda["autocast"], cuda["compile"]) == ("bf16", "torso", True)
    cpu = sp.resolve(net, "cpu")
    assert (cpu["precision"], cpu["compile"]) == ("fp32", False) and len(cpu["notes"]) == 2


def test_bad_speed_blocks_are_rejected():
    with pytest.raises(ValueError, match="did you mean precision"):
        load_prior(model(precison="bf16"), "cpu")
    with pytest.raises(ValueError, match="precision"):
        load_prior(model(precision="int8"), "cpu")
    with pytest.raises(ValueError, match="channels_last"):
        load_prior(model(channels_last="yes"), "cpu")


def test_speed_settings_enter_the_cache_key():
    a = load_prior(model(), "cpu")
    b = load_prior(model(channels_last=True), "cpu")
    assert a is not b and a.net is not b.net


def test_parse_mode():
    assert parse_mode("bf16+compile") == {"name": "bf16+compile", "precision": "bf16", "channels_last": False,
                                          "compile": True}
    assert parse_mode("BF16+compile+cl")["name"] == "bf16+cl+compile"
    with pytest.raises(ValueError):
        parse_mode("fast")
    with pytest.raises(ValueError):
        parse_mode("fp32+turbo")


def test_perf_cli_writes_json(tmp_path):
    out = tmp_path / "perf.json"
    cmd = [sys.executable, "-m", "bench.perf", "--device", "cpu", "--methods", "ddrm", "--model", "adm_tiny",
           "--batch", "2", "--steps", "2", "--image-size", "32", "--modes", "fp32", "--repeats", "1",
           "--out", str(out)]
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "images_per_s" in proc.stdout and "ddrm" in proc.stdout  # the table on stdout
    assert "[perf]" in proc.stderr and "[perf]" not in proc.stdout  # progress on stderr
    data = json.loads(out.read_text())
    for key in ("schema", "device", "device_name", "settings", "results", "baseline", "environment"):
        assert key in data
    (row,) = data["results"]
    assert row["method"] == "ddrm" and row["mode"] == "fp32" and row["batch"] == 2 and row["steps"] == 2
    assert row["nfe_per_image"] == 2 and row["task"] == "sr4" and row["speedup_vs_fp32"] == 1.0
    for key in ("images_per_s", "image_steps_per_s", "peak_memory_mb", "seconds_median"):
        assert row[key] > 0, key
    assert row["image_steps_per_s"] == pytest.approx(row["images_per_s"] * 2)
    assert row["precision"] == "fp32" and row["compile"] is False and row["device_name"].startswith("cpu")
    assert row["architecture"]["model"] == "adm_tiny" and row["architecture"]["parameters"] > 0
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write left no temp file


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BENCH_TEST_COMPILE") != "1",
                    reason="torch.compile (inductor) on CPU takes ~2 min here; set BENCH_TEST_COMPILE=1")
def test_compile_fp32_matches_eager_and_differentiates():
    ref = outputs(load_prior(model(), "cpu"))
    p = load_prior(model(compile=True, cpu_compile=True, channels_last=True), "cpu")
    assert p.info["speed"]["compile"] is True and p.info["speed"]["notes"] == []
    torch.testing.assert_close(outputs(p), ref, rtol=0, atol=1e-5)
    x, t = inputs()
    x.requires_grad_(True)
    p.eps(x, t).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_writer_code_paths_are_warmed_up_before_timing():
    """bench.runner.warm_up_writer runs the writer's code paths (PNG encoding, the per-image metrics) in the
    main thread; lazily imported on the writer thread they held the GIL during the first timed batch (an H100
    run reported 0.3 img/s for a sampler doing 8.5). Fresh interpreter: PIL's PNG plugin is not loaded
    before, it is after (the metrics are bench's own torch code since issue 15, imported with the runner)."""
    import subprocess
    import sys

    code = ("import sys, bench.runner as r; assert 'PIL.PngImagePlugin' not in sys.modules, 'imported too early'; "
            "r.warm_up_writer(); assert 'PIL.PngImagePlugin' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
