"""DCDP: the SGD data fit decreases ||A x - y|| and converges to the least-squares solution nearest its start, the
DDIM purification on the analytic Gaussian prior equals its closed form, the official T_k schedule and NFE, batch
independence, the errors, and one tiny CLI run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.api import run
from bench.diffusion import padded_alphas_cumprod, space_timesteps
from bench.methods.dcdp import DCDP, OFFICIAL, data_fit, ddim_levels, purification_schedule, purify
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, gens, problem, task, with_gaussian_prior
from tests.methods.test_ddrm import gaussian_eps

ABAR = padded_alphas_cumprod(BETAS)
TASKS = ["sr4", "deblur_gauss", "inpaint"]


def official_lr(name: str, op) -> float:
    return DCDP.effective_lr(OFFICIAL[name.rstrip("4").split("_")[0]][2], op)


# ---------------------------------------------------------------------------------------- data fit
@pytest.mark.parametrize("name", TASKS)
def test_data_fit_is_monotone_at_the_official_step_and_heavy_ball_ends_lower(name):
    """Plain gradient descent (momentum 0) at the official per-element step never increases ||A x - y|| on each
    task's operator (its step times ||A||^2 stays below 2); the official heavy ball (0.9) ends below where it began."""
    deg, _, y = problem(name, size=8, sigma=0.05)
    op, lr = deg.operator, official_lr(name, deg.operator)
    x0 = torch.randn(2, op.N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res: list = []
    data_fit(op, x0, y, 100, lr, 0.0, res)
    r = torch.stack(res)
    assert torch.all(r[1:] <= r[:-1] * (1 + 1e-12)), r[:, 0]
    assert torch.all(r[-1] < 0.9 * r[0])
    res = []
    data_fit(op, x0, y, 100, lr, 0.9, res)
    assert torch.all(res[-1] < 0.5 * res[0])


@pytest.mark.parametrize("name", ["sr4", "inpaint"])
def test_data_fit_converges_to_the_least_squares_solution_nearest_its_start(name):
    """Gradients lie in the range of A^T, so SGD from x_init converges to x_init - A^+ A x_init + A^+ y (A^+ y from
    x_init = 0, as official starts): noiseless y, official lr and momentum, 400 steps."""
    deg, _, y = problem(name, size=8)
    op = deg.operator
    x_init = torch.randn(2, op.N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = data_fit(op, x_init, y, 400, official_lr(name, op), 0.9)
    want = x_init - op.pinv(op.A(x_init)) + op.pinv(y)
    assert torch.allclose(out, want, atol=1e-6), (out - want).abs().max()
    zero = data_fit(op, torch.zeros_like(x_init), y, 400, official_lr(name, op), 0.9)
    assert torch.allclose(zero, op.pinv(y), atol=1e-6)


# ------------------------------------------------------------------------------------- purification
def closed_form(x, z, start, kept, m, c, tweedie=False):
    """DDIM eta = 0 on x0 ~ N(m, c^2 I): x_t - sqrt(a_t) m is multiplied per step t -> s by
    (sqrt(a_s a_t) c^2 + sqrt((1 - a_s)(1 - a_t))) / v_t, v_t = a_t c^2 + 1 - a_t, and the last x0 estimate by
    c^2 sqrt(a_t) / v_t."""
    a = [float(ABAR[t + 1]) for t in kept[::-1]]
    if tweedie:
        a = a[:1]
    a0 = float(ABAR[start + 1])
    u = a0**0.5 * x + (1 - a0) ** 0.5 * z - a[0] ** 0.5 * m
    for a_t, a_s in zip(a[:-1], a[1:]):
        u = u * ((a_s * a_t) ** 0.5 * c**2 + ((1 - a_s) * (1 - a_t)) ** 0.5) / (a_t * c**2 + 1 - a_t)
    return m + u * c**2 * a[-1] ** 0.5 / (a[-1] * c**2 + 1 - a[-1])


@pytest.mark.parametrize("t_k, tweedie", [(400, False), (15, False), (1, False), (222, True)])
def test_purification_on_the_gaussian_prior_is_its_closed_form(t_k, tweedie):
    m, c = 0.1, 0.2
    f = gaussian_eps(m, c)
    calls = []

    def eps_fn(x, t):
        calls.append(t)
        return f(x, torch.full((x.shape[0],), t, dtype=torch.long))

    g = torch.Generator().manual_seed(3)
    x = 0.1 + 0.2 * torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    start, kept = ddim_levels(t_k, 20)
    assert start == kept[-1] == t_k - 1 and len(kept) == min(20, t_k)
    out, nfe = purify(eps_fn, x, ABAR, start, kept, z, tweedie)
    want = closed_form(x, z, start, kept, m, c, tweedie)
    assert want.abs().max() < 1  # the x0 clip does not bind here
    assert torch.allclose(out, want, atol=1e-10)
    assert nfe == len(calls) == (1 if tweedie else len(kept)) and calls == (kept[-1:] if tweedie else kept[::-1])


def test_the_official_last_level_bump():
    """T_k = 1: noise to t = 0; official rebuilds the sampler with 2 steps (t = 1, 0), ours calls t = 0 once."""
    assert ddim_levels(1, 20) == (0, [0])
    assert ddim_levels(1, 20, official_last_level=True) == (0, [0, 1])
    assert ddim_levels(400, 20) == (399, space_timesteps(400, [20]))


# ------------------------------------------------------------------------------------ schedule, NFE
def official_schedule(K, t0, t_end=0):
    """Purification_Schedule(K, T_0, T_end, 'linear') as official writes it, in numpy."""
    t = (np.linspace(0, 1, K) * (t0 - t_end) + 1e-6).round().astype(np.int64)
    t = np.flip(t + t_end)
    t[t == 0] = 1
    return t.tolist()


def test_the_linear_schedule_is_official():
    assert purification_schedule(10, 400) == [400, 356, 311, 267, 222, 178, 133, 89, 44, 1]
    for K, t0, t_end in [(20, 700, 0), (200, 1000, 50), (200, 1000, 20), (7, 333, 0), (1, 400, 0), (3, 3, 0)]:
        assert purification_schedule(K, t0, t_end) == official_schedule(K, t0, t_end), (K, t0, t_end)


@pytest.mark.parametrize("name, official_nfe", [("sr4", 182), ("inpaint", 382)])
def test_nfe_is_the_notes_count_with_the_official_bump(name, official_nfe):
    """Notes section 4.4: 9 x 20 + 2 = 182 (K 10, T_0 400) and 19 x 20 + 2 = 382 (inpainting); ours one less (the
    last level calls the net once); final_purification=false skips the last purification."""
    deg, _, y = problem(name, size=8, n=1, dtype=torch.float32)
    y01 = (y + deg.operator.A(torch.ones(1, deg.operator.N))) / 2
    for bump, want in [(True, official_nfe), (False, official_nfe - 1)]:
        m = with_gaussian_prior(DCDP(GAUSS_MODEL, official_last_level=bump))
        calls = []
        eps = m.eps
        m.eps = lambda x, t: (calls.append(t), eps(x, t))[1]  # noqa: E731
        m.restore(y01, deg, gens([0]))
        assert m.last_nfe == len(calls) == want
    m = with_gaussian_prior(DCDP(GAUSS_MODEL, steps=3, dc_steps=2, final_purification=False))
    m.restore(y01, deg, gens([0]))
    assert m.last_levels == official_schedule(3, OFFICIAL[name.rstrip("4")][3]) and m.last_nfe == 40
    assert len(m.last_residuals) == 3 * 3


def test_batch_independence_and_the_embedded_dtype():
    deg, _, y = problem("deblur_gauss", size=8, n=2, sigma=0.05, dtype=torch.float32)
    y01 = (y + deg.operator.A(torch.ones(1, deg.operator.N))) / 2
    m = with_gaussian_prior(DCDP(GAUSS_MODEL, steps=3, dc_steps=20))
    both = m.restore(y01, deg, gens([0, 1]))
    one = m.restore(y01[1:], deg, gens([1]))
    assert both.shape == (2, 3, 8, 8) and torch.allclose(both[1:], one, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, words", [
    ({"steps": 0}, "steps=0"), ({"dc_steps": 1.5}, "dc_steps=1.5"), ({"lr": -1}, "lr=-1"),
    ({"momentum": 1.0}, "momentum=1.0"), ({"purification": "ddpm"}, "allowed: ddim, tweedie"),
    ({"t0": 5000}, "t0=5000"), ({"t_end": -1}, "t_end=-1"), ({"steps": 50, "t0": 20}, "iterations=50"),
    ({"ddim_steps": 0}, "ddim_steps=0")])
def test_bad_hyper_parameters_are_named(kw, words):
    with pytest.raises(ValueError, match="dcdp") as e:
        DCDP(GAUSS_MODEL, **kw)
    assert words in str(e.value) and "Fix" in str(e.value)


def test_a_task_without_official_settings_is_refused_with_the_fix():
    m = DCDP(GAUSS_MODEL)
    reason = m.unsupported_reason(task("sr4"))
    assert reason is None
    assert "method.lr=1000" in DCDP(GAUSS_MODEL).unsupported_reason_name("lowlight")
    with pytest.raises(ValueError, match="no official settings"):
        m.params("lowlight")
    assert DCDP(GAUSS_MODEL, steps=2, dc_steps=3, lr=5.0, t0=30).params("lowlight") == (2, 3, 5.0, 30)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_tiny_run(tmp_path):
    out = run("dcdp", "sr4", overrides=["model=adm_tiny", "steps=2", "method.dc_steps=3", "method.ddim_steps=2",
                                        "dataset.limit=1", f"run.results_root={tmp_path}", "run.progress=false"])
    assert out is not None and len(list(out.glob("images/*.png"))) == 1
    rows = [json.loads(p.read_text()) for p in out.glob("rows/*.json")]
    assert len(rows) == 1 and rows[0]["nfe"] == 2 + 1  # levels 400 (2 DDIM steps) and 1 (one call)
