"""``python -m bench.report --results results --name main``: build ``reports/<name>/`` from a results root.

Examples::

    python -m bench.report --results results --name main
    python -m bench.report --results results --name main --inception-weights ~/weights-inception-2015-12-05-6726825d.pth
    python -m bench.report --results results --name lol --niqe-params ../shared/data/niqe/niqe_pris_params.npz
    python -m bench.report --results results --name main --jobs 1    # no worker processes

Missing weights never stop the report: the affected metric is shown as ``n/a (<what to place where>)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import ReportOptions, build_report

#: used when --niqe-params is not given and this file exists (relative to the working directory)
DEFAULT_NIQE = Path("../shared/data/niqe/niqe_pris_params.npz")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="results root (run.results_root)")
    p.add_argument("--name", default="main", help="report name: writes <out>/<name>/")
    p.add_argument("--out", type=Path, default=Path("reports"), help="reports folder (default: reports)")
    p.add_argument("--inception-weights", type=Path, default=None,
                   help="FID Inception weights file (default: the hash-pinned asset in $BENCH_CACHE)")
    p.add_argument("--niqe-params", type=Path, default=None,
                   help=f"BasicSR niqe_pris_params.npz (default: {DEFAULT_NIQE} if it exists)")
    p.add_argument("--nrqm-weights", type=Path, default=None, help="pyiqa NRQM_model.mat for the Ma half of PI")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--device", default="cpu", help="device for the Inception network (cpu, cuda)")
    p.add_argument("--grid-rows", type=int, default=4, help="image ids per sample grid")
    p.add_argument("--niqe-variant", default="matlab", choices=["matlab", "basicsr_pre2021"],
                   help="NIQE definition: matlab (rounded Y, MATLAB / current BasicSR) or basicsr_pre2021")
    p.add_argument("--niqe-crop-border", type=int, default=4, help="pixels cut from each side before NIQE/PI "
                   "(PIRM / GDP's evaluator: 4)")
    p.add_argument("--wandb", metavar="PROJECT", default=None,
                   help="also log each run's dataset-level metrics to its W&B run in PROJECT (WANDB_MODE applies)")
    p.add_argument("--validation", action="store_true",
                   help="also report runs on validation splits (dataset.split=validation: bench.tune's trials), "
                        "which are left out by default")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes for checking the stored files, the intervals and the (dataset, task) "
                        "sections (default: the usable CPU cores; 1 = all in this process); the report is "
                        "byte-identical for every N")
    p.add_argument("--no-html", dest="html", action="store_false",
                   help="skip the browsable index.html (written by default beside README.md; docs/results-browser.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    niqe = a.niqe_params if a.niqe_params is not None else (DEFAULT_NIQE if DEFAULT_NIQE.is_file() else None)
    opts = ReportOptions(results=a.results, name=a.name, out=a.out, inception_weights=a.inception_weights,
                         niqe_params=niqe, nrqm_weights=a.nrqm_weights, bootstrap=a.bootstrap, seed=a.seed,
                         device=a.device, grid_rows=a.grid_rows, niqe_variant=a.niqe_variant,
                         niqe_crop_border=a.niqe_crop_border, wandb_project=a.wandb,
                         validation=a.validation, html=a.html, jobs=a.jobs)
    try:
        out = build_report(opts)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[bench.report] wrote {out / 'README.md'}" + (f" and {out / 'index.html'}" if a.html else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
