"""The embedded priors restore meaningfully (issue 7): held-out sample photos (scikit-image, not in the
ImageNet-sample training set), DDRM / GDP with conf/model/adm64_imagenet96.yaml and SRLDM with
bench/priors/ldm_sr_tiny (``method.ldm.source=embedded``), on the CPU; issue 17: DGP with the embedded
BigGAN-deep (bench/priors/biggan64_imagenet96.safetensors), including its two unmet targets as strict xfails."""

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
    """Issue 7: DDRM (official settings) beats bicubic on sr4 at 100 steps. Measured on all 8 sample photos:
    23.38 vs 23.07 dB; on the first 4 (checked here, half the time): +0.52 dB; at 20 steps the official settings
    still lose (22.83), the tuned preset ties (23.08, docs/tuning.md)."""
    bicubic = _mean_psnr(tmp_path / "b", "method=bicubic", "task=sr4", limit=4)
    ddrm = _mean_psnr(tmp_path / "d", "method=ddrm", MODEL, "task=sr4", "steps=100", "tuned=official", limit=4)
    assert ddrm >= bicubic + 0.1, (ddrm, bicubic)


def test_srldm_with_the_embedded_model_is_consistent_with_y_and_closer_to_bicubic():
    """Issue 7: SRLDM's outputs follow their measurement: the 4x block average of each output is much
    closer to its own y than to another photo's y (issue 7 measured 16.6-22.5 dB vs 9.1-12.9 dB, 20 steps, previous VQ).
    Issue 17: SRLDM does not beat bicubic yet (first stage 20.0 dB < the 26 dB target, see
    bench/priors/ldm_sr_tiny.md), so the gap is asserted not to widen: on these 4 photos at 100 steps
    (the sweep's setting) the shipped model gives 19.01 dB vs bicubic 22.18 (gap 3.17); the previous
    model gave 17.32 (gap 4.87). Asserted: the gap is at least 1 dB smaller than that 4.87."""
    from bench.methods.srldm import SRLDM

    task = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "sr4.yaml"), resolve=True))
    ds = SampleDataset(limit=4)
    x = torch.stack([ds[i].image for i in range(4)])
    ids = [e.id for e in ds.entries]
    deg = task.build(x.shape[-1], "cpu")
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    m = SRLDM({"source": "embedded"}, steps=100)
    m.setup(torch.device("cpu"))
    assert m.ldm.origin.startswith("embedded:local:")
    out = m.restore(y, deg, seeding.make_generators(0, ids, "restore"))
    assert out.shape == x.shape and torch.isfinite(out).all()
    ax = deg.operator.A(out)

    def psnr(a, b):
        return 10 * torch.log10(1 / (a - b).pow(2).flatten(1).mean(1))

    own, other = psnr(ax, y.flatten(1)), psnr(ax, y.flatten(1).roll(1, 0))
    assert (own >= 15.0).all() and (own >= other + 4.0).all(), (own, other)

    from bench.imageio import to_uint8
    from bench.methods.baselines import Bicubic
    from bench.metrics.pixel import psnr_ssim

    def saved_psnr(v):  # as the runner scores: from the 8-bit images
        return float(psnr_ssim(to_uint8(v), to_uint8(x))[0].mean())

    gap = saved_psnr(Bicubic().restore(y, deg, None)) - saved_psnr(out)
    assert gap <= 4.87 - 1.0, f"SRLDM is {gap:.2f} dB behind bicubic (previous model: 4.87, shipped: 3.17)"


# ------------------------------------------------------------------------------------ DGP (issue 17)
def _dgp_config() -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / "dgp.yaml"), resolve=True)["method"]
    return {k: v for k, v in cfg.items() if k not in ("_target_", "name")}


def _heldout_psnr(method, task_name: str, limit: int) -> list[float]:
    """Per-image PSNR (8-bit, as the runner saves and scores) of ``method`` on the first ``limit`` held-out
    sample photos, with the runner's per-image degrade/restore generators (run seed 0)."""
    from bench.imageio import to_uint8
    from bench.metrics.pixel import psnr_ssim

    task = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{task_name}.yaml"), resolve=True))
    ds = SampleDataset(image_size=64, limit=limit)
    x = torch.stack([ds[i].image for i in range(limit)])
    ids = [e.id for e in ds.entries]
    deg = task.build(64, "cpu")
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    out = method.restore(y, deg, seeding.make_generators(0, ids, "restore"))
    return psnr_ssim(to_uint8(out), to_uint8(x))[0].tolist()


@pytest.fixture(scope="module")
def dgp_numbers():
    """Mean PSNR on sample photos 1-2 (astronaut, chelsea) for sr4 and inpaint: DGP with the shipped defaults on
    the embedded generator ("emb"), the same DGP on a random generator of the same architecture ("rand":
    standing BN statistics at DGP's truncation, exact spectral vectors, i.e. a usable net), the previous default
    (the tiny random 32-px generator with 8 candidates and 10+10 iterations, "old") and bicubic."""
    from bench.methods.baselines import Bicubic
    from bench.methods.dgp import DGP
    from bench.train.gan import random_generator_like

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 fine-tuning of a 1.2M-parameter net: threads only add overhead
    emb = DGP(**_dgp_config())
    emb.setup(torch.device("cpu"))
    rand = DGP(**_dgp_config())
    rand.G = random_generator_like(emb.G.config, seed=1, truncation=emb.truncation)
    old = DGP({"source": "tiny", "seed": 0}, candidates=8, iterations=[10, 10], stages=[2, 4], lr_z=0.05, lr_g=2e-4)
    n = 2
    try:
        return {task: {name: sum(_heldout_psnr(m, task, n)) / n
                       for name, m in (("emb", emb), ("rand", rand), ("old", old), ("bicubic", Bicubic()))}
                for task in ("sr4", "inpaint")}
    finally:
        torch.set_num_threads(threads)


def test_dgp_embedded_generator_is_the_pinned_default_and_recorded():
    """Issue 17: method=dgp loads bench/priors/biggan64_imagenet96.safetensors, verified against the sha256
    pinned in conf/method/dgp.yaml, and records source, path and sha256 (the report's "embedded demo prior")."""
    from bench.methods.dgp import DGP
    from bench.models.assets import sha256_file

    cfg = _dgp_config()
    assert cfg["generator"]["source"] == "embedded"
    m = DGP(**cfg)
    m.setup(torch.device("cpu"))
    g = m.describe()["generator"]
    assert g["source"] == "embedded" and g["verified"]
    assert g["sha256"] == cfg["generator"]["asset"]["sha256"] == sha256_file(g["path"])
    assert g["path"].endswith("bench/priors/biggan64_imagenet96.safetensors")
    assert g["architecture"]["output_dim"] == 64 and g["architecture"]["num_classes"] == 1


@pytest.mark.parametrize("task_name", ["sr4", "inpaint"])
def test_dgp_on_the_embedded_generator_improves_on_the_previous_default(dgp_numbers, task_name):
    """Issue 17, what holds: the shipped DGP (embedded 64-px generator, 32 candidates, 3 x 40 iterations)
    restores far better than the previous default (random tiny 32-px generator, 8 candidates, 2 x 10).
    Measured (photos 1-2, dB): sr4 18.56 vs 15.05; inpaint 19.67 vs 14.92 (degraded input 12.07)."""
    r = dgp_numbers[task_name]
    assert r["emb"] >= r["old"] + 2.0, r


PRIOR_NOT_MET = ("issue 17 target NOT met on the CPU budget: the embedded GAN (~2000 steps) is not yet a better "
                 "prior than a random net of its architecture (measured sr4 18.56 vs 18.81, inpaint 19.67 vs "
                 "20.15); strict, so a better generator makes this fail until it is un-marked")
BICUBIC_NOT_MET = ("issue 17 target NOT met on the CPU budget: DGP on the embedded generator loses to bicubic on sr4 "
                   "(measured 18.56 vs 20.95 on photos 1-2); strict, as above")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=PRIOR_NOT_MET)
@pytest.mark.parametrize("task_name", ["sr4", "inpaint"])
def test_dgp_prior_matters_embedded_beats_random_by_1db(dgp_numbers, task_name):
    r = dgp_numbers[task_name]
    assert r["emb"] >= r["rand"] + 1.0, r


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=BICUBIC_NOT_MET)
def test_dgp_on_the_embedded_generator_beats_bicubic_on_sr4(dgp_numbers):
    r = dgp_numbers["sr4"]
    assert r["emb"] > r["bicubic"], r
