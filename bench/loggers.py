"""Optional experiment tracking. Only Weights & Biases is supported; off by default.

One W&B run per harness run directory: its name is the run directory relative to the results root, its
config the resolved Hydra config, its summary the mean per-image metrics and the timing, plus a few sample
images. ``WANDB_MODE=offline`` (or ``logger.mode=offline``) keeps everything on the machine.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results import RunStore, timing_summary


def run_summary(store: RunStore) -> dict:
    """Mean per-image metrics and pooled throughput of a run (what the CLI prints)."""
    df = store.rows()
    out: dict = {"images": int(len(df))}
    for col in ("psnr", "ssim"):
        if len(df) and col in df and df[col].notna().any():
            vals = pd.to_numeric(df[col]).replace(float("inf"), float("nan"))
            out[col] = float(vals.mean())
    timings = store.timings()
    if timings:
        pooled = timing_summary(timings)  # the same pooling the report uses
        out.update({k: pooled[k] for k in ("images_per_s", "nfe_per_image", "peak_memory_mb", "device_name")})
    return out


def log_wandb(store: RunStore, config: dict, results_root: Path, *, project: str, entity: str | None = None,
              mode: str | None = None, tags: list[str] | None = None, samples: int = 4) -> str:
    """Log one run to W&B; returns the W&B run directory."""
    import wandb

    name = str(store.dir.relative_to(results_root))
    run = wandb.init(project=project, entity=entity, mode=mode, name=name, group=name.rsplit("/", 1)[0],
                     config=config, tags=list(tags or []), dir=str(results_root), reinit="finish_previous")
    summary = run_summary(store)
    run.summary.update(summary)
    ids = sorted(p.stem for p in (store.dir / "images").glob("*.png"))[:samples]
    if ids:
        run.log({
            "samples/restored": [wandb.Image(str(store.image_path(i)), caption=i) for i in ids],
            "samples/degraded": [wandb.Image(str(store.degraded_path(i)), caption=i) for i in ids],
        })
    run_dir = run.dir
    run.finish()
    return run_dir
