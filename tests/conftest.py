"""Shared test helpers: where the real data lives, and how to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data beside the repo, or $BENCH_SHARED_DATA (as conf/dataset/sample_val.yaml reads it): a git worktree
#: elsewhere can still run the real-data tests
SHARED_DATA = Path(os.environ.get("BENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
CONF_DIR = REPO / "conf"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: one thread per worker (and per CLI subprocess it starts). N workers with torch's default of
    # one thread per core would oversubscribe the cores, and OpenMP's spin-waiting then costs far more than it
    # gains (measured here: 2 processes x 2 threads on 2 cores ran ~5x slower).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_global_rngs(request):
    """Seed torch's, numpy's and Python's global generators per test (from the test's id), so a test that draws
    unseeded inputs (``torch.rand(...)`` without a generator) sees the same numbers on every run and in any
    order: a property test cannot pass here and fail in CI on a rare draw."""
    import random
    import zlib

    import numpy as np
    import torch

    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    yield


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected ../shared/data beside the repo, or BENCH_SHARED_DATA=/path/to/shared/data; see its README)")
    return path


def run_cli(*overrides: str, results_root: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m bench`` as a user would, with results under ``results_root``."""
    cmd = [sys.executable, "-m", "bench", *overrides, f"run.results_root={results_root}", "run.progress=false"]
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def compose(*overrides: str):
    """The resolved Hydra config for ``overrides`` (in-process, no subprocess)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding a manifest.json) under ``root``."""
    return sorted(p.parent for p in Path(root).rglob("manifest.json"))


def write_smooth_images(root: Path, n: int = 6, size: int = 40) -> Path:
    """``n`` smooth seeded RGB PNGs (sums of sinusoids) of ``size`` px in ``root``: training data for the
    trainers' tests (crops of up to ``size`` px)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    for i in range(n):
        f = rng.uniform(1, 4, size=(3, 2))
        arr = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * (a * xx + b * yy) + i) for a, b in f], -1)
        Image.fromarray((arr * 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def save_random_inception(directory: Path, name: str = "random_inception.pth", seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 architecture with random (Kaiming) conv weights, saved with
    ``torch.save(state_dict)`` like the official weights file (566 tensors): the real FID loading path
    without the real weights."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Arch(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):  # skip the (empty) load in __init__
            return None

    directory.mkdir(parents=True, exist_ok=True)
    torch.save({}, directory / "empty.pth")
    net = _Arch("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(directory / "empty.pth"))
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
    torch.save(net.state_dict(), directory / name)
    return directory / name


@pytest.fixture
def isolated_prior_cache(tmp_path, monkeypatch):
    """An empty, offline asset cache and a cleared in-process prior cache around a test."""
    from bench.models import prior as prior_mod

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    prior_mod.clear_cache()
    yield
    prior_mod.clear_cache()


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models are dominated by threading overhead (and oversubscription on shared CPUs): run a
    module's tests with one torch thread, restoring the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
