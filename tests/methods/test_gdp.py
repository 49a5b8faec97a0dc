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
import torch.nn.functional as F
import yaml

from bench import seeding
from bench.cli import build_task
from bench.diffusion import respaced_schedule, space_timesteps
from bench.methods import gdp_losses as L
from bench.methods.gdp import (
    GDP, OFFICIAL_SCALES, OFFICIAL_VIEWS, Guidance, effective_scale, official_scale,
)
from bench.operators import Colorization, GDPDeblur, Inpainting, LowLight, SuperResolution
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
            "log_var_large": np.log(np.append(pv[1], b[1:])),  # ModelVarType.FIXED_LARGE
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


class FakePrior:
    """Duck-typed prior attributes only (no network): what GDP reads to pick its variance rule."""

    def __init__(self, learn_sigma: bool, variance: str | None):
        self.betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.image_size, self.learn_sigma = 8, learn_sigma
        if variance is not None:
            self.variance = variance


def test_variance_rule_follows_the_prior_and_can_be_overridden(tiny_model):
    """null = the prior's own rule (guided-diffusion: learned range with learned sigma, else the config's
    diffusion.variance, fixed_large by default); fixed_small / fixed_large override, even a learned one."""
    cases = [((True, "learned_range"), None, "learned_range"), ((False, "fixed_large"), None, "fixed_large"),
             ((False, "fixed_small"), None, "fixed_small"), ((False, None), None, "fixed_large"),
             ((True, "learned_range"), "fixed_small", "fixed_small"),
             ((False, "fixed_large"), "fixed_small", "fixed_small")]
    for (learned, own), override, want in cases:
        m = GDP({"name": "fake"}, steps=5, variance=override)
        m.use_prior(FakePrior(learned, own), "cpu")
        assert m.variance_rule == want == m.describe()["variance"], (learned, own, override)
    with pytest.raises(ValueError, match="learn_sigma=false"):
        GDP({"name": "fake"}, steps=5).use_prior(FakePrior(False, "learned_range"), "cpu")
    with pytest.raises(ValueError, match=r"variance='learned_range'.*fixed_small"):
        GDP(tiny_model, variance="learned_range")
    # what the sampler uses: the learned interpolation, or the fixed tables (learned channels ignored)
    x_t, grid = torch.randn(1, 3, SIZE, SIZE), L.PatchGrid(SIZE, SIZE, SIZE, SIZE // 2)
    for variance, table in (("fixed_small", "log_var_min"), ("fixed_large", "log_var_large"), (None, None)):
        m = make_gdp(tiny_model, steps=5, variance=variance)
        for j in (1, 3):
            _, log_var, _ = m._p_mean_variance(x_t, j, grid)
            s = m._schedule
            if table is None:  # learned range: strictly inside [min, max] per pixel, not constant
                assert m.variance_rule == "learned_range" and log_var.std() > 0
                inside = (log_var >= s.log_var_min[j] - 1e-6) & (log_var <= s.log_var_max[j] + 1e-6)
                assert bool(inside.all())
            else:
                torch.testing.assert_close(log_var, getattr(s, table)[j].expand_as(log_var))
    s = m._schedule
    assert bool((s.log_var_large[1:] > s.log_var_min[1:]).all())  # beta_t > posterior variance


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


def official_gkern(kernlen: int, nsig: float) -> torch.Tensor:
    """Official GDP ``gkern`` (sample_x0_blur.py), transcribed with scipy, cast to float32 as upstream."""
    import scipy.stats as st

    interval = (2 * nsig + 1.0) / kernlen
    x = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, kernlen + 1)
    kern1d = np.diff(st.norm.cdf(x))
    raw = np.sqrt(np.outer(kern1d, kern1d))
    return torch.from_numpy((raw / raw.sum()).astype(np.float32))


def test_deblur_gdp_guidance_is_the_official_blur_cond_fn():
    """sample_x0_blur.py ``blur_cond_fn``: valid 9x9 gkern blur of (x+1)/2 against the 248-px-style
    y picture (here 24 -> 16), mean over its pixels; our view for deblur_gdp is that picture."""
    op = GDPDeblur(3, 24)
    x = torch.rand(2, 3, 24, 24) * 2 - 1
    y = op.A(smooth_images(2, 24))
    s = 6000.0
    w = official_gkern(9, 2)[None, None]
    x_in = x.clone().requires_grad_(True)
    blurred = torch.cat([F.conv2d(((x_in + 1) / 2)[:, c:c + 1], w) for c in range(3)], 1)
    loss = -(((blurred - y.view(2, 3, 16, 16)) ** 2).mean(dim=(1, 2, 3)).sum() * s)
    want = torch.autograd.grad(loss, x_in)[0]
    gdp = GDP({"name": "none"}, scale=s, rescale=False)
    deg = Degradation(conf_task("deblur_gdp"), op, 0.0)
    assert OFFICIAL_VIEWS["deblur"] == "measurement" and gdp.guidance_view("deblur_gdp", (16, 16), (24, 24)) == \
        "measurement"
    guidance = gdp._guidance(y, deg, (3, 24, 24), gens([0, 1]))
    assert guidance.target.shape == (2, 3, 16, 16) and guidance.color_pm == 0
    # float32 SVD path vs upstream's float32 conv2d: agree to ~1e-5 of the largest entry
    torch.testing.assert_close(guidance(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # size rule alone would have picked pinv (the measurement is smaller than the image)
    assert GDP({"name": "none"}).guidance_view("my_blur", (16, 16), (24, 24)) == "pinv"


def color_constancy_and_grad(x: torch.Tensor):
    """MyLoss L_color and its gradient written out: k = sqrt(sum_{a<b} D_ab^2), D_ab = (m_a - m_b)^2,
    dk/dm_a = (2/k) sum_{b != a} D_ab (m_a - m_b), dm_a/dx_a(pixel) = 1/(H W)."""
    b, _, h, w = x.shape
    m = x.double().mean((2, 3))
    d = (m[:, :, None] - m[:, None, :]) ** 2  # D_ab, (B, 3, 3)
    k = torch.sqrt(d[:, 0, 1] ** 2 + d[:, 0, 2] ** 2 + d[:, 1, 2] ** 2)
    dk_dm = (2 / k)[:, None] * (d * (m[:, :, None] - m[:, None, :])).sum(2)
    return k, (dk_dm / (h * w))[:, :, None, None].expand(b, 3, h, w)


def test_colorize_colour_term_value_gradient_and_units(tiny_model):
    """Official sample_x0_color.py: loss = -s * mse - 500 * L_color(x), x in [-1, 1] (per image here)."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    x[1, 0] += 0.4  # a colour cast
    k, dk = color_constancy_and_grad(x)
    torch.testing.assert_close(L.color_loss(x).double(), k, rtol=1e-5, atol=1e-9)
    op = Colorization(3, 16)
    deg = Degradation(conf_task("colorize"), op, 0.0)
    y = op.A(smooth_images(2, 16))
    only_color = GDP({"name": "none"}, scale=0.0, rescale=False)._guidance(y, deg, (3, 16, 16), gens([0, 1]))
    assert only_color.color_pm == 500.0
    torch.testing.assert_close(only_color(x).double(), -500.0 * dk, rtol=1e-4, atol=1e-9)
    # the units of L_color on [-1, 1]: 4 x L_color on [0, 1]
    torch.testing.assert_close(L.color_loss(x), 4 * L.color_loss((x + 1) / 2), rtol=1e-5, atol=1e-9)
    # with the MSE term, literally the official loss, one image at a time (upstream divides by its batch)
    s = 6000.0
    gdp = GDP({"name": "none"}, scale=s, rescale=False)
    guidance = gdp._guidance(y, deg, (3, 16, 16), gens([0, 1]))
    want = []
    for i in range(2):
        x_in = x[i:i + 1].clone().requires_grad_(True)
        gray = lambda v: v.view(1, 1, 16, 16).repeat(1, 3, 1, 1)  # noqa: E731
        mse = ((gray(op.A((x_in + 1) / 2)) - gray(y[i:i + 1])) ** 2).mean(dim=(1, 2, 3)).sum()
        loss = -mse * s - L.color_loss(x_in).mean() * 500
        want.append(torch.autograd.grad(loss, x_in)[0])
    torch.testing.assert_close(guidance(x), torch.cat(want), rtol=1e-5, atol=1e-8)
    # rescaled like s: (T / K) * (N / N_ref), and not multiplied by s
    m = make_gdp(tiny_model, steps=10, scale=0.0)
    assert m._guidance(y, deg, (3, 16, 16), gens([0, 1])).color_pm == pytest.approx(500 * 100 * 768 / 196608)
    # on by default for colorize only; color_colorize=0 turns it off
    for task_name, on in (("colorize", True), ("sr4", False), ("inpaint", False), ("deblur_gdp", False),
                          ("deblur_gauss", False)):
        task = conf_task(task_name)
        d = task.build(16)
        gd = GDP({"name": "none"}, rescale=False)._guidance(d.degrade(smooth_images(1, 16), gens([0])), d,
                                                            (3, 16, 16), gens([0]))
        assert (gd.color_pm == 500.0) == on, task_name
    off = GDP({"name": "none"}, rescale=False, color_colorize=0)._guidance(y, deg, (3, 16, 16), gens([0, 1]))
    assert off.color_pm == 0
    assert GDP(tiny_model).describe()["color_colorize"] == 500.0
    with pytest.raises(ValueError, match="color_colorize=-1"):
        GDP(tiny_model, color_colorize=-1)


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


def test_lowlight_patch_update_is_the_mean_of_per_patch_steps():
    """Upstream (gaussian_diffusion_x0_enhancement_direct.py::p_sample): each 256-px patch takes its own
    (f, M) gradient step on its own mean loss from the pre-step values; the new f is the patches' mean,
    the new M the mean over the patches covering a pixel. Here: 96x128 images, 64-px patches at stride
    32, an exact prior (x~0 == x* in every patch), one sampling step, the step computed independently."""
    H, W, p, lr = 96, 128, 64, 1.0
    g = torch.Generator().manual_seed(7)
    level = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)  # constant colours: every patch's x* is the same
    x = level.expand(2, 3, H, W)
    f_true, m_true = torch.tensor([0.3, 0.2]).view(2, 1, 1, 1), 0.05 * torch.rand(2, 1, H, W, generator=g)
    y = f_true * x + m_true
    m = GDP({"name": "delta"}, steps=1, scale=0.0, patch_size=p, lr_degradation=lr)
    m.use_prior(DeltaPrior(level.expand(1, 3, p, p) * 2 - 1), "cpu")
    m.restore(y, Degradation(conf_task("lowlight"), LowLight(3, H), 0.0), gens([0, 1]))
    g2 = gens([0, 1])  # the initial (f, M), drawn in restore's order: x_T, f, M
    seeding.randn(g2, (3, H, W), "cpu")
    f0 = (seeding.randn(g2, (1, 1, 1), "cpu") / 100).view(2, 1, 1, 1)
    m0 = seeding.rand(g2, (1, H, W), "cpu") / 1e4
    corners = [(i, j) for i in (0, 32) for j in (0, 32, 64)]  # overlapping_grid_indices(96x128, 64, 32)
    m_sum, cover, f_new = torch.zeros(2, 1, H, W), torch.zeros(1, 1, H, W), torch.zeros(2, 1, 1, 1)
    for i, j in corners:
        sl = (slice(None), slice(None), slice(i, i + p), slice(j, j + p))
        r = f0 * x[sl] + m0[sl] - y[sl]  # residual of the patch
        m_sum[sl] += m0[sl] - lr * 2 / (3 * p * p) * r.sum(1, keepdim=True)  # d/dM of mean over 3 p^2
        f_new += f0 - lr * 2 / (3 * p * p) * (r * x[sl]).sum((1, 2, 3), keepdim=True)
        cover[sl] += 1
    want_m, want_f = m_sum / cover, f_new / len(corners)
    got = m.last_degradation
    torch.testing.assert_close(got["mask"], want_m, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(got["f"], want_f.view(2), rtol=1e-4, atol=1e-6)  # float32 sums of 3 p^2 terms
    # the whole-image mean (the old rule) steps M by p^2 / (H W) = 1/3 of that
    r = f0 * x + m0 - y
    whole = -lr * 2 / (3 * H * W) * r.sum(1, keepdim=True)
    torch.testing.assert_close((got["mask"] - m0) / whole, torch.full_like(whole, H * W / p**2), rtol=1e-3, atol=0)


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
TASKS = ["sr4", "sr4_bicubic", "sr4_noisy", "deblur_gauss", "deblur_uniform", "deblur_gdp", "denoise", "inpaint",
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


@pytest.mark.slow
def test_cli_deblur_gdp_manifest_names_preprocessing_and_variance(tmp_path: Path):
    """GDP on the new task through the real CLI; the manifest names the preprocessing and variance rule."""
    import json

    run_cli("method=gdp_x0", "task=deblur_gdp", "model=adm_tiny", "steps=2", "dataset.limit=1",
            "dataset.image_size=32", results_root=tmp_path)
    (run,) = [p.parent for p in tmp_path.rglob("manifest.json")]
    man = json.loads((run / "manifest.json").read_text())
    assert "center_crop_arr" in man["dataset"]["preprocessing"] and "bit-exact" in man["dataset"]["preprocessing"]
    assert man["method"]["variance"] == "learned_range" and man["task"]["name"] == "deblur_gdp"
    from bench.imageio import read_png_u8

    assert read_png_u8(next((run / "degraded").glob("*.png"))).shape == (3, 24, 24)  # the valid-blurred y
    assert read_png_u8(next((run / "images").glob("*.png"))).shape == (3, 32, 32)
