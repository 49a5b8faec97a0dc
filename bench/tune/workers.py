"""Trials in parallel: ``tune.jobs`` workers share the study's journal file, each with its own sampler seed.

* ``tune.launcher=processes``: worker processes on this machine (spawned; torch threads split between them);
* ``tune.launcher=local`` / ``slurm``: one submitit job per worker (``tune.slurm.*``: partition, time, cpus,
  gpus, memory); on a cluster the results root must be on a filesystem the nodes share, as for sweeps.

Workers stop when the study holds ``tune.trials`` finished or running trials, so together they run about
``tune.trials`` trials (at most ``jobs - 1`` more when several ask at the same moment). TPE in parallel gets
less feedback per trial than in sequence, and the order of trials depends on timing: a parallel study is not
bit-reproducible, a sequential one is.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from bench.tune.spec import StudySpec


def worker_main(spec_json: str, worker: int, threads: int | None = None) -> int:
    """A worker's entry point (a spawned process or a submitit job): runs trials, returns the study's count."""
    import torch

    from bench.tune.study import finished, open_study, work

    if threads:
        torch.set_num_threads(threads)
    spec = StudySpec.from_json(spec_json)
    work(spec, worker)
    return finished(open_study(spec, worker))


def _threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def run_processes(spec: StudySpec) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(spec.to_json(), i, _threads(spec.jobs)), daemon=False)
             for i in range(spec.jobs)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} of {spec.jobs} tuning workers failed (exit codes {bad}); their trials' "
                           f"logs: {spec.dir}/runs.worker*.log. A rerun continues the study")


def run_submitit(spec: StudySpec) -> None:
    import submitit

    folder = Path(spec.dir) / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=spec.launcher)
    s = spec.slurm
    params = {"timeout_min": int(s.get("timeout_min", 240)), "cpus_per_task": int(s.get("cpus_per_task", 4)),
              "gpus_per_node": int(s.get("gpus_per_node", 0)), "mem_gb": s.get("mem_gb"),
              "name": f"tune-{spec.cell['method']}-{spec.cell['task']}"}
    if spec.launcher == "slurm" and s.get("partition"):
        params["slurm_partition"] = s["partition"]
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = [executor.submit(worker_main, spec.to_json(), i, int(s.get("cpus_per_task", 1)))
            for i in range(spec.jobs)]
    print(f"[tune] submitted {len(jobs)} {spec.launcher} worker job(s): {', '.join(j.job_id for j in jobs)} "
          f"(logs: {folder.parent})", flush=True)
    errors = []
    for j in jobs:
        try:
            j.result()
        except Exception as err:  # noqa: BLE001 - every job is waited for, then the failures are reported
            errors.append(f"job {j.job_id}: {err}")
    if errors:
        raise RuntimeError("tuning worker job(s) failed; a rerun continues the study:\n" + "\n".join(errors))


def run(spec: StudySpec) -> None:
    if spec.launcher == "processes":
        run_processes(spec)
    else:
        run_submitit(spec)
