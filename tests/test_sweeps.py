"""Sweeps at scale: shards equal an unsharded run, SIGKILL mid-run loses nothing, concurrent shards,
the submitit launcher, offline W&B logging, and the experiment presets."""

from __future__ import annotations

import json
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
# the same, lighter: rows still appear one by one (32 px, 10 steps), for tests that stop a run after a row
STOPPABLE_RUN = ("method=ddrm", "model=adm_tiny", "task=sr4", "steps=10", "run.batch_size=1", "dataset.limit=6",
                 "dataset.image_size=32")


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
    runs = run_dirs(tmp_path)
    assert sorted(d.parts[-3] for d in runs) == ["denoise", "sr4"]
    for run in runs:  # the cell's own command, not submitit's `python .../submitit/core/_submit.py ...`
        command = json.loads((run / "manifest.json").read_text())["command"]
        assert command.startswith("python -m bench ") and f"task={run.parts[-3]}" in command.split(), command
        assert "submitit" not in command and "," not in command


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


def _wait_rows(proc, root, n, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(list(root.rglob("rows/*.json"))) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run ended or stalled before {n} rows (rc={proc.poll()})")


def test_ctrl_c_and_sigterm_keep_finished_images_and_say_so(tmp_path):
    import re

    from bench.verify import main as verify

    results = []
    for sig, code, what in ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")):
        before = len(list(tmp_path.rglob("rows/*.json")))
        # SIGINT back to its default in the child: a test run in a background shell job ignores it, and
        # Python only turns SIGINT into KeyboardInterrupt when it is not ignored at start-up
        proc = subprocess.Popen(_cli(*STOPPABLE_RUN, root=tmp_path), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _wait_rows(proc, tmp_path, before + 1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, (out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        m = re.search(rf"\[bench\] {re.escape(what)}; (\d+) of 6 images finished are kept in (\S+); "
                      "rerun the same command to resume", err)
        assert m, err
        (run,) = run_dirs(tmp_path)
        assert int(m.group(1)) == len(list((run / "rows").glob("*.json"))) > before
        results.append(int(m.group(1)))
    log = (run / "run.log").read_text()
    assert f"resume: {results[0]} of 6 images are done and verified" in log
    assert "interrupted;" in log and "terminated (SIGTERM);" in log
    assert verify([str(run)]) == 0  # what was kept is complete and matches its rows


def test_a_failing_cell_does_not_stop_the_sweep_and_is_listed_at_the_end(tmp_path):
    proc = run_cli("-m", "method=bicubic", "task=sr4", "dataset.limit=1", "dataset.image_size=4,32",
                   results_root=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    (run,) = run_dirs(tmp_path)  # job 1 ran after job 0 failed
    assert '"image_size": 32' in (run / "manifest.json").read_text()
    tail = proc.stderr[proc.stderr.index("the sweep finished"):]
    (line,) = [ln for ln in tail.splitlines() if ln.startswith("  #")]
    assert "1 cell(s) failed" in tail and line.startswith("  #0 method=bicubic") and "dataset.image_size=4 " in line
    assert line.endswith("DatasetError: image_size=4 is too small; use >= 8 or null for native size")
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert json.loads(next(tmp_path.rglob(".failed/0.json")).read_text())["error"] == "DatasetError"


def test_slurm_preset_requeues_and_names_jobs_after_their_cell(tmp_path, monkeypatch):
    from bench.sweep import cell_name, rename_slurm_job

    slurm = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / "slurm.yaml")
    assert slurm.max_num_timeout > 0
    assert cell_name(compose("method=ddrm", "task=sr4", "steps=50")) == "ddrm-sr4-steps50"
    assert cell_name(compose("method=bicubic", "task=denoise", "steps=50", "dataset.num_shards=4",
                             "dataset.shard=2")) == "bicubic-denoise-default-shard2of4"
    # scontrol is not installed here: a stand-in that records its arguments, as Slurm's would receive them
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert rename_slurm_job("ddrm-sr4-steps50") is None
    assert (tmp_path / "args").read_text().split() == ["update", "JobId=4242", "JobName=ddrm-sr4-steps50"]
