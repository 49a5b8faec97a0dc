"""PnP-DM (bench/methods/pnp_dm.py): the exact likelihood draw against the dense Gaussian conditional, the whole
sampler on an analytic Gaussian prior against the closed-form posterior mean, the VP-to-EDM wrapping, the exact
NFE of the facts note (§3.5), batch independence, one tiny CLI run and the input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench import api
from bench.methods.pnp_dm import (PnPDM, edm_grid, likelihood_sample, pnp_dm_sample, prior_nfe, rho_schedule,
                                  sample_iterations, table_time)
from tests.methods.solvers_common import GAUSS_MODEL, dense, gaussian_prior, problem
from tests.methods.test_ddrm import gaussian_eps, gens

M0, C0 = 0.1, 0.5


def _spectral(op, y):
    from bench.methods.ddrm import _spectral_setup
    s, observed, _, ybar = _spectral_setup(op, y)
    return s, observed, s * ybar


@pytest.mark.parametrize("name", ["sr4", "inpaint", "deblur_gauss"])
def test_likelihood_step_samples_the_exact_gaussian_conditional(name):
    """20k draws on 8x8 (N = 192), float64: whitened by the dense conditional N(mu, Q^-1), Q = A^T A / s_y^2 + I / rho^2,
    mu = Q^-1 (A^T y / s_y^2 + x / rho^2), the sample mean is ~0 and the sample covariance ~I within sampling error."""
    deg, x, y = problem(name, size=8, n=1, sigma=0.05)
    op, sy, rho, n = deg.operator, 0.1, 0.3, 20000
    A = dense(op)
    Q = A.T @ A / sy**2 + torch.eye(op.N, dtype=A.dtype) / rho**2
    cov = torch.linalg.inv(Q)
    mu = cov @ (A.T @ y[0] / sy**2 + x[0] / rho**2)
    s, observed, u = _spectral(op, y)
    g = torch.Generator().manual_seed(1)
    z = likelihood_sample(op, x.expand(n, -1), s, observed, u.expand(n, -1), sy, rho,
                          torch.randn(n, op.N, generator=g, dtype=A.dtype))
    L = torch.linalg.cholesky(cov)
    w = torch.linalg.solve_triangular(L, (z - mu).T, upper=False).T  # ~ N(0, I) iff z ~ N(mu, cov)
    assert w.mean(0).abs().max() < 0.04
    emp = w.T @ w / n
    assert (emp - torch.eye(op.N, dtype=A.dtype)).abs().max() < 0.07
    # a wrong noise level is detected by the same statistics
    z_wrong = likelihood_sample(op, x.expand(n, -1), s, observed, u.expand(n, -1), sy / 4, rho,
                                torch.randn(n, op.N, generator=g, dtype=A.dtype))
    w2 = torch.linalg.solve_triangular(L, (z_wrong - mu).T, upper=False).T
    assert (w2.T @ w2 / n - torch.eye(op.N, dtype=A.dtype)).abs().max() > 0.2


def test_noiseless_likelihood_step_is_the_exact_limit():
    """sigma_y = 0: A z = y exactly, unobserved coordinates keep x plus rho noise (no floor)."""
    deg, x, _ = problem("inpaint", size=8, n=2)
    op = deg.operator
    y = op.A(x)
    s, observed, u = _spectral(op, y)
    x_prev = torch.zeros_like(x)
    z = likelihood_sample(op, x_prev, s, observed, u, 0.0, 0.5, torch.randn(2, op.N, dtype=x.dtype))
    assert (op.A(z) - y).abs().max() < 1e-12
    free = op.Vt(z)[:, ~observed]
    assert 0.4 < float(free.std()) < 0.6


def test_sampler_on_a_gaussian_prior_approaches_the_posterior_mean():
    """Exact EDM denoiser of N(m, c^2 I) (m 0.3, c 0.2), inpaint on 8x8, sigma_y = 0.2, 256 chains (edm_sde, rho
    10 -> 0.03, 40 iterations, output = mean of 20 samples): the chains' average is within sampling error of the
    posterior mean m + c^2 A^T (c^2 A A^T + s_y^2 I)^-1 (y - A m). rho_min << sigma_y because split Gibbs targets
    the posterior with noise sigma_y^2 + rho^2 (measured: rho_min 0.1 with sigma_y 0.1 is off by 0.2 on observed
    pixels; the ODE prior step, a deterministic map, is off by ~0.05 on average)."""
    m0, c0 = 0.3, 0.2
    deg, x, _ = problem("inpaint", size=8, n=1, dtype=torch.float64)
    op, sy, chains = deg.operator, 0.2, 256
    A = dense(op)
    y = (A @ x[0] + sy * torch.randn(op.M, generator=torch.Generator().manual_seed(3), dtype=A.dtype))[None]
    post = m0 + c0**2 * A.T @ torch.linalg.solve(c0**2 * A @ A.T + sy**2 * torch.eye(op.M, dtype=A.dtype),
                                                 y[0] - A @ torch.full((op.N,), m0, dtype=A.dtype))
    denoise = lambda z, sig: m0 + c0**2 / (c0**2 + sig**2) * (z - m0)  # noqa: E731
    rhos = rho_schedule(10.0, 0.9 ** (100 / 40), 0.03, 40)
    grid = edm_grid(60, 0.01, 80.0)
    out, nfe = pnp_dm_sample(denoise, op, y.expand(chains, -1), sy, rhos, grid, True,
                             sample_iterations(40, 16, 20), "mean", gens(range(chains)))
    assert nfe == prior_nfe(grid, rhos) == 509
    err = (out.reshape(chains, -1).mean(0) - post).abs()
    start = (op.pinv(y)[0] - post).abs().mean()
    assert err.mean() < 0.03 and err.max() < 0.15 and start > 0.2, (float(err.mean()), float(err.max()), float(start))


def test_vp_to_edm_wrapping_is_the_exact_gaussian_denoiser():
    """At the prior's integer-step sigmas t(sigma) is that integer and D(x; sigma) = x - sigma eps(x / sqrt(1 +
    sigma^2), t) equals the Gaussian prior's exact denoiser m + c^2 / (c^2 + sigma^2) (x - m)."""
    eps = gaussian_eps(M0, C0)

    class RoundingNet(torch.nn.Module):
        def forward(self, x, t):
            return eps(x, t.round().long())

    m = PnPDM(GAUSS_MODEL, steps=10, edm_steps=20)
    prior = gaussian_prior(M0, C0)
    prior.net = RoundingNet()
    m.use_prior(prior, "cpu")
    sig = m.log_sigmas.exp()
    ts = table_time(sig[[0, 10, 500, 999]], m.log_sigmas)
    assert torch.equal(ts, torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64))
    mid = table_time(((m.log_sigmas[100] + m.log_sigmas[101]) / 2).exp().reshape(1), m.log_sigmas)
    assert abs(float(mid) - 100.5) < 1e-9
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in (10, 300, 800):
        s = float(sig[t])
        torch.testing.assert_close(m.denoiser(x, s), M0 + C0**2 / (C0**2 + s**2) * (x - M0), rtol=1e-4, atol=1e-4)


def test_nfe_matches_the_facts_note_and_the_network_calls():
    """Facts note §3.5 [computed]: commands.sh settings (rho 10 -> 0.3 x0.9, 100 iterations, edm_sde) 3,032 NFE;
    the sampler yaml (rho 0.1 constant, ODE) 1,500. And a run's last_nfe is the number of network calls."""
    m = PnPDM(GAUSS_MODEL, official_vp_time=True)
    m.use_prior(gaussian_prior(M0, C0), "cpu")
    assert m.expected_nfe() == 3032 and m.grid[-2] == pytest.approx(0.0104838, abs=1e-7)
    m2 = PnPDM(GAUSS_MODEL, rho=0.1, rho_decay=1.0, rho_min=0.0, sde=False, official_vp_time=True)
    m2.use_prior(gaussian_prior(M0, C0), "cpu")
    assert m2.expected_nfe() == 1500
    assert sample_iterations(100, 40, 20) == np.linspace(40, 99, 21, dtype=int)[1:].tolist()

    calls = []
    m3 = PnPDM(GAUSS_MODEL, steps=6, edm_steps=12, rho=2.0)
    prior = gaussian_prior(M0, C0)
    inner = prior.net

    class Counting(torch.nn.Module):
        def forward(self, x, t):
            calls.append(x.shape[0])
            return inner(x, t.round().long())

    prior.net = Counting()
    m3.use_prior(prior, "cpu")
    deg, x, y = problem("sr4", size=8, n=2, sigma=0.05, dtype=torch.float32)
    m3.restore((y + deg.operator.A(torch.ones(1, deg.operator.N))) / 2, deg, gens([0, 1]))
    assert m3.last_nfe == len(calls) == m3.expected_nfe() == prior_nfe(m3.grid, m3.rhos())


def _restore(m, ids):
    deg, x, y = problem("sr4", size=8, n=2, sigma=0.05, dtype=torch.float32)
    y01 = (y + deg.operator.A(torch.ones(1, deg.operator.N))) / 2
    return m.restore(y01[ids], deg, gens(ids))


def test_batch_independence_and_output_choice():
    prior = gaussian_prior(M0, C0)
    prior.net = type("R", (torch.nn.Module,), {"forward": lambda self, x, t: gaussian_eps(M0, C0)(x, t.round().long())})()
    m = PnPDM(GAUSS_MODEL, steps=8, edm_steps=10)
    m.use_prior(prior, "cpu")
    both = _restore(m, [0, 1])
    torch.testing.assert_close(_restore(m, [1]), both[1:], rtol=0, atol=1e-6)
    mean = PnPDM(GAUSS_MODEL, steps=8, edm_steps=10, output="mean")
    mean.use_prior(prior, "cpu")
    assert m.burn_in == 3 and m.num_samples == 4 and m.last_params["sample_iterations"] == [4, 5, 6, 7]
    assert (_restore(mean, [0, 1]) - both).abs().max() > 1e-3


def test_tiny_end_to_end_run(tmp_path):
    """python -m bench path, adm_tiny, 2 Gibbs iterations on a 4-step grid."""
    run = api.run("pnp_dm", "sr4", overrides=["model=adm_tiny", "steps=2", "method.edm_steps=4", "dataset.limit=1",
                                              f"run.results_root={tmp_path}", "run.progress=false"])
    text = json.dumps(json.loads((run / "manifest.json").read_text()))
    assert "PnP-DM split Gibbs" in text and '"nfe": ' in text
    assert len(list((run / "images").glob("*.png"))) == 1


@pytest.mark.parametrize("kw, words", [
    ({"rho": 0.0}, "rho=0.0"), ({"rho_decay": 1.5}, "rho_decay=1.5"), ({"output": "median"}, "last, mean"),
    ({"steps": 10, "burn_in": 10}, "burn_in=10"), ({"steps": 10, "burn_in": 2, "num_samples": 9}, "num_samples=9"),
    ({"edm_steps": 1}, "edm_steps=1"), ({"burn_in": -1}, "burn_in=-1"), ({"num_samples": 2.5}, "num_samples=2.5"),
    ({"steps": 0}, "steps=0")])
def test_bad_hyper_parameters_fail_clearly(kw, words):
    with pytest.raises(ValueError, match="pnp_dm") as e:
        PnPDM(GAUSS_MODEL, **kw)
    assert words in str(e.value) and "Fix" in str(e.value)


def test_rho_below_the_grid_fails_before_any_work():
    m = PnPDM(GAUSS_MODEL, rho_min=0.001)
    with pytest.raises(ValueError, match="rho=0.001 is not above the grid's smallest sigma"):
        m.use_prior(gaussian_prior(M0, C0), "cpu")
