"""A 2-job sweep through the SLURM launcher (hydra-submitit-launcher) on a real single-node Slurm.

CI starts one with `.ci/slurm-up` (Debian's slurm-wlm + munge on localhost) and sets BENCH_SLURM=1, which
makes this test mandatory; elsewhere it skips when no Slurm controller answers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import run_cli, run_dirs

pytestmark = pytest.mark.slow


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mixed", "allocated"))


def test_two_job_sweep_through_the_slurm_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if not _slurm_up():
        if os.environ.get("BENCH_SLURM") == "1":
            pytest.fail("BENCH_SLURM=1 but no Slurm node is up (run .ci/slurm-up)")
        pytest.skip("no Slurm controller answers here; `bash .ci/slurm-up` starts a single-node one (root, Debian)")
    proc = run_cli("-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                   "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10",
                   "method=bicubic", "task=sr4,denoise", "dataset.limit=1", results_root=tmp_path)
    assert "Submitit 'slurm' sweep" in proc.stdout + proc.stderr
    assert sorted(d.parts[-3] for d in run_dirs(tmp_path)) == ["denoise", "sr4"]
    assert list((tmp_path / ".multirun").rglob("*_log.out")), "no Slurm job logs: the jobs did not run via sbatch"


def test_tuning_workers_as_slurm_jobs(tmp_path):
    """python -m bench.tune with tune.launcher=slurm: two worker jobs share one study's journal."""
    import sys

    from tests.tune.test_tune import worker_of_trials

    if not _slurm_up():
        if os.environ.get("BENCH_SLURM") == "1":
            pytest.fail("BENCH_SLURM=1 but no Slurm node is up (run .ci/slurm-up)")
        pytest.skip("no Slurm controller answers here; `bash .ci/slurm-up` starts a single-node one (root, Debian)")
    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "bench.tune", "model=adm_tiny", "method=ddrm", "task=denoise", "steps=2",
           "dataset=sample", "dataset.image_size=32", "tune.allow_test_split=true", "tune.images=1",
           "tune.trials=3", "tune.startup_trials=1", "tune.prune=false", "tune.jobs=2", "tune.launcher=slurm",
           "tune.slurm.partition=debug", "tune.slurm.cpus_per_task=1", "tune.slurm.mem_gb=2",
           "tune.slurm.timeout_min=10", f"run.results_root={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 2 slurm worker job(s)" in proc.stdout
    assert set(worker_of_trials(tmp_path)) <= {0, 1} and len(worker_of_trials(tmp_path)) >= 3
    assert list((tmp_path / ".tune").rglob("*_log.out")), "no Slurm job logs: the workers did not run via sbatch"
