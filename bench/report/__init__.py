"""``python -m bench.report``: stored runs -> dataset-level metrics, tidy table, markdown report, figures.

Pipeline (:func:`build_report`)::

    scan results root (aggregate.scan)  ->  dataset-level metrics per run, cached in the run
    (dataset_metrics)  ->  tidy table (aggregate.tidy_table) -> reports/<name>/runs.parquet + runs.csv
    ->  per (dataset, task): our table + the papers' table (tables) + FID-vs-throughput figure and sample
    grid (figures)  ->  reports/<name>/README.md

Everything written is a pure function of the results root, the paper values and the options (no dates,
no absolute paths beyond ``--results`` as given, fixed figure metadata), so regenerating gives identical
README/CSV bytes; every file is written atomically.
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


def _conventions(opts: ReportOptions) -> list[str]:
    from bench.report.dataset_metrics import FID_VERSION, LOE_SHORT_SIDE, NIQE_CROP_BORDER

    return [
        "## Conventions",
        "",
        f"- Per-image metrics (PSNR, SSIM, LOE, NIQE, PI) are `mean ± h` over the run's images, `h` = half-width "
        f"of the 95 % percentile bootstrap interval ({opts.bootstrap} resamples of the images with replacement, "
        f"`numpy.random.default_rng(sha256(seed={opts.seed}, run hash, metric))`, so regenerating prints the "
        "same intervals); one image -> no interval. PSNR/SSIM come from the run's `rows/` (8-bit PNGs vs the "
        "8-bit ground truth); an infinite PSNR (output identical to the ground truth) is left out of the mean.",
        "- Throughput = images/s of the restore call only (warm-up batch excluded), images-weighted over the "
        "run's timing files: sum(timed_images) / sum(restore_seconds). NFE/img as recorded by the method. "
        "Numbers from different devices are not comparable (device per run in `runs.csv`).",
        f"- FID/KID ({FID_VERSION}): restored PNGs vs the ground truth of the same image ids; features cached "
        "per run (`fid_features.npz`) and per reference set (`_reference/.../inception_stats-*.npz`). "
        "With fewer than 2048 images FID is biased (covariance rank <= N-1): flagged with ⚠ and N; prefer KID "
        "(mean ± std over 100 subsets).",
        f"- LOE (lowlight): reference = the low-light input (`degraded/`), lightness max(R,G,B), short side "
        f"{LOE_SHORT_SIDE} (MATLAB `loe.m`). NIQE/PI (lowlight): PIRM convention, Y channel, crop border "
        f"{NIQE_CROP_BORDER}; PI = ((10 - Ma) + NIQE) / 2.",
        "- **Bold** = best in the column (max PSNR/SSIM/throughput, min FID/KID/LOE/PI/NIQE) among our runs of "
        "the table. `n/a (reason)` = could not be computed here, with what is missing.",
        "- The papers' values are transcribed in `bench/report/paper_values.csv`; they come from other data "
        "(2000 ImageNet images / LOL eval15), other devices and other implementations: compare trends, not digits.",
        "- One row per run in `runs.csv` / `runs.parquet` (bounds `*_ci_lo`/`*_ci_hi`, reasons `*_na`).",
        "",
    ]


def _section(key, sub, pv, runs, root, fig_dir, opts) -> list[str]:
    from bench.report import dataset_metrics as dm
    from bench.report import figures, tables

    dataset, task = key
    lines = [f"## {dataset} / {task}", "", tables.our_table(sub), ""]
    notes = tables.table_notes(sub)
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    paper = tables.paper_table(pv, task)
    lines += [f"**Reported in the papers ({task})**", ""]
    lines += [paper, ""] if paper else ["(no seed paper reports this task)", ""]
    stem = f"{dataset}_{task}"
    png, svg, caption = figures.tradeoff_figure(sub, fig_dir / f"{stem}_tradeoff",
                                                figures.fid_unavailable_reason(sub))
    lines += [f"![quality vs throughput, {dataset}/{task}](figures/{png.name})", "",
              f"*Figure ([SVG](figures/{svg.name})): {caption}*", ""]
    by_dir = {r.dir: r for r in runs}
    best: dict[str, object] = {}
    for _, row in sub.iterrows():
        run = by_dir[root / row["run_dir"]]
        cur = best.get(row["variant"])
        if cur is None or (run.steps or -1) > (cur.steps or -1):
            best[row["variant"]] = run
    cols = [(f"{v} ({'steps ' + str(r.steps) if r.steps is not None else 'default'})", r)
            for v, r in sorted(best.items())]
    ref = dm.reference_dir_of(root, cols[0][1])
    grid = figures.sample_grid(cols, ref if ref.is_dir() else None, fig_dir / f"{stem}_grid.png",
                               opts.grid_rows)
    lines += [f"![samples {dataset}/{task}](figures/{grid.name})", "",
              f"*Samples: columns = ground truth, degraded input (nearest-neighbour upsampled), then each method "
              f"at its largest step count; rows = the first {opts.grid_rows} image ids common to all runs.*", ""]
    return lines


def build_report(opts: ReportOptions) -> Path:
    """Write ``<out>/<name>/{README.md, runs.csv, runs.parquet, figures/}``; returns the report folder."""
    from bench.report import aggregate, dataset_metrics, tables

    root = Path(opts.results).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"results root {opts.results} does not exist. Fix: pass --results <folder> "
                                "that `python -m bench` wrote (run.results_root)")
    runs = aggregate.scan(root)
    if not runs:
        raise FileNotFoundError(f"no runs (run folders with manifest.json and rows/) under {root}")
    res = dataset_metrics.Resources(opts.inception_weights, opts.niqe_params, opts.nrqm_weights, opts.device)
    dmetrics = dataset_metrics.all_dataset_metrics(root, runs, res)
    df = aggregate.tidy_table(runs, dmetrics, root, n_boot=opts.bootstrap, seed=opts.seed)

    out = Path(opts.out) / opts.name
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "runs.csv", df.to_csv(index=False, lineterminator="\n").encode())
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "runs.parquet", buf.getvalue())

    pv = tables.load_paper_values()
    cmd = f"python -m bench.report --results {opts.results} --name {opts.name} --bootstrap {opts.bootstrap}"
    lines = [f"# Benchmark report: {opts.name}", "",
             f"{len(df)} runs from `{opts.results}`, regenerated with `{cmd}` (plus the weights options "
             "for FID/NIQE/PI). Tables per (dataset, task) below; every run in `runs.csv`.", ""]
    lines += _conventions(opts)
    skipped = aggregate.scan_skipped(root)
    for key, sub in df.groupby(["dataset", "task"], sort=True):
        lines += _section(key, sub, pv, runs, root, fig_dir, opts)
        for s in skipped:
            if (s["dataset"], s["task"]) == key:
                lines += [f"- skipped: `{s['method']}` x `{s['task']}`: {s['reason']}", ""]
    atomic_write_bytes(out / "README.md", ("\n".join(lines).rstrip() + "\n").encode())
    return out
