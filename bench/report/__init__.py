"""``python -m bench.report``: stored runs -> dataset-level metrics, tidy table, markdown report, figures.

Pipeline (:func:`build_report`)::

    scan results root (aggregate.scan, scan_skipped)  ->  dataset-level metrics per run, cached in the run
    (dataset_metrics)  ->  tidy table (aggregate.tidy_table) -> reports/<name>/runs.parquet + runs.csv
    ->  per (dataset, task): our table with the papers' values in the same rows, footnotes, paired
    comparisons (tables), quality-vs-throughput figure and sample grid (figures), skipped cells
    ->  reports/<name>/README.md

Everything written is a pure function of the stored files of the results root, the paper values and the
options (no dates, no absolute paths, fixed figure metadata, intervals seeded by the cell identity), so
regenerating gives identical bytes; every file is written atomically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from bench.imageio import atomic_write_bytes

__all__ = ["ReportOptions", "build_report"]


@dataclass
class ReportOptions:
    results: Path
    name: str = "main"
    out: Path = Path("reports")
    inception_weights: Path | None = None
    niqe_params: Path | None = None
    nrqm_weights: Path | None = None
    bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"
    grid_rows: int = 4
    niqe_variant: str = "matlab"
    niqe_crop_border: int = 4
    wandb_project: str | None = None


def _conventions(opts: ReportOptions) -> list[str]:
    from bench.metrics.fid import INCEPTION_NAME, INCEPTION_SHA256, INCEPTION_URL
    from bench.metrics.lpips import BACKBONES
    from bench.metrics.pixel import PSNR_CAP_DB
    from bench.report.dataset_metrics import LOE_SHORT_SIDE
    from bench.report.tables import THROUGHPUT_MARGIN

    backbones = ", ".join(f"{n}: `{BACKBONES[n][0]}` ({BACKBONES[n][1]})" for n in ("alex", "vgg"))
    return [
        "## Conventions",
        "",
        f"- Per-image metrics are `mean ± h` over a run's images, `h` = half-width of the 95 % BCa bootstrap "
        f"interval (`scipy.stats.bootstrap`, {opts.bootstrap} resamples), seeded by sha256 of (report seed "
        f"{opts.seed}, dataset, task, method label, steps, metric) - the cell, not the run hash - so identical "
        "outputs get identical intervals and regenerating prints the same numbers.",
        "- Stored per image by the run (from the saved 8-bit PNGs; conventions of the `metrics` config, named "
        "under each table): PSNR (data range 255), SSIM (Wang et al. 2004: Gaussian 11x11 sigma 1.5, population "
        "covariance, mean over the valid window positions = skimage; RGB = mean over channels; or the BT.601 Y "
        "channel), LPIPS (inputs in [-1, 1]), consistency `‖A(x̂)−y‖²/M` in [0, 1] units (linear tasks; ~sigma² "
        "for the true image; its PSNR in measurement space is in `runs.csv`) and, for super-resolution, GDP's "
        "consistency (`evaluations/cal_all_metrics.py`: MSE on 0..255 after a bicubic-antialiased resize of the "
        "output to the LR input; GDP's other columns came from inputs its repository does not define).",
        f"- PSNR = inf (an output identical to its reference) is stored as inf and counted as {PSNR_CAP_DB:g} dB "
        "in means, intervals and differences (ignite's 10 log10(1/(MSE + 1e-10)) on [0, 1] data); a footnote "
        "marks the rows that contain such images.",
        f"- Computed here from the saved PNGs and cached per run (`dataset_metrics.json`): NIQE for every task "
        f"(no-reference; Y channel rounded to integers as MATLAB / current BasicSR, variant `{opts.niqe_variant}`, "
        f"border crop {opts.niqe_crop_border}; every image must hold two 96x96 blocks); PI = ((10 - Ma) + NIQE) / 2 "
        "when the optional Ma (NRQM, pyiqa) score is available; LOE for lowlight (reference = the low-light "
        f"input, MATLAB `loe.m` on the uint8 PNGs, short side {LOE_SHORT_SIDE}); FID/KID of the restored PNGs "
        f"against the ground truth of the same ids (torch-fidelity Inception `{INCEPTION_NAME}`, sha256 "
        f"{INCEPTION_SHA256[:16]}..., from {INCEPTION_URL}: place it in `$BENCH_CACHE` or pass "
        "`--inception-weights`). FID from fewer than 2048 images is biased (marked); KID is the mean ± std over "
        "100 subsets of 1000 images, or of N // 2 when N <= 1000 (so the std is a real spread), n/a below 4.",
        f"- LPIPS backbones come through the asset cache (`$BENCH_CACHE`, sha256-checked): {backbones}; "
        "offline without them LPIPS is n/a, never 0 (`metrics.lpips.backbone_path=` points at a local copy).",
        "- **Bold** = the best complete run of a column, only when its paired difference to the runner-up is "
        "significant (95 % BCa interval over the common images excludes 0); FID/KID are never bold (no per-image "
        f"values); throughput is bold only among methods with NFE > 0 and when >= {THROUGHPUT_MARGIN:.2f}x the "
        "runner-up (no per-image timing pairs; differences below that are within timing noise). Incomplete runs "
        "(N finished < expected) are marked ⚠ and never bold. `n/a` + footnote = could not be computed, with why.",
        "- Throughput = images/s of the restore call only (warm-up batch excluded), images-weighted over the "
        "run's timing files; wall = the invocations' total seconds (loading, metrics and I/O included); peak MB "
        "= CUDA max allocated or process RSS (`memory_kind` in `runs.csv`). Numbers from different devices are "
        "not comparable (`device_name` in `runs.csv`).",
        "- One row per run; runs of one cell under different code versions (`code` column: manifest code "
        "fingerprint, else `git:<commit>`) are never averaged: each is its own row, labelled `@<version>` when "
        "a table holds several. Duplicates (same label, steps and code version in several run folders, e.g. a "
        "step-less baseline swept with `steps=...`) are collapsed to the run with the most images and listed "
        "under the table; `runs.csv` keeps every run (`shown`, `duplicate_of`).",
        "- Paired comparisons: mean per-image difference (row minus reference) to the task's baseline "
        "(`bicubic`) and to the best complete run of each metric, with the paired 95 % BCa interval; `*` = the "
        "interval excludes 0. The papers' values are transcribed in `bench/report/paper_values.csv` and sit in "
        "the same rows (columns `[source]`); they come from other data, devices and checkpoints: compare trends, "
        "not digits.",
        "",
    ]


def _results_arg(results: Path) -> str:
    return str(results) if not Path(results).is_absolute() else "<results root>"


def _section(key, sub_all, pv, runs, root, fig_dir, opts, values, skipped, styles=None) -> list[str]:
    from bench.report import aggregate, figures, tables
    from bench.report import dataset_metrics as dm

    dataset, task = key
    lines = [f"## {dataset} / {task}", ""]
    skip = [s for s in skipped if (s["dataset"], s["task"]) == key]
    if sub_all is not None and len(sub_all):
        sub = sub_all[sub_all["shown"].astype(bool)].reset_index(drop=True)
        notes = tables.Notes()
        lines += [tables.our_table(sub, pv, values, notes, opts.bootstrap, opts.seed), ""]
        lines += [f"- {n}" for n in notes.lines()]
        conv = sorted(set(sub["metrics_convention"].astype(str)))
        lines += [f"- {c}" for c in tables.caption(sub, pv, conv)]
        lines += [f"- {n}" for n in tables.table_notes(sub)]
        for _, d in sub_all[~sub_all["shown"].astype(bool)].iterrows():
            lines.append(f"- duplicate not shown: `{d['run_dir']}` ({int(d['n_images'])} images) = same label, "
                         f"steps and code version as `{d['duplicate_of']}`")
        lines.append("")
        paired = tables.paired_table(sub, values, [m for m in aggregate.PER_IMAGE if m != "consistency_psnr"],
                                     opts.bootstrap, opts.seed)
        if paired:
            lines += [f"**Paired differences ({dataset} / {task})**: mean over common images, 95 % BCa "
                      "interval, `*` = excludes 0", "", paired, ""]
        stem = f"{dataset}_{task}"
        png, svg, cap = figures.tradeoff_figure(sub, fig_dir / f"{stem}_tradeoff",
                                                figures.fid_unavailable_reason(sub), styles=styles)
        lines += [f"![quality vs throughput, {dataset}/{task}](figures/{png.name})", "",
                  f"*Figure ([SVG](figures/{svg.name})): {cap}*", ""]
        by_dir = {r.dir.relative_to(root).as_posix(): r for r in runs}
        best: dict[str, object] = {}
        for _, row in sub.iterrows():
            run = by_dir[row["run_dir"]]
            cur = best.get(row["label"])
            if cur is None or (run.steps or -1) > (cur.steps or -1):
                best[row["label"]] = run
        cols = [(f"{lab}, {r.steps} steps" if r.steps is not None else lab, r) for lab, r in sorted(best.items())]
        ref = dm.reference_dir_of(root, cols[0][1])
        colours = [(styles or figures.style_map(best))[lab][0] for lab in sorted(best)]
        grids, _ = figures.sample_grid(cols, ref if ref.is_dir() else None, fig_dir / f"{stem}_grid.png",
                                       opts.grid_rows, colors=colours)
        lines += [ln for g in grids for ln in (f"![samples {dataset}/{task}](figures/{g.name})", "")]
        lines += [f"*Samples: rows = ground truth, degraded input, then each method at its largest step count "
                  f"(swatch = its colour in the figure); columns = the first {opts.grid_rows} image ids common to "
                  f"all runs (per-tile PSNR / LPIPS underneath), then a {figures.ZOOM}x zoom of the centre of the "
                  "first; tiles upscaled nearest-neighbour.*", ""]
    else:
        lines += ["No finished run of this (dataset, task).", ""]
    lines += [f"- skipped: `{s['method']}` x `{s['task']}`: {dm.short_reason(s['reason'])}" for s in skip]
    return lines + ([""] if skip else [])


def build_report(opts: ReportOptions) -> Path:
    """Write ``<out>/<name>/{README.md, runs.csv, runs.parquet, figures/}``; returns the report folder."""
    import pandas as pd

    from bench.report import aggregate, dataset_metrics, figures, tables

    root = Path(opts.results).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"results root {opts.results} does not exist. Fix: pass --results <folder> "
                                "that `python -m bench` wrote (run.results_root)")
    runs = aggregate.scan(root)
    skipped = aggregate.scan_skipped(root)
    if not runs and not skipped:
        raise FileNotFoundError(f"no runs (run folders with manifest.json and rows/) and no SKIPPED.json cells "
                                f"under {opts.results}")
    res = dataset_metrics.Resources(opts.inception_weights, opts.niqe_params, opts.nrqm_weights, opts.device,
                                    opts.niqe_variant, opts.niqe_crop_border)
    dmetrics = dataset_metrics.all_dataset_metrics(root, runs, res)
    df = aggregate.tidy_table(runs, dmetrics, root, n_boot=opts.bootstrap, seed=opts.seed)
    for col in [c for c in df.columns if c.endswith("_na")]:  # reasons: one line, no absolute paths
        df[col] = df[col].map(lambda v: dataset_metrics.short_reason(v) if isinstance(v, str) else v)
    values = {r.dir.relative_to(root).as_posix(): {m: aggregate.per_image_values(r, m, dmetrics.get(r.dir, {}))
                                                   for m in aggregate.PER_IMAGE} for r in runs}

    out = Path(opts.out) / opts.name
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "runs.csv", df.to_csv(index=False, lineterminator="\n").encode())
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "runs.parquet", buf.getvalue())

    pv = tables.load_paper_values()
    cmd = (f"python -m bench.report --results {_results_arg(opts.results)} --name {opts.name} "
           f"--bootstrap {opts.bootstrap}")
    lines = [f"# Benchmark report: {opts.name}", "",
             f"{len(df)} runs and {len(skipped)} skipped cells, regenerated with `{cmd}` (plus the weights "
             "options for FID/NIQE/PI). One table per (dataset, task) below; every run in `runs.csv`.", ""]
    lines += _conventions(opts)
    keys = sorted({(d, t) for d, t in zip(df.get("dataset", []), df.get("task", []))}
                  | {(s["dataset"], s["task"]) for s in skipped})
    styles = figures.style_map(df["label"]) if len(df) else {}  # one colour and marker per method, report-wide
    for key in keys:
        sub = df[(df["dataset"] == key[0]) & (df["task"] == key[1])] if len(df) else pd.DataFrame()
        lines += _section(key, sub, pv, runs, root, fig_dir, opts, values, skipped, styles)
    atomic_write_bytes(out / "README.md", ("\n".join(lines).rstrip() + "\n").encode())
    if opts.wandb_project:
        from bench.loggers import log_report_to_wandb

        log_report_to_wandb(root, runs, df, project=opts.wandb_project)
    return out
