"""``python -m bench.verify [RUN_DIR|RESULTS_ROOT]``: check stored results against the files on disk
(default: ``results``, the default ``run.results_root``).

For every run (a folder holding ``manifest.json``; ``.replaced/``, ``.multirun/`` and other dot-folders are
skipped) and every row in ``rows/``:

* the row is readable JSON of its image;
* ``images/<id>.png`` and ``degraded/<id>.png`` match the sha256 and size the row records;
* the ground truth ``_reference/<size>-<sha8>/<id>.png`` matches its ``<id>.png.sha256`` record;
* the full-reference metrics, recomputed from those PNGs with the code and the conventions the run used
  (:class:`bench.metrics.per_image.PerImageMetrics` built from the manifest's ``metrics.config``: channel,
  border crop, LPIPS net and weights), equal the stored ones: PSNR / SSIM to ``--atol`` (default 1e-6),
  LPIPS (a float32 network, batch composition differs) to ``--lpips-atol`` (default 1e-4). LPIPS is
  skipped when the run stored none or its weights are not available here (said in a note).

Every problem is printed with the run and the image; the exit code is 0 when there is none, 1 otherwise
(2: nothing to verify at that path). Notes that are not errors (rows a resume set aside in
``rows/.quarantine/``, images without a row from an interrupted run, a ``per_image.parquet`` older than
``rows/``) are printed too. A damaged run is repaired by rerunning its command (resume redoes what fails
these checks).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.imageio import read_png_u8
from bench.results import check_row, read_json, reference_problem, run_reference_dir

CHECKED = ("psnr", "ssim", "lpips")
#: checked when no path is given (relative to the working directory), as ``python -m bench.report --results``
DEFAULT_ROOT = Path("results")


@dataclass
class RunReport:
    dir: Path
    images: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a run, else every run below it (not under dot-folders)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return [path]
    runs = []
    for man in sorted(path.rglob("manifest.json")):
        rel = man.parent.relative_to(path).parts
        if any(p.startswith(".") for p in rel) or "_reference" in rel:
            continue
        runs.append(man.parent)
    return runs


def _close(stored, recomputed: float, atol: float) -> bool:
    if stored is None:
        return False
    stored = float(stored)
    if math.isnan(stored) or math.isnan(recomputed):
        return math.isnan(stored) and math.isnan(recomputed)
    return math.isclose(stored, recomputed, rel_tol=0.0, abs_tol=atol) or stored == recomputed


def _metrics_of(man: dict, built: dict | None = None):
    """The run's per-image metric computer (old manifests without a ``config``: the defaults, no LPIPS);
    ``built`` holds the ones made already, by configuration (runs of one sweep share one: LPIPS loads once)."""
    from bench.metrics.per_image import MetricsConfig, PerImageMetrics

    cfg = (man.get("metrics") or {}).get("config")
    config = MetricsConfig(**cfg) if cfg else MetricsConfig(lpips_net=None)
    built = {} if built is None else built
    if config not in built:
        built[config] = PerImageMetrics(config, "cpu")
    return built[config]


def verify_run(run_dir: Path, atol: float = 1e-6, lpips_atol: float = 1e-4,
               metrics_built: dict | None = None) -> RunReport:
    """Check one run (module docstring); ``metrics_built`` reuses metric computers across runs."""
    rep = RunReport(Path(run_dir))
    try:
        man = read_json(run_dir / "manifest.json")
        ref_dir = run_reference_dir(run_dir, man)
        metrics = _metrics_of(man, metrics_built)
    except (OSError, ValueError, KeyError, TypeError) as err:
        rep.problems.append(f"manifest.json is unreadable ({err})")
        return rep
    lpips_skipped = 0
    rows = {}
    for path in sorted((run_dir / "rows").glob("*.json")):
        row, problem = check_row(run_dir, path)
        rows[path.stem] = row  # load_row checked that the row's id is its file's stem
        if problem is not None:
            rep.problems.append(problem if row is None else f"{row['id']}: {problem}")
            continue
        rep.images += 1
        if not row.get("reference"):
            continue  # unpaired data: no full-reference metrics to recompute
        ref = ref_dir / f"{row['id']}.png"
        problem = reference_problem(ref)
        if problem is not None:
            rep.problems.append(f"{row['id']}: {problem}")
            continue
        values = metrics.full_reference(read_png_u8(run_dir / "images" / f"{row['id']}.png")[None],
                                        read_png_u8(ref)[None])
        for name in CHECKED:
            stored, got = row.get(name), values[name][0]
            if name == "lpips" and (stored is None or got is None):
                lpips_skipped += stored is not None  # stored, but its weights are not available here
                continue
            if stored is None or got is None:
                if stored is not got:
                    rep.problems.append(f"{row['id']}: stored {name}={stored!r}, recomputed {got!r}")
                continue
            if not _close(stored, float(got), lpips_atol if name == "lpips" else atol):
                rep.problems.append(f"{row['id']}: stored {name}={stored!r}, recomputed from the PNGs "
                                    f"{float(got)!r}")
    if lpips_skipped:
        rep.notes.append(f"LPIPS of {lpips_skipped} images not rechecked: {metrics.lpips_na}")
    _notes(run_dir, rows, rep)
    return rep


def _notes(run_dir: Path, rows: dict, rep: RunReport) -> None:
    quarantined = list((run_dir / "rows" / ".quarantine").glob("*"))
    if quarantined:
        rep.notes.append(f"{len(quarantined)} row file(s) set aside by a resume in rows/.quarantine/")
    orphans = sorted(p.stem for p in (run_dir / "images").glob("*.png") if p.stem not in rows)
    if orphans:
        rep.notes.append(f"{len(orphans)} image(s) without a row (an interrupted run; a rerun redoes them): "
                         f"{', '.join(orphans[:5])}")
    table = run_dir / "per_image.parquet"
    if table.is_file() and rows:
        df = pd.read_parquet(table)
        stale = set(rows) - set(df["id"].astype(str)) if "id" in df else set(rows)
        if stale:
            rep.notes.append(f"per_image.parquet lacks {len(stale)} row(s) of rows/ (rebuilt at the end of the "
                             "next run; reports read rows/)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("path", type=Path, nargs="?", default=None,
                   help=f"a run directory or a results root (run.results_root; default: {DEFAULT_ROOT})")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance of recomputed PSNR / SSIM")
    p.add_argument("--lpips-atol", type=float, default=1e-4, help="absolute tolerance of recomputed LPIPS")
    a = p.parse_args(argv)
    if a.path is None:
        a.path = DEFAULT_ROOT
        if not a.path.is_dir():
            print(f"error: no results folder {str(a.path)!r} in {str(Path.cwd())!r} (the default: "
                  "run.results_root of python -m bench). Fix: run from the folder you launched python -m bench "
                  "in, or pass the results root or a run directory: python -m bench.verify PATH", file=sys.stderr)
            return 2
    if not a.path.exists():
        print(f"error: {str(a.path)!r} does not exist. Fix: pass a run directory or a results root.", file=sys.stderr)
        return 2
    runs = find_runs(a.path)
    if not runs:
        print(f"error: no runs (folders with manifest.json) under {str(a.path)!r}. Fix: pass the results root "
              "that `python -m bench` wrote (run.results_root) or one run directory in it.", file=sys.stderr)
        return 2
    n_problems = n_images = 0
    built: dict = {}  # metric computers by configuration, shared by the runs
    for run in runs:
        rep = verify_run(run, a.atol, a.lpips_atol, built)
        n_problems += len(rep.problems)
        n_images += rep.images
        print(f"{'OK  ' if not rep.problems else 'FAIL'} {run} ({rep.images} images verified)")
        for msg in rep.problems:
            print(f"     problem: {msg}")
        for msg in rep.notes:
            print(f"     note: {msg}")
    print(f"{len(runs)} run(s), {n_images} image(s) verified, {n_problems} problem(s)"
          + ("" if not n_problems else ": rerun the failing runs' commands (resume redoes damaged images)"))
    return 1 if n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
