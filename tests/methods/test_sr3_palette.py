"""SR3 / Palette (Janspiry layouts): UNet shapes, strict loading of checkpoints in the official key layout, the
noise-level conditioning, respaced schedule math, the methods' conditioning rules, and one tiny CLI run each.
Equality with the official code: tests/equivalence/test_official_sr3_palette.py (needs the checkouts)."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from bench.cli import build_task
from bench.diffusion import alphas_cumprod
from bench.methods.conditional_ddpm import conditional_schedule, p_sample, sample
from bench.methods.palette import Palette
from bench.methods.sr3 import SR3, pil_bicubic_upsample
from bench.models.assets import AssetError
from bench.models.conditional import load_conditional, official_unet_state, sampling_betas
from bench.models.palette_unet import PaletteUNet
from bench.models.sr3_unet import SR3UNet, noise_level_encoding

REPO = Path(__file__).resolve().parents[2]


def model_cfg(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml"))


def task(name: str):
    return build_task(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("name, cls", [("sr3_tiny", SR3UNet), ("palette_tiny", PaletteUNet)])
def test_unet_shapes_and_gamma_shapes(name, cls):
    net = cls(**model_cfg(name)["arch"]).eval()
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0.3, 0.7])), net(x, torch.tensor([[0.3], [0.7]]))
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)  # (B,) and the official (B, 1) noise levels are the same input


def test_sr3_noise_level_encoding_is_wavegrad():
    g = torch.tensor([0.0, 0.5])
    e = noise_level_encoding(g, 8)
    f = torch.exp(-math.log(1e4) * torch.arange(4) / 4)
    assert torch.allclose(e[1], torch.cat([torch.sin(0.5 * f), torch.cos(0.5 * f)]))
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_noise_level_changes_the_output():
    for cls, name in ((SR3UNet, "sr3_tiny"), (PaletteUNet, "palette_tiny")):
        net = cls(**model_cfg(name)["arch"]).eval()
        for p in net.parameters():  # also the zero-initialised heads
            torch.nn.init.normal_(p, 0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
        x = torch.randn(1, 6, 32, 32)
        with torch.no_grad():
            assert not torch.allclose(net(x, torch.tensor([0.2])), net(x, torch.tensor([0.9])))


def test_palette_unet_has_official_names():
    keys = PaletteUNet(**model_cfg("palette_tiny")["arch"]).state_dict()
    assert "cond_embed.0.weight" in keys and not any(k.startswith("time_embed") for k in keys)
    sr3_keys = SR3UNet(**model_cfg("sr3_tiny")["arch"]).state_dict()
    for k in ("noise_level_mlp.1.weight", "downs.1.res_block.noise_func.noise_func.0.weight",
              "downs.1.res_block.block1.block.3.weight", "final_conv.block.3.bias"):
        assert k in sr3_keys


def test_released_palette_config_has_only_middle_attention():
    """Janspiry compares attn_res [16] with the downsample rate (max 8): attention in the middle block only."""
    with torch.device("meta"):
        keys = PaletteUNet(**model_cfg("palette_celebahq256")["arch"]).state_dict()
    attn = {k.split(".qkv")[0] for k in keys if ".qkv." in k}
    assert attn == {"middle_block.1"}


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("name", ["sr3_tiny", "palette_tiny"])
def test_official_checkpoint_layout_loads_strictly(tmp_path, name, isolated_prior_cache):
    cfg = model_cfg(name)
    src = load_conditional(cfg, "cpu", cfg["kind"])
    state = {f"denoise_fn.{k}": v + 0.01 for k, v in src.net.state_dict().items()}
    state.update({"betas": torch.zeros(3), "posterior_mean_coef1": torch.zeros(3)})  # wrapper buffers
    path = tmp_path / "I10_E1_gen.pth"
    torch.save(state, path)
    cfg["asset"] = {"name": path.name, "path": str(path)}
    with pytest.warns(UserWarning, match="no sha256 pinned"):
        got = load_conditional(cfg, "cpu", cfg["kind"])
    assert got.info["meaningful"] and got.info["asset"]["path"] == str(path)
    for k, v in got.net.state_dict().items():
        assert torch.equal(v, state[f"denoise_fn.{k}"])
    del state["denoise_fn.final_conv.block.3.bias" if name == "sr3_tiny" else "denoise_fn.out.2.bias"]
    torch.save(state, path)
    with pytest.raises(AssetError, match="does not match model"), pytest.warns(UserWarning):
        load_conditional(cfg, "cpu", cfg["kind"])


def test_official_unet_state_strips_prefixes_and_buffers():
    t = torch.zeros(1)
    got = official_unet_state({"module.denoise_fn.a.w": t, "gammas": t, "sqrt_recip_gammas": t, "b": t})
    assert set(got) == {"a.w", "b"}


def test_model_kind_and_schedule_errors():
    with pytest.raises(ValueError, match=r"model=sr3_ffhq16_128"):
        SR3(model_cfg("adm_tiny"))
    with pytest.raises(ValueError, match="allowed: linear, quad"):
        sampling_betas("m", {"schedule": "cosine", "n_timestep": 10, "linear_start": 1e-4, "linear_end": 0.02})
    with pytest.raises(ValueError, match="steps=3000"):
        SR3(model_cfg("sr3_tiny"), steps=3000)
    with pytest.raises(ValueError, match="clip_denoised"):
        Palette(model_cfg("palette_tiny"), clip_denoised="yes")


# ------------------------------------------------------------------ schedule
def test_full_schedule_is_the_official_one():
    betas = sampling_betas("m", model_cfg("sr3_tiny")["schedule"])
    assert betas.numel() == 2000 and betas[0] == 1e-6 and abs(float(betas[-1]) - 1e-2) < 1e-15
    s = conditional_schedule(betas, 2000, "sqrt_abar", "cpu")
    abar = alphas_cumprod(betas)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    assert torch.allclose(s.gamma.double(), abar.sqrt(), atol=1e-7)
    coef1 = betas * abar_prev.sqrt() / (1 - abar)
    assert torch.allclose(s.tables.coef1.double(), coef1, rtol=1e-6)
    var = betas * (1 - abar_prev) / (1 - abar)
    assert torch.allclose(s.tables.log_var_min[1:].double(), var[1:].log(), rtol=1e-6)


def test_respaced_schedule_keeps_the_marginals():
    betas = sampling_betas("m", model_cfg("palette_tiny")["schedule"])
    s = conditional_schedule(betas, 10, "abar", "cpu")
    kept = s.tables.timesteps
    assert kept.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    abar = alphas_cumprod(betas)[kept]
    assert torch.allclose(s.gamma.double(), abar, rtol=1e-6)  # exact noise level of each kept step
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    b = 1 - abar / prev
    assert torch.allclose((1 / s.tables.sqrt_recip_abar.double() ** 2), torch.cumprod(1 - b, 0), rtol=1e-5)
    assert torch.allclose(s.tables.coef2.double(), (1 - prev) * (1 - b).sqrt() / (1 - abar), rtol=1e-5)


def test_p_sample_with_perfect_eps_recovers_x0():
    """An oracle net (eps of a known x0) makes x0_hat exact: the j=0 step returns x0 (no noise)."""
    betas = sampling_betas("m", model_cfg("palette_tiny")["schedule"])
    s = conditional_schedule(betas, 5, "abar", "cpu")
    x0 = torch.rand(1, 3, 4, 4) * 1.6 - 0.8
    eps = torch.randn(1, 3, 4, 4)
    a = s.gamma[0]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps

    def oracle(inp, gamma):
        assert torch.allclose(gamma, s.gamma[0].expand(1))
        return eps

    assert torch.allclose(p_sample(oracle, xt, torch.zeros_like(x0), s, 0, None), x0, atol=1e-5)


def test_sample_repastes_known_pixels_and_is_seeded():
    net = PaletteUNet(**model_cfg("palette_tiny")["arch"]).eval()
    s = conditional_schedule(sampling_betas("m", model_cfg("palette_tiny")["schedule"]), 3, "abar", "cpu")
    y0 = torch.rand(2, 3, 32, 32) * 2 - 1
    keep = (torch.rand(1, 1, 32, 32) > 0.3).float()
    c = y0 * keep
    a = sample(net, c, s, gens(1, 2), x_init=c, y0=y0, keep=keep)
    assert torch.equal(a * keep, y0 * keep)
    b = sample(net, c[1:], s, gens(2), x_init=c[1:], y0=y0[1:], keep=keep)
    assert torch.allclose(a[1:], b, atol=1e-6)  # batch-composition independent
    with pytest.raises(ValueError, match="y0 and keep"):
        sample(net, c, s, gens(1, 2), y0=y0)


# ------------------------------------------------------------------ methods
def test_sr3_condition_is_pil_bicubic():
    lr = torch.rand(1, 3, 8, 8)
    up = pil_bicubic_upsample(lr, (32, 32))
    ref = Image.fromarray(lr[0, 1].numpy(), mode="F").resize((32, 32), Image.BICUBIC)
    assert torch.allclose(up[0, 1], torch.from_numpy(np.array(ref)))
    assert not torch.allclose(up, torch.nn.functional.interpolate(lr, size=(32, 32), mode="bicubic"), atol=1e-3)


@pytest.mark.parametrize("steps", [None, 2])
def test_sr3_restore_nfe_and_task_rules(steps):
    m = SR3(model_cfg("sr3_tiny"), steps=steps)
    if steps is None:  # full chain: only count it through the schedule (2000 net calls are too slow here)
        m.setup(torch.device("cpu"))
        assert m.schedule("cpu").num_steps == 2000 and m.describe()["respacing"] == "none (official)"
        return
    deg = task("sr4").build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = m.restore(deg.degrade(x, gens(0, 1)), deg, gens(5, 6))
    assert out.shape == (2, 3, 32, 32) and m.last_nfe == 2 and 0 <= out.min() and out.max() <= 1
    assert m.unsupported_reason(task("inpaint")) is not None and m.unsupported_reason(task("sr4_noisy")) is None
    with pytest.raises(ValueError, match="divisible by 2"):
        m.check_size((34, 31))


def test_palette_inpaint_composites_and_colorize_runs():
    m = Palette(model_cfg("palette_tiny"), steps=2)
    deg = task("inpaint").build(32)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = m.restore(deg.degrade(x, gens(0)), deg, gens(3))
    keep = deg.operator.mask
    assert torch.allclose(out[0][:, keep], x[0][:, keep], atol=1e-6)  # known pixels are the measurement
    assert not torch.allclose(out[0][:, ~keep], x[0][:, ~keep], atol=1e-2) and m.last_nfe == 2
    deg = task("colorize").build(32)
    assert m.restore(deg.degrade(x, gens(0)), deg, gens(3)).shape == (1, 3, 32, 32)
    assert m.unsupported_reason(task("sr4")) is not None


# ------------------------------------------------------------------ CLI
@pytest.mark.parametrize("method, model, task_name", [("sr3", "sr3_tiny", "sr4"), ("palette", "palette_tiny", "inpaint")])
def test_cli_tiny_run_with_a_checkpoint_file(tmp_path, method, model, task_name, isolated_prior_cache):
    """python -m bench with random tiny weights given as model.asset.path (a file in the official layout)."""
    from bench.api import run

    cfg = model_cfg(model)
    net = load_conditional(cfg, "cpu", cfg["kind"]).net
    ckpt = tmp_path / "weights.pth"
    torch.save({f"denoise_fn.{k}": v for k, v in net.state_dict().items()}, ckpt)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.warns(UserWarning, match="no sha256 pinned"):
        run_dir = run(overrides=[f"method={method}", f"model={model}", f"task={task_name}", "steps=2",
                                 "dataset.limit=1", "dataset.image_size=32", f"model.asset.path={ckpt}",
                                 "metrics.lpips.net=null", f"run.results_root={tmp_path / 'r'}",
                                 "run.progress=false", "run.device=cpu"])
    assert len(list((run_dir / "images").glob("*.png"))) == 1
    assert re.search(r"nfe_per_image\s*: 2\.0\n", out.getvalue()), out.getvalue()


def test_auto_batch_probe_calls_the_conditional_net():
    from bench.batching import probe_target

    m = SR3(model_cfg("sr3_tiny"), steps=2)
    m.setup(torch.device("cpu"))
    call, shape, backprop = probe_target(m, 32)
    assert shape == (6, 32, 32) and not backprop
    with torch.no_grad():
        assert call(torch.zeros(2, *shape)).shape == (2, 3, 32, 32)
