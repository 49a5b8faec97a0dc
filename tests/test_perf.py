"""Speed settings of the diffusion prior (bench.models.speed.Precision) and ``python -m bench.perf`` (CPU)."""

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

from bench.models.cuda_graph import GraphedCall
from bench.models.prior import load_prior
from bench.models.speed import Precision
from bench.perf.throughput import parse_mode
from bench.perf.profiling import CATEGORIES, categorize

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
    with caplog.at_level(logging.WARNING, logger="bench.models.speed"):
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
                                          "compile": True, "compile_mode": None, "cuda_graph": False,
                                          "fused_norm": False, "cudnn_benchmark": None, "micro_batch": None}
    assert parse_mode("BF16+compile+cl")["name"] == "bf16+cl+compile"
    m = parse_mode("bf16+graph+compile+fused+cl+mb4+cudnn")
    assert m["name"] == "bf16+cl+fused+cudnn+mb4+compile+graph"
    assert (m["cuda_graph"], m["fused_norm"], m["cudnn_benchmark"], m["micro_batch"]) == (True, True, True, 4)
    assert parse_mode("bf16+cl+ro")["name"] == "bf16+cl+compile=reduce-overhead"
    assert parse_mode("fp32+compile=max-autotune")["compile_mode"] == "max-autotune"
    assert parse_mode("fp32+compile=default")["name"] == "fp32+compile"
    for bad in ("fast", "fp32+turbo", "fp32+compile=fastest", "fp32+mb0", "bf16+ro+graph"):
        with pytest.raises(ValueError):
            parse_mode(bad)


def test_new_speed_keys_are_validated_and_recorded():
    with pytest.raises(ValueError, match="compile_mode='turbo'"):
        Precision.from_config({"compile_mode": "turbo"})
    with pytest.raises(ValueError, match="cuda_graph=true with compile_mode='reduce-overhead'"):
        Precision.from_config({"cuda_graph": True, "compile_mode": "reduce-overhead"})
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="micro_batch"):
            Precision.from_config({"micro_batch": bad})
    with pytest.raises(ValueError, match="cudnn_benchmark"):
        Precision.from_config({"cudnn_benchmark": "yes"})
    sp = load_prior(model(fused_norm=True, micro_batch=2), "cpu").info["speed"]
    assert sp["fused_norm"] is True and sp["micro_batch"] == 2 and sp["notes"] == []
    assert sp["requested"]["fused_norm"] is True


def test_cuda_only_options_are_guarded_on_cpu(caplog):
    """cuda_graph / cudnn_benchmark / inductor CUDA-graph modes on CPU: eager, with a note each, same numbers."""
    ref = outputs(load_prior(model(), "cpu"))
    with caplog.at_level(logging.WARNING, logger="bench.models.speed"):
        p = load_prior(model(cuda_graph=True, cudnn_benchmark=True), "cpu")
    sp = p.info["speed"]
    assert sp["cuda_graph"] is False and sp["cudnn_benchmark"] is None and len(sp["notes"]) == 2
    assert "CUDA graphs exist on CUDA only" in caplog.text
    assert p.forward is None  # nothing left to do differently from the plain call
    torch.testing.assert_close(outputs(p), ref, rtol=0, atol=0)
    ro = Precision.from_config({"compile": True, "compile_mode": "reduce-overhead", "cpu_compile": True})
    assert any("CUDA graphs do not apply" in n for n in ro.resolve(torch.nn.Conv2d(3, 3, 1), "cpu")["notes"])


def test_graphed_call_falls_back_to_eager_off_cuda_and_with_autograd():
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    g = GraphedCall(lambda x, t: net(x) * t[:, None, None, None])
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(g(x, t), net(x) * t[:, None, None, None], rtol=0, atol=0)
    g(x.requires_grad_(True), t).sum().backward()  # CPU + autograd: eager, gradients flow
    assert x.grad is not None and g.describe() == {"graphs": 0, "replays": 0, "eager_calls": 2, "failures": {}}


@pytest.mark.parametrize("updown,scale_shift", [(True, True), (False, False)])
def test_fused_norm_equals_unfused_and_keeps_the_checkpoint_layout(updown, scale_shift, tmp_path):
    from bench.models.adm_unet import create_model, random_init_
    from tests.models.test_adm_unet import TINY, _expected_small

    flags = dict(TINY, resblock_updown=updown, use_scale_shift_norm=scale_shift, learn_sigma=True)
    net = random_init_(create_model(**flags), seed=1).eval()
    x, t = inputs()
    with torch.no_grad():
        ref = net(x, t)
    torch.save(net.state_dict(), tmp_path / "unfused.pt")
    fused = create_model(**flags).eval()
    fused.set_fused_norm(True)
    fused.load_state_dict(torch.load(tmp_path / "unfused.pt", weights_only=True), strict=True)
    shapes = {k: tuple(v.shape) for k, v in fused.state_dict().items()}
    assert shapes == _expected_small(updown, scale_shift, False, True)  # the guided-diffusion layout
    with torch.no_grad():
        out = fused(x, t)
        assert torch.equal(out, ref)  # float32: the same ops in the same order
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_fused = fused(x, t).float()
            fused.set_fused_norm(False)
            low_plain = fused(x, t).float()
    assert 0 < rel_l2(low_fused, ref) < 3e-2 and 0 < rel_l2(low_plain, ref) < 3e-2


def test_forward_flop_count():
    from bench.perf.profiling import forward_gflop

    gflop = forward_gflop(lambda: torch.nn.Conv2d(8, 16, 3, padding=1), ((1, 8, 32, 32), torch.float32))
    assert gflop == pytest.approx(2 * 8 * 16 * 9 * 32 * 32 / 1e9)  # 2 FLOP per multiply-add, bias not counted


def test_profile_categories():
    names = {
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64": "convolution",
        "aten::mkldnn_convolution": "convolution",
        "triton_red_fused_convolution_native_group_norm_0": "groupnorm_silu",
        "aten::native_group_norm": "groupnorm_silu", "aten::silu": "groupnorm_silu",
        "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>": "attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul", "aten::addmm": "matmul",
        "Memcpy DtoD (Device -> Device)": "memory", "aten::copy_": "memory", "aten::cat": "memory",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>": "elementwise",
        "triton_poi_fused_add_mul_3": "elementwise", "aten::add": "elementwise",
        "aten::avg_pool2d": "other",
    }
    for name, cat in names.items():
        assert categorize(name) == cat, name
    assert CATEGORIES[-1] == "launch_gaps"


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


def test_perf_cli_generic_methods_auto_batch_and_profile(tmp_path):
    """Any conf/method builds (bicubic has no prior: fp32 only); batch auto resolves by the CPU rule;
    --profile writes the summary, whose categories sum to each profiled call's wall time."""
    out, prof = tmp_path / "perf.json", tmp_path / "prof"
    cmd = [sys.executable, "-m", "bench.perf", "--device", "cpu", "--methods", "unet,bicubic,gdp_xt",
           "--model", "adm_tiny", "--batch", "auto", "--steps", "1", "--image-size", "32", "--modes",
           "fp32+fused+mb2+graph", "--fp32-methods", "unet", "--repeats", "1", "--warmup", "0",
           "--warmup-seconds", "0", "--profile", str(prof), "--out", str(out)]
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["schema"] == "bench.perf/2"
    rows = {(r["method"], r["mode"]): r for r in data["results"]}
    assert set(rows) == {("unet", "fp32"), ("unet", "fp32+fused+mb2+graph"), ("bicubic", "fp32"),
                         ("gdp_xt", "fp32+fused+mb2+graph")}
    fast = rows[("gdp_xt", "fp32+fused+mb2+graph")]
    assert fast["batch"] == 4 and fast["batch_spec"] == "auto" and "CPU" in fast["batch_rule"]["rule"]
    assert fast["fused_norm"] is True and fast["micro_batch"] == 2 and fast["cuda_graph"] is False
    assert any("CUDA graphs exist on CUDA only" in n for n in fast["notes"])
    assert rows[("bicubic", "fp32")]["nfe_per_image"] == 0 and rows[("unet", "fp32")]["speedup_vs_fp32"] == 1.0
    assert rows[("unet", "fp32")]["architecture"]["forward_gflop_per_image"] > 0
    summary = json.loads((prof / "profile.json").read_text())
    assert len(summary["cells"]) == 4 and "## unet | fp32 |" in (prof / "profile.md").read_text()
    for cell in summary["cells"]:
        s = cell["summary"]
        assert set(s["categories_ms"]) == set(CATEGORIES) and s["wall_ms"] > 0
        assert sum(s["categories_ms"].values()) == pytest.approx(s["wall_ms"], rel=1e-9)
        if cell["method"] == "unet":  # a network forward: convolutions are timed, gaps are a minority
            assert s["categories_ms"]["convolution"] > 0 and 0 <= s["categories_pct"]["launch_gaps"] < 50


def test_overhead_breakdown_of_a_real_run(tmp_path):
    """bench.perf.overhead on a fresh CLI run: restore time from the rows, outside = loop - restore."""
    import pandas as pd

    from bench.cli import run_from_config
    from bench.perf.overhead import breakdown, main as overhead_main
    from tests.conftest import compose, run_dirs

    run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=3", "run.batch_size=2",
                            f"run.results_root={tmp_path}", "run.progress=false"))
    (run,) = run_dirs(tmp_path)
    rec = breakdown(run)
    rows = pd.read_parquet(run / "per_image.parquet")
    assert rec["images"] == 3 and rec["batch_size"] == 2
    assert rec["restore_seconds_all"] == pytest.approx(float(rows["restore_seconds"].sum()))
    assert rec["outside_seconds"] == pytest.approx(rec["loop_seconds"] - rec["restore_seconds_all"])
    assert rec["outside_fraction"] == pytest.approx(rec["outside_seconds"] / rec["restore_seconds_all"])
    assert rec["met"] == (rec["outside_fraction"] <= 0.10) and "writer_warmup" in rec["phases_seconds"]
    assert overhead_main([str(run), "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["images"] == 3
    run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=4", f"run.results_root={tmp_path}",
                            "run.progress=false"))  # a resumed run has two invocations: refused
    with pytest.raises(ValueError, match="fresh run"):
        breakdown(run)


# ------------------------------------------------------------------ CUDA (run by the device script)
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")


@cuda_only
def test_cuda_graph_replay_equals_eager_and_autograd_falls_back():
    ref_p = load_prior(model(), "cuda")
    p = load_prior(model(cuda_graph=True), "cuda")
    assert p.info["speed"]["cuda_graph"] is True
    x, t = (v.cuda() for v in inputs())
    with torch.no_grad():
        ref = torch.cat(ref_p.model_output(x, t), 1)
        for _ in range(3):  # capture once, then replays with new inputs copied into the static buffers
            out = torch.cat(p.model_output(x, t), 1)
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
        x2 = torch.randn_like(x)
        torch.testing.assert_close(torch.cat(p.model_output(x2, t), 1), torch.cat(ref_p.model_output(x2, t), 1),
                                   rtol=1e-6, atol=1e-6)
    stats = p.forward.graph.describe()
    assert stats["graphs"] == 1 and stats["replays"] == 4 and stats["failures"] == {}
    xg = x.clone().requires_grad_(True)
    p.eps(xg, t).square().sum().backward()  # autograd: eager, gradients flow
    assert torch.isfinite(xg.grad).all() and p.forward.graph.describe()["eager_calls"] == 1


@cuda_only
def test_cuda_bf16_fused_graph_close_to_fp32_eager():
    ref = outputs_on(load_prior(model(), "cuda"))
    fast = outputs_on(load_prior(model(precision="bf16", channels_last=True, fused_norm=True, cuda_graph=True,
                                       micro_batch=2), "cuda"))
    assert 0 < rel_l2(fast, ref) < 5e-2


def outputs_on(prior):
    x, t = inputs()
    with torch.no_grad():
        eps, v = prior.model_output(x.cuda(), t.cuda())
    return torch.cat([eps, v], dim=1).cpu()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BENCH_TEST_COMPILE") != "1",
                    reason="torch.compile (inductor) on CPU takes ~2 min here; set BENCH_TEST_COMPILE=1")
def test_compile_with_fused_norm_micro_batches_and_graph_mode_matches_eager():
    """The compiled fast path with the new options (reduce-overhead's CUDA graphs do not apply on CPU)."""
    ref = outputs(load_prior(model(), "cpu"))
    p = load_prior(model(compile=True, cpu_compile=True, channels_last=True, fused_norm=True, micro_batch=1,
                         compile_mode="reduce-overhead"), "cpu")
    assert p.info["speed"]["compile"] is True and p.info["speed"]["fused_norm"] is True
    torch.testing.assert_close(outputs(p), ref, rtol=0, atol=1e-5)


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


def test_perf_times_latent_solvers_on_the_latent_prior(tmp_path):
    """A latent solver is timed on --latent-model (random latent_tiny at its own 64 px), fp32 only, beside a pixel
    solver on --model; a pixel model given as --latent-model is refused with the fix."""
    from bench.perf.cells import latent_model_config
    from bench.perf.throughput import main as perf_main

    out = tmp_path / "perf.json"
    assert perf_main(["--device", "cpu", "--methods", "latent_dps,ddrm", "--model", "adm_tiny", "--batch", "1",
                      "--steps", "2", "--image-size", "32", "--modes", "fp32+cl", "--repeats", "1", "--warmup", "0",
                      "--warmup-seconds", "0", "--out", str(out)]) == 0
    rows = {(r["method"], r["mode"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("latent_dps", "fp32"), ("ddrm", "fp32"), ("ddrm", "fp32+cl")}
    lat = rows[("latent_dps", "fp32")]
    assert "error" not in lat and lat["image_size"] == 64 and lat["architecture"] == {"latent_model": "latent_tiny"}
    assert lat["nfe_per_image"] == 2 and lat["backprop_through_prior"] is True and lat["images_per_s"] > 0
    assert rows[("ddrm", "fp32")]["image_size"] == 32
    with pytest.raises(ValueError, match="--latent-model 'adm_tiny'.*latent_tiny"):
        latent_model_config("adm_tiny")
