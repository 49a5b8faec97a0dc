"""Sweeps that finish: a Hydra callback (CLI layer, registered in ``conf/config.yaml``) that lists the failed
cells of a multirun at its end and exits non-zero, and names SLURM jobs after their cell.

In a multirun, :func:`bench.cli.main` lets a cell's error propagate, so Hydra's ``run_job`` records the job
as FAILED and the launcher goes on with the next cell. Hydra 1.3's ``BasicSweeper`` would then re-raise the
FIRST failure after the batch, with a traceback, and skip ``on_multirun_end``; so :meth:`on_job_end` (which
runs where the job ran: in-process for the basic launcher, in the job for submitit/SLURM) prints the cell's
error, writes it to ``<hydra.sweep.dir>/.failed/<job num>.json`` (the sweep folder is shared with SLURM
jobs) and marks the JobReturn as handled (status COMPLETED; the exception stays its ``return_value``).
:meth:`on_multirun_end`, in the process that launched the sweep, prints the list and exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

FAILED_DIR = ".failed"


def _failed_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / FAILED_DIR


def cell_name(config: DictConfig) -> str:
    """``<method>-<task>-<steps label>[-shard<i>of<n>]``: what a SLURM job of this cell is called (the steps
    label of its run directory, :func:`bench.results.steps_label`)."""
    from bench.results import steps_label

    steps = config.method.get("steps") if "method" in config else None
    parts = [str(config.method.name), str(config.task.name), steps_label(steps)]
    shards = int(config.dataset.get("num_shards", 1) or 1)
    if shards > 1:
        parts.append(f"shard{config.dataset.shard}of{shards}")
    return "-".join(parts)


def rename_slurm_job(name: str) -> str | None:
    """Rename the running SLURM job (an array task keeps the array's name otherwise: every cell of a
    sweep would show the same name in squeue). Returns why it did not, or None."""
    job = os.environ.get("SLURM_JOB_ID")
    scontrol = shutil.which("scontrol")
    if not job or scontrol is None:
        return "not in a SLURM job with scontrol on PATH"
    proc = subprocess.run([scontrol, "update", f"JobId={job}", f"JobName={name}"], capture_output=True,
                          text=True, timeout=30)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"scontrol exited {proc.returncode}")


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        shutil.rmtree(_failed_dir(config), ignore_errors=True)  # a reused sweep dir: only this sweep's list

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            why = rename_slurm_job(cell_name(config))
            if why is not None:
                print(f"[bench] warning: SLURM job not renamed to {cell_name(config)!r}: {why}", file=sys.stderr)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED:
            return
        from bench.cli import USER_ERRORS

        err = job_return._return_value
        num = int(config.hydra.job.num)
        overrides = " ".join(job_return.overrides or [])
        record = {"num": num, "overrides": list(job_return.overrides or []), "error": type(err).__name__,
                  "message": str(err), "user_error": isinstance(err, USER_ERRORS)}
        if not record["user_error"]:
            record["traceback"] = "".join(traceback.format_exception(err))
        print(f"[bench] cell #{num} ({overrides}) failed: {record['error']}: {err}", file=sys.stderr)
        if "traceback" in record:
            print(record["traceback"], file=sys.stderr)
        from bench.results import write_json

        write_json(_failed_dir(config) / f"{num}.json", record)
        job_return.status = JobStatus.COMPLETED  # handled: see the module docstring

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        folder = _failed_dir(config)
        records = sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["num"])
        if not records:
            return
        lines = [f"[bench] the sweep finished; {len(records)} cell(s) failed (records in {folder}):"]
        for r in records:
            lines.append(f"  #{r['num']} {' '.join(r['overrides'])}: {r['error']}: {r['message']}")
        lines.append("Fix the cells above and rerun the same command: finished cells and images are kept.")
        print("\n".join(lines), file=sys.stderr)
        sys.exit(1)
