"""PSLD: the gluing projection and its residual, the sampler's update and counts on stand-in callables, the method on
the tiny random latent prior (counts from the prior's counter, weights, validation), and one CLI run per latent
solver of this file pair (psld, resample)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.diffusion import alphas_cumprod, ddim_step, make_betas
from bench.methods.latent_solver import latent_ddim
from bench.methods.psld import PSLD, back_projector, gluing_residual, official_weights, psld_sample
from bench.methods.resample import ReSample
from tests.methods.solvers_common import gens, problem, task

ABAR = alphas_cumprod(make_betas("scaled_linear", 1000, 0.0015, 0.0195))
LATENT_TINY = {"name": "latent_tiny", "kind": "ldm", "diffusion": {"steps": 1000}}


@pytest.mark.parametrize("name", ["sr4", "deblur_gauss", "inpaint"])
def test_gluing_projection_and_zero_residual(name):
    """pinv: A P_y x = y for any x (a projection onto {Ax = y}) and P_y x = x when x fits y, so the gluing residual
    is zero when E inverts D; the official "transpose" equals pinv except for blur (identity: not a projection)."""
    deg, x, _ = problem(name, size=8, dtype=torch.float64)
    op = deg.operator
    y = op.A(x)
    other = torch.randn_like(x)
    back = back_projector(op, name, "pinv")
    glued = back(y) + other - back(op.A(other))
    torch.testing.assert_close(op.A(glued), y)
    decode = lambda z: 2 * z.reshape(-1, *op.x_shape)  # noqa: E731  (E = D^-1)
    encode = lambda v: v.reshape(v.shape[0], -1) / 2  # noqa: E731
    zero = gluing_residual(decode(x / 2), x / 2, y, op.A, back, encode)
    assert zero.abs().max() < 1e-10
    off = gluing_residual(decode(other / 2), other / 2, y, op.A, back, encode)
    assert (off > 0.1).all()
    official = back_projector(op, name, "official")
    if name == "deblur_gauss":
        torch.testing.assert_close(official(y), y)
        assert (op.A(official(y) + other - official(op.A(other))) - y).norm() > 0.1
    else:
        torch.testing.assert_close(official(y), back(y))


def test_sampler_update_and_counts_on_stand_ins():
    """omega = gamma = 0 is plain CompVis DDIM; with weights the step subtracts grad(omega ||A D z0^ - y|| + gamma
    L_glue) (checked against autograd written out here); gamma = 0 skips the encoder."""
    tab = latent_ddim(ABAR, 4)
    g = torch.Generator().manual_seed(0)
    z_T = torch.randn(2, 3, 2, 2, generator=g)
    W = torch.randn(12, 12, generator=g) / 4
    eps_fn = lambda z, t: (z.reshape(2, -1) @ W).reshape(z.shape) * (1 + t / 1000)  # noqa: E731
    up = lambda z: z.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    down = lambda x: torch.nn.functional.avg_pool2d(x, 2)  # noqa: E731
    deg, _, _ = problem("sr4", size=4, dtype=torch.float32)
    op = deg.operator
    y = torch.randn(2, op.M, generator=g)
    back = back_projector(op, "sr4", "pinv")
    run = lambda om, ga, c: psld_sample(eps_fn, up, down, op.A, back, y, tab, z_T, None, omega=om, gamma=ga,  # noqa
                                        counts=c)
    z = z_T
    for i in reversed(range(4)):
        z, _ = ddim_step(z, eps_fn(z, tab.tau[i]), tab.a[i], tab.a_prev[i])
    torch.testing.assert_close(run(0.0, 0.0, None), z)
    z = z_T
    for i in reversed(range(4)):
        z = z.detach().requires_grad_(True)
        z_next, z0 = ddim_step(z, eps_fn(z, tab.tau[i]), tab.a[i], tab.a_prev[i])
        x = up(z0).reshape(2, -1)
        glued = (back(y) + x - back(op.A(x))).reshape(2, 3, 4, 4)
        loss = 0.3 * (op.A(x) - y).norm(dim=1).sum() + 0.2 * (down(glued) - z0).flatten(1).norm(dim=1).sum()
        z = (z_next - torch.autograd.grad(loss, z)[0]).detach()
    counts: dict = {}
    torch.testing.assert_close(run(0.3, 0.2, counts), z)
    assert counts == {"unet_forward": 8, "unet_vjp": 8, "decoder_forward": 8, "decoder_vjp": 8,
                      "encoder_forward": 8, "encoder_vjp": 8}
    counts = {}
    run(0.3, 0.0, counts)
    assert counts["encoder_forward"] == 0 and counts["unet_vjp"] == 8


def test_official_weights_and_validation():
    assert official_weights("ldm", "sr4") == (0.9, 0.1) and official_weights("ldm", "deblur_gauss") == (0.1, 0.1)
    assert official_weights("sd", "inpaint") == (1.0, 0.1)
    m = PSLD(LATENT_TINY, steps=10)
    assert m.unsupported_reason(task("lowlight")) is not None and m.unsupported_reason(task("sr4")) is None
    for kw, match in [({"steps": 0}, "steps=0"), ({"omega": -1.0}, "omega=-1.0"), ({"glue": "transpose"},
                      "glue='transpose'.*pinv"), ({"eta": 2.0}, "eta=2.0")]:
        with pytest.raises(ValueError, match=match):
            PSLD(LATENT_TINY, **kw)
    for kw, match in [({"every": 0}, "every=0"), ({"lookahead": 1.5}, "lookahead=1.5"), ({"gamma": 0.0}, "gamma=0.0"),
                      ({"pixel_lr": 0.0}, "pixel_lr=0.0"), ({"splits": 0}, "splits=0")]:
        with pytest.raises(ValueError, match=match):
            ReSample(LATENT_TINY, steps=10, **kw)
    with pytest.raises(ValueError, match="needs a latent diffusion prior"):
        PSLD({"name": "adm_tiny", "kind": "adm", "diffusion": {"steps": 1000}})


@pytest.fixture(scope="module")
def tiny_prior():
    from omegaconf import OmegaConf

    from bench.models.latent import load_latent_prior
    from tests.conftest import CONF_DIR
    return load_latent_prior(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "latent_tiny.yaml")), "cpu")


def _restore(method, prior, name, ids=(0, 1)):
    deg, x, _ = problem(name, size=64, n=2, dtype=torch.float32)
    y = deg.operator.A((x.clamp(-1, 1) + 1) / 2)[list(ids)]
    method.use_prior(prior, "cpu")
    return method.restore(y, deg, gens(list(ids)))


def test_methods_on_the_tiny_latent_prior_count_exactly_and_are_batch_independent(tiny_prior):
    """Counts per image from the prior's call counter agree with the samplers' own; one image of a batch of two
    equals the same image alone (per-image norms, optimisations and generators)."""
    m = PSLD(LATENT_TINY, steps=4, paste_known=True)
    both = _restore(m, tiny_prior, "inpaint")
    assert both.shape == (2, 3, 64, 64) and torch.isfinite(both).all()
    assert m.last_cost == {"unet_forward": 4, "unet_vjp": 4, "decoder_forward": 5, "decoder_vjp": 4,
                           "encoder_forward": 4, "encoder_vjp": 4} and m.last_nfe == 4
    assert m.last_weights == (0.1, 0.1)
    r = ReSample(LATENT_TINY, steps=10, every=2, lookahead=2, pixel_iters=3, latent_iters=2)
    both = _restore(r, tiny_prior, "sr4")
    assert [(e.index, e.stage) for e in r.events] == [(6, "pixel"), (4, "pixel"), (2, "latent")]
    c = r.last_cost
    assert c["unet_forward"] == 10 + 3 * 2 and c["unet_vjp"] == 10 and r.last_nfe == 16
    assert c["pixel_iterations"] == 2 * 3 and c["latent_iterations"] == 2 * 2 and c["encoder_forward"] == 2
    assert c["decoder_forward"] == 10 + 2 + 4 + 1 and c["decoder_vjp"] == 10 + 4
    alone = _restore(r, tiny_prior, "sr4", ids=(1,))
    torch.testing.assert_close(alone, both[1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["psld", "resample"])
def test_cli_run_on_the_tiny_latent_prior(method, tmp_path):
    from bench.api import run

    extra = ["method.pixel_iters=3", "method.latent_iters=3"] if method == "resample" else []
    out = run(method=method, task="sr4", overrides=["model=latent_tiny", "dataset.limit=1", "steps=4",
                                                    f"run.results_root={tmp_path}", "run.progress=false", *extra])
    (row,) = [json.loads(p.read_text()) for p in (out / "rows").glob("*.json")]
    assert row["nfe"] == (7 if method == "resample" else 4)  # resample: events at index 3, 2, 1, 1 look-ahead each
    (timing,) = [json.loads(p.read_text()) for p in (out / "timing").glob("*.json")]
    cost = timing["cost_per_image"]  # the counted work beside the NFE, kept by the runner (bench/runner.py)
    assert cost["unet_forward"] == row["nfe"] and cost["unet_vjp"] == 4  # one VJP per DDIM step
    if method == "psld":
        assert cost["decoder_vjp"] == 4
    else:  # + one decoder VJP per latent-optimisation iteration
        assert cost["decoder_vjp"] == 4 + cost["latent_iterations"] and cost["latent_iterations"] > 0
    assert 0 <= row["psnr"] < 60
