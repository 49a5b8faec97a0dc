"""FPS-SMC (bench/methods/fps_smc.py): the proposal against the dense Gaussian conditional, the closed-form weights
against official's three-term formula, the y-sequence's marginals, the whole sampler on an analytic Gaussian prior
against the closed-form posterior mean, the exact NFE (facts note §5.4), batch independence, one tiny CLI run and
the input errors."""

from __future__ import annotations

import json

import pytest
import torch

from bench import api
from bench.methods.ddrm import _spectral_setup
from bench.methods.fps_smc import (FPSSMC, fps_schedule, fps_smc_sample, log_weights, measurement_sequence, proposal,
                                   resample)
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, dense, gaussian_prior, gens, problem, task
from tests.methods.test_ddrm import gaussian_eps

F64 = torch.float64


def _u(op, y):
    return op.add_zeros(op.Ut(y))


@pytest.mark.parametrize("name", ["sr4", "inpaint", "deblur_gauss"])
def test_proposal_samples_the_exact_gaussian_conditional(name):
    """20k draws on 4x4 (N = 48): whitened by the dense N(mu, C), C = (I / v + A^T A / a)^-1, mu = C (m / v + A^T y / a)
    (official (I + A^T A / r)^-1 (m + A^T y / r), r = a / v), mean ~0 and covariance ~I within sampling error."""
    deg, x, y = problem(name, size=4, n=1, sigma=0.05)
    op, v, a, n = deg.operator, 0.3, 0.02, 20000
    A = dense(op)
    m = 0.2 * torch.randn(op.N, generator=torch.Generator().manual_seed(1), dtype=F64)
    cov = torch.linalg.inv(torch.eye(op.N, dtype=F64) / v + A.T @ A / a)
    mu = cov @ (m / v + A.T @ y[0] / a)
    s, observed, _, _ = _spectral_setup(op, y)
    mean, std = proposal(op.Vt(m[None]), _u(op, y), s, observed, v, a)
    z = torch.randn(n, op.N, generator=torch.Generator().manual_seed(2), dtype=F64)
    draws = op.V(mean + std * z)
    torch.testing.assert_close(op.V(mean)[0], mu, atol=1e-10, rtol=0)
    L = torch.linalg.cholesky(cov)
    w = torch.linalg.solve_triangular(L, (draws - mu).T, upper=False).T
    assert w.mean(0).abs().max() < 0.04 and (w.T @ w / n - torch.eye(op.N, dtype=F64)).abs().max() < 0.07
    # noiseless limit: A x' = y exactly, the rest keeps N(m, v)
    mean0, std0 = proposal(op.Vt(m[None]), _u(op, y), s, observed, v, 0.0)
    x0 = op.V(mean0 + std0 * z[:2])
    assert (op.A(x0) - y).abs().max() < 1e-12 and std0[~observed].eq(v**0.5).all()


@pytest.mark.parametrize("official", [False, True])
def test_weights_equal_officials_three_terms_up_to_a_constant(official):
    """Official log w = -|y - A x'|^2 / (2 a_w) - |x' - m|^2 / (2 v) + |x' - mu|^2 / (2 v) + |A (x' - mu)|^2 / (2 a_q)
    (``prob_y + prob_x - prob_prev``), per particle; ours must differ from it by one constant per image."""
    deg, x, y = problem("sr4", size=8, n=1, sigma=0.05)
    op, v, sy, P = deg.operator, 0.05, 0.1, 6
    a_q, a_w = (0.5, 0.55) if official else (0.55, 0.55)
    g = torch.Generator().manual_seed(3)
    m = 0.3 * torch.randn(P, op.N, generator=g, dtype=F64)
    s, observed, _, _ = _spectral_setup(op, y)
    u, mbar = _u(op, y), op.Vt(m)
    mean, std = proposal(mbar, u, s, observed, v, a_q * sy**2)
    z = torch.randn(P, op.N, generator=g, dtype=F64)
    xp, mu = op.V(mean + std * z), op.V(mean)
    ref = (-(y - op.A(xp)).pow(2).sum(1) / (2 * a_w * sy**2) - (xp - m).pow(2).sum(1) / (2 * v)
           + (xp - mu).pow(2).sum(1) / (2 * v) + op.A(xp - mu).pow(2).sum(1) / (2 * a_q * sy**2))
    ours = log_weights(mbar[None], z[None], u[:, None], s, observed, v, sy, a_q, a_w)[0]
    assert (ref - ours).std() < 1e-8 * ref.abs().max() and ours.std() > 0.1  # a constant offset, and not flat


def test_resampling_is_officials_bisect_on_the_cumulative_weights():
    import bisect
    logw = torch.tensor([[0.0, -1.0, 2.0, -30.0]], dtype=F64)
    u = torch.tensor([[0.0, 0.1, 0.5, 0.99]], dtype=F64)
    cum = logw.sub(logw.max()).exp().cumsum(-1)[0].tolist()
    want = [bisect.bisect(cum, float(t) * cum[-1], 0, 3) for t in u[0]]
    assert resample(logw, u)[0].tolist() == want == [0, 0, 2, 2]  # the 4th particle (weight e^-32) never


def test_measurement_sequence_has_the_forward_marginals():
    """y_j ~ sqrt(a_j) y + N(0, (1 - a_j) A A^T); for sr4 A A^T = I / 16: 4000 draws, every level, 10 steps."""
    deg, x, y = problem("sr4", size=8, n=1)
    op, n = deg.operator, 4000
    ts, abar = fps_schedule(BETAS, 10)
    g = torch.Generator().manual_seed(4)
    ys = list(measurement_sequence(op, y.expand(n, -1), abar, 0.95, lambda: torch.randn(n, op.N, generator=g,
                                                                                         dtype=F64)))
    assert len(ys) == 10 and ts == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    for j, y_j in zip(range(9, -1, -1), ys):
        d = y_j - float(abar[j]) ** 0.5 * y
        var = (1 - float(abar[j])) / 16
        assert d.mean(0).abs().max() < 5 * (var / n) ** 0.5 and (d.var(0) / var - 1).abs().max() < 0.1


def _gauss_run(P, chains=384, seed=1):
    """FPS-SMC on N(0.3, 0.2^2 I) with its exact eps, inpaint 4x4, sigma_y = 0.2, 100 steps, no clipping."""
    m0, c0, sy = 0.3, 0.2, 0.2
    deg, x, _ = problem("inpaint", size=4, n=1)
    op = deg.operator
    A = dense(op)
    y = (A @ x[0] + sy * torch.randn(op.M, generator=torch.Generator().manual_seed(3), dtype=F64))[None]
    gram = c0**2 * A @ A.T + sy**2 * torch.eye(op.M, dtype=F64)
    post = m0 + c0**2 * A.T @ torch.linalg.solve(gram, y[0] - m0 * A.sum(1))
    post_var = (c0**2 - c0**4 * (A.T @ torch.linalg.solve(gram, A)).diagonal())
    eps, (ts, abar) = gaussian_eps(m0, c0), fps_schedule(BETAS, 100)
    g = torch.Generator().manual_seed(seed)
    out, nfe = fps_smc_sample(lambda z, t: eps(z, torch.full((z.shape[0],), t)), op, y.expand(chains, -1), sy, ts,
                              abar, c=0.95, particles=P, clip=False, official_index=False, official_init=False,
                              noise_y=lambda: torch.randn(chains, op.N, generator=g, dtype=F64),
                              noise_x=lambda sh: torch.randn(chains, *sh, generator=g, dtype=F64),
                              uniform=lambda: torch.rand(chains, P, generator=g, dtype=F64))
    z = (out.reshape(chains, -1).mean(0) - post) / (post_var / chains).sqrt()  # standard errors of the posterior
    return z, (A.abs().sum(0) > 0), nfe


def test_smc_averages_to_the_posterior_mean_and_one_particle_does_not():
    """384 chains of 8 particles: every pixel's average within 4.5 standard errors of the closed-form posterior mean
    m + c^2 A^T (c^2 A A^T + s_y^2 I)^-1 (y - A m), mean z^2 ~ 1 (measured 0.5-0.7 over 3 seeds). Plain FPS (one
    particle) is off on the observed pixels (measured max z 7-8.5, mean z^2 10-12): the weights do the work."""
    z, observed, nfe = _gauss_run(8)
    assert nfe == 99 * 8
    assert z.abs().max() < 4.5 and (z**2).mean() < 2.0, (float(z.abs().max()), float((z**2).mean()))
    z1, _, _ = _gauss_run(1)
    assert z1[observed].abs().max() > 5 and (z1**2).mean() > 4, (float(z1.abs().max()), float((z1**2).mean()))


def _calls_prior():
    calls = []
    prior = gaussian_prior(0.1, 0.5, size=8)
    inner = prior.net

    class Counting(torch.nn.Module):
        def forward(self, x, t):
            calls.append((x.shape[0], int(t[0])))
            return inner(x, t)

    prior.net = Counting()
    return prior, calls


@pytest.mark.parametrize("official_index", [False, True])
def test_nfe_is_steps_minus_one_times_particles(official_index):
    """Facts note §5.4: official 1000 steps x 5 particles = 999 batched calls = 4,995 NFE; a run's last_nfe counts the
    network's image evaluations (6 steps, 3 particles, 2 images: 5 calls of 6 images, at tau_4 .. tau_0)."""
    assert FPSSMC(GAUSS_MODEL).nfe == 4995 and FPSSMC(GAUSS_MODEL, particles=1).nfe == 999
    m = FPSSMC(GAUSS_MODEL, steps=6, particles=3, official_index=official_index)
    prior, calls = _calls_prior()
    m.use_prior(prior, "cpu")
    deg = task("sr4").build(8)
    y = deg.degrade(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), gens([0, 1], "degrade"))
    out = m.restore(y, deg, gens([0, 1]))
    assert m.last_nfe == m.nfe == 15 == sum(b for b, _ in calls) / 2 and torch.isfinite(out).all()
    assert [t for _, t in calls] == m.ts[-2::-1] == [799, 599, 400, 200, 0]
    assert m.describe()["nfe"] == 15


def test_batch_independence_determinism_and_options():
    deg = task("inpaint").build(8)
    y = deg.degrade(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), gens([0, 1], "degrade"))
    m = FPSSMC(GAUSS_MODEL, steps=8, particles=4)
    m.use_prior(gaussian_prior(0.1, 0.5, size=8), "cpu")
    both = m.restore(y, deg, gens([0, 1]))
    torch.testing.assert_close(m.restore(y[1:], deg, gens([1])), both[1:], rtol=0, atol=1e-6)
    assert torch.equal(both, m.restore(y, deg, gens([0, 1])))
    for kw in ({"official_index": True}, {"official_init": True}, {"official_sigma_y": True}, {"particles": 1}):
        other = FPSSMC(GAUSS_MODEL, steps=8, **{"particles": 4, **kw})
        other.use_prior(gaussian_prior(0.1, 0.5, size=8), "cpu")
        assert (other.restore(y, deg, gens([0, 1])) - both).abs().max() > 1e-3, kw
    assert other.describe()["algorithm"].startswith("FPS (one particle")


def test_tiny_end_to_end_run(tmp_path):
    """python -m bench path on adm_tiny: 3 steps x 2 particles -> 4 NFE."""
    run = api.run("fps_smc", "sr4", overrides=["model=adm_tiny", "steps=3", "method.particles=2", "dataset.limit=1",
                                               f"run.results_root={tmp_path}", "run.progress=false"])
    text = json.dumps(json.loads((run / "manifest.json").read_text()))
    assert '"nfe": 4' in text and "FPS-SMC (filtering posterior sampling" in text
    assert len(list((run / "images").glob("*.png"))) == 1


def test_non_linear_tasks_are_skipped_with_a_reason():
    reason = FPSSMC(GAUSS_MODEL).unsupported_reason(task("jpeg"))
    assert reason and "linear" in reason


@pytest.mark.parametrize("kw, words", [
    ({"steps": 1}, "steps=1"), ({"steps": 1001}, "exceeds"), ({"particles": 0}, "particles=0"),
    ({"particles": 2.5}, "particles=2.5"), ({"particles": True}, "particles=True"), ({"c_rate": 0.0}, "c_rate=0.0"),
    ({"c_rate": 1.2}, "c_rate=1.2")])
def test_bad_hyper_parameters_fail_clearly(kw, words):
    with pytest.raises(ValueError, match="fps_smc") as e:
        FPSSMC(GAUSS_MODEL, **kw)
    assert words in str(e.value) and "Fix" in str(e.value)


def test_officials_three_weight_terms_drive_the_same_run_when_one_operator_measures_and_proposes():
    """``measure_op`` (official SR path) weighs with official's literal terms; with the proposal's own operator they
    equal the closed form up to a constant, so a whole run (float64, same noise) is the same."""
    deg, x, y = problem("sr4", size=8, n=2, sigma=0.05)
    op, P = deg.operator, 4
    eps, (ts, abar) = gaussian_eps(0.1, 0.5), fps_schedule(BETAS, 6)
    outs = []
    for measure_op in (None, op):
        g = torch.Generator().manual_seed(5)
        out, _ = fps_smc_sample(lambda z, t: eps(z, torch.full((z.shape[0],), t)), op, y, 0.1, ts, abar, c=0.95,
                                particles=P, clip=True, official_index=True, official_init=False,
                                noise_y=lambda: torch.randn(2, op.N, generator=g, dtype=F64),
                                noise_x=lambda sh: torch.randn(2, *sh, generator=g, dtype=F64),
                                uniform=lambda: torch.rand(2, P, generator=g, dtype=F64), measure_op=measure_op)
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-9, rtol=0)


def test_official_sr_operator_samples_bicubic_sr_through_the_block_average():
    m = FPSSMC(GAUSS_MODEL, steps=6, particles=3, official_sr_operator=True)
    m.use_prior(gaussian_prior(0.1, 0.5, size=8), "cpu")
    assert "official_sigma_y=true" in m.unsupported_reason(task("sr4_bicubic"))  # noiseless: weights need sigma_y
    assert m.unsupported_reason(task("sr4_bicubic", sigma=0.025)) is None and m.unsupported_reason(task("sr4")) is None
    deg = task("sr4_bicubic", sigma=0.025).build(8)
    y = deg.degrade(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), gens([0, 1], "degrade"))
    out = m.restore(y, deg, gens([0, 1]))
    assert m.last_params["sampler_operator"]["operator"] == "sr_block" and torch.isfinite(out).all()
    plain = FPSSMC(GAUSS_MODEL, steps=6, particles=3)
    plain.use_prior(gaussian_prior(0.1, 0.5, size=8), "cpu")
    assert (plain.restore(y, deg, gens([0, 1])) - out).abs().max() > 1e-3
    block = task("sr4").build(8)  # the block-average task itself: the option changes nothing
    yb = block.degrade(torch.rand(1, 3, 8, 8), gens([0], "degrade"))
    assert torch.equal(m.restore(yb, block, gens([0])), plain.restore(yb, block, gens([0])))
