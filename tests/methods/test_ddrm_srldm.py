"""DDRM-SRLDM (Liu §3.3, §6.1): the Method API on sr4 / deblur_gauss with both strategies, the eps_fn
formulas checked against independently computed encode / DDIM step / decode, config errors, and the CLI.
Tiny random LDM parts at 32 x 32: the outputs are not restorations (see the module docstring)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.cli import build_task
from bench.diffusion import timesteps
from bench.methods.ddrm_srldm import DDRMSRLDM, make_eps_fn
from bench.tasks import Task

REPO = Path(__file__).resolve().parents[2]
STEPS = 4  # divides 1000, so len(seq) == steps


def task(name: str) -> Task:
    return build_task(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def methods() -> dict[int, DDRMSRLDM]:
    out = {}
    for strategy in (1, 2):
        m = DDRMSRLDM({"source": "tiny", "seed": 0}, steps=STEPS, strategy=strategy)
        if out:  # share the tiny parts (built once): setup() only loads when none are there
            m._srldm.ldm = out[1].ldm
        m.setup(torch.device("cpu"))
        out[strategy] = m
    return out


@pytest.fixture(scope="module", params=["sr4", "deblur_gauss"])
def batch(request):
    deg = task(request.param).build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return deg, deg.degrade(x, gens(0, 1))


# ------------------------------------------------------------- Method API
@pytest.mark.parametrize("strategy", [1, 2])
def test_output_determinism_and_batch_independence(methods, batch, strategy):
    m = methods[strategy]
    deg, y = batch
    assert m.unsupported_reason(deg.task) is None
    out = m.restore(y, deg, gens(10, 11))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert m.last_nfe == STEPS == len(m.seq)
    assert torch.equal(out, m.restore(y, deg, gens(10, 11)))
    alone = m.restore(y[1:2], deg, gens(11))
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=0)


def test_seed_and_strategy_dependence_and_describe(methods, batch):
    deg, y = batch
    a, b = (methods[s].restore(y[:1], deg, gens(3)) for s in (1, 2))
    assert not torch.allclose(a, b, atol=1e-2)
    assert not torch.allclose(a, methods[1].restore(y[:1], deg, gens(4)), atol=1e-3)
    d = methods[1].describe()
    assert d["nfe_per_image"] == d["unet_calls_per_image"] == d["vae_encodes_per_image"] == \
        d["vae_decodes_per_image"] == STEPS
    assert d["strategy"] == 1 and "x_t - D(" in d["eps"] and d["timesteps"] == [0, 250, 500, 750]
    assert "D(n_t)" in methods[2].describe()["eps"]


# ------------------------------------------------------------- the eps_fn
def _setup_eps(m: DDRMSRLDM):
    deg = task("sr4").build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    c = deg.measurement_image(deg.degrade(x, gens(0, 1))) * 2 - 1  # (2, 3, 8, 8): the LR input
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return c, x_t


class ZeroUNet(torch.nn.Module):
    """Wraps the UNet, records its inputs and returns n_t = 0."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls = unet, []

    def forward(self, z_in, t):
        self.calls.append((z_in, t))
        return type("Out", (), {"sample": torch.zeros_like(z_in[:, :3])})()


def test_strategy1_eps_with_zero_noise_prediction(methods):
    """n_t = 0: DDIM gives z_{t'} = sqrt(a_t' / a_t) z_t, so eps = x_t - D(sqrt(a_t'/a_t) E(x_t))."""
    m = methods[1]
    c, x_t = _setup_eps(m)
    vq, unet = m.ldm.vqvae, ZeroUNet(m.ldm.unet)
    sched = m.ldm.make_scheduler()
    abar = sched.alphas_cumprod.double()
    fn = make_eps_fn(unet, vq, c, m.abar_padded, m.seq, 1, m.ldm.unet_multiple)
    with torch.no_grad():
        for t, t_next in ((750, 500), (0, -1)):
            eps = fn(x_t, torch.full((2,), t, dtype=torch.long))
            a_t = abar[t]
            a_n = abar[t_next] if t_next >= 0 else torch.tensor(1.0, dtype=torch.float64)
            z_t = vq.encode(x_t).latents
            ref = x_t - vq.decode((a_n / a_t).sqrt().float() * z_t).sample
            torch.testing.assert_close(eps, ref, atol=1e-5, rtol=1e-5)
            z_in, t_in = unet.calls[-1]
            torch.testing.assert_close(z_in, torch.cat([z_t, c], 1))  # cat[z_t (unquantised), y'] at t
            assert t_in.tolist() == [t, t]


def test_strategy1_eps_matches_diffusers_ddim_step(methods):
    """With the real (tiny) UNet, the latent step is diffusers' DDIMScheduler.step (eta 0) to t - 250."""
    m = methods[1]
    c, x_t = _setup_eps(m)
    vq, unet = m.ldm.vqvae, m.ldm.unet
    sched = m.ldm.make_scheduler()
    sched.set_timesteps(STEPS)  # step ratio 1000 // 4 = 250 = DDRM's skip
    fn = make_eps_fn(unet, vq, c, m.abar_padded, m.seq, 1, m.ldm.unet_multiple)
    with torch.no_grad():
        for t in (750, 250, 0):
            eps = fn(x_t, torch.full((2,), t, dtype=torch.long))
            z_t = vq.encode(x_t).latents
            n_t = unet(torch.cat([z_t, c], 1), torch.full((2,), t, dtype=torch.long)).sample
            z_prev = sched.step(n_t, t, z_t, eta=0.0).prev_sample
            torch.testing.assert_close(eps, x_t - vq.decode(z_prev).sample, atol=1e-5, rtol=1e-5)


def test_strategy2_eps_is_decoded_noise(methods):
    m = methods[2]
    c, x_t = _setup_eps(m)
    vq, unet = m.ldm.vqvae, m.ldm.unet
    fn = make_eps_fn(unet, vq, c, m.abar_padded, m.seq, 2, m.ldm.unet_multiple)
    t = torch.full((2,), 500, dtype=torch.long)
    with torch.no_grad():
        n_t = unet(torch.cat([vq.encode(x_t).latents, c], 1), t).sample
        torch.testing.assert_close(fn(x_t, t), vq.decode(n_t).sample, atol=1e-5, rtol=1e-5)


def test_abar_is_the_ldm_schedule(methods):
    m = methods[1]
    ab = m.abar_padded
    assert ab.shape == (1001,) and ab[0] == 1.0
    betas = torch.linspace(0.0015**0.5, 0.0155**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(ab[1:].double(), torch.cumprod(1 - betas, 0), atol=1e-6, rtol=1e-5)
    assert m.seq == timesteps(STEPS, 1000, "uniform")


# ---------------------------------------------------------------- errors
def test_config_errors():
    with pytest.raises(ValueError, match=r"strategy=3.*\[1, 2\]"):
        DDRMSRLDM({"source": "tiny"}, strategy=3)
    with pytest.raises(ValueError, match="schedule"):
        DDRMSRLDM({"source": "tiny"}, schedule="linear")
    with pytest.raises(ValueError, match="eta"):
        DDRMSRLDM({"source": "tiny"}, eta=1.5)
    with pytest.raises(ValueError, match="steps"):
        DDRMSRLDM({"source": "tiny"}, steps=0)
    with pytest.raises(ValueError, match="did you mean local_dir"):
        DDRMSRLDM({"source": "tiny", "localdir": "/x"})


def test_lowlight_unsupported():
    reason = DDRMSRLDM({"source": "tiny"}, steps=STEPS).unsupported_reason(task("lowlight"))
    assert reason is not None and "linear" in reason


# ------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_ddrm_srldm_sr4(tmp_path):
    cmd = [sys.executable, "-m", "bench", "method=ddrm_srldm", "task=sr4", "steps=3", "dataset.limit=1",
           f"run.results_root={tmp_path / 'results'}", "run.progress=false"]
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    pngs = list((tmp_path / "results").rglob("ddrm_srldm/*/images/*.png"))
    assert len(pngs) == 1, sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*"))
