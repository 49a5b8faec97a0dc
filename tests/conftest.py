"""Shared test helpers: where the real data lives, and how to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CONF_DIR = REPO / "conf"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected ../shared/data beside the repo; see its README)")
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
