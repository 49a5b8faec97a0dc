"""Sweeps at scale: shards equal an unsharded run, SIGKILL mid-run loses nothing, concurrent shards,
the submitit launcher, offline W&B logging, and the experiment presets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.imageio import read_png_u8
from tests.conftest import CONF_DIR, REPO, compose, run_cli, run_dirs

pytestmark = pytest.mark.slow

# a run slow enough on CPU to be killed in the middle: DDRM with the tiny random prior, 1 image per batch
SLOW_RUN = ("method=ddrm", "model=adm_tiny", "task=sr4", "steps=25", "run.batch_size=1", "dataset.limit=6")


def _cli(*args, root):
    return [sys.executable, "-m", "bench", *args, f"run.results_root={root}", "run.progress=false"]


def _assert_complete(run, n):
    df = pd.read_parquet(run / "per_image.parquet")
    assert len(df) == n and df["id"].is_unique
    for image_id in df["id"]:
        assert read_png_u8(run / "images" / f"{image_id}.png").shape[0] == 3  # decodes: not half-written
        assert read_png_u8(run / "degraded" / f"{image_id}.png").shape[0] == 3
    assert not list(run.rglob("*.tmp"))


def test_shards_merge_into_the_unsharded_result(tmp_path):
    common = ("method=bicubic", "task=sr4_noisy", "dataset.limit=5")
    run_cli(*common, results_root=tmp_path / "whole")
    for shard in (0, 1):
        run_cli(*common, "dataset.num_shards=2", f"dataset.shard={shard}", results_root=tmp_path / "sharded")
    (whole,), (sharded,) = run_dirs(tmp_path / "whole"), run_dirs(tmp_path / "sharded")
    assert whole.name == sharded.name
    a = pd.read_parquet(whole / "per_image.parquet")
    b = pd.read_parquet(sharded / "per_image.parquet")
    pd.testing.assert_frame_equal(a[["id", "psnr", "ssim"]], b[["id", "psnr", "ssim"]])
    for png in (whole / "images").glob("*.png"):
        assert png.read_bytes() == (sharded / "images" / png.name).read_bytes()


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path):
    proc = subprocess.Popen(_cli(*SLOW_RUN, root=tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    rows = []
    while time.time() < deadline and proc.poll() is None:
        rows = list(tmp_path.rglob("rows/*.json"))
        if len(rows) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; make SLOW_RUN slower"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = run_dirs(tmp_path)
    done_before = len(list((run / "rows").glob("*.json")))
    assert 2 <= done_before < 6
    rerun = run_cli(*SLOW_RUN, results_root=tmp_path)
    assert run_dirs(tmp_path) == [run]
    _assert_complete(run, 6)
    assert len(list((run / "timing").glob("*.json"))) == 1  # the killed invocation never wrote its timing
    assert "Traceback" not in rerun.stderr


def test_two_shards_writing_at_once(tmp_path):
    procs = [subprocess.Popen(_cli(*SLOW_RUN[:-1], "dataset.limit=4", "steps=5", "dataset.num_shards=2",
                                   f"dataset.shard={s}", root=tmp_path), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    (run,) = run_dirs(tmp_path)
    _assert_complete(run, 4)


def test_sweep_through_the_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_cli("-m", "hydra/launcher=local", "method=bicubic", "task=sr4,denoise", "dataset.limit=1",
            results_root=tmp_path)
    assert sorted(d.parts[-3] for d in run_dirs(tmp_path)) == ["denoise", "sr4"]


def test_wandb_offline_logs_locally(tmp_path):
    pytest.importorskip("wandb")
    env_mode = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        run_cli("method=bicubic", "logger=wandb", "dataset.limit=2", results_root=tmp_path)
    finally:
        if env_mode is None:
            os.environ.pop("WANDB_MODE")
        else:
            os.environ["WANDB_MODE"] = env_mode
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_experiment_presets_compose(preset):
    cfg = compose(f"+experiment={preset}")
    raw = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml")
    assert raw.hydra.mode == "MULTIRUN" and raw.hydra.sweeper.params
    assert cfg.dataset.name in ("imagenet_val", "lol")
