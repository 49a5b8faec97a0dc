"""Shared pieces of the DPS / DDNM / PiGDM / DiffPIR / RED-diff tests: a method on the analytic Gaussian
prior (exact eps of N(m, c^2 I), tests/methods/test_ddrm.py), dense operator matrices, and the functional
check on the embedded prior (held-out sample photos, 64 px)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench import seeding
from bench.data import SampleDataset
from bench.diffusion import make_betas
from bench.models.prior import DiffusionPrior
from tests.methods.test_ddrm import GaussNet, gens, task

ROOT = Path(__file__).resolve().parents[2]
GAUSS_MODEL = {"name": "gauss", "kind": "adm", "diffusion": {"steps": 1000}}
BETAS = make_betas("linear", 1000)


def gaussian_prior(m=0.1, c=0.5, size=8, variance="fixed_small") -> DiffusionPrior:
    return DiffusionPrior(net=GaussNet(m, c), image_size=size, betas=BETAS, learn_sigma=False,
                          info={"model": "gauss"}, variance=variance)


def with_gaussian_prior(method, m=0.1, c=0.5, size=8):
    method.use_prior(gaussian_prior(m, c, size), "cpu")
    return method


def dense(op, dtype=torch.float64) -> torch.Tensor:
    """The (M, N) matrix of a linear operator, column by column."""
    return op.A(torch.eye(op.N, dtype=dtype)).T


def problem(name: str, size: int = 8, n: int = 2, sigma: float | None = None, seed: int = 0, dtype=torch.float64):
    """(degradation, x_true in [-1, 1], y_pm) for a task; x ~ N(0.1, 0.5^2)."""
    deg = task(name, **({} if sigma is None else {"sigma": sigma})).build(size)
    op = deg.operator
    g = torch.Generator().manual_seed(seed)
    x = (0.1 + 0.5 * torch.randn(n, op.N, generator=g, dtype=dtype))
    y = op.A(x) + 2 * deg.sigma * torch.randn(n, op.M, generator=g, dtype=dtype)
    return deg, x, y


def method_from_yaml(name: str, model: str = "adm64_imagenet96", **overrides):
    """conf/method/<name>.yaml instantiated as the CLI does (model and steps resolved)."""
    cfg = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")
    node = OmegaConf.to_container(cfg.method)
    node["model"] = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml"), resolve=True)
    node["steps"] = overrides.pop("steps", cfg.steps)
    node.update(overrides)
    label = node.pop("name")
    method = instantiate(node)
    method.name = label
    return method


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR of 8-bit-quantised [0, 1] images (what the runner measures)."""
    q = lambda z: (z.clamp(0, 1) * 255).round() / 255  # noqa: E731
    return 10 * torch.log10(1 / (q(a) - q(b)).pow(2).flatten(1).mean(1))


def embedded_restoration(method_name: str, task_name: str, n: int = 2, **overrides):
    """(PSNR of the degraded input picture, PSNR of the method's output), means over the first n sample photos."""
    ds = SampleDataset(image_size=64, limit=n)
    x = torch.stack([ds[i].image for i in range(n)])
    ids = [e.id for e in ds.entries]
    deg = task(task_name).build(64)
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade"))
    method = method_from_yaml(method_name, **overrides)
    method.setup(torch.device("cpu"))
    out = method.restore(y, deg, seeding.make_generators(0, ids, "restore"))
    assert out.shape == x.shape and torch.isfinite(out).all()
    return float(psnr(deg.measurement_image(y), x).mean()), float(psnr(out, x).mean()), method


__all__ = ["GaussNet", "gens", "task", "gaussian_prior", "with_gaussian_prior", "dense", "problem",
           "method_from_yaml", "psnr", "embedded_restoration", "GAUSS_MODEL", "BETAS"]
