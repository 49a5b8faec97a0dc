"""MCG-diff (bench/methods/mcg_diff.py): the official grid and observation times, the SMC sampler against the
closed-form posterior of an analytic Gaussian prior (noiseless and noisy), exact data consistency in the noiseless
case, the exact NFE, batch independence, the real run path and the refusals."""

from __future__ import annotations

import json

import pytest
import torch

from omegaconf import OmegaConf

from bench import api
from bench.api import compose
from bench.diffusion import alphas_cumprod
from bench.methods.ddrm import _spectral_setup
from bench.methods.mcg_diff import MCGDiff, mcg_diff_sample, mcg_grid, observation_times
from bench.methods.pnp_dm import likelihood_sample
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, gens, problem, task, with_gaussian_prior
from tests.methods.test_ddrm import gaussian_eps

M0, C0 = 0.1, 0.5
ABAR = alphas_cumprod(BETAS)
EPS = gaussian_eps(M0, C0)


def eps_fn(x, t):
    return EPS(x, torch.full((x.shape[0],), int(t), dtype=torch.long))


def posterior_mean(op, y, sigma_y):
    """E[x | y] for x ~ N(M0, C0^2 I), y = A x + sigma_y n: the exact Gaussian draw of PnP-DM with zero noise."""
    s, observed, _, ybar = _spectral_setup(op, y)
    prior = torch.full((y.shape[0], op.N), M0, dtype=y.dtype)
    return likelihood_sample(op, prior, s, observed, s * ybar, sigma_y, C0, torch.zeros_like(prior))


def replicas(name, steps, particles, reps, size=4, **kw):
    """(samples (reps, N), exact posterior mean (N,), op, y (reps, M), info): one measurement restored reps times."""
    deg, _, y = problem(name, size=size, n=1)
    op, sigma_y = deg.operator, 2 * deg.sigma
    y = y.expand(reps, -1).clone()
    out, info = mcg_diff_sample(eps_fn, op, y, sigma_y, ABAR, steps, particles, gens(range(reps)), **kw)
    return out.reshape(reps, -1), posterior_mean(op, y[:1], sigma_y)[0], op, y, info


# ------------------------------------------------------------------ grid and observation times
def test_grid_is_the_official_linspace_and_tau_matches_the_snr():
    g = mcg_grid(99, 1000)  # official ddim_100.yaml: linspace(0, 999, 100).long()
    assert len(g) == 100 and g[:4] == [0, 10, 20, 30] and g[-1] == 999 and g == sorted(set(g))
    assert mcg_grid(20, 1000)[:3] == [0, 49, 99]
    abar = ABAR.double()
    s = torch.tensor([1.0, 0.5, 0.25, 0.01], dtype=torch.float64)
    assert observation_times(abar, g, s, 0.0).tolist() == [0, 0, 0, 0]  # noiseless: every tau = t_0 = 0
    idx = observation_times(abar, g, s, 0.1**2)
    a = abar[g]
    brute = [int((0.01 * a - (1 - a) * si**2).abs().argmin()) for si in s]
    assert idx.tolist() == brute and idx.diff().ge(0).all()  # weaker singular value -> later (noisier) tau
    # s = 1, sigma_y = 0.1: y matches x_t / sqrt(a_t) where (1 - a_t) / a_t = 0.01, t ~ 27 on the 1000-step table
    assert g[int(idx[0])] in (20, 30)


# ------------------------------------------------------------------ the posterior of a Gaussian prior
def test_noiseless_sr_samples_average_to_the_posterior_mean_and_fit_y_exactly():
    """N(0.1, 0.25 I) prior, sr4 on 4 px: 200 independent runs (16 particles, 20 steps); the mean of the returned
    samples matches E[x | y] within 4.5 standard errors per pixel (48 pixels), and A x = y exactly."""
    reps = 200
    out, mean, op, y, _ = replicas("sr4", 20, 16, reps)
    z = (out.mean(0) - mean) / (out.std(0) / reps**0.5)
    assert z.abs().max() < 4.5
    assert (op.A(out) - y).abs().max() < 1e-12
    # the official last step keeps a kappa-blurred, sqrt(abar_0)-scaled observation: close to y, not on it
    off, *_ = replicas("sr4", 20, 16, 8, official_last_step=True)
    resid = (op.A(off) - y[:8]).abs().max()
    assert 1e-4 < resid < 0.1


def test_noisy_denoise_on_the_official_grid_matches_the_posterior_mean():
    """denoise (A = I, sigma_y = 0.1 in [-1, 1] units) on 2 px with the official 100-point grid: tau ~ 29, the
    filter runs above it, plain DDIM below, then the likelihood reweighting; the sample mean matches E[x | y]
    (gain 0.96 on y - m) within 4.5 standard errors. The control: on a 20-step grid every tau rounds to t = 0, the
    noise is ignored (official behaviour) and the mean is visibly off."""
    reps = 150
    out, mean, _, y, info = replicas("denoise", 99, 8, reps, size=2)
    assert 20 <= info["min_tau"] <= 30
    z = (out.mean(0) - mean) / (out.std(0) / reps**0.5)
    assert z.abs().max() < 4.5
    coarse, _, _, _, info20 = replicas("denoise", 20, 8, reps, size=2)
    assert info20["min_tau"] == 0
    assert ((coarse.mean(0) - mean) / (coarse.std(0) / reps**0.5)).abs().max() > 8


# ------------------------------------------------------------------ NFE, batches, the run path
@pytest.mark.parametrize("steps, particles", [(3, 2), (5, 1)])
def test_nfe_is_steps_times_particles(steps, particles):
    method = with_gaussian_prior(MCGDiff(GAUSS_MODEL, steps=steps, particles=particles, max_batch=1))
    deg = task("sr4_noisy").build(4)
    y = deg.degrade(torch.rand(1, 3, 4, 4), gens([0], "degrade"))
    out = method.restore(y, deg, gens([0]))
    assert method.last_nfe == steps * particles == method.describe()["nfe"] and torch.isfinite(out).all()
    assert not method.describe()["backprop_through_prior"]


def test_a_noisy_task_on_a_too_coarse_grid_is_reported(caplog):
    deg = task("denoise").build(4)
    y = deg.degrade(torch.rand(1, 3, 4, 4), gens([0], "degrade"))
    for steps, warned in ((20, True), (99, False)):
        caplog.clear()
        with_gaussian_prior(MCGDiff(GAUSS_MODEL, steps=steps, particles=1)).restore(y, deg, gens([0]))
        assert ("rounds to t=0 on the 20-step grid" in caplog.text and "steps=99" in caplog.text) == warned


def test_official_preset_and_embedded_default_counts():
    """Official ddim_100 + default.yaml: 99 transitions x 64 particles = 6,336 per image (the facts note's 6,400
    counts 100 transitions); the YAML default on the embedded prior: 20 x 4 = 80."""
    assert MCGDiff(GAUSS_MODEL, steps=99, particles=64).nfe == 6336
    embedded = OmegaConf.to_container(compose(method="mcg_diff"), resolve=True)["method"]
    assert embedded["steps"] * embedded["particles"] == 80
    official = OmegaConf.to_container(compose(method="mcg_diff", overrides=["model=adm_imagenet256"]), resolve=True)
    assert official["method"]["steps"] == 99


def test_batch_independence_and_determinism():
    method = with_gaussian_prior(MCGDiff(GAUSS_MODEL, steps=4, particles=3))
    deg = task("inpaint").build(8)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = deg.degrade(x, gens([0, 1], "degrade"))
    both = method.restore(y, deg, gens([0, 1]))
    assert torch.allclose(both[1:], method.restore(y[1:], deg, gens([1])), atol=1e-6)
    assert torch.equal(both, method.restore(y, deg, gens([0, 1])))
    assert not torch.allclose(both, method.restore(y, deg, gens([2, 3])))


def test_tiny_end_to_end_run(tmp_path):
    """bench.api.run (= python -m bench): adm_tiny on sr4, 2 steps x 2 particles -> 4 NFE."""
    run = api.run("mcg_diff", "sr4", overrides=["model=adm_tiny", "steps=2", "method.particles=2", "dataset.limit=1",
                                                f"run.results_root={tmp_path}", "run.progress=false"])
    text = json.dumps(json.loads((run / "manifest.json").read_text()))
    assert '"nfe": 4' in text and "MCG-diff (SMC" in text
    assert len(list((run / "images").glob("*.png"))) == 1


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("kw, words", [
    ({"steps": 0}, "steps=0"), ({"steps": 1000}, "steps<=999"), ({"particles": 0}, "particles=0"),
    ({"particles": 2.5}, "particles=2.5"), ({"particles": True}, "particles=True"), ({"eta": 1.5}, "eta=1.5"),
    ({"kappa": 0.0}, "kappa=0.0"), ({"max_batch": 0}, "max_batch=0")])
def test_bad_hyper_parameters_are_refused_with_the_fix(kw, words):
    with pytest.raises(ValueError, match="Fix") as err:
        MCGDiff(GAUSS_MODEL, **kw)
    assert words in str(err.value)


def test_non_linear_tasks_are_skipped_with_a_reason():
    reason = MCGDiff(GAUSS_MODEL).unsupported_reason(task("jpeg"))
    assert reason and "linear" in reason
    assert MCGDiff(GAUSS_MODEL).unsupported_reason(task("sr4")) is None
