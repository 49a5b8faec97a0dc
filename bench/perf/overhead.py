"""``python -m bench.perf.overhead RUN_DIR``: how much of a run's wall time lies outside the restore call.

Reads one finished run directory of ``python -m bench`` (a fresh run: one invocation) and reports

* ``restore_seconds_all``: the sum of every batch's restore time, warm-up batch (compilation) included,
  from the per-image rows (each row stores its batch's restore time / batch size);
* ``loop_seconds``: the runner's ``seconds.total`` (from the first batch to the last row written, the
  writer thread drained);
* ``outside_seconds`` = loop - restore_all: what the harness adds around the sampler (data decoding,
  degradation, device -> host copies, GPU metrics, the writer-thread warm-up and the final drain of PNG
  writes), and ``outside_fraction`` = outside / restore_all (issue 16's target: <= 0.10);
* the runner's per-phase seconds (``degrade``, ``metrics``, ``io``, ``writer_warmup``; ``io`` and CPU
  ``metrics`` partly run on the writer thread, overlapping sampling, so phases do not add up to
  ``outside``) and the one-time ``load`` (method.setup: checkpoint read + verification), reported apart
  since it does not scale with the dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

TARGET = 0.10


def breakdown(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    timings = [json.loads(p.read_text()) for p in sorted((run_dir / "timing").glob("*.json"))]
    if len(timings) != 1:
        raise ValueError(f"{run_dir}: {len(timings)} timing records; bench.perf.overhead needs a fresh run (exactly "
                         "one invocation). Fix: run into an empty run.results_root")
    (t,) = timings
    rows = pd.read_parquet(run_dir / "per_image.parquet")
    restore_all = float(rows["restore_seconds"].sum())
    loop = float(t["seconds"]["total"])
    outside = loop - restore_all
    return {
        "run": str(run_dir), "images": int(len(rows)), "batch_size": t.get("batch_size"),
        "device_name": t.get("device_name"), "images_per_s_timed": t.get("images_per_s"),
        "restore_seconds_all": restore_all, "restore_seconds_timed": t.get("restore_seconds"),
        "loop_seconds": loop, "outside_seconds": outside,
        "outside_fraction": outside / restore_all if restore_all > 0 else float("inf"),
        "target_fraction": TARGET, "met": outside <= TARGET * restore_all,
        "phases_seconds": {k: v for k, v in t["seconds"].items() if k != "total"},
        "end_to_end_images_per_s": len(rows) / loop if loop > 0 else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write the breakdown as JSON (atomic)")
    args = ap.parse_args(argv)
    try:
        rec = breakdown(args.run_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is not None:
        from bench.results import write_json

        write_json(args.out, rec)
    print(json.dumps(rec, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
