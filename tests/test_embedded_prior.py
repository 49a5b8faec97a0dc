"""The embedded priors restore meaningfully (issue 7): held-out sample photos (scikit-image, not in the
ImageNet-sample training set), DDRM / GDP with conf/model/adm64_imagenet96.yaml and SRLDM with
bench/priors/ldm_sr_tiny (``method.ldm.source=embedded``), on the CPU."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from bench import seeding
from bench.cli import build_task, run_from_config
from bench.data import SampleDataset
from bench.methods.gdp import GDP
from tests.conftest import CONF_DIR, compose, run_dirs

pytestmark = pytest.mark.slow
MODEL = "model=adm64_imagenet96"


def _mean_psnr(root, *overrides, limit: int = 4) -> float:
    run_from_config(compose(*overrides, f"dataset.limit={limit}", f"run.results_root={root}", "run.progress=false"))
    (run,) = run_dirs(root)
    return float(pd.read_parquet(run / "per_image.parquet")["psnr"].mean())


@pytest.mark.parametrize("task", ["denoise", "deblur_gauss"])
def test_ddrm_with_the_embedded_prior_beats_the_degraded_image(tmp_path, task):
    sigma = ["task.sigma=0.1"] if task == "denoise" else []  # issue 7: denoise at sigma 0.1 ([0,1] units)
    degraded = _mean_psnr(tmp_path / "b", "method=bicubic", f"task={task}", *sigma)
    ddrm = _mean_psnr(tmp_path / "d", "method=ddrm", MODEL, f"task={task}", *sigma, "steps=20")
    assert ddrm >= degraded + 1.0, (ddrm, degraded)


def test_gdp_x0_guidance_with_the_embedded_prior_fits_y(tmp_path):
    model = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "adm64_imagenet96.yaml"), resolve=True)
    task = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "sr4.yaml"), resolve=True))
    deg = task.build(64, "cpu")
    ds = SampleDataset(image_size=64, limit=2)
    x = torch.stack([ds[i].image for i in range(2)])
    ids = [e.id for e in ds.entries]
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    residual = {}
    for scale in (0.0, None):  # unguided vs the official default scale (rescaled for 20 steps, 64 px)
        gdp = GDP(model=model, steps=20, variant="x0", scale=scale)
        gdp.setup(torch.device("cpu"))
        out = gdp.restore(y, deg, seeding.make_generators(0, ids, "restore"))
        residual[scale] = (deg.operator.A(out) - y).norm().item()
    assert residual[None] < 0.5 * residual[0.0], residual


def test_ddrm_with_the_embedded_prior_beats_bicubic_on_sr4(tmp_path):
    """Issue 7: DDRM beats bicubic on sr4 (all 8 sample photos). Measured: 23.39 vs 23.07 dB at 100 steps;
    at the 20-step default DDRM's samples still lose (22.83), see bench/priors/adm64_imagenet96.md."""
    bicubic = _mean_psnr(tmp_path / "b", "method=bicubic", "task=sr4", limit=8)
    ddrm = _mean_psnr(tmp_path / "d", "method=ddrm", MODEL, "task=sr4", "steps=100", limit=8)
    assert ddrm >= bicubic + 0.1, (ddrm, bicubic)


def test_srldm_with_the_embedded_model_is_consistent_with_y():
    """Issue 7: SRLDM's outputs follow their measurement: the 4x block average of each output is much
    closer to its own y than to another photo's y (measured 16.6-22.5 dB vs 9.1-12.9 dB at 20 steps)."""
    from bench.methods.srldm import SRLDM

    task = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "sr4.yaml"), resolve=True))
    ds = SampleDataset(limit=4)
    x = torch.stack([ds[i].image for i in range(4)])
    ids = [e.id for e in ds.entries]
    deg = task.build(x.shape[-1], "cpu")
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    m = SRLDM({"source": "embedded"}, steps=20)
    m.setup(torch.device("cpu"))
    assert m.ldm.origin.startswith("embedded:local:")
    out = m.restore(y, deg, seeding.make_generators(0, ids, "restore"))
    assert out.shape == x.shape and torch.isfinite(out).all()
    ax = deg.operator.A(out)

    def psnr(a, b):
        return 10 * torch.log10(1 / (a - b).pow(2).flatten(1).mean(1))

    own, other = psnr(ax, y.flatten(1)), psnr(ax, y.flatten(1).roll(1, 0))
    assert (own >= 15.0).all() and (own >= other + 4.0).all(), (own, other)
