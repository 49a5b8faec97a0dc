"""``python -m bench.report``: stored runs -> dataset-level metrics, tidy table, markdown report, figures.

Pipeline (:func:`build_report`)::

    scan results root (aggregate.scan, scan_skipped)  ->  dataset-level metrics per run, cached in the run
    (dataset_metrics)  ->  tidy table (aggregate.tidy_table) -> reports/<name>/runs.parquet + runs.csv
    ->  per (dataset, task) (:func:`_section`): the comparison on the runs' common images (compare: values,
    paired sign-flip tests, Holm, bold, verdicts), our table with each row's settings (official or tuned, a
    test-split preset flagged at the top) and the paired differences (tables), the papers' values as a
    companion table (papers), the quality-vs-throughput figure from the same common-image values, the budget
    view when the runs span >= 2 NFE values ("Best at <= N NFE" and quality vs NFE) and the sample grid
    (figures), skipped cells
    ->  reports/<name>/README.md (conventions, missing assets once, one section per (dataset, task))
    ->  reports/<name>/index.html, the results browser, from the same section objects (bench.report.html)

Everything written is a pure function of the stored files of the results root, the paper values and the
options (no dates, no absolute paths, fixed figure metadata, intervals and Monte Carlo tests seeded by the
cell identity), so regenerating gives identical bytes; every file is written atomically. ``jobs`` (``--jobs``)
worker processes check the stored files, compute the ``runs.csv`` intervals and the sections
(:mod:`bench.report.parallel`); the bytes are the same for every number of workers.
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
    validation: bool = False  # also runs on validation splits (bench.tune's trials); left out by default
    html: bool = True  # also write the browsable index.html (bench.report.html)
    jobs: int | None = None  # worker processes (bench.report.parallel); None = the usable CPU cores, 1 = none


def _conventions(opts: ReportOptions) -> list[str]:
    from bench.metrics.fid import INCEPTION_NAME, INCEPTION_SHA256, INCEPTION_URL
    from bench.metrics.lpips import BACKBONES
    from bench.metrics.pixel import PSNR_CAP_DB
    from bench.report.dataset_metrics import LOE_SHORT_SIDE
    from bench.report.stats import BOOT_MIN_N, EXACT_MAX_N, MC_RESAMPLES
    from bench.report.tables import THROUGHPUT_MARGIN

    backbones = ", ".join(f"{n}: `{BACKBONES[n][0]}` ({BACKBONES[n][1]})" for n in ("alex", "vgg"))
    return [
        "## Conventions",
        "",
        "- **Common images.** Each (dataset, task) section compares its runs on the images they all hold (the "
        "intersection; N is stated above the table; a run sharing no image with the others is left out and "
        "named). Every mean, interval, rank, bold, difference, verdict and figure point of a section uses "
        "exactly those N images; runs holding more are named with their count. `runs.csv` keeps each run over "
        f"its own images (95 % BCa intervals, `scipy.stats.bootstrap`, {opts.bootstrap} resamples).",
        f"- Table cells are `mean ± h` over the N common images, `h` = half-width of the 95 % interval of the "
        f"mean: Student t below N = {BOOT_MIN_N}, BCa bootstrap ({opts.bootstrap} resamples) from there on - "
        "BCa under-covers at small N (simulated: 77 % at N = 4, 88 % at N = 8, 94 % at N = 30 for a normal "
        "mean). Intervals and Monte Carlo tests are seeded by sha256 of (report seed "
        f"{opts.seed}, dataset, task, method label, steps, metric) - the cell, not the run hash - so regenerating "
        "prints the same numbers.",
        "- **Significance.** Two runs are compared by the paired two-sided sign-flip (permutation) test of the "
        "mean per-image difference: exact (all 2^N sign patterns) for N <= "
        f"{EXACT_MAX_N}, seeded Monte Carlo with {MC_RESAMPLES} patterns beyond (p = (1 + count) / (1 + "
        f"{MC_RESAMPLES})). It assumes only that two equivalent methods are exchangeable on each image, so its "
        "false-positive rate is at most 5 % at every N (a paired t-test needs normality, the bootstrap a large "
        "N). Per metric, the p-values of *all* pairs of runs of a table are Holm-corrected together, which "
        "covers the bold, the 'vs baseline' and 'vs best' columns and the verdict at once. `*` = adjusted p < "
        "0.05. The smallest possible p is 2 / 2^N: below N = 6 no difference can be significant, and the "
        "captions say so.",
        "- **Bold** = the best run of a column when its lead over every other run is significant; FID/KID (no "
        "per-image values) and unranked columns are never bold; throughput is bold only among methods with NFE > "
        f"0 measured on the same device and thread count, when >= {THROUGHPUT_MARGIN:.2f}x the runner-up. "
        "**Verdict** = one sentence per quality metric above each table: the best run, its lead over the runner-"
        "up with the test's outcome, and how many runs beat the baseline (`bicubic`: bicubic upscaling for "
        "super-resolution, the degraded input otherwise), or that none does.",
        "- Stored per image by the run (from the saved 8-bit PNGs; conventions of the `metrics` config, named "
        "under each table): PSNR (data range 255), SSIM (Wang et al. 2004: Gaussian 11x11 sigma 1.5, population "
        "covariance, mean over the valid window positions = skimage; RGB = mean over channels; or the BT.601 Y "
        "channel), LPIPS (inputs in [-1, 1]), consistency `‖A(x̂)−y‖²/M` in [0, 1] units (linear tasks; its PSNR in "
        "measurement space is in `runs.csv`) and, for super-resolution, GDP's consistency "
        "(`evaluations/cal_all_metrics.py`: MSE on 0..255 after a bicubic-antialiased resize of the output to the "
        "LR input; GDP's other columns came from inputs its repository does not define).",
        "- **Consistency on noisy tasks** (task σ > 0) is shown as `‖A(x̂)−y‖²/(Mσ²)` per image: the true image "
        "scores about 1 (E‖Ax − y‖²/M = σ²), below 1 = the output fits the noise (the noisy input itself scores "
        "~0), above 1 = it does not explain y. It is never 'lower is better' there: neither consistency column is "
        "ranked or bold on a noisy task. On noiseless tasks lower is better.",
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
        "`--inception-weights`), over the table's common images when a run holds more (per-image features are "
        "cached). FID from fewer than 2048 images is biased (marked); KID is the mean ± std over 100 subsets of "
        "1000 images, or of N // 2 when N <= 1000 (so the std is a real spread), n/a below 4.",
        f"- LPIPS backbones come through the asset cache (`$BENCH_CACHE`, sha256-checked): {backbones}; "
        "offline without them LPIPS is n/a, never 0 (`metrics.lpips.backbone_path=` points at a local copy). A "
        "missing asset is named once, under 'Missing assets'; a column that is n/a in every row of a table is "
        "left out and named in one line under it; other `n/a` cells carry a footnote with the reason.",
        "- Throughput = images/s of the restore call only (warm-up batch excluded), images-weighted over the "
        "run's timing files, shown only for methods with NFE > 0 (`—` otherwise); each caption names the device "
        "and CPU thread count, and rows measured on another device or thread count are marked † (older runs "
        "without a recorded thread count: `unknown`). Wall = the invocations' total seconds (loading, metrics "
        "and I/O included); peak MB = CUDA max allocated or process RSS (`memory_kind`, `device_name`, "
        "`num_threads` in `runs.csv`).",
        "- One row per run; runs of one cell under different code versions (`code`: manifest code fingerprint, "
        "else `git:<commit>`) are never averaged: each is its own row, labelled `@<version>` when a table holds "
        "several. Duplicates (same label, steps and code version in several run folders) are collapsed to the run "
        "with the most images and listed under the table; `runs.csv` keeps every run (`shown`, `duplicate_of`). "
        "Context columns with one value for every row (prior, σ, seed, code) become one line under the table.",
        "- **Settings.** Every table says per row where its hyper-parameters came from: `official settings` (the "
        "method's YAML; also every run older than tuned presets) or `tuned on <split> (<n> trials)` (a preset of "
        "`python -m bench.tune`, chosen on a validation split disjoint from the test images; its sha256 is "
        "`tuned_sha256` in `runs.csv`). A tuned run is its own row, `<method> (tuned)`, drawn in its method's "
        "colour and marker with a dashed line. A preset tuned on a TEST split (`tune.allow_test_split=true`) is "
        "marked ⚠ in its row and flagged at the top of its section.",
        "- **Budget view.** A section whose runs span >= 2 NFE/img values (as measured by their timing) adds 'Best "
        "at ≤ N NFE': for each of those values N, the run with the best mean PSNR on the common images among the "
        "runs with 0 < NFE/img <= N, with its settings, its lead over the runner-up and its difference to the "
        "baseline (tested as in the table), and a PSNR-vs-NFE figure (log x, one line per method).",
        "- The papers' values (`bench/report/paper_values.csv`, each row with the experiment preset that "
        "reproduces it) are a companion table under ours, in the section of the task whose protocol produced "
        "them (GDP's 'Deblur' = `deblur_gdp`, Liu's Gaussian deblurring = `deblur_gauss`); they come from other "
        "images, devices and checkpoints: compare trends, not digits.",
        "",
    ]


def _results_arg(results: Path) -> str:
    return str(results) if not Path(results).is_absolute() else "<results root>"


def _common_frame(tab):
    """The compared rows with every per-image mean/interval replaced by its value on the common images: what
    the figure draws (the same numbers as the table)."""
    from bench.report.aggregate import PER_IMAGE

    df = tab.runs.copy()
    for m in PER_IMAGE:
        st = [tab.stats.get((d, m), {}) for d in df["run_dir"]]
        for col, key in ((f"{m}_mean", "mean"), (f"{m}_ci_lo", "lo"), (f"{m}_ci_hi", "hi")):
            df[col] = [x.get(key, float("nan")) for x in st]
    return df


def _fid_on_common(tab, by_dir, root, res) -> None:
    """Recompute FID/KID over the table's common images for runs that hold others too (per-image features are
    cached, so this is cheap); a run whose FID is n/a keeps its reason."""
    from bench.report import dataset_metrics as dm

    for i, row in tab.runs.iterrows():
        run = by_dir[row["run_dir"]]
        if "fid" not in tab.runs or not row.get("fid") == row.get("fid") or run.ids == tab.common:
            continue
        e = dm.fid_entry(root, run, res, tab.common)
        v = e.get("value")
        tab.runs.loc[i, ["fid", "kid_mean", "kid_std", "fid_n"]] = (
            [v["fid"], v["kid_mean"], v["kid_std"], min(v["n_real"], v["n_fake"])] if v else
            [float("nan"), float("nan"), float("nan"), len(tab.common)])
        tab.runs.loc[i, ["fid_warning", "fid_na", "kid_na"]] = (
            [v.get("warning") or "", "", v.get("kid_na", "")] if v else ["", e["na"], "as FID"])


def _section(key, sub_all, pv, runs, root, fig_dir, opts, values, skipped, res=None, assets=None,
             styles=None) -> tuple[list[str], dict]:
    """The markdown lines of one (dataset, task) and the same computed parts as data (:mod:`bench.report.html`
    renders them: every table cell, verdict and caption is the same string in both)."""
    import pandas as pd

    from bench.report import compare, figures, papers, tables
    from bench.report import dataset_metrics as dm

    dataset, task = key
    lines = [f"## {dataset} / {task}", ""]
    skip = [s for s in skipped if (s["dataset"], s["task"]) == key]
    data: dict = {"dataset": dataset, "task": task, "skipped": [
        f"`{s['method']}` x `{s['task']}`: {dm.short_reason(s['reason'])}" for s in skip]}
    if sub_all is not None and len(sub_all):
        sub = sub_all[sub_all["shown"].astype(bool)].reset_index(drop=True)
        by_dir = {r.dir.relative_to(root).as_posix(): r for r in runs}
        tab = compare.compare(sub, values, {d: by_dir[d].ids for d in sub["run_dir"]}, opts.bootstrap, opts.seed)
        if res is not None:
            _fid_on_common(tab, by_dir, root, res)
        settings, warnings = tables.settings_caption(tab)
        lines += [*warnings, ""] if warnings else []
        verdicts = [v for v in (compare.verdict(tab, m) for m in compare.QUALITY) if v]
        data.update(tab=tab, warnings=warnings, verdicts=verdicts)
        if verdicts:
            lines += [f"**Verdict** (paired sign-flip tests on the {tab.n} common images, Holm-corrected per "
                      "metric; details under the paired differences):", ""] + [f"- {v}" for v in verdicts] + [""]
        notes = tables.Notes(assets)
        headers, cells, under = tables.our_cells(tab, notes)
        caption = " ".join(tables.common_caption(tab) + settings)
        lines += [caption, "", tables.markdown_table(headers, cells), ""]
        first = len(lines)
        lines += [f"- {u}" for u in under] + [f"- {n}" for n in notes.lines()]
        conv = sorted(set(tab.runs["metrics_convention"].astype(str)))
        lines.append(f"- Conventions of this table: {'; '.join(conv)}.")
        if tab.noisy and "consistency" in set(compare.PER_IMAGE) and any(
                "mean" in tab.stats.get((d, "consistency"), {}) for d in tab.runs["run_dir"]):
            lines.append("- Noisy task: the consistency is `‖A(x̂)−y‖²/(Mσ²)` per image, ideal ≈ 1 (the true image's "
                         "expected value); below 1 = the output fits the noise (the noisy input itself scores ~0), "
                         "above 1 = it does not explain y. Not ranked, never bold.")
        thr = tables.throughput_caption(tab.runs)
        lines += [f"- {thr}"] if thr else []
        lines += [f"- {n}" for n in tables.table_notes(tab.runs)]
        for _, d in sub_all[~sub_all["shown"].astype(bool)].iterrows():
            lines.append(f"- duplicate not shown: `{d['run_dir']}` ({int(d['n_images'])} images) = same label, "
                         f"steps and code version as `{d['duplicate_of']}`")
        data["table"] = {"caption": caption, "headers": headers, "rows": cells,
                         "under": [x[2:] for x in lines[first:]]}
        lines.append("")
        paired = tables.paired_cells(tab)
        if paired:
            data["paired"] = {"caption": f"row minus reference. {tables.significance_caption(tab)}",
                              "headers": paired[0], "rows": paired[1]}
            lines += [f"**Paired differences ({dataset} / {task})**: {data['paired']['caption']}", "",
                      tables.markdown_table(*paired), ""]
        companion = papers.paper_table(pv, task, set(tab.runs["method"].astype(str)))
        if companion:
            sig = [float(v) for v in pd.to_numeric(tab.runs["task_sigma"], errors="coerce")]
            lines += [f"**Papers' values ({task})**: transcribed in `bench/report/paper_values.csv`; other images, "
                      "devices and checkpoints: compare trends, not digits.", "", *companion, ""]
            lines += [f"- {c}" for c in papers.paper_caption(pv, task, sig)] + [""]
        stem = f"{dataset}_{task}"
        frame = _common_frame(tab)
        png, svg, cap = figures.tradeoff_figure(frame, fig_dir / f"{stem}_tradeoff",
                                                figures.fid_unavailable_reason(tab.runs), styles=styles,
                                                n_common=tab.n)
        lines += [f"![quality vs throughput, {dataset}/{task}](figures/{png.name})", "",
                  f"*Figure ([SVG](figures/{svg.name})): {cap} Values over the N = {tab.n} common images, as in "
                  "the table.*", ""]
        data.update(frame=frame, figures=[png.name])
        budget = tables.budget_cells(tab)
        if budget:
            png, svg, cap = figures.nfe_figure(frame, fig_dir / f"{stem}_nfe", styles=styles,
                                               n_common=tab.n)
            data["budget"] = {"caption": budget[2], "headers": budget[0], "rows": budget[1]}
            data["figures"].append(png.name)
            lines += [f"**Best at ≤ N NFE ({dataset} / {task})**: {budget[2]}", "",
                      tables.markdown_table(budget[0], budget[1]), "",
                      f"![quality vs NFE, {dataset}/{task}](figures/{png.name})", "",
                      f"*Figure ([SVG](figures/{svg.name})): {cap} Values over the N = {tab.n} common images, as "
                      "in the table.*", ""]
        best: dict[str, object] = {}
        for d in tab.runs["run_dir"]:
            run = by_dir[d]
            label = str(tab.row(d)["label"])
            cur = best.get(label)
            if cur is None or (run.steps or -1) > (cur.steps or -1):
                best[label] = run
        cols = [(f"{lab}, {r.steps} steps" if r.steps is not None else lab, r) for lab, r in sorted(best.items())]
        ref = dm.reference_dir_of(root, cols[0][1])
        base = dict(zip(tab.runs["label"].astype(str), tab.runs["base_label"].astype(str)))
        colours = [(styles or figures.style_map(base.values()))[base[lab]][0] for lab in sorted(best)]
        grids, _ = figures.sample_grid(cols, ref if ref.is_dir() else None, fig_dir / f"{stem}_grid.png",
                                       opts.grid_rows, colors=colours)
        lines += [ln for g in grids for ln in (f"![samples {dataset}/{task}](figures/{g.name})", "")]
        data.update(reference=ref if ref.is_dir() else None, runs={d: by_dir[d] for d in tab.runs["run_dir"]})
        lines += [f"*Samples: rows = ground truth, degraded input, then each method at its largest step count "
                  f"(swatch = its colour in the figure); columns = the first {opts.grid_rows} image ids common to "
                  f"all runs (per-tile PSNR / LPIPS underneath), then a {figures.ZOOM}x zoom of the centre of the "
                  "first; tiles upscaled nearest-neighbour.*", ""]
    else:
        lines += ["No finished run of this (dataset, task).", ""]
    lines += [f"- skipped: {s}" for s in data["skipped"]]
    return lines + ([""] if skip else []), data


def _missing_assets(assets: dict) -> list[str]:
    if not assets:
        return []
    return ["## Missing assets", "", "Columns that need these are n/a in the tables below (the reason is named once "
            "here):", ""] + [f"- {name}: {fix}." for name, fix in sorted(assets.items())] + [""]


def build_report(opts: ReportOptions) -> Path:
    """Write ``<out>/<name>/{README.md, runs.csv, runs.parquet, figures/}`` (and ``index.html``, ``browser/``,
    ``thumbs/`` with ``opts.html``); returns the report folder."""
    import pandas as pd

    from bench.report import aggregate, dataset_metrics, figures, papers
    from bench.report.parallel import check_jobs, pmap

    jobs = check_jobs(opts.jobs)
    root = Path(opts.results).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"results root {opts.results} does not exist. Fix: pass --results <folder> "
                                "that `python -m bench` wrote (run.results_root)")
    runs = aggregate.scan(root, jobs)
    tuning = [] if opts.validation else [r for r in runs if r.split == "validation"]
    runs = [r for r in runs if r not in tuning]
    skipped = aggregate.scan_skipped(root)
    if not runs and not skipped:
        raise FileNotFoundError(f"no runs (run folders with manifest.json and rows/) and no SKIPPED.json cells "
                                f"under {opts.results}")
    res = dataset_metrics.Resources(opts.inception_weights, opts.niqe_params, opts.nrqm_weights, opts.device,
                                    opts.niqe_variant, opts.niqe_crop_border)
    dmetrics = dataset_metrics.all_dataset_metrics(root, runs, res)
    values = {r.dir.relative_to(root).as_posix(): {m: aggregate.per_image_values(r, m, dmetrics.get(r.dir, {}))
                                                   for m in aggregate.PER_IMAGE} for r in runs}
    df = aggregate.tidy_table(runs, dmetrics, root, n_boot=opts.bootstrap, seed=opts.seed, jobs=jobs, values=values)
    for col in [c for c in df.columns if c.endswith("_na")]:  # reasons: one line, no absolute paths
        df[col] = df[col].map(lambda v: dataset_metrics.short_reason(v) if isinstance(v, str) else v)

    out = Path(opts.out) / opts.name
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "runs.csv", df.to_csv(index=False, lineterminator="\n").encode())
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "runs.parquet", buf.getvalue())

    pv = papers.load_paper_values()
    cmd = (f"python -m bench.report --results {_results_arg(opts.results)} --name {opts.name} "
           f"--bootstrap {opts.bootstrap}")
    lines = [f"# Benchmark report: {opts.name}", "",
             f"{len(df)} runs and {len(skipped)} skipped cells, regenerated with `{cmd}` (plus the weights "
             "options for FID/NIQE/PI). One table per (dataset, task) below; every run in `runs.csv`."
             + (f" {len(tuning)} runs on validation splits ({', '.join(sorted({r.dataset for r in tuning}))}: "
                "`python -m bench.tune`'s trials and official baselines) are left out; `--validation` includes "
                "them." if tuning else ""), ""]
    lines += _conventions(opts)
    keys = sorted({(d, t) for d, t in zip(df.get("dataset", []), df.get("task", []))}
                  | {(s["dataset"], s["task"]) for s in skipped})
    assets: dict[str, str] = {}
    styles = figures.style_map(df["base_label"]) if len(df) else {}  # a colour and marker per method, report-wide

    def section(key):  # in a worker process when jobs > 1: what it adds to `assets` and COUNTS comes back
        sub = df[(df["dataset"] == key[0]) & (df["task"] == key[1])] if len(df) else pd.DataFrame()
        mine, counts = {}, dataset_metrics.COUNTS.copy()
        part, data = _section(key, sub, pv, runs, root, fig_dir, opts, values, skipped, res, mine, styles)
        added = dataset_metrics.COUNTS - counts
        dataset_metrics.COUNTS.subtract(added)  # the caller adds it back: once, in this process or a worker
        return part, data, mine, added

    body, sections = [], []
    for part, data, mine, added in pmap(section, keys, jobs):
        body += part
        sections.append(data)
        for name, fix in mine.items():
            assets.setdefault(name, fix)
        dataset_metrics.COUNTS.update(added)
    lines += _missing_assets(assets) + body
    atomic_write_bytes(out / "README.md", ("\n".join(lines).rstrip() + "\n").encode())
    if opts.html:
        from bench.report import html

        html.write_site(out, root, sections, values, styles, title=lines[0][2:], intro=lines[2],
                        assets=_missing_assets(assets)[4:])
    if opts.wandb_project:
        from bench.loggers import log_report_to_wandb

        log_report_to_wandb(root, runs, df, project=opts.wandb_project)
    return out
