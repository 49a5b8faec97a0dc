"""Optional experiment tracking. Only Weights & Biases is supported; off by default.

One W&B run per harness run directory, with a stable id (sha256 of the run directory relative to the
results root) so later invocations resume it: its name is that relative path, its config the resolved
Hydra config, and it receives

* a per-image table (``per_image``: id, restored / degraded / ground-truth images, PSNR, SSIM, LPIPS,
  consistency, GDP's consistency, NFE) with the images not logged before (W&B stores a logged table with its
  images as a run artifact; offline it is staged under ``$WANDB_DATA_DIR/artifacts/staging`` until
  ``wandb sync``), plus the first ``samples`` restored / degraded / ground-truth images as media;
* the summary: mean per-image metrics (PSNR counted with the report's inf rule) and the timing;
* the dataset-level metrics (``dataset/fid``, ``dataset/kid_mean``, ``dataset/niqe`` ...) from the report's
  cache ``<run>/dataset_metrics.json`` - present once ``python -m bench.report`` ran (``--wandb PROJECT`` logs
  the report's values of every run directly).

What was logged is remembered in ``<run>/wandb.json`` (ids, a digest of the dataset-level metrics); when
nothing is new, nothing is sent and a note says so. ``WANDB_MODE=offline`` (or ``logger.mode=offline``)
keeps everything on the machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from bench.report.aggregate import ROW_METRICS, row_values
from bench.results import RunStore, read_json, reference_dir, timing_summary, write_json

STATE = "wandb.json"
TABLE_KEYS = ("psnr", "ssim", "lpips", "consistency", "consistency_gdp", "nfe")


def run_summary(store: RunStore) -> dict:
    """Mean per-image metrics and pooled throughput of a run (what the CLI prints)."""
    df = store.rows()
    out: dict = {"images": int(len(df))}
    for col in ROW_METRICS:
        vals = list(row_values(df, col).values())  # finite, PSNR capped: the report's rule
        if vals and len(vals) == len(df):  # never a mean over part of the images
            out[col] = float(sum(vals) / len(vals))
    timings = store.timings()
    if timings:
        pooled = timing_summary(timings)  # the same pooling the report uses
        out.update({k: pooled[k] for k in ("images_per_s", "nfe_per_image", "peak_memory_mb", "device_name")})
    return out


def dataset_level(run_dir: Path) -> dict:
    """Dataset-level metrics of a run from the report's cache (empty until ``bench.report`` ran)."""
    path = Path(run_dir) / "dataset_metrics.json"
    if not path.is_file():
        return {}
    entries = (read_json(path).get("metrics") or {})
    out = {}
    fid = (entries.get("fid") or {}).get("value") or {}
    for k in ("fid", "kid_mean", "kid_std"):
        if isinstance(fid.get(k), (int, float)) and math.isfinite(fid[k]):
            out[k] = float(fid[k])
    for k in ("niqe", "pi", "loe"):
        per = (entries.get(k) or {}).get("per_image") or {}
        vals = [float(v) for v in per.values() if math.isfinite(float(v))]
        if vals and len(vals) == len(per):
            out[k] = sum(vals) / len(vals)
    return out


def wandb_run_id(run_dir: Path, results_root: Path) -> str:
    rel = Path(run_dir).resolve().relative_to(Path(results_root).resolve()).as_posix()
    return hashlib.sha256(rel.encode()).hexdigest()[:16]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _table(wandb, store: RunStore, ids: list[str], ref: Path | None):
    df = store.rows().set_index("id")
    cols = ["id", "restored", "degraded", "ground_truth", *TABLE_KEYS]
    table = wandb.Table(columns=cols)
    for i in ids:
        row = df.loc[i]
        gt = ref / f"{i}.png" if ref is not None else None
        vals = [None if k not in row or pd.isna(row[k]) else float(row[k]) for k in TABLE_KEYS]
        table.add_data(i, wandb.Image(str(store.image_path(i))), wandb.Image(str(store.degraded_path(i))),
                       wandb.Image(str(gt)) if gt is not None and gt.is_file() else None, *vals)
    return table


def log_wandb(store: RunStore, config: dict, results_root: Path, *, project: str, entity: str | None = None,
              mode: str | None = None, tags: list[str] | None = None, samples: int = 4,
              dataset_metrics: dict | None = None) -> str | None:
    """Log what is new about one run to W&B; returns the W&B run directory (None when nothing was new)."""
    state_path = store.dir / STATE
    state = read_json(state_path) if state_path.is_file() else {}
    logged = set(state.get("logged_ids", []))
    done = sorted(store.done_ids())
    new = [i for i in done if i not in logged]
    dm = dataset_level(store.dir) if dataset_metrics is None else dataset_metrics
    dm_key = _digest(dm)
    name = str(store.dir.resolve().relative_to(Path(results_root).resolve()))
    run_id = wandb_run_id(store.dir, results_root)
    if not new and dm_key == state.get("dataset_metrics"):
        print(f"[bench] W&B: {name} has nothing new to log: its {len(done)} images and dataset-level metrics "
              f"are already in W&B run {run_id} (project {project})")
        return None
    import wandb

    man = read_json(store.dir / "manifest.json") if (store.dir / "manifest.json").is_file() else {}
    d = man.get("dataset") or {}
    ref = reference_dir(results_root, d.get("name", store.dir.parts[-4]), d.get("image_size"),
                        str(d.get("manifest_sha256", ""))) if d else None
    run = wandb.init(project=project, entity=entity, mode=mode, name=name, group=name.rsplit("/", 1)[0],
                     id=run_id, resume="allow", config=config, tags=list(tags or []), dir=str(results_root),
                     reinit="finish_previous")
    summary = run_summary(store)
    summary.update({f"dataset/{k}": v for k, v in dm.items()})
    run.summary.update(summary)
    if new:
        table = _table(wandb, store, new, ref if ref is not None and ref.is_dir() else None)
        show = new[:samples]
        payload = {"per_image": table,
                   "samples/restored": [wandb.Image(str(store.image_path(i)), caption=i) for i in show],
                   "samples/degraded": [wandb.Image(str(store.degraded_path(i)), caption=i) for i in show]}
        if ref is not None and ref.is_dir():
            payload["samples/ground_truth"] = [wandb.Image(str(ref / f"{i}.png"), caption=i) for i in show
                                               if (ref / f"{i}.png").is_file()]
        run.log(payload)
    run_dir = run.dir
    run.finish()
    state = {"run_id": run_id, "project": project, "logged_ids": sorted(logged | set(new)), "dataset_metrics": dm_key}
    write_json(state_path, state)
    print(f"[bench] W&B: logged {len(new)} new images and {len(dm)} dataset-level metrics of {name} "
          f"to run {run_id}")
    return run_dir


def log_report_to_wandb(root: Path, runs: list, df: pd.DataFrame, *, project: str) -> None:
    """``bench.report --wandb PROJECT``: push every shown run's dataset-level metrics (as the report computed
    them) to its W&B run."""
    shown = set(df.loc[df["shown"].astype(bool), "run_dir"]) if len(df) else set()
    for r in runs:
        rel = r.dir.relative_to(root).as_posix()
        if rel not in shown:
            continue
        row = df[df["run_dir"] == rel].iloc[0]
        dm = {}
        for k, col in (("fid", "fid"), ("kid_mean", "kid_mean"), ("kid_std", "kid_std"), ("niqe", "niqe_mean"),
                       ("pi", "pi_mean"), ("loe", "loe_mean")):
            v = row.get(col)
            if v is not None and not pd.isna(v) and math.isfinite(float(v)):
                dm[k] = float(v)
        store = RunStore(root, r.dataset, r.task, r.method, r.steps, r.hash)
        log_wandb(store, r.config, root, project=project, dataset_metrics=dm)
