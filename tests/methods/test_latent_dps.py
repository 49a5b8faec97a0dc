"""latent_dps (bench/methods/latent_dps.py) on tiny random latent priors: the step equals DDIM minus zeta times the
finite-difference gradient of ||y - A D(z0^)||, step-size rules, counted cost (with and without guidance), batch
independence, refusals, and one real CLI run. Outputs are NOT meaningful."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import bench
from bench.diffusion import ddim_step
from bench.methods.latent_dps import LatentDPS, latent_dps_sample
from bench.models.latent import LatentPrior, load_latent_prior
from tests.methods.test_ddrm import task

ROOT = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((ROOT / "conf/model/latent_tiny.yaml").read_text())
#: latent_tiny with an AutoencoderKL (f = 2): smooth decoder, so finite differences see the true gradient
#: (VQ quantisation is piecewise constant; its straight-through gradient is not a derivative)
KL = {**TINY, "name": "latent_tiny_kl", "arch": {"unet": {**TINY["arch"]["unet"], "in_channels": 4, "out_channels": 4},
      "vae": {"block_out_channels": [8, 16], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
              "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}}}


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def dps(model=TINY, steps=3, **kw) -> LatentDPS:
    m = LatentDPS(model=model, steps=steps, **kw)
    m.setup(torch.device("cpu"))
    return m


def float64(prior: LatentPrior) -> LatentPrior:
    return LatentPrior(prior.kind, copy.deepcopy(prior.unet).double(), copy.deepcopy(prior.vae).double(), prior.betas,
                       prior.scaling_factor, prior.image_size, prior.scheduler_config)


def test_step_is_ddim_minus_zeta_times_the_finite_difference_gradient():
    prior = float64(load_latent_prior(KL, "cpu"))
    deg = task("sr4").build(16)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *prior.latent_shape(16), generator=g, dtype=torch.float64)
    y = deg.operator.A(torch.rand(2, deg.operator.N, generator=g, dtype=torch.float64) * 2 - 1)
    t, t_next, zeta = 600, 400, 0.37

    def r(zz):  # sum over images of ||y - A D(z0^(zz))||
        with torch.no_grad():
            _, z0 = ddim_step(zz, prior.eps(zz, t), prior.abar[t].item(), prior.abar[t_next].item())
            return (y - deg.operator.A(prior.decode(z0).reshape(2, -1))).norm(dim=1).sum().item()

    out, vjps = latent_dps_sample(prior, deg.operator.A, y, [t, t_next], lambda _: zeta, z)
    assert vjps == 2
    # redo the first step by hand: z' (DDIM, eta 0) and the implied gradient
    with torch.no_grad():
        z_ddim, _ = ddim_step(z, prior.eps(z, t), prior.abar[t].item(), prior.abar[t_next].item())
    z.requires_grad_(True)
    _, z0 = ddim_step(z, prior.eps(z, t), prior.abar[t].item(), prior.abar[t_next].item())
    (grad,) = torch.autograd.grad((y - deg.operator.A(prior.decode(z0).reshape(2, -1))).norm(dim=1).sum(), z)
    z = z.detach()
    h = 1e-6
    for seed in range(3):
        v = torch.randn(z.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        fd = (r(z + h * v) - r(z - h * v)) / (2 * h)
        assert (grad * v).sum().item() == pytest.approx(fd, rel=1e-5)
    first, _ = latent_dps_sample(prior, deg.operator.A, y, [t], lambda _: zeta, z)  # one step, to the final alpha
    with torch.no_grad():
        z_final, _ = ddim_step(z, prior.eps(z, t), prior.abar[t].item(), 1.0)
    torch.testing.assert_close(first, z_final - zeta * grad, rtol=0, atol=1e-12)
    assert torch.isfinite(out).all() and z_ddim.shape == out.shape


def test_official_pseudo_x0_moves_the_loss_point():
    """ReSample's loss at (z - (1 - a) eps) / sqrt(a); the DDIM part still uses Tweedie's z0^."""
    prior = float64(load_latent_prior(KL, "cpu"))
    deg = task("deblur_gauss").build(16)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, *prior.latent_shape(16), generator=g, dtype=torch.float64)
    y = deg.operator.A(torch.rand(1, deg.operator.N, generator=g, dtype=torch.float64) * 2 - 1)
    t, a = 300, prior.abar[300].item()
    zz = z.clone().requires_grad_(True)
    eps = prior.eps(zz, t)
    loss = (y - deg.operator.A(prior.decode((zz - (1 - a) * eps) / a ** 0.5).reshape(1, -1))).norm()
    (grad,) = torch.autograd.grad(loss, zz)
    with torch.no_grad():
        z_ddim, _ = ddim_step(z, eps, a, 1.0)
    out, _ = latent_dps_sample(prior, deg.operator.A, y, [t], lambda _: 0.2, z, pseudo_x0=True)
    torch.testing.assert_close(out, z_ddim - 0.2 * grad, rtol=0, atol=1e-12)
    plain, _ = latent_dps_sample(prior, deg.operator.A, y, [t], lambda _: 0.2, z)
    assert (plain - out).abs().max() > 1e-6


def test_step_size_rules():
    m = dps()
    assert m.scale == 0.5 and m.step_size(500) == pytest.approx(0.5 * m.prior.abar[500].item())  # ReSample
    c = dps(zeta="constant")
    assert c.scale == 1.0 and c.step_size(500) == 1.0  # PSLD's omega default
    assert dps(zeta="constant", scale=0.1).step_size(3) == 0.1


def test_counted_cost_batch_independence_and_reproducibility():
    m = dps(steps=3)
    deg = task("deblur_gauss").build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = deg.degrade(x, gens(0, 1))
    a = m.restore(y, deg, gens(5, 6))
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert m.last_nfe == 3
    assert m.last_cost == {"unet_forward": 3, "encoder_forward": 0, "decoder_forward": 4, "unet_vjp": 3,
                           "decoder_vjp": 3}
    assert m.last_cost == {**m.expected_cost(), "unet_forward": 3}
    assert torch.equal(a, m.restore(y, deg, gens(5, 6)))
    torch.testing.assert_close(a[1:], m.restore(y[1:], deg, gens(6)), atol=1e-5, rtol=0)


def test_guided_sd_prior_counts_two_unet_rows(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[sd]')")
    from tests.tiny_sd import tiny_sd

    model = {"name": "sd_tiny", "kind": "sd", "image_size": 32, "local_dir": str(tiny_sd(tmp_path, 4)),
             "guidance_scale": 2.0}
    m = dps(model, steps=2)
    deg = task("sr4").build(32)
    y = deg.degrade(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), gens(0))
    assert m.restore(y, deg, gens(1)).shape == (1, 3, 32, 32)
    assert m.last_cost == m.expected_cost() == {"unet_forward": 4, "unet_vjp": 4, "decoder_forward": 3,
                                                "decoder_vjp": 2, "encoder_forward": 0}


def test_refusals():
    adm = yaml.safe_load((ROOT / "conf/model/adm_tiny.yaml").read_text())
    with pytest.raises(ValueError, match=r"latent_dps needs a latent diffusion prior.*kind 'adm'.*Fix: model=latent_tiny"):
        LatentDPS(model=adm)
    with pytest.raises(ValueError, match=r"zeta='abr' is invalid; allowed: abar, constant"):
        LatentDPS(model=TINY, zeta="abr")
    with pytest.raises(ValueError, match=r"scale=-1 is invalid"):
        LatentDPS(model=TINY, scale=-1)
    with pytest.raises(ValueError, match=r"exceeds the prior's 1000 training steps"):
        LatentDPS(model=TINY, steps=2000)
    m = LatentDPS(model=TINY)
    assert "non-linear" in m.unsupported_reason(task("lowlight"))
    assert m.unsupported_reason(task("sr4")) is None


def test_cli_run(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    run_dir = bench.run("latent_dps", "sr4", model="latent_tiny", steps=2, dataset__limit=1,
                        run__results_root=tmp_path, run__progress=False)
    desc = json.loads((run_dir / "manifest.json").read_text())["method"]
    assert desc["name"] == "latent_dps" and desc["cost_per_image"]["decoder_vjp"] == 2
    assert desc["model"]["kind"] == "ldm" and desc["model"]["meaningful"] is False
    assert pd.read_parquet(run_dir / "per_image.parquet").iloc[0]["nfe"] == 2
