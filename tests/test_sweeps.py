"""Sweeps at scale: shards equal an unsharded run, SIGKILL mid-run loses nothing, concurrent shards,
the submitit launcher, offline W&B logging, and the experiment presets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_sweep_through_the_submitit_local_launcher(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # empty: LPIPS is n/a (a notice per job)
    # a folder per job, as Hydra's default subdir makes: they stay empty and must be gone at the end
    proc = run_cli("-m", "hydra/launcher=local", "hydra.sweep.subdir=${hydra.job.num}", "method=bicubic",
                   "task=sr4,denoise", "dataset.limit=1", results_root=tmp_path / "results")
    runs = run_dirs(tmp_path / "results")
    assert sorted(d.parts[-3] for d in runs) == ["denoise", "sr4"]
    for run in runs:  # the cell's own command, not submitit's `python .../submitit/core/_submit.py ...`
        command = json.loads((run / "manifest.json").read_text())["command"]
        assert command.startswith("python -m bench ") and f"task={run.parts[-3]}" in command.split(), command
        assert "submitit" not in command and "," not in command
    # the jobs ran in other processes: the launching process knows them from their records only
    rows = _summary_rows(proc.stdout)
    assert [(r["cell"], r["images"], r["status"]) for r in rows.values()] == [
        ("bicubic/sr4/default", "1/1", "ok"), ("bicubic/denoise/default", "1/1", "ok")]
    _assert_means(rows, tmp_path / "results")
    assert (proc.stdout + proc.stderr).count("LPIPS n/a for this run") == 1  # each job said it, in its log
    assert proc.stdout.splitlines()[-1] == f"next: python -m bench.report --results {tmp_path / 'results'}"
    sweep = next((tmp_path / "results" / ".multirun").iterdir())
    assert not [d for d in sweep.rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert list(sweep.glob(".submitit/*/*_log.out"))  # the jobs' logs are kept


def _summary_rows(out: str) -> dict[int, dict]:
    """The sweep summary's table: {job num: {column: text}} (columns are separated by 2+ spaces)."""
    lines = out[out.index("[bench] sweep summary"):].splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    assert header == ["#", "cell", "images", "PSNR", "SSIM", "img/s", "status"], lines[1]
    rows = {}
    for line in lines[2:]:
        if not re.match(r"\s+\d+\s\s", line):
            break
        cols = re.split(r"\s{2,}", line.strip())
        rows[int(cols[0])] = dict(zip(header, cols))
    return rows


def _run_of(cell: str, root: Path) -> Path:
    """The run directory of a summary row's cell (``method/task/steps [dataset.image_size=N]``)."""
    label, *swept = cell.split()
    method, task, steps = label.split("/")
    runs = [d for d in run_dirs(root) if d.parts[-3:-1] == (task, method) and d.name.startswith(f"{steps}-")]
    if swept:  # dataset.image_size=N told the cells apart
        size = int(swept[0].removeprefix("dataset.image_size="))
        runs = [d for d in runs if json.loads((d / "manifest.json").read_text())["dataset"]["image_size"] == size]
    (run,) = runs
    return run


def _assert_means(rows: dict[int, dict], root) -> None:
    """Every ok row shows its run's per-image means (per_image.parquet) and pooled img/s (timing/*.json)."""
    checked = 0
    for row in rows.values():
        if row["status"] == "FAILED (below)" or row["status"].startswith("skipped"):
            continue
        run = _run_of(row["cell"], root)
        df = pd.read_parquet(run / "per_image.parquet")
        assert row["images"].split()[0] == f"{len(df)}/{len(df)}"
        assert float(row["PSNR"]) == pytest.approx(df["psnr"].mean(), abs=0.006)
        assert float(row["SSIM"]) == pytest.approx(df["ssim"].mean(), abs=6e-5)
        timings = [json.loads(p.read_text()) for p in (run / "timing").glob("*.json")]
        rate = sum(t["timed_images"] for t in timings) / sum(t["restore_seconds"] for t in timings)
        assert float(row["img/s"]) == pytest.approx(rate, rel=0.01)
        checked += 1
    assert checked


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
    assert cfg.dataset.name in ("imagenet_val", "lol", "sample")


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


def test_a_failing_cell_does_not_stop_the_sweep_and_is_listed_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # empty: LPIPS is n/a
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
    # the table: the swept value that tells the two cells apart is in the cell column
    rows = _summary_rows(proc.stdout)
    assert rows[0] == {"#": "0", "cell": "bicubic/sr4/default dataset.image_size=4", "images": "-", "PSNR": "-",
                       "SSIM": "-", "img/s": "-", "status": "FAILED (below)"}
    assert rows[1]["cell"] == "bicubic/sr4/default dataset.image_size=32" and rows[1]["status"] == "ok"
    _assert_means(rows, tmp_path)
    assert "1 ok, 0 skipped, 1 failed" in proc.stdout
    assert proc.stdout.splitlines()[-1] == f"next: python -m bench.report --results {tmp_path}"
    assert (proc.stdout + proc.stderr).count("LPIPS n/a for this run") == 1


# the grid of issue 21: methods x tasks, one cell skipped (gdp_x0 has no official scale for denoise)
GRID = ("-m", "method=bicubic,ddrm,gdp_x0", "task=sr4,denoise", "model=adm_tiny", "steps=2", "dataset.limit=2",
        "dataset.image_size=32")


def test_a_sweep_ends_with_one_table_each_notice_once_and_what_to_run_next(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # empty: LPIPS is n/a in every cell
    proc = run_cli(*GRID, results_root=tmp_path)
    rows = _summary_rows(proc.stdout)
    assert [(r["cell"], r["status"]) for r in rows.values()] == [
        ("bicubic/sr4/default", "ok"), ("bicubic/denoise/default", "ok"), ("ddrm/sr4/steps2", "ok"),
        ("ddrm/denoise/steps2", "ok"), ("gdp_x0/sr4/steps2", "ok"),
        ("gdp_x0/denoise/steps2", "skipped: GDP has no official guidance scale for task 'denoise'")]
    assert rows[5]["images"] == rows[5]["PSNR"] == "-"
    _assert_means(rows, tmp_path)
    assert "6 cell(s), 5 ok, 1 skipped, 0 failed" in proc.stdout
    assert (proc.stdout + proc.stderr).count("LPIPS n/a for this run") == 1  # not once per cell
    assert proc.stdout.splitlines()[-1] == f"next: python -m bench.report --results {tmp_path}"
    sweep = next((tmp_path / ".multirun").iterdir())
    assert sorted(p.name for p in sweep.iterdir()) == [".cells", "multirun.yaml"]  # no folder per job
    assert len(list((sweep / ".cells").glob("*.json"))) == 6

    again = run_cli(*GRID, results_root=tmp_path)  # everything is there: the summary says so
    assert [r["status"] for r in _summary_rows(again.stdout).values()] == ["resumed (nothing new)"] * 5 + [
        rows[5]["status"]]
    grown = run_cli("-m", "method=bicubic", "task=sr4", *GRID[3:5], "dataset.limit=3", "dataset.image_size=32",
                    results_root=tmp_path)
    (row,) = _summary_rows(grown.stdout).values()
    assert row["images"] == "3/3" and row["status"] == "ok (resumed, +1 new)"


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
