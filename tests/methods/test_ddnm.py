"""DDNM / DDNM+: exact consistency on noiseless tasks, the moments of an independent scalar recursion of the
paper's equations on the analytic Gaussian prior, the RePaint schedule, and the embedded prior."""

from __future__ import annotations

import pytest
import torch

from bench.diffusion import padded_alphas_cumprod
from bench.methods.ddnm import DDNM, ddnm_coefficients, ddnm_sample, repaint_schedule
from tests.methods.solvers_common import GAUSS_MODEL, BETAS, embedded_restoration, gens, problem, task, \
    with_gaussian_prior
from tests.methods.test_ddrm import gaussian_eps

ABAR = padded_alphas_cumprod(BETAS)
M0, C0, ETA = 0.1, 0.5, 0.85
NOISELESS = ["sr4", "inpaint", "colorize", "deblur_gauss", "deblur_uniform", "sr4_bicubic"]


def eps_fn(m=M0, c=C0):
    f = gaussian_eps(m, c)
    return lambda x, t: f(x, torch.full((x.shape[0],), t, dtype=torch.long))


def sample(deg, y, sigma_y, steps=10, eta=ETA, ids=(0, 1), travel=(1, 1), official=False):
    times = repaint_schedule(steps, *travel)
    return ddnm_sample(eps_fn(), deg.operator, y, sigma_y, ABAR, times, 1000 // steps, eta, gens(ids),
                       official_noise_basis=official)


def test_repaint_schedule_and_nfe():
    """Official get_schedule_jump: T'=100 without travel is 99..0, -1; the NFE of (l, r) = (10, 3) is 280 and of
    (5, 2) 195 (shared notes §2)."""
    assert repaint_schedule(100) == list(range(99, -1, -1)) + [-1]
    for (l, r), nfe in {(10, 3): 280, (5, 2): 195, (1, 1): 100}.items():
        ts = repaint_schedule(100, l, r)
        assert sum(1 for i, j in zip(ts[:-1], ts[1:]) if j < i) == nfe
        assert all(abs(i - j) == 1 for i, j in zip(ts[:-1], ts[1:])) and ts[-1] == -1
    m = DDNM(GAUSS_MODEL, steps=20, travel_length=5, travel_repeat=2)
    assert m.nfe == sum(1 for i, j in zip(m.times[:-1], m.times[1:]) if j < i) > 20


@pytest.mark.parametrize("name", NOISELESS)
def test_noiseless_output_satisfies_a_x_equals_y(name):
    """x0 - A^+(A x0 - y) at the last step (abar = 1, no noise): A x = y to float error (float64)."""
    deg, _, y = problem(name, size=8)
    x, nfe = sample(deg, y, 0.0, steps=10)
    assert nfe == 10
    assert (deg.operator.A(x.reshape(2, -1)) - y).abs().max() < 1e-10
    # ... and the null space is the prior's, not zeros: x is not just A^+ y
    pinv = deg.operator.pinv(y)
    if name != "denoise":
        assert (x.reshape(2, -1) - pinv).norm() > 0.1 * pinv.norm()


def test_batch_independence():
    deg, _, y = problem("sr4_noisy", size=8, sigma=0.05)
    both, _ = sample(deg, y, 0.1, steps=5, ids=(0, 1))
    alone, _ = sample(deg, y[1:], 0.1, steps=5, ids=(1,))
    torch.testing.assert_close(alone, both[1:], rtol=0, atol=1e-12)


def test_ddnm_plus_without_noise_is_ddnm_bit_for_bit():
    deg, _, y = problem("sr4", size=8)
    a = DDNM(GAUSS_MODEL, steps=10, plus=False)
    b = DDNM(GAUSS_MODEL, steps=10, plus=True)
    for m in (a, b):
        with_gaussian_prior(m, M0, C0)
    y01 = ((y + deg.operator.A(torch.ones(1, deg.operator.N, dtype=torch.float64))) / 2).float()
    assert torch.equal(a.restore(y01, deg, gens([0, 1])), b.restore(y01, deg, gens([0, 1])))
    assert a.last_nfe == b.last_nfe == 10


def test_coefficient_cases():
    """Lambda, d1, d2 per singular value as official Lambda / Lambda_noise (sigma' = 0.2, a = 0.8)."""
    s = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=torch.float64)
    obs = s > 0
    a, sig, sy, eta = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64), 0.2, ETA
    lam, d1, d2 = ddnm_coefficients(s, obs, torch.where(obs, s, torch.ones_like(s)), a, sig, sy, eta)
    # s = 0: missing; s = 0.1: a sigma'/s = 1.6 > sigma_s (below); s = 1, 10: 0.16, 0.016 < sigma_s (above)
    torch.testing.assert_close(lam, torch.tensor([1.0, 0.1 * 0.6 * (1 - eta**2) ** 0.5 / 0.16, 1.0, 1.0],
                                                 dtype=torch.float64))
    torch.testing.assert_close(d1, torch.tensor([eta * 0.6, eta * 0.6, (0.36 - 0.16**2) ** 0.5,
                                                 (0.36 - 0.016**2) ** 0.5], dtype=torch.float64))
    torch.testing.assert_close(d2, torch.tensor([(1 - eta**2) ** 0.5 * 0.6, 0, 0, 0], dtype=torch.float64))
    lam0, d10, d20 = ddnm_coefficients(s, obs, torch.where(obs, s, torch.ones_like(s)), a, sig, 0.0, eta)
    assert torch.all(lam0 == 1) and torch.allclose(d10, eta * sig * torch.ones(4, dtype=torch.float64))


def recursion(mu, s, ybar, sigma_y, steps, eta=ETA, c=C0):
    """Mean / variance of DDNM(+)'s output per spectral coordinate from the module docstring's equations, for
    x0 ~ N(mu, c^2) (every step is affine + Gaussian per coordinate). Written from the paper, not the code."""
    seq = list(range(0, 1000, 1000 // steps))
    obs = s > 0
    s1 = torch.where(obs, s, torch.ones_like(s))
    M, S = torch.zeros_like(s), torch.ones_like(s)  # x_T ~ N(0, 1)
    for k in reversed(range(len(seq))):
        at = float(ABAR[seq[k] + 1])
        an = float(ABAR[seq[k - 1] + 1]) if k else 1.0
        a, sig = an**0.5, (1 - an) ** 0.5
        kk = c**2 * at**0.5 / (at * c**2 + 1 - at)
        a0, b0 = kk, (1 - kk * at**0.5) * mu  # x0 = a0 u + b0
        ae, be = (1 - at**0.5 * kk) / (1 - at) ** 0.5, -(at**0.5) * b0 / (1 - at) ** 0.5  # eps = ae u + be
        if sigma_y == 0:
            lam, d1, d2 = torch.ones_like(s), eta * sig * torch.ones_like(s), (1 - eta**2) ** 0.5 * sig * torch.ones_like(s)
        else:
            th = a * sigma_y / s1
            below, above = obs & (sig < th), obs & (sig > th)
            lam = torch.where(below, s * sig * (1 - eta**2) ** 0.5 / (a * sigma_y), torch.ones_like(s))
            d1 = torch.where(above, (sig**2 - th**2).clamp_min(0).sqrt(), eta * sig * torch.ones_like(s))
            d2 = torch.where(obs, torch.zeros_like(s), (1 - eta**2) ** 0.5 * sig * torch.ones_like(s))
        g = torch.where(obs, lam, torch.zeros_like(s))
        alpha = a * (1 - g) * a0 + d2 * ae
        beta = a * ((1 - g) * b0 + g * ybar) + d2 * be
        M, S = alpha * M + beta, alpha**2 * S + d1**2
    return M, S


@pytest.mark.parametrize("case", ["sr4", "denoise", "sr4_noisy"])
def test_moments_match_the_paper_recursion(case):
    """2000 samples of DDNM / DDNM+ on N(0.1, 0.5^2) at 8x8: per spectral coordinate the sample mean and
    variance match the scalar recursion within 5 standard errors."""
    deg, _, y = problem(case, size=8, n=1)
    op, n = deg.operator, 2000
    sigma_y = 2 * deg.sigma
    x, _ = sample(deg, y.expand(n, -1), sigma_y, steps=10, ids=range(n))
    z = op.Vt(x.reshape(n, -1))
    s = op.add_zeros(op.singulars(torch.float64)[None])[0]
    ybar = op.add_zeros(op.Ut(y))[0] / torch.where(s > 0, s, torch.ones_like(s))
    mean, var = recursion(op.Vt(torch.full((1, op.N), M0, dtype=torch.float64))[0], s, ybar, sigma_y, 10)
    assert torch.all((z.mean(0) - mean).abs() <= 5 * (var / n).sqrt() + 1e-9)
    for v in torch.unique(var.round(decimals=12)):
        idx = (var.round(decimals=12) == v)
        se = float(v) * (2 / (n - 1)) ** 0.5 / idx.sum() ** 0.5
        assert abs(float(z.var(0)[idx].mean()) - float(v)) <= 5 * se + 1e-12


def test_official_noise_basis_changes_sr_but_not_inpainting():
    """Upstream's eps without V^T: a different sample on sr4 (V is a rotation there), the same on inpainting."""
    for name, same in (("sr4_noisy", False), ("inpaint", True)):
        deg, _, y = problem(name, size=8, sigma=0.05)
        ours, _ = sample(deg, y, 0.1, steps=5)
        upstream, _ = sample(deg, y, 0.1, steps=5, official=True)
        assert torch.allclose(ours, upstream) == same, name


def test_noisy_tasks_need_ddnm_plus_and_validation():
    m = DDNM(GAUSS_MODEL)
    assert "ddnm_plus" in m.unsupported_reason(task("denoise"))
    assert m.unsupported_reason(task("sr4")) is None
    assert DDNM(GAUSS_MODEL, plus=True).unsupported_reason(task("denoise")) is None
    assert DDNM(GAUSS_MODEL, plus=True).unsupported_reason(task("lowlight")) is not None
    for kw in ({"eta": 1.5}, {"steps": 0}, {"travel_length": 0}, {"steps": 5000}):
        with pytest.raises(ValueError, match="ddnm"):
            DDNM(GAUSS_MODEL, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("method,task_name", [("ddnm", "deblur_gauss"), ("ddnm_plus", "denoise")])
def test_embedded_prior_restores_better_than_the_input(method, task_name):
    """Embedded prior (adm64_imagenet96), 2 sample photos, 20 steps (ddnm_plus on deblur_gauss is ddnm exactly,
    tested above). Measured (PSNR dB, input -> output): ddnm deblur_gauss 22.93 -> 37.41 (ddnm_plus the same),
    ddnm_plus denoise 26.19 -> 29.75."""
    degraded, restored, m = embedded_restoration(method, task_name, steps=20)
    assert m.last_nfe == 20
    print(f"\n  {m.name} {task_name}: input {degraded:.2f} dB -> {restored:.2f} dB")
    assert restored >= degraded + 1.0, (degraded, restored)
