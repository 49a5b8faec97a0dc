"""SRLDM: equality with diffusers' LDMSuperResolutionPipeline on tiny random parts, input rule, seeding,
offline errors, config checks, and one CLI run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
    LDMSuperResolutionPipeline,
)
from omegaconf import OmegaConf

from bench.cli import build_task
from bench.methods.srldm import SRLDM, check_ldm_config
from bench.models.assets import AssetError
from bench.models.ldm import HUB_ID, HUB_SCHEDULER_CONFIG, load_ldm_sr, tiny_ldm_sr
from bench.operators.lowlight import LowLight
from bench.tasks import Degradation, Task

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def task(name: str) -> Task:
    return build_task(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory) -> Path:
    """Tiny random parts written in diffusers format (unet/, vqvae/, scheduler/)."""
    d = tmp_path_factory.mktemp("ldm_sr")
    ldm = tiny_ldm_sr(seed=3)
    ldm.unet.save_pretrained(d / "unet")
    ldm.vqvae.save_pretrained(d / "vqvae")
    ldm.make_scheduler().save_pretrained(d / "scheduler")
    return d


@pytest.fixture(scope="module")
def method(local_dir) -> SRLDM:
    m = SRLDM({"local_dir": str(local_dir)}, steps=STEPS, eta=1.0)
    m.setup(torch.device("cpu"))
    return m


@pytest.fixture(scope="module")
def sr4_batch():
    deg = task("sr4").build(32)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return deg, deg.degrade(x, gens(0, 1, 2))


def with_eta(m: SRLDM, eta: float) -> SRLDM:
    out = SRLDM(dict(m.ldm_cfg), steps=m.steps, eta=eta)
    out.ldm = m.ldm
    return out


def pipeline(m: SRLDM, scheduler=None) -> LDMSuperResolutionPipeline:
    pipe = LDMSuperResolutionPipeline(vqvae=m.ldm.vqvae, unet=m.ldm.unet, scheduler=scheduler or m.ldm.make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------ loading
def test_local_dir_roundtrip(local_dir, method):
    ref = tiny_ldm_sr(seed=3)
    for a, b in ((ref.unet, method.ldm.unet), (ref.vqvae, method.ldm.vqvae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    sched = method.ldm.make_scheduler()
    assert isinstance(sched, DDIMScheduler)
    for k, v in HUB_SCHEDULER_CONFIG.items():
        assert sched.config[k] == v, k
    assert method.ldm.scale_factor == 4
    assert method.ldm.origin.startswith("local:")


def test_tiny_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_ldm_sr(0), tiny_ldm_sr(0), tiny_ldm_sr(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (next(m.unet.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


# ------------------------------------------------------- equality with diffusers
def test_matches_diffusers_pipeline_eta0(method, sr4_batch):
    deg, y = sr4_batch
    m = with_eta(method, 0.0)
    lr = deg.measurement_image(y)
    for k in range(2):
        ours = m.restore(y[k:k + 1], deg, gens(100 + k))
        ref = pipeline(m)(image=lr[k:k + 1] * 2 - 1, generator=torch.Generator().manual_seed(100 + k),
                          num_inference_steps=STEPS, eta=0.0, output_type="pt").images
        assert ours.shape == ref.shape == (1, 3, 32, 32)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


class GeneratorDDIM(DDIMScheduler):
    """DDIM whose eta-noise comes from ``self.gen`` (the pipeline's own generator), as ours does."""

    gen: torch.Generator | None = None

    def step(self, model_output, timestep, sample, eta=0.0, **kw):
        noise = torch.randn(model_output.shape[1:], generator=self.gen)[None]
        return super().step(model_output, timestep, sample, eta=eta, variance_noise=noise, **kw)


def test_matches_diffusers_pipeline_eta1_with_same_noise(method, sr4_batch):
    deg, y = sr4_batch
    sched = GeneratorDDIM.from_config(method.ldm.make_scheduler().config)
    g = torch.Generator().manual_seed(7)
    sched.gen = g  # the pipeline draws z_T from g first, then the per-step noise from g: same order as ours
    ref = pipeline(method, sched)(image=deg.measurement_image(y)[:1] * 2 - 1, generator=g,
                                  num_inference_steps=STEPS, eta=1.0, output_type="pt").images
    ours = method.restore(y[:1], deg, gens(7))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, with_eta(method, 0.0).restore(y[:1], deg, gens(7)), atol=1e-3)


# ------------------------------------------------------------- behaviour
def test_sr4_output_and_nfe(method, sr4_batch):
    deg, y = sr4_batch
    out = method.restore(y, deg, gens(0, 1, 2))
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert method.last_nfe == STEPS
    assert method.unsupported_reason(deg.task) is None


def test_deterministic_and_seed_dependent(method, sr4_batch):
    deg, y = sr4_batch
    a = method.restore(y[:2], deg, gens(5, 6))
    b = method.restore(y[:2], deg, gens(5, 6))
    c = method.restore(y[:2], deg, gens(8, 9))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_batch_composition_independent(method, sr4_batch):
    deg, y = sr4_batch
    batch = method.restore(y, deg, gens(10, 11, 12))
    for k in range(3):
        alone = method.restore(y[k:k + 1], deg, gens(10 + k))
        torch.testing.assert_close(batch[k:k + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["deblur_gauss", "denoise", "inpaint", "colorize"])
def test_full_size_tasks_are_downscaled(method, name):
    deg = task(name).build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = deg.degrade(x, gens(0, 1))
    lr, how = method.lr_input(deg.measurement_image(y), (32, 32))
    assert how == "downscaled" and lr.shape == (2, 3, 8, 8)
    out = method.restore(y, deg, gens(0, 1))
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert method.unsupported_reason(deg.task) is None


def test_downscale_is_antialiased_bicubic(method):
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    lr, _ = method.lr_input(img, (32, 32))
    ref = torch.nn.functional.interpolate(img, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(lr, ref)


def test_non_square_lowlight_pads_and_crops(method):
    op = LowLight(3, (36, 20))  # LR 9x5: not a multiple of the tiny UNet's 2 -> padded, cropped back
    deg = Degradation(Task("lowlight", 1, LowLight), op, 0.0)
    low = op.A(torch.rand(1, 3, 36, 20, generator=torch.Generator().manual_seed(3)))
    out = method.restore(low, deg, gens(0))
    assert out.shape == (1, 3, 36, 20) and torch.isfinite(out).all()


def test_sr8_measurement_is_upsampled_to_the_models_lr_size(method):
    lr8 = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(4))  # sr8 of a 32-px image
    lr, how = method.lr_input(lr8, (32, 32))
    ref = torch.nn.functional.interpolate(lr8, size=(8, 8), mode="bicubic", align_corners=False)
    assert how == "upsampled" and torch.equal(lr, ref)


def test_wrong_measurement_size_is_an_error(method):
    with pytest.raises(ValueError, match="4x smaller"):
        method.lr_input(torch.rand(1, 3, 10, 10), (32, 32))


# ---------------------------------------------------------------- errors
def test_offline_hub_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(AssetError) as err:
        load_ldm_sr(HUB_ID, None, "cpu")
    msg = str(err.value)
    for needle in (HUB_ID, "HF_HUB_OFFLINE", "method.ldm.local_dir=", str(tmp_path / "hf")):
        assert needle in msg, needle


def test_incomplete_local_dir(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(AssetError, match=r"missing subfolder\(s\) \['vqvae', 'scheduler'\]"):
        load_ldm_sr(None, str(tmp_path), "cpu")


def test_config_errors():
    with pytest.raises(ValueError, match="did you mean local_dir"):
        check_ldm_config({"source": "tiny", "localdir": "/x"})
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        check_ldm_config({"source": "tyni"})
    with pytest.raises(ValueError, match="steps"):
        SRLDM({"source": "tiny"}, steps=0)
    with pytest.raises(ValueError, match="eta"):
        SRLDM({"source": "tiny"}, eta=-1)
    assert check_ldm_config({"source": HUB_ID})["source"] == HUB_ID


# ------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_srldm_sr4(tmp_path):
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "bench", "method=srldm", "task=sr4", "steps=3", "dataset.limit=2",
           f"run.results_root={tmp_path / 'results'}", "run.progress=false"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    pngs = list((tmp_path / "results").glob("sample/sr4/srldm/*/images/*.png"))
    assert len(pngs) == 2
