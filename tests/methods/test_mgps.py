"""MGPS (bench/methods/mgps.py): the DDPM bridge, both variational fits against their closed-form Gaussian optima on the
analytic Gaussian prior, the official grid / gradient-step rules and exact NFE, the data pull of the whole sampler,
batch independence, the real run path, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch

from bench import api
from bench.diffusion import padded_alphas_cumprod
from bench.methods.mgps import (MGPS, Counter, adam_fit, bridge, gradient_steps, level_grid, mgps_cost,
                                midpoint, midpoint_loss, warm_start_loss)
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, dense, gens, task, with_gaussian_prior
from tests.methods.test_ddrm import gaussian_eps

M0, C0 = 0.1, 0.5
ABAR = padded_alphas_cumprod(BETAS)  # float64 [1, abar_0, ...]: level k has abar_{k-1}


def exact_x0() -> Counter:
    """x0(x, k) of N(M0, C0^2 I) in float64: the net is called at k - 1 with abar(k) = abar_{k-1} (our default)."""
    eps = gaussian_eps(M0, C0)
    return Counter(lambda x, t: eps(x, torch.full((x.shape[0],), t)), ABAR)


def tweedie(level: int) -> tuple[float, float]:
    """x0(x, level) = k x + b for the Gaussian prior."""
    a = float(ABAR[level])
    k = C0**2 * a**0.5 / (a * C0**2 + 1 - a)
    return k, M0 - k * a**0.5 * M0


def linear_problem(name="inpaint", size=4, seed=0):
    deg = task(name).build(size)
    op = deg.operator
    g = torch.Generator().manual_seed(seed)
    y = 0.5 * torch.randn(1, op.M, generator=g, dtype=torch.float64)
    return op, dense(op), y, g


def test_bridge_is_the_ddpm_conditional():
    """q(x_t | x_l, x_s) of x_t = sqrt(a_st) x_s + sqrt(1 - a_st) e, x_l = sqrt(a_tl) x_t + sqrt(1 - a_tl) e':
    mean (sqrt(a_st)(1 - a_tl) x_s + sqrt(a_tl)(1 - a_st) x_l) / (1 - a_sl), var (1 - a_st)(1 - a_tl) / (1 - a_sl)."""
    xl, xs = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for ell, t, s in ((900, 450, 0), (300, 150, 1), (40, 20, 7)):
        a_st, a_tl, a_sl = ABAR[t] / ABAR[s], ABAR[ell] / ABAR[t], ABAR[ell] / ABAR[s]
        mean, std = bridge(ABAR, xl, xs, ell, t, s)
        want = (a_st.sqrt() * (1 - a_tl) * xs + a_tl.sqrt() * (1 - a_st) * xl) / (1 - a_sl)
        torch.testing.assert_close(mean, want, rtol=0, atol=1e-12)
        assert abs(float(std**2 - (1 - a_st) * (1 - a_tl) / (1 - a_sl))) < 1e-14
    mean, std = bridge(ABAR, xl, xs, 900, 450, 450)  # alpha = 1: the bridge to the midpoint itself is x_s
    assert float(std) == 0 and torch.allclose(mean, xs)


def mc_gradient(loss_fn, mean: torch.Tensor, logstd: torch.Tensor, copies: int):
    """Average and standard error over ``copies`` independent one-sample gradients of loss_fn at (mean, logstd)."""
    mu = mean.expand(copies, *mean.shape[1:]).clone().requires_grad_(True)
    ls = logstd.expand(copies, *logstd.shape[1:]).clone().requires_grad_(True)
    grads = torch.autograd.grad(loss_fn(mu, ls), [mu, ls])
    return [(gr.mean(0).flatten(), gr.std(0).flatten() / copies**0.5) for gr in grads]


def assert_unbiased(mc, exact, z=5.0):
    (gm, se_m), (gl, se_l) = mc
    for got, se, want in ((gm, se_m, exact[0]), (gl, se_l, exact[1])):  # noise-free entries: se = 0, exact match
        assert bool(((got - want).abs() <= z * se + 1e-9 * (1 + want.abs())).all()), (got - want) / se
    assert float((gm - exact[0]).abs().max()) < 0.05 * float(exact[0].abs().max())  # and the check has power


def test_midpoint_loss_is_an_unbiased_gradient_of_its_closed_form_and_adam_reaches_the_optimum():
    """For x0(x, l) = k x + b and a linear A, E_q[L] = KL(q || N(m, s^2)) + E_q ||y - A(k x + b)||^2 / (2 sigma^2)
    = 1/2 [-2 sum lambda + (||mu - m||^2 + sum v) / s^2] + 1/2 [||y - A(k mu + b)||^2 + k^2 sum diag(A^T A) v] / sigma^2
    (v = e^{2 lambda}). The one-sample loss's gradient is unbiased for it (20,000 draws, within 5 standard errors);
    its optimum is mean* = (I / s^2 + k^2 A^T A / sigma^2)^-1 (m / s^2 + k A^T (y - A b) / sigma^2) and
    v* = 1 / (1 / s^2 + k^2 diag(A^T A) / sigma^2). 300 Adam steps at the official lr 0.03 from the official start
    (m, s) bring E_q[L] from 895.7 to 159.3 (optimum 157.4: measured 0.25% of the gap left) and mean to 0.06 of
    mean* (from 1.30); the variance converges more slowly (the one-sample gradient in lambda is noisy)."""
    op, A, y, g = linear_problem()
    sigma, mid, s = 0.1, 50, 0.4  # k = 0.82: the data term outweighs the KL on the kept pixels
    k, b = tweedie(mid)
    m = 0.3 * torch.randn(1, *op.x_shape, generator=g, dtype=torch.float64)
    x0_fn = exact_x0()
    AtA, d = A.T @ A, (A.T @ A).diagonal()

    def loss(mu, ls):
        return midpoint_loss(mu, ls, prior_mean=m, prior_logstd=torch.tensor(s, dtype=torch.float64).log(),
                             x0_fn=x0_fn, mid=mid,
                             noise=lambda: torch.randn(mu.shape, generator=g, dtype=torch.float64),
                             log_lik=lambda x: -0.5 * (y - op.A(x.reshape(x.shape[0], -1))).pow(2).sum() / sigma**2)

    def exact_grad(mu, ls):
        mu, v = mu.flatten(), (2 * ls).exp().flatten()
        return ((mu - m.flatten()) / s**2 - k * A.T @ (y[0] - A @ (k * mu + b)) / sigma**2,
                -1 + v / s**2 + k**2 * d * v / sigma**2)

    probe = (m + 0.2 * torch.randn(m.shape, generator=g, dtype=torch.float64), torch.full_like(m, 0.3).log())
    assert_unbiased(mc_gradient(loss, *probe, 20000), exact_grad(*probe))

    P = torch.eye(op.N, dtype=torch.float64) / s**2 + k**2 * AtA / sigma**2
    mean_opt = torch.linalg.solve(P, m.flatten() / s**2 + k * A.T @ (y[0] - A @ torch.full((op.N,), b,
                                                                                       dtype=torch.float64)) / sigma**2)
    var_opt = 1 / (1 / s**2 + k**2 * d / sigma**2)

    def objective(mu, ls):  # E_q[L], constants dropped
        v, r = (2 * ls).exp().flatten(), y[0] - A @ (k * mu.flatten() + b)
        return float(0.5 * (-2 * ls.sum() + ((mu.flatten() - m.flatten()) ** 2 + v).sum() / s**2)
                     + 0.5 * (r @ r + k**2 * (d * v).sum()) / sigma**2)

    x0_fn.forward = x0_fn.vjp = 0
    start, best = objective(m, torch.full_like(m, s).log()), objective(mean_opt, var_opt.log().view(m.shape) / 2)
    mu, ls = adam_fit(m, torch.full_like(m, s).log(), loss, 300, 0.03)
    assert objective(mu, ls) - best < 0.01 * (start - best)
    assert float((mu.flatten() - mean_opt).abs().max()) < 0.1 < 0.1 * float((m.flatten() - mean_opt).abs().max())
    assert x0_fn.vjp == x0_fn.forward == 300  # one forward + one VJP per Adam step


def test_warm_start_loss_is_an_unbiased_gradient_of_the_kl_to_the_exact_x1_posterior():
    """The warm-start surrogate's expected gradient is that of KL(q || p(x_1 | x_l, y)), p(x_1 | x_l, y) prop. to
    N(x_1; sqrt(a1) m, v1) N(x_l; sqrt(r) x_1, 1 - r) N(y; A x_1, sigma^2) (a1 = abar(1), v1 = a1 c^2 + 1 - a1,
    r = abar(l) / abar(1)), exact for a Gaussian prior (linear score): d/dmu = A^T(A mu - y) / sigma^2
    - sqrt(r)(x_l - sqrt(r) mu) / (1 - r) + (mu - sqrt(a1) m) / v1, d/dlambda = v (diag(A^T A) / sigma^2 + r / (1 - r)
    + 1 / v1) - 1."""
    op, A, y, g = linear_problem(seed=1)
    sigma, mid = 0.1, 400
    a1, r = float(ABAR[1]), float(ABAR[mid] / ABAR[1])
    v1 = a1 * C0**2 + 1 - a1
    x_mid = torch.randn(1, *op.x_shape, generator=g, dtype=torch.float64)
    x0_fn = exact_x0()

    def loss(mu, ls):
        return warm_start_loss(mu, ls, x_mid=x_mid, mid=mid, x0_fn=x0_fn,
                               noise=lambda: torch.randn(mu.shape, generator=g, dtype=torch.float64),
                               log_lik=lambda x: -0.5 * (y - op.A(x.reshape(x.shape[0], -1))).pow(2).sum() / sigma**2)

    def exact_grad(mu, ls):
        mu, v = mu.flatten(), (2 * ls).exp().flatten()
        return (A.T @ (A @ mu - y[0]) / sigma**2 - r**0.5 * (x_mid.flatten() - r**0.5 * mu) / (1 - r)
                + (mu - a1**0.5 * M0) / v1, v * ((A.T @ A).diagonal() / sigma**2 + r / (1 - r) + 1 / v1) - 1)

    m1, s1 = bridge(ABAR, x_mid, x0_fn(x_mid, mid), mid, 1, 0)
    probe = (m1 + 0.2 * torch.randn(m1.shape, generator=g, dtype=torch.float64), torch.full_like(m1, 0.1).log())
    x0_fn.forward = 0
    assert_unbiased(mc_gradient(loss, *probe, 20000), exact_grad(*probe))
    assert x0_fn.vjp == 0 and x0_fn.forward == 1  # the score is one (batched) forward, without a VJP


# ------------------------------------------------------------------ grid, rules, NFE
def test_official_grid_midpoints_and_gradient_step_rules():
    lv = level_grid(300, 1000)
    assert lv[:4] == [0, 3, 6, 10] and lv[-1] == 999 and len(set(lv)) == 300
    assert [midpoint(t, 0.5) for t in (3, 10, 999)] == [1, 5, 499] and midpoint(1, 0.5) == 1 and midpoint(8, 1.0) == 8
    default = [gradient_steps(i, 300) for i in range(2, 300)]
    assert default.count(10) == 10 and all(gradient_steps(i, 300) == 10 for i in range(290, 300))
    assert set(default[:288]) == {2}
    ffhq = dict(noisy_count=5, noisy_grad_steps=20, every=10, every_grad_steps=20)  # official FFHQ block
    assert [gradient_steps(i, 300, **ffhq) for i in (20, 30, 31, 294, 295)] == [2, 20, 2, 2, 20]
    imagenet = dict(plain_last=10, noisy_count=5, noisy_grad_steps=20, every=20, every_grad_steps=10)
    assert [gradient_steps(i, 300, **imagenet) for i in (10, 20, 40, 41, 299)] == [2, 10, 10, 2, 20]
    assert set(gradient_steps(i, 20) for i in range(2, 20)) == {2}  # i <= 20 comes first: 20 steps all take 2


def test_nfe_at_the_official_defaults_is_1532_forwards_674_vjps_and_counts_match_a_run():
    """Facts note §7.4: 300 steps, threshold 700, 2 Adam steps (10 for the 10 noisiest): 2 + sum_i (2 + K_i [l > 1]
    + K_i [t_i >= 700]) = 1,532 forwards, sum_i K_i [l > 1] = 674 VJPs (the note's "~676" counts i = 2, where l = 1
    and the fit calls no network). The formula equals the counts of a real run (here 40 steps with the FFHQ rules;
    tools/equivalence/mgps.py also counts the official code's calls)."""
    method = with_gaussian_prior(MGPS(GAUSS_MODEL), size=2)
    assert method.steps == 300 and method.cost() == (1532, 674) and method.backprop_through_prior
    assert (method.describe()["nfe"], method.describe()["vjp"]) == (1532, 674)
    assert mgps_cost(level_grid(300, 1000), 0.5, 2000, lambda i: gradient_steps(i, 300)) == (1532 - 260, 674)
    ffhq = with_gaussian_prior(MGPS(GAUSS_MODEL, steps=40, noisy_count=5, noisy_grad_steps=20, every=10,
                                    every_grad_steps=20), size=2)
    deg = task("denoise").build(2)
    y = deg.degrade(torch.rand(1, 3, 2, 2), gens([0], "degrade"))
    out = ffhq.restore(y, deg, gens([0]))
    assert (ffhq.last_nfe, ffhq.last_vjp) == ffhq.cost() == (394, 184) and torch.isfinite(out).all()


# ------------------------------------------------------------------ the whole sampler
def test_sampler_pulls_toward_the_posterior_and_is_the_prior_without_data():
    """MGPS approximates each backward transition (the DDPM bridge around x0(x_t) stands for p(x_l | x_t), g(x0(x_l))
    for the smoothed likelihood), so even on a Gaussian prior its mean is not the posterior mean: no exactness to
    test. What it does: on inpaint (4 px, sigma_y 0.05), 20 steps, 100 chains, the mean moves from the prior mean
    toward the closed-form posterior mean, the more the larger the Adam budget (measured ||mean - post|| /
    ||M0 - post|| = 0.77 with the official lr 0.03 unscaled, 0.12 with the default lr x 300 / steps = 0.45), and with
    an uninformative likelihood (sigma_y 1e4) it samples the prior: mean M0, and the output x0(x_{t_1}) =
    E[x0 | x_{t_1}] has std sqrt(a c^2 / (a c^2 + 1 - a)) c = 0.88 c at t_1 = 52 for exact prior draws (measured
    0.86 c)."""
    deg = task("inpaint").build(4)
    op = deg.operator
    g = torch.Generator().manual_seed(0)
    y = op.A(M0 + C0 * torch.randn(1, op.N, generator=g, dtype=torch.float64))
    A, sy = dense(op), 0.05
    P = torch.eye(op.N, dtype=torch.float64) / C0**2 + A.T @ A / sy**2
    post = torch.linalg.solve(P, M0 / C0**2 + A.T @ y[0] / sy**2)
    B = 100
    y01 = ((y + op.A(torch.ones(1, op.N, dtype=torch.float64))) / 2).float().expand(B, -1)

    def run(**kw):
        return (with_gaussian_prior(MGPS(GAUSS_MODEL, steps=20, **kw), size=4).restore(y01, deg, gens(range(B)))
                * 2 - 1).reshape(B, -1).double()

    gap = float((post - M0).norm())
    official, default = (float((run(**kw).mean(0) - post).norm()) / gap for kw in ({"rescale": False}, {}))
    print(f"\n  mgps Gaussian inpaint: ||mean - post|| / ||M0 - post|| = {official:.2f} (lr 0.03), "
          f"{default:.2f} (0.45)")
    assert default < 0.3 and official < 0.9 and default < 0.5 * official
    out = run(sigma_y_min=1e4)
    assert float((out.mean(0) - M0).abs().max()) < 4 * C0 / B**0.5
    assert 0.75 * C0 < float(out.std(0).mean()) < 0.95 * C0


def test_batch_independence_determinism_and_the_time_offset_option():
    method = with_gaussian_prior(MGPS(GAUSS_MODEL, steps=6), size=8)
    deg = task("sr4").build(8)
    y = deg.degrade(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), gens([0, 1], "degrade"))
    both = method.restore(y, deg, gens([0, 1]))
    torch.testing.assert_close(method.restore(y[1:], deg, gens([1])), both[1:], rtol=0, atol=1e-6)
    assert torch.equal(both, method.restore(y, deg, gens([0, 1])))
    with torch.no_grad():  # the runner may call restore under no_grad: the VJPs still run
        assert torch.equal(both, method.restore(y, deg, gens([0, 1])))
    offset = with_gaussian_prior(MGPS(GAUSS_MODEL, steps=6, official_time_offset=True), size=8)
    assert (offset.restore(y, deg, gens([0, 1])) - both).abs().max() > 1e-4


def test_tiny_end_to_end_run(tmp_path):
    """bench.api.run (= python -m bench): adm_tiny on sr4, 4 steps (levels 0, 333, 666, 999):
    2 + (2 + 2 + 2 warm) + (2 + 2) = 12 forwards, 4 VJPs."""
    run = api.run("mgps", "sr4", overrides=["model=adm_tiny", "steps=4", "dataset.limit=1",
                                            f"run.results_root={tmp_path}", "run.progress=false"])
    text = json.dumps(json.loads((run / "manifest.json").read_text()))
    assert '"nfe": 12' in text and '"vjp": 4' in text and "MGPS (midpoint" in text
    assert '"backprop_through_prior": true' in text
    (timing,) = [json.loads(p.read_text()) for p in (run / "timing").glob("*.json")]
    assert timing["cost_per_image"] == {"unet_forward": 12, "unet_vjp": 4} and timing["nfe_per_image"] == 12
    assert len(list((run / "images").glob("*.png"))) == 1


@pytest.mark.parametrize("kw, words", [
    ({"steps": 2}, "steps=2"), ({"steps": 1001}, "exceeds"), ({"alpha": 0.0}, "alpha=0.0"), ({"alpha": 1.5}, "alpha"),
    ({"lr": -1}, "lr=-1"), ({"rescale": "yes"}, "rescale='yes'"), ({"sigma_y_min": 0}, "sigma_y_min=0"),
    ({"threshold": 0.5}, "threshold=0.5"),
    ({"grad_steps": -1}, "grad_steps=-1"), ({"every": True}, "every=True"), ({"noisy_grad_steps": 2.5}, "2.5")])
def test_bad_hyper_parameters_are_refused_with_the_fix(kw, words):
    with pytest.raises(ValueError, match="Fix") as err:
        MGPS(GAUSS_MODEL, **kw)
    assert words in str(err.value)


def test_non_linear_tasks_are_skipped_with_a_reason():
    assert "linear" in MGPS(GAUSS_MODEL, steps=4).unsupported_reason(task("jpeg"))
