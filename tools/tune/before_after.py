"""Official settings vs tuned preset on the TEST photos, per (task, steps, method): the acceptance table of the
shipped presets (docs/tuning.md "The shipped presets"). Reads stored runs only (the budget experiment, with
and without tuned=official, made them); for each cell the newest run of each kind, compared on the images
both hold, against the task's baseline row (bicubic: the degraded input itself for deblur_gauss, inpaint and
denoise, bicubic upscaling for sr4).

    python -m bench -m +experiment=budget steps=20
    python -m bench -m +experiment=budget steps=20 tuned=official
    python tools/tune/before_after.py results --dataset sample --out reports/tuning/embedded_before_after.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report.aggregate import scan
from bench.tuned import label

MARGIN_SR = 0.5  # dB: on sr4 a solver passes within this of bicubic (a strong PSNR baseline at 16 -> 64 px)


def newest(runs):
    return max(runs, key=lambda r: str(r.manifest.get("created_at", "")))


def mean_psnr(run, ids) -> float:
    rows = run.rows.set_index("id")
    return float(rows.loc[sorted(ids), "psnr"].astype(float).mean())


def table(root: Path, dataset: str) -> tuple[list[str], int]:
    runs = [r for r in scan(root) if r.dataset == dataset]
    cells: dict = {}
    for r in runs:
        kind = "tuned" if isinstance(r.manifest.get("tuned"), dict) else "official"
        cells.setdefault((r.task, r.steps, r.method), {}).setdefault(kind, []).append(r)
    lines = ["| task | steps | method | official PSNR | tuned PSNR | tuned - official | baseline PSNR | "
             "tuned - baseline | pass | settings |", "|---|---|---|---|---|---|---|---|---|---|"]
    failures = 0
    for (task, steps, method), kinds in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
        if method == "bicubic" or "tuned" not in kinds:
            continue
        base_runs = cells.get((task, None, "bicubic"), {}).get("official")
        tuned = newest(kinds["tuned"])
        official = newest(kinds["official"]) if "official" in kinds else None
        ids = set(tuned.ids)
        for other in (official, newest(base_runs) if base_runs else None):
            if other is not None:
                ids &= set(other.ids)
        t = mean_psnr(tuned, ids)
        o = mean_psnr(official, ids) if official is not None else float("nan")
        b = mean_psnr(newest(base_runs), ids) if base_runs else float("nan")
        ok = t > b if task != "sr4" else t > b - MARGIN_SR
        failures += not ok
        lines.append(f"| {task} | {steps} | {method} | {o:.2f} | {t:.2f} | {t - o:+.2f} | {b:.2f} "
                     f"({'bicubic' if task == 'sr4' else 'input'}) | {t - b:+.2f} | {'yes' if ok else 'NO'} | "
                     f"{label(tuned.manifest.get('tuned'))}, N={len(ids)} |")
    return lines, failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--dataset", default="sample")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    lines, failures = table(a.results, a.dataset)
    text = "\n".join(lines) + f"\n\n{failures} cell(s) fail the acceptance rule (beat the input; sr4: within " \
                              f"{MARGIN_SR} dB of bicubic).\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
