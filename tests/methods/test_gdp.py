"""GDP (bench/methods/gdp.py, gdp_losses.py): schedule, official loss, guidance effect, blind low-light
degradation, patch tiling, the Method API on every task, and the real CLI.

The tiny ADM (conf/model/adm_tiny.yaml) has random weights, so only properties that hold for any
eps-model are tested: guidance must pull A(x) towards y, the (f, M) update must find a known
degradation, tiling must be exact, sampling must be deterministic and batch independent.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import seeding
from bench.cli import build_task
from bench.diffusion import space_timesteps
from bench.methods import gdp_losses as L
from bench.methods.gdp import (
    GDP, OFFICIAL_SCALES, Guidance, effective_scale, official_scale, respaced_schedule,
)
from bench.operators import Colorization, Inpainting, LowLight, SuperResolution
from bench.tasks import Degradation, Task
from tests.conftest import CONF_DIR, compose, run_cli

SIZE = 32  # adm_tiny's image_size


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_model() -> dict:
    return yaml.safe_load((CONF_DIR / "model" / "adm_tiny.yaml").read_text())


def conf_task(name: str) -> Task:
    return build_task(yaml.safe_load((CONF_DIR / "task" / f"{name}.yaml").read_text()))


def gens(ids, stream="restore"):
    return seeding.make_generators(0, [str(i) for i in ids], stream)


def smooth_images(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def make_gdp(model, **kw) -> GDP:
    m = GDP(model, **kw)
    m.setup(torch.device("cpu"))
    return m


# ------------------------------------------------------------------------------ schedule, scales
def guided_diffusion_tables(betas: np.ndarray, use: list[int]) -> dict:
    """openai/guided-diffusion SpacedDiffusion + GaussianDiffusion formulas, written out in numpy."""
    abar_full, last, new = np.cumprod(1 - betas), 1.0, []
    for i, a in enumerate(abar_full):
        if i in use:
            new.append(1 - a / last)
            last = a
    b = np.array(new)
    abar = np.cumprod(1 - b)
    prev = np.append(1.0, abar[:-1])
    pv = b * (1 - prev) / (1 - abar)
    return {"coef1": b * np.sqrt(prev) / (1 - abar), "coef2": (1 - prev) * np.sqrt(1 - b) / (1 - abar),
            "log_var_min": np.log(np.append(pv[1], pv[1:])), "log_var_max": np.log(b),
            "sqrt_recip_abar": np.sqrt(1 / abar), "sqrt_recipm1_abar": np.sqrt(1 / abar - 1)}


@pytest.mark.parametrize("steps", [1000, 100, 7])
def test_schedule_matches_guided_diffusion(steps):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    s = respaced_schedule(betas, steps, "cpu", dtype=torch.float64)
    use = space_timesteps(1000, [steps])
    assert s.timesteps.tolist() == use and s.num_steps == len(use)
    for key, want in guided_diffusion_tables(betas.numpy(), use).items():
        np.testing.assert_allclose(getattr(s, key).numpy(), want, rtol=1e-10, err_msg=key)


def test_official_scales_and_rescaling():
    assert OFFICIAL_SCALES == {"sr": 2000.0, "deblur": 6000.0, "colorize": 6000.0, "inpaint": 4000.0,
                               "lowlight": 80000.0}
    assert official_scale("sr4_bicubic") == 2000 and official_scale("deblur_gauss") == 6000
    assert official_scale("denoise") is None
    assert effective_scale(2000, 1000, 1000, 3 * 256 * 256) == 2000  # official setting: unchanged
    assert effective_scale(2000, 1000, 100, 3 * 256 * 256) == 20000  # 10x fewer steps
    assert effective_scale(2000, 1000, 1000, 3 * 128 * 128) == 500  # per-pixel pull kept


def test_task_support_and_errors(tiny_model):
    m = GDP(tiny_model, steps=3)
    assert m.unsupported_reason(conf_task("lowlight")) is None
    assert m.unsupported_reason(conf_task("sr4")) is None
    assert "method.scale" in m.unsupported_reason(conf_task("denoise"))  # no official scale: skipped
    assert GDP(tiny_model, steps=3, scale=100.0).unsupported_reason(conf_task("denoise")) is None
    assert "linear" in GDP(tiny_model, learn_degradation=True).unsupported_reason(conf_task("sr4"))
    with pytest.raises(ValueError, match="variant"):
        GDP(tiny_model, variant="x1")
    with pytest.raises(ValueError, match="distance"):
        GDP(tiny_model, distance="l1")
    with pytest.raises(ValueError, match="exceeds"):
        make_gdp(tiny_model, steps=1001)


# ------------------------------------------------------------------------------ the official loss
@pytest.mark.parametrize("op_cls, official_view", [
    (functools.partial(SuperResolution, factor=4), "pinv"),  # sample_x0_sr4.py: H_pinv(H(x))
    (functools.partial(Inpainting, missing=0.25), "pinv"),  # sample_x0_inp.py: H_pinv(H(x))
    (Colorization, "gray3"),  # sample_x0_color.py: H(x) viewed (B,1,H,W), repeated to 3 channels
])
def test_guidance_is_the_official_gradient(op_cls, official_view):
    op = op_cls(3, 16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1  # an x0 (or x_t) in [-1, 1]
    y = op.A(smooth_images(2, 16))
    s = 1234.0

    def view(v):
        if official_view == "pinv":
            return op.pinv(v).view(v.shape[0], 3, 16, 16)
        return v.view(v.shape[0], 1, 16, 16).repeat(1, 3, 1, 1)

    x_in = x.clone().requires_grad_(True)  # general_cond_fn, literally
    loss = -(((view(op.A((x_in + 1) / 2)) - view(y)) ** 2).mean(dim=(1, 2, 3)).sum() * s)
    want = torch.autograd.grad(loss, x_in)[0]

    deg = Degradation(Task("t", 1, op_cls), op, 0.0)
    gdp = GDP({"name": "none"}, scale=s, rescale=False)
    guidance = gdp._guidance(y, deg, (3, 16, 16), gens([0, 1]))
    torch.testing.assert_close(guidance(x), want, rtol=1e-5, atol=1e-9)


class SpyPrior:
    """Wraps a prior; records whether autograd was on while the UNet ran."""

    def __init__(self, prior):
        self.inner, self.grad_enabled = prior, []
        self.image_size, self.betas, self.learn_sigma = prior.image_size, prior.betas, prior.learn_sigma

    def model_output(self, x_t, t):
        self.grad_enabled.append(torch.is_grad_enabled() or x_t.requires_grad)
        return self.inner.model_output(x_t, t)


@pytest.mark.parametrize("variant", ["x0", "xt"])
def test_no_backprop_through_the_unet(tiny_model, variant):
    m = make_gdp(tiny_model, steps=3, variant=variant)
    m.use_prior(SpyPrior(m.prior), "cpu")
    task = conf_task("sr4")
    deg = task.build(SIZE)
    m.restore(deg.degrade(smooth_images(1), gens([0], "degrade")), deg, gens([0]))
    assert m.prior.grad_enabled == [False] * 3


# -------------------------------------------------------------------------- guidance effect
@pytest.mark.parametrize("task_name", ["sr4", "inpaint"])
@pytest.mark.parametrize("variant", ["x0", "xt"])
def test_guidance_lowers_measurement_residual(tiny_model, task_name, variant):
    """||y - A(x)|| with the official default scale vs scale 0, same generators, mean over 4 images."""
    deg = conf_task(task_name).build(SIZE)
    ids = range(4)
    y = deg.degrade(smooth_images(4), gens(ids, "degrade"))
    res = {}
    for label, scale in (("guided", None), ("unguided", 0.0)):
        x = make_gdp(tiny_model, steps=10, variant=variant, scale=scale).restore(y, deg, gens(ids))
        res[label] = float((deg.operator.A(x) - y).flatten(1).norm(dim=1).mean())
    print(f"GDP-{variant} {task_name}: residual guided {res['guided']:.4f} unguided {res['unguided']:.4f}")
    assert res["guided"] < 0.5 * res["unguided"], res


# ---------------------------------------------------------------------- blind low-light model
def test_degradation_update_recovers_known_f_and_mask():
    """The official update (plain GD, lr 1, from randn/100 and rand/1e4) on fixed x.

    Tolerance 1e-4: y = f x + M is noise-free and identifiable (the channels of x differ within a
    pixel), so the MSE is a strictly convex quadratic in (f, M) and gradient descent converges
    linearly. The slow directions are the mask (curvature 2/(H*W)) and the f-vs-M trade-off (curvature
    set by the within-pixel channel spread of x); measured, 2000 steps leave ~4e-6 (25x inside).
    """
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    f_true, m_true = torch.tensor([0.3, 0.15]).view(2, 1, 1, 1), 0.05 * torch.rand(2, 1, 8, 8, generator=g)
    y = L.lowlight_model(x, f_true, m_true)
    f, m = torch.randn(2, 1, 1, 1, generator=g) / 100, torch.rand(2, 1, 8, 8, generator=g) / 1e4
    for _ in range(2000):
        f, m, loss = L.degradation_step(x, y, f, m, lr=1.0)
    assert (f - f_true).abs().max() < 1e-4 and (m - m_true).abs().max() < 1e-4
    assert float(loss.max()) < 1e-8


class DeltaPrior:
    """An eps-model that is exact for the data distribution 'always x*': x~0 == x* at every step."""

    def __init__(self, x_star: torch.Tensor, T: int = 1000):
        self.x_star, self.image_size, self.learn_sigma = x_star, x_star.shape[-1], False
        self.betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        self.abar = torch.cumprod(1 - self.betas, 0).float()

    def model_output(self, x_t, t):
        a = self.abar[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.x_star) / (1 - a).sqrt(), None


def test_sampler_recovers_known_lowlight_degradation():
    """Through restore(): with an exact prior the sampler's (f, M) reach the true degradation.

    Tolerance 1e-3: with x~0 == x* every step this is the isolated update above run once per
    sampling step; on 4x4 images with lr_degradation=2 the slowest (f-vs-M) mode contracts by ~0.97
    per step (measured), so 200 steps leave ~4e-5. Once f, M fit, the guidance vanishes and the
    output is x* to the same tolerance.
    """
    g = torch.Generator().manual_seed(2)
    x_star = torch.rand(2, 3, 4, 4, generator=g)
    f_true, m_true = torch.tensor([0.25, 0.4]), 0.05 * torch.rand(2, 1, 4, 4, generator=g)
    y = L.lowlight_model(x_star, f_true.view(2, 1, 1, 1), m_true)
    m = GDP({"name": "delta"}, steps=200, variant="x0", lr_degradation=2.0)
    m.use_prior(DeltaPrior(x_star * 2 - 1), "cpu")
    deg = Degradation(conf_task("lowlight"), LowLight(3, 4), 0.0)
    out = m.restore(y, deg, gens([0, 1]))
    d = m.last_degradation
    assert d["f"].shape == (2,) and d["mask"].shape == (2, 1, 4, 4)
    assert (d["f"] - f_true).abs().max() < 1e-3 and (d["mask"] - m_true).abs().max() < 1e-3
    assert (out - x_star).abs().max() < 1e-3


def test_lowlight_known_operator_guidance(tiny_model):
    """learn_degradation=false guides through the task's own y = 0.25 x^2 (no f, M). Its gradient
    0.5 x vanishes on black pixels, so the pull is weaker than for linear tasks (measured ratio ~0.66)."""
    deg = conf_task("lowlight").build(SIZE)
    y = deg.degrade(smooth_images(2), gens([0, 1], "degrade"))
    res = {}
    for scale in (None, 0.0):
        m = make_gdp(tiny_model, steps=10, scale=scale, learn_degradation=False)
        res[scale] = float((deg.operator.A(m.restore(y, deg, gens([0, 1]))) - y).flatten(1).norm(dim=1).mean())
        assert m.last_degradation is None
    assert res[None] < 0.8 * res[0.0], res


def test_quality_losses_match_zero_dce():
    half = torch.full((1, 3, 16, 16), 0.5)
    assert torch.allclose(L.exposure_loss(half, 8, 0.3), torch.tensor([0.04]))  # (0.5 - 0.3)^2
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1  # channel means (1, 0, 0): D_rg = D_rb = 1, D_gb = 0
    assert torch.allclose(L.color_loss(red), torch.tensor([2**0.5]))
    assert float(L.color_loss(half)) < 1e-5
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)  # dw = 1, dh = 0
    assert torch.allclose(L.tv_loss(ramp), torch.tensor([2.0 * (3 * 3 / (3 * 3))]))
    x = half.clone().requires_grad_(True)
    (L.color_loss(x) + L.exposure_loss(x)).sum().backward()
    assert torch.isfinite(x.grad).all()


# -------------------------------------------------------------------------------- patch tiling
def test_patch_grid_roundtrip_non_square():
    grid = L.PatchGrid(48, 40, patch=32, stride=16)
    assert grid.corners == [(0, 0), (0, 8), (16, 0), (16, 8)]
    x = torch.rand(2, 3, 48, 40)
    tiles = grid.tile(x)
    assert tiles.shape == (2 * 4, 3, 32, 32)
    torch.testing.assert_close(tiles[5], x[1, :, 0:32, 8:40])
    assert torch.equal(grid.untile(tiles), x) or torch.allclose(grid.untile(tiles), x, atol=1e-7)
    cov = grid.coverage()
    assert cov.min() >= 1 and cov.max() == 4 and cov.sum() == 4 * 32 * 32
    # overlaps are averaged: constant patches k give their mean where they overlap
    avg = grid.untile(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 32, 32))
    assert avg[0, 0, 0, 0] == 0 and avg[0, 0, 20, 20] == 1.5 and avg[1, 0, 47, 39] == 7


def test_patch_grid_official_corners_and_whole_image():
    # upstream overlapping_grid_indices for 400x600 at 256/128 (minus its duplicate-free case)
    grid = L.PatchGrid(400, 600, 256, 128)
    assert sorted({i for i, _ in grid.corners}) == [0, 128, 144]
    assert sorted({j for _, j in grid.corners}) == [0, 128, 256, 344]
    one = L.PatchGrid(32, 32, 32, 16)
    x = torch.rand(1, 3, 32, 32)
    assert one.whole and one.tile(x) is x and one.untile(x) is x
    with pytest.raises(ValueError, match="smaller than"):
        L.PatchGrid(16, 40, 32, 16)


def test_lowlight_patches_non_square(tiny_model):
    m = make_gdp(tiny_model, steps=3, exposure=0.01, color=0.005, tv=1.0)
    x = smooth_images(2, 48)[..., :40]
    y = 0.25 * x**2
    deg = Degradation(conf_task("lowlight"), LowLight(3, 48), 0.0)
    out = m.restore(y, deg, gens([0, 1]))
    assert out.shape == (2, 3, 48, 40) and torch.isfinite(out).all()
    assert m.last_nfe == 3 * 4 and m.last_degradation["mask"].shape == (2, 1, 48, 40)


# ----------------------------------------------------------------------- Method API, every task
TASKS = ["sr4", "sr4_bicubic", "sr4_noisy", "deblur_gauss", "deblur_uniform", "denoise", "inpaint",
         "colorize", "lowlight"]


@pytest.mark.parametrize("task_name", TASKS)
def test_restore_every_task(tiny_model, task_name):
    variant = "xt" if task_name in ("inpaint", "deblur_uniform") else "x0"
    m = make_gdp(tiny_model, steps=3, variant=variant, scale=100.0 if task_name == "denoise" else None)
    task = conf_task(task_name)
    assert m.unsupported_reason(task) is None
    deg = task.build(SIZE)
    x = smooth_images(3, seed=3)
    y = deg.degrade(x, gens(range(3), "degrade"))
    out = m.restore(y, deg, gens(range(3)))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert m.last_nfe == 3
    assert torch.equal(m.restore(y, deg, gens(range(3))), out)  # same generators -> same result
    alone = torch.cat([m.restore(y[i:i + 1], deg, gens([i])) for i in range(3)])
    torch.testing.assert_close(alone, out, rtol=0, atol=1e-4)  # batch composition does not matter
    assert (m.last_degradation is not None) == (task_name == "lowlight")


def test_config_files_instantiate():
    from hydra.utils import instantiate

    for name, variant in (("gdp_x0", "x0"), ("gdp_xt", "xt")):
        cfg = compose(f"method={name}", "steps=7")
        assert cfg.method.name == name and cfg.method.variant == variant
        kw = {k: v for k, v in dict(cfg.method).items() if k != "name"}
        m = instantiate(kw)
        assert isinstance(m, GDP) and m.steps == 7 and m.variant == variant and m.scale is None
        assert m.describe()["variant"] == variant


# -------------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
@pytest.mark.parametrize("method, task", [("gdp_x0", "sr4"), ("gdp_xt", "inpaint"), ("gdp_x0", "lowlight")])
def test_cli_runs(tmp_path: Path, method, task):
    proc = run_cli(f"method={method}", f"task={task}", "steps=5", "dataset.limit=2", results_root=tmp_path)
    assert proc.returncode == 0
    pngs = sorted(tmp_path.glob(f"sample/{task}/{method}/*/images/*.png"))
    assert len(pngs) == 2, (proc.stdout, proc.stderr)
