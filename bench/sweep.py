"""Sweeps that finish and say what happened: a Hydra callback (CLI layer, registered in ``conf/config.yaml``)
that ends a multirun with one table of its cells, the failed cells with their errors (then exit 1), each
distinct notice once, and the report command to run next; it also names SLURM jobs after their cell.

Jobs run where the launcher puts them: in the launching process (the basic launcher), in local subprocesses
(``hydra/launcher=local``) or as SLURM jobs (submitit). So :meth:`SweepSummary.on_job_end`, which runs where
the job ran, writes the job's record into the sweep folder (``hydra.sweep.dir``, shared with SLURM jobs) with
:func:`bench.results.write_json` (atomic): ``.cells/<job num>.json`` for a cell that ran or was skipped (from
the outcome :func:`bench.cli.main` returns: run directory, images, the printed summary's means and img/s, the
skip reason), ``.failed/<job num>.json`` for a failed one; both list the job's notices (:mod:`bench.notices`).
:meth:`on_multirun_end`, in the launching process, reads the records, prints the summary and removes the
empty folders of the sweep folder (``hydra.sweep.subdir`` is ``.``: Hydra makes no folder per job unless a
user sets one; submitit leaves an empty ``.submitit/%j``).

Failures: in a multirun, :func:`bench.cli.main` lets a cell's error propagate, so Hydra's ``run_job`` records
the job as FAILED and the launcher goes on with the next cell. Hydra 1.3's ``BasicSweeper`` would then
re-raise the FIRST failure after the batch, with a traceback, and skip ``on_multirun_end``; so
:meth:`on_job_end` prints the cell's error, writes its record and marks the JobReturn as handled (status
COMPLETED; the exception stays its ``return_value``).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bench import notices

CELLS_DIR, FAILED_DIR = ".cells", ".failed"
#: override keys the cell column shows anyway (method/task/steps, shard i/n)
_IN_LABEL = {"method", "task", "steps", "dataset.shard", "dataset.num_shards"}


def _sweep_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir))


def _cell_parts(config: DictConfig) -> tuple[list[str], tuple[int, int] | None]:
    """([method, task, steps label], (shard, num_shards) or None): the steps label of its run directory
    (:func:`bench.results.steps_label`)."""
    from bench.results import steps_label

    steps = config.method.get("steps") if "method" in config else None
    shards = int(config.dataset.get("num_shards", 1) or 1)
    shard = (int(config.dataset.shard), shards) if shards > 1 else None
    return [str(config.method.name), str(config.task.name), steps_label(steps)], shard


def cell_name(config: DictConfig) -> str:
    """``<method>-<task>-<steps label>[-shard<i>of<n>]``: what a SLURM job of this cell is called."""
    parts, shard = _cell_parts(config)
    return "-".join(parts + ([f"shard{shard[0]}of{shard[1]}"] if shard else []))


def cell_label(config: DictConfig) -> str:
    """``<method>/<task>/<steps label>[ shard <i>/<n>]``: the cell column of the sweep's summary."""
    parts, shard = _cell_parts(config)
    return "/".join(parts) + (f" shard {shard[0]}/{shard[1]}" if shard else "")


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


def _base_record(config: DictConfig, job_return: JobReturn, said: list[str]) -> dict:
    return {"num": int(config.hydra.job.num), "overrides": list(job_return.overrides or []),
            "cell": cell_label(config), "results_root": str(config.run.results_root), "notices": said}


def cell_record(config: DictConfig, job_return: JobReturn, said: list[str]) -> dict:
    """What the summary shows of a job that completed: its outcome (see :func:`bench.cli.run_from_config`)
    with the summary the run printed (means over the run's images, pooled img/s), never recomputed."""
    out = job_return.return_value if isinstance(job_return.return_value, dict) else {}
    run_dir = out.get("run_dir")
    return {**_base_record(config, job_return, said), "status": "skipped" if out.get("skipped") else "ok",
            "run_dir": str(run_dir) if run_dir is not None else None, "skipped": out.get("skipped"),
            "expected": out.get("expected"), "new": out.get("new"), "summary": out.get("summary") or {}}


def failed_record(config: DictConfig, job_return: JobReturn, said: list[str]) -> dict:
    from bench.cli import USER_ERRORS

    err = job_return._return_value
    record = {**_base_record(config, job_return, said), "status": "FAILED", "error": type(err).__name__,
              "message": str(err), "user_error": isinstance(err, USER_ERRORS)}
    if not record["user_error"]:
        record["traceback"] = "".join(traceback.format_exception(err))
    return record


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        for name in (CELLS_DIR, FAILED_DIR):  # a reused sweep dir: only this sweep's records
            shutil.rmtree(_sweep_dir(config) / name, ignore_errors=True)
        notices.start_sweep()

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            why = rename_slurm_job(cell_name(config))
            if why is not None:
                print(f"[bench] warning: SLURM job not renamed to {cell_name(config)!r}: {why}", file=sys.stderr)
        if config.hydra.mode == RunMode.MULTIRUN:
            notices.start_job()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        from bench.results import write_json

        said = notices.end_job()
        num = int(config.hydra.job.num)
        if job_return.status != JobStatus.FAILED:
            write_json(_sweep_dir(config) / CELLS_DIR / f"{num}.json", cell_record(config, job_return, said))
            return
        record = failed_record(config, job_return, said)
        print(f"[bench] cell #{num} ({' '.join(record['overrides'])}) failed: {record['error']}: "
              f"{record['message']}", file=sys.stderr)
        if "traceback" in record:
            print(record["traceback"], file=sys.stderr)
        write_json(_sweep_dir(config) / FAILED_DIR / f"{num}.json", record)
        job_return.status = JobStatus.COMPLETED  # handled: see the module docstring

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        folder = _sweep_dir(config)
        records = read_records(folder)
        failed = [r for r in records if r["status"] == "FAILED"]
        print(summary_text(records, folder, notices.printed()), flush=True)
        if failed:
            lines = [f"[bench] the sweep finished; {len(failed)} cell(s) failed (records in {folder / FAILED_DIR}):"]
            for r in failed:
                lines.append(f"  #{r['num']} {' '.join(r['overrides'])}: {r['error']}: {r['message']}")
            lines.append("Fix the cells above and rerun the same command: finished cells and images are kept.")
            print("\n".join(lines), file=sys.stderr, flush=True)
        roots = sorted({r["results_root"] for r in records if r.get("run_dir")})
        for root in roots:
            print(f"next: python -m bench.report --results {shlex.quote(root)}", flush=True)
        remove_empty_dirs(folder)
        if failed:
            sys.exit(1)


def read_records(folder: Path) -> list[dict]:
    """The sweep's job records (``.cells/`` and ``.failed/``), by job number."""
    paths = [*(folder / CELLS_DIR).glob("*.json"), *(folder / FAILED_DIR).glob("*.json")]
    return sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["num"])


def _status(r: dict) -> str:
    if r["status"] == "FAILED":
        return "FAILED (below)"
    if r["status"] == "skipped":
        reason = min((r["skipped"].split(sep)[0] for sep in (" (", "; ")), key=len)  # the gist; all of it
        return "skipped: " + (reason if len(reason) <= 70 else reason[:67] + "...")  # is in SKIPPED.json
    new, expected = r.get("new"), r.get("expected")
    if new == 0:
        return "resumed (nothing new)"
    if new is not None and expected is not None and new < expected:
        return f"ok (resumed, +{new} new)"
    return "ok"


def _number(value, digits: int) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _rate(value) -> str:
    """img/s with 3 significant digits, without an exponent."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return _number(value, 0)
    return _number(value, max(0, 2 - math.floor(math.log10(value))))


def _images(r: dict) -> str:
    if r["status"] != "ok" or r.get("expected") is None:
        return "-"
    text = f"{r['expected']}/{r['expected']}"  # a cell that completed has done every image of its shard
    run_n = r["summary"].get("images")
    return text if run_n in (None, r["expected"]) else f"{text} (run: {run_n})"  # the means are the run's


def _varying(records: list[dict]) -> set[str]:
    """Override keys whose value differs between the sweep's cells (beyond method/task/steps/shard)."""
    values: dict[str, set] = {}
    for r in records:
        for o in r["overrides"]:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    return {k for k, v in values.items() if k not in _IN_LABEL and (
        len(v) > 1 or any(not any(o.partition("=")[0] == k for o in r["overrides"]) for r in records))}


def summary_text(records: list[dict], folder: Path, printed: set[str] = frozenset()) -> str:
    """The sweep's table, then the notices of its jobs that this process has not printed yet."""
    varying = _varying(records)
    header = ["#", "cell", "images", "PSNR", "SSIM", "img/s", "status"]
    rows = []
    for r in records:
        extra = [o for o in r["overrides"] if o.partition("=")[0] in varying]
        s = r.get("summary") or {}
        rows.append([str(r["num"]), " ".join([r["cell"], *extra]), _images(r), _number(s.get("psnr"), 2),
                     _number(s.get("ssim"), 4), _rate(s.get("images_per_s")), _status(r)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {0, 3, 4, 5}

    def line(row):
        return "  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    counts = {k: sum(r["status"] == k for r in records) for k in ("ok", "skipped", "FAILED")}
    out = [f"[bench] sweep summary: {len(records)} cell(s), {counts['ok']} ok, {counts['skipped']} skipped, "
           f"{counts['FAILED']} failed (records in {folder}; PSNR, SSIM: means over each run's images)",
           line(header), *map(line, rows)]
    said = dict.fromkeys(m for r in records for m in r.get("notices", []) if m not in printed)
    out += [f"[bench] {m}" for m in said]
    return "\n".join(out)


def remove_empty_dirs(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (per-job folders Hydra made for a user-set
    ``hydra.sweep.subdir``, submitit's unused ``.submitit/%j``); anything with content (records, logs) stays."""
    for dirpath, _, _ in os.walk(folder, topdown=False):
        if Path(dirpath) != Path(folder) and not os.listdir(dirpath):
            os.rmdir(dirpath)
