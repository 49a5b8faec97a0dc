"""ReSample: the stochastic resampling distribution and its limits, the official event schedule and counts, the hard
data-consistency optimisations (tolerance, patience rule), and the CompVis DDIM tables."""

from __future__ import annotations

import pytest
import torch

from bench.diffusion import alphas_cumprod, make_betas
from bench.methods.latent_solver import latent_ddim
from bench.methods.resample import (PIXEL, Event, OptimSettings, event_schedule, hard_consistency,
                                    latent_consistency, pixel_consistency, resample_moments, resample_sample,
                                    scaled, stochastic_resample)
from tests.methods.solvers_common import problem

ABAR = alphas_cumprod(make_betas("scaled_linear", 1000, 0.0015, 0.0195))  # the FFHQ LDM schedule


def test_stochastic_resampling_draws_from_its_gaussian():
    """Sample mean / variance of 40k draws vs eq. (10), and eq. (10) vs the product of N(sqrt(a) z0, 1 - a) and
    N(z', sigma2) written in precision form (the official code's std is sqrt(1 / (1/sigma2 + 1/(1 - a))))."""
    g = torch.Generator().manual_seed(0)
    a, sigma2 = torch.tensor(0.6), torch.tensor(0.3)
    z0, zp = torch.tensor([1.5, -0.5]), torch.tensor([-1.0, 2.0])
    mean, var = resample_moments(z0, zp, a, sigma2)
    prec = 1 / (1 - a) + 1 / sigma2
    torch.testing.assert_close(var, 1 / prec)
    torch.testing.assert_close(mean, (a.sqrt() * z0 / (1 - a) + zp / sigma2) / prec)
    draws = stochastic_resample(z0.expand(40000, 2), zp.expand(40000, 2), a, sigma2,
                                torch.randn(40000, 2, generator=g))
    torch.testing.assert_close(draws.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(draws.var(0), var.expand(2), atol=0.01, rtol=0)


def test_resampling_limits():
    """sigma2 -> 0: z' itself (no spread); sigma2 -> inf: z0^ re-noised to level a, N(sqrt(a) z0^, 1 - a)."""
    a, z0, zp = torch.tensor(0.36), torch.tensor([2.0]), torch.tensor([-3.0])
    mean, var = resample_moments(z0, zp, a, torch.tensor(1e-9))
    torch.testing.assert_close(mean, zp) and torch.testing.assert_close(var, torch.tensor(0.0), atol=1e-8, rtol=0)
    mean, var = resample_moments(z0, zp, a, torch.tensor(1e9))
    torch.testing.assert_close(mean, 0.6 * z0)
    torch.testing.assert_close(var, torch.tensor(0.64))


def test_event_schedule_matches_the_official_counts():
    """500 steps: index_split 166, events at 10..330 every 10: 33 (17 pixel, 16 latent), 5 look-ahead steps each,
    so 500 + 33 * 5 = 665 UNet forwards; at 50 / 100 steps the scaled spacing keeps ~33 events."""
    ev = event_schedule(500)
    assert [e.index for e in ev] == list(range(330, 0, -10))
    assert sum(e.stage == "pixel" for e in ev) == 17 and min(e.index for e in ev if e.stage == "pixel") == 170
    assert all(e.lookahead == 5 for e in ev) and 500 + sum(e.lookahead for e in ev) == 665
    assert (scaled(10, 100), scaled(5, 100), scaled(10, 50), scaled(5, 20)) == (2, 1, 1, 1)
    assert len(event_schedule(100, 2, 1)) == 33 and len(event_schedule(50, 1, 1)) == 34
    assert event_schedule(12, every=1, lookahead=5, splits=3)[-1] == Event(1, "latent", 1)  # clipped look-ahead


def test_sampler_counts_at_the_official_500_steps():
    """The whole loop on stand-in callables (linear eps, decoder = 2x upsampling, A = identity): the exact
    number of UNet forwards / VJPs and encoder calls of the official schedule; optimisations capped at 2 iters."""
    B = 1
    tab = latent_ddim(ABAR, 500)
    up = lambda z: torch.nn.functional.interpolate(z, scale_factor=2)  # noqa: E731
    down = lambda x: torch.nn.functional.avg_pool2d(x, 2)  # noqa: E731
    counts: dict = {}
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(B, 3 * 4 * 4)
    z = resample_sample(lambda z, t: 0.5 * z, up, down, lambda x: x.reshape(x.shape[0], -1), y, tab,
                        torch.randn(B, 3, 2, 2, generator=g), lambda: torch.randn(B, 3, 2, 2, generator=g),
                        events=event_schedule(500), pixel=OptimSettings(1e-2, 2), latent=OptimSettings(5e-3, 2),
                        counts=counts)
    assert z.shape == (B, 3, 2, 2) and torch.isfinite(z).all()
    assert counts["unet_forward"] == 665 and counts["unet_vjp"] == 500
    assert counts["encoder_forward"] == 17 and counts["pixel_iterations"] == 17 * 2
    assert counts["latent_iterations"] == (16 + 1) * 2  # 16 latent events + the final optimisation
    assert counts["decoder_forward"] == 500 + 17 + 34 and counts["decoder_vjp"] == 500 + 34


@pytest.mark.parametrize("name", ["sr4", "inpaint", "denoise"])
def test_pixel_consistency_reaches_its_tolerance(name):
    """min_x mean (y - A x)^2 from a wrong start: stops once the MSE is below tol^2 = 1e-6 (y in A's range). Not
    deblur_gauss: there AdamW (lr 1e-2, weight decay 0.01) stalls at MSE ~2e-6 and runs all 2000 iterations
    (measured), so the official tolerance is not reached on ill-conditioned blurs."""
    deg, x_true, _ = problem(name, size=8, dtype=torch.float32)
    op = deg.operator
    y = op.A(x_true)
    x0 = torch.zeros_like(x_true).reshape(-1, *op.x_shape)
    x, iters = pixel_consistency(x0, y, op.A)
    mse = (y - op.A(x)).pow(2).mean(1)
    assert (mse < 1.5e-6).all() and all(n < PIXEL.max_iters for n in iters), (mse, iters)
    assert (y - op.A(x0)).pow(2).mean(1).min() > 1e-2


def test_latent_consistency_through_a_decoder_and_the_patience_rule():
    """Through a linear decoder the residual falls by > 100x; a loss that keeps rising stops after patience + 1
    iterations (official: the loss is compared with the one 200 iterations earlier); tol stops at once."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(48, 12, generator=g) / 12**0.5
    decode = lambda z: (z.reshape(z.shape[0], -1) @ W.T).reshape(-1, 3, 4, 4)  # noqa: E731
    y = decode(torch.randn(2, 12, generator=g)).reshape(2, -1)
    z0 = torch.zeros(2, 12)
    z, iters = latent_consistency(z0, y, lambda x: x.reshape(x.shape[0], -1), decode, OptimSettings(5e-2, 300))
    assert ((y - decode(z).reshape(2, -1)).pow(2).mean(1) < 1e-2 * y.pow(2).mean(1)).all(), iters
    calls = []

    def rising(v):
        calls.append(1)
        return (v * 0).sum() + len(calls)
    _, n = hard_consistency(torch.zeros(3), rising, OptimSettings(1e-3, 500, patience=7))
    assert n == 8
    _, n = hard_consistency(torch.zeros(3), lambda v: (v * 0).sum(), OptimSettings(1e-3, 500, tol=1e-3))
    assert n == 1


def test_compvis_ddim_tables():
    """make_ddim_timesteps + make_ddim_sampling_parameters: tau = 1, 3, ..., 999 at 500 steps; a_prev[0] = abar[0];
    1000 steps: tau = 0..999 (PSLD's off-by-one patch for the alphas); T // K stride when K does not divide T."""
    tab = latent_ddim(ABAR, 500)
    assert tab.tau[:3] == [1, 3, 5] and tab.tau[-1] == 999 and tab.num_steps == 500
    assert tab.a_prev[0] == pytest.approx(float(ABAR[0])) and tab.a[1] == pytest.approx(float(ABAR[3]))
    assert tab.a_prev[4] == pytest.approx(float(ABAR[7])) and tab.a[4] == float(ABAR.float()[9])  # float32 buffers
    assert latent_ddim(ABAR, 1000).tau == list(range(1000))
    assert latent_ddim(ABAR, 300).num_steps == 334
