"""DAPS (bench/methods/daps.py): the Langevin stage targets its stated density, the VP->EDM wrapping, the exact
NFE of the DAPS presets, batch independence, the real run path, and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import api
from bench.diffusion import alphas_cumprod
from bench.methods.daps import DAPS, EDMDenoiser, annealing_sigmas, edm_grid, langevin_x0, pf_ode_x0
from bench.models.prior import DiffusionPrior
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, dense, gens, problem, task
from tests.methods.test_ddrm import gaussian_eps

M0, C0 = 0.1, 0.5
ABAR = alphas_cumprod(BETAS)


class ContinuousGaussNet(torch.nn.Module):
    """Exact eps of x0 ~ N(M0, C0^2 I) at fractional t (abar interpolated linearly in t between table entries)."""

    def forward(self, x_t, t):
        t = t.to(torch.float64).clamp(0, ABAR.numel() - 1)
        lo = t.floor().long().clamp(max=ABAR.numel() - 2)
        a = (ABAR[lo] + (t - lo) * (ABAR[lo + 1] - ABAR[lo])).to(x_t.dtype).view(-1, 1, 1, 1)
        x0 = M0 + C0**2 * a.sqrt() / (a * C0**2 + 1 - a) * (x_t - a.sqrt() * M0)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def daps(**kw) -> DAPS:
    method = DAPS(GAUSS_MODEL, **kw)
    method.use_prior(DiffusionPrior(net=ContinuousGaussNet(), image_size=8, betas=BETAS, learn_sigma=False,
                                    info={"model": "gauss"}), "cpu")
    return method


# ------------------------------------------------------------------ the Langevin stage's target
@pytest.mark.parametrize("official", [False, True])
def test_langevin_chain_targets_gaussian_prior_times_tempered_likelihood(official):
    """For a fixed x0^, the chain's stationary law is N(x0^, r^2 I) x N(y; A x, tau^2 / w I) (w = 2 official):
    mean Sigma (w A^T y / tau^2 + x0^ / r^2), Sigma = (w A^T A / tau^2 + I / r^2)^-1. Unadjusted Langevin with step
    eta keeps the mean and inflates each precision-P variance by 1 / (1 - eta P / 2) (checked exactly)."""
    deg, x, y = problem("sr4", size=4, n=1)
    y = y + 1.0  # far from A x0^, so the data weight matters
    op, w, tau, r, eta = deg.operator, 2.0 if official else 1.0, 0.1, 0.7, 0.005
    A = dense(op)
    x0hat = (0.3 * torch.randn(op.N, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    precision = w * A.T @ A / tau**2 + torch.eye(op.N, dtype=torch.float64) / r**2
    cov = torch.linalg.inv(precision)
    mean = cov @ (w * A.T @ y[0] / tau**2 + x0hat / r**2)
    chains = 1000
    g = torch.Generator().manual_seed(2)
    data_grad = lambda z: w / tau**2 * (z @ A.T - y) @ A  # noqa: E731  (the dense A: fast)
    out = langevin_x0(x0hat.expand(chains, -1), data_grad, r, eta, 500,
                      lambda: torch.randn(chains, op.N, generator=g, dtype=torch.float64))
    # the ULA stationary covariance: same eigenvectors, eigenvalues 1 / (P (1 - eta P / 2))
    evals, evecs = torch.linalg.eigh(precision)
    ula = evecs @ torch.diag(1 / (evals * (1 - eta * evals / 2))) @ evecs.T
    z = (out.mean(0) - mean) / (ula.diagonal() / chains).sqrt()
    assert z.abs().max() < 4.5
    emp = torch.cov(out.T)
    assert (emp.diagonal() / ula.diagonal() - 1).abs().max() < 0.2
    assert (emp - ula).abs().max() < 0.2 * ula.diagonal().max()
    # and the target itself, up to the O(eta P) discretisation bias
    assert (emp.diagonal() / cov.diagonal() - 1).abs().mean() < 0.1
    # the check can fail: the other data weight has a different mean
    alt_cov = torch.linalg.inv((3 - w) * A.T @ A / tau**2 + torch.eye(op.N, dtype=torch.float64) / r**2)
    other = alt_cov @ ((3 - w) * A.T @ y[0] / tau**2 + x0hat / r**2)
    se = ((A @ ula @ A.T).diagonal() / chains).sqrt()  # compared where they differ: in the observed coordinates
    assert ((A @ (out.mean(0) - mean)) / se).abs().max() < 4.5
    assert ((A @ (out.mean(0) - other)) / se).abs().max() > 10


def test_hmc_chain_has_the_same_stationary_mean():
    deg, x, y = problem("denoise", size=2, n=1)
    op, tau, r, eta = deg.operator, 0.5, 1.0, 0.01
    x0hat = torch.zeros(op.N, dtype=torch.float64)
    chains, g = 3000, torch.Generator().manual_seed(3)
    out = langevin_x0(x0hat.expand(chains, -1), lambda z: op.At(op.A(z) - y) / tau**2, r, eta, 300,
                      lambda: torch.randn(chains, op.N, generator=g, dtype=torch.float64), algo="hmc", momentum=0.9)
    P = 1 / tau**2 + 1 / r**2  # denoise: A = I
    assert ((out.mean(0) - y[0] / tau**2 / P) / (1 / P / chains) ** 0.5).abs().max() < 5


# ------------------------------------------------------------------ the VP -> EDM wrapping
def test_sigma_t_mapping_round_trips_and_the_denoiser_is_the_gaussian_posterior_mean():
    den = EDMDenoiser(lambda x, t: gaussian_eps(M0, C0)(x, t.round().long()), BETAS)
    for t in (0, 1, 17, 250, 500, 998, 999):
        sigma = den.t_to_sigma(t)
        assert abs(sigma - math.sqrt(1 / float(ABAR[t]) - 1)) < 1e-12 and abs(den.sigma_to_t(sigma) - t) < 1e-6
    # monotone, clamped outside the table, fractional in between
    assert den.sigma_to_t(1e-4) == 0.0 and den.sigma_to_t(1e4) == 999.0
    mid = den.sigma_to_t(math.sqrt(den.t_to_sigma(300) * den.t_to_sigma(301)))
    assert 300 < mid < 301
    # D(x; sigma) = E[x0 | x0 + sigma n] = m + c^2 / (c^2 + sigma^2) (x - m) for x0 ~ N(m, c^2)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (3, 400, 900):
        s = den.t_to_sigma(t)
        assert torch.allclose(den(x, s), M0 + C0**2 / (C0**2 + s**2) * (x - M0), atol=1e-9)
    # the official continuous VP map approximates the linear 1000-step table: 0.5 .. 3.4 steps later
    vp = EDMDenoiser(lambda x, t: x, BETAS, "vp")
    for t in (0, 10, 200, 600, 990, 999):
        assert 0.5 < vp.sigma_to_t(den.t_to_sigma(t)) - t < 3.4


def test_grids_are_the_official_poly_rho_grids():
    s = annealing_sigmas(200, 100.0, 0.1, 7.0)
    assert s.numel() == 201 and abs(float(s[0]) - 100) < 1e-9 and s[-1] == 0.0
    assert abs(float(s[-2]) - (100 ** (1 / 7) + 0.995 * (0.1 ** (1 / 7) - 100 ** (1 / 7))) ** 7) < 1e-12
    assert 0.105 < float(s[-2]) < 0.107 and bool((s[:-1].diff() < 0).all())
    g = edm_grid(5, 3.0, 0.01, 7.0)
    assert g.numel() == 6 and abs(float(g[0]) - 3) < 1e-12 and abs(float(g[-1]) - 0.01) < 1e-15


def test_ode_on_the_gaussian_prior_lands_on_the_exact_flow():
    """PF-ODE for N(m, c^2): x(s) = m + sqrt(c^2 + s^2) / sqrt(c^2 + s0^2) (x(s0) - m); Euler converges to it."""
    den = EDMDenoiser(lambda x, t: gaussian_eps(M0, C0)(x, t.round().long()), BETAS)
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    exact = M0 + math.sqrt(C0**2 + 0.01**2) / math.sqrt(C0**2 + 5**2) * (x - M0)
    coarse = (pf_ode_x0(lambda z, s: M0 + C0**2 / (C0**2 + s**2) * (z - M0), x, 5.0, 5, 0.01, 7.0) - exact).abs().max()
    fine = (pf_ode_x0(lambda z, s: M0 + C0**2 / (C0**2 + s**2) * (z - M0), x, 5.0, 200, 0.01, 7.0) - exact).abs().max()
    assert fine < 0.05 * coarse and fine < 0.01  # Euler: first order in the step
    assert den.nfe == 0


# ------------------------------------------------------------------ NFE, batches, the run path
@pytest.mark.parametrize("steps, ode_steps, nfe", [(200, 5, 1000), (50, 2, 100)])
def test_nfe_is_annealing_times_ode_steps(steps, ode_steps, nfe):
    """DAPS-1K = 200 x 5 = 1000 (notes §2.5, official commands), DAPS-100 50 x 2 (DAPS-4K 400 x 10 = 4000 by the same count)."""
    method = daps(steps=steps, ode_steps=ode_steps, langevin_steps=1)
    deg = task("denoise").build(2)
    y = deg.degrade(torch.rand(1, 3, 2, 2), gens([0], "degrade"))
    out = method.restore(y, deg, gens([0]))
    assert method.last_nfe == nfe == method.describe()["nfe"] and torch.isfinite(out).all()


def test_batch_independence_and_determinism():
    method = daps(steps=6, ode_steps=2, langevin_steps=5)
    deg = task("sr4").build(8)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = deg.degrade(x, gens([0, 1], "degrade"))
    both = method.restore(y, deg, gens([0, 1]))
    one = method.restore(y[1:], deg, gens([1]))
    assert torch.allclose(both[1:], one, atol=1e-6)
    assert torch.equal(both, method.restore(y, deg, gens([0, 1])))
    assert not torch.allclose(both, method.restore(y, deg, gens([2, 3])))


def test_tiny_end_to_end_run(tmp_path):
    """bench.api.run (= python -m bench): adm_tiny on sr4, 2 annealing x 2 ODE steps -> 4 NFE."""
    run = api.run("daps", "sr4", overrides=["model=adm_tiny", "steps=2", "method.ode_steps=2",
                                            "method.langevin_steps=3", "dataset.limit=1",
                                            f"run.results_root={tmp_path}", "run.progress=false"])
    text = json.dumps(json.loads((run / "manifest.json").read_text()))
    assert '"nfe": 4' in text and "DAPS (Algorithm 1" in text
    assert len(list((run / "images").glob("*.png"))) == 1


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("kw, words", [
    ({"steps": 0}, "steps=0"), ({"ode_steps": 1.5}, "steps=1.5"), ({"lr": 0.0}, "lr=0.0"),
    ({"tau": -1}, "tau=-1"), ({"lr_min_ratio": 2.0}, "lr_min_ratio=2.0"), ({"sigma_min": 0.005}, "sigma_min"),
    ({"sigma_max": 0.05}, "sigma_max"), ({"mc_algo": "mala"}, "langevin, hmc"), ({"momentum": 1.0}, "momentum"),
    ({"time_map": "edm"}, "discrete, vp"), ({"langevin_steps": -3}, "steps=-3")])
def test_bad_hyper_parameters_are_refused_with_the_fix(kw, words):
    with pytest.raises(ValueError, match="Fix") as err:
        DAPS(GAUSS_MODEL, **kw)
    assert words in str(err.value)


def test_a_diverging_chain_says_which_knob():
    deg = task("denoise").build(2)
    y = deg.degrade(torch.rand(1, 3, 2, 2), gens([0], "degrade"))
    with pytest.raises(FloatingPointError, match="method.lr"):
        daps(steps=2, ode_steps=1, langevin_steps=400, lr=1.0).restore(y, deg, gens([0]))
