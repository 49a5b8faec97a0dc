"""DiffPIR: the closed-form proximal step equals a dense least-squares solve, the quad schedule, the data
fit on the analytic Gaussian prior, the last-step behaviour, and the embedded prior."""

from __future__ import annotations

import pytest
import torch

from bench.diffusion import padded_alphas_cumprod
from bench.methods.ddrm import _spectral_setup
from bench.methods.diffpir import OFFICIAL, DiffPIR, diffpir_sample, proximal_step, quad_timesteps
from tests.methods.test_ddrm import gaussian_eps
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, dense, embedded_restoration, gens, problem, task, \
    with_gaussian_prior

ABAR = padded_alphas_cumprod(BETAS)


@pytest.mark.parametrize("name", ["sr4", "deblur_gauss", "deblur_uniform", "inpaint", "colorize", "denoise",
                                  "sr4_bicubic"])
@pytest.mark.parametrize("rho", [1e-3, 0.7, 50.0])
def test_proximal_step_is_the_least_squares_minimiser(name, rho):
    """argmin ||y - A x||^2 + rho ||x - x0||^2 = (A^T A + rho I)^{-1} (A^T y + rho x0), dense, float64, 8x8."""
    deg, x_true, y = problem(name, size=8, sigma=0.05)
    op = deg.operator
    x0 = torch.randn(2, op.N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s, observed, _, ybar = _spectral_setup(op, y)
    ours = proximal_step(op, x0, s * ybar, s, observed, rho)
    A = dense(op)
    ref = torch.linalg.solve(A.T @ A + rho * torch.eye(op.N, dtype=torch.float64), (y @ A + rho * x0).T).T
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9 * max(1.0, 1 / rho))


def test_quad_schedule_matches_the_official_one():
    t100, t20 = quad_timesteps(100), quad_timesteps(20)
    assert t100[:4] == [999, 899, 857, 825] and t100[-3:] == [10, 5, 0] and len(t100) == 100
    assert t20[:3] == [999, 770, 675] and t20[-2:] == [26, 0] and len(t20) == 20
    with pytest.raises(ValueError, match="steps"):
        quad_timesteps(1)


def test_per_task_defaults_and_validation():
    m = DiffPIR(GAUSS_MODEL)
    assert m.params("deblur_gauss") == (7.0, 0.3, 100) and m.params("inpaint") == (1.0, 1.0, 20)
    assert m.params("sr4_noisy") == OFFICIAL["sr"]
    assert DiffPIR(GAUSS_MODEL, steps=10, lambda_=3.0).params("inpaint") == (3.0, 1.0, 10)
    assert m.unsupported_reason(task("lowlight")) is not None
    assert m.params("my_task") is None and DiffPIR(GAUSS_MODEL, steps=5, lambda_=1, zeta=0.5).params("my_task")
    for kw in ({"steps": 1}, {"lambda_": 0}, {"zeta": 1.5}, {"eta": -1}):
        with pytest.raises(ValueError, match="diffpir"):
            DiffPIR(GAUSS_MODEL, **kw)


def _restore(name, **kw):
    deg, _, y = problem(name, size=8, dtype=torch.float32)
    m = with_gaussian_prior(DiffPIR(GAUSS_MODEL, **kw))
    y01 = (y + deg.operator.A(torch.ones(1, deg.operator.N))) / 2
    return m, deg, y01, m.restore(y01, deg, gens([0, 1]))


@pytest.mark.parametrize("name", ["sr4", "inpaint", "colorize"])
def test_data_step_fits_y_on_the_gaussian_prior(name):
    """Noiseless, float64, the sampler's [-1, 1] output (no clamp): ||A x - y|| with the official lambda is far
    below lambda = 1e9 (rho huge: no data step, i.e. plain sampling with DiffPIR's noise mix)."""
    deg, _, y = problem(name, size=8)
    eps = gaussian_eps(0.1, 0.5)
    res = {}
    for lam in (1.0, 1e9):
        x, nfe = diffpir_sample(lambda x, t: eps(x, torch.full((x.shape[0],), t, dtype=torch.long)), deg.operator,
                                y, 0.001, ABAR, BETAS, quad_timesteps(10), lam, 0.3, 0.0,
                                torch.full((2, *deg.operator.x_shape), 0.5, dtype=torch.float64), gens([0, 1]))
        res[lam] = float((deg.operator.A(x.reshape(2, -1)) - y).norm())
    assert nfe == 10 and res[1.0] < 0.05 * res[1e9], res


def test_last_step_official_vs_ours():
    """Ours uses the t = 0 evaluation (NFE = steps); official discards it (NFE = steps - 1) and outputs the
    x fed to it, ~ the previous x0' + 0.01 noise."""
    m, deg, y01, ours = _restore("sr4", steps=10)
    m2, _, _, upstream = _restore("sr4", steps=10, official_last_step=True)
    assert m.last_nfe == 10 and m2.last_nfe == 9
    assert 0 < (ours - upstream).abs().max() < 0.2
    assert m.last_params["timesteps"][-1] == 0


def test_batch_independence():
    _, deg, y01, out = _restore("sr4", steps=5)
    m = with_gaussian_prior(DiffPIR(GAUSS_MODEL, steps=5))
    torch.testing.assert_close(m.restore(y01[1:], deg, gens([1])), out[1:], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["deblur_gauss", "denoise"])
def test_embedded_prior_restores_better_than_the_input(task_name):
    """Embedded prior, 2 sample photos, 20 NFE (per-task lambda / zeta). Measured (PSNR dB, input -> output):
    deblur_gauss 22.93 -> 35.55, denoise 26.19 -> 28.93."""
    degraded, restored, m = embedded_restoration("diffpir", task_name, steps=20)
    assert m.last_nfe == 20
    print(f"\n  {m.name} {task_name}: input {degraded:.2f} dB -> {restored:.2f} dB")
    assert restored >= degraded + 1.0, (degraded, restored)
