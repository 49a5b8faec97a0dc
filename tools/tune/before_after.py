"""Official settings vs tuned preset on the TEST photos, per (task, steps, method): the acceptance table of the
shipped presets (docs/tuning.md "The shipped presets"). Reads stored runs only (the budget experiment, with
and without tuned=official, made them); for each cell the newest run of each kind, compared on the images
both hold, against the task's baseline row (bicubic: the degraded input itself for deblur_gauss, inpaint and
denoise, bicubic upscaling for sr4).

    python -m bench -m +experiment=budget steps=20
    python -m bench -m +experiment=budget steps=20 tuned=official
    python -m bench -m method=bicubic task=sr4,deblur_gauss,inpaint,denoise dataset=sample_val dataset.limit=4
    python tools/tune/before_after.py results --presets tuned/adm64_imagenet96 --out reports/tuning/embedded_20steps.md
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


def table(root: Path, dataset: str, steps: int | None = None) -> tuple[list[str], int]:
    runs = [r for r in scan(root) if r.dataset == dataset and (steps is None or r.steps in (steps, None))]
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


def study_seconds(storage: str) -> float:
    """Wall time of a study's trials, from its journal (the official run not included)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    st = optuna.storages.JournalStorage(JournalFileBackend(storage))
    total = 0.0
    for summary in optuna.get_all_study_summaries(st):
        for t in optuna.load_study(study_name=summary.study_name, storage=st).get_trials():
            if t.datetime_complete and t.datetime_start:
                total += (t.datetime_complete - t.datetime_start).total_seconds()
    return total


def presets_table(root: Path, presets: Path, steps: int | None = None) -> list[str]:
    """Each shipped preset: values, validation PSNR of the chosen settings vs official, and the validation
    split's bicubic / degraded-input PSNR on the same images (what 'no setting reaches it' is measured against)."""
    import yaml

    bicubic = {r.task: r for r in scan(root) if r.dataset == "sample_val" and r.method == "bicubic"}
    lines = ["| cell | values | trials (pruned) | trial time | validation PSNR: chosen | official | "
             "input / bicubic |", "|---|---|---|---|---|---|---|"]
    total = 0.0
    for path in sorted(presets.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        prov, cell = doc["provenance"], doc["cell"]
        if steps is not None and cell["steps"] != steps:
            continue
        secs = study_seconds(prov["storage"]) if Path(prov["storage"]).is_file() else float("nan")
        total += 0 if secs != secs else secs
        base = bicubic.get(cell["task"])
        b = mean_psnr(base, set(prov["ids"]) & set(base.ids)) if base is not None else float("nan")
        vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in doc["values"].items())
        lines.append(f"| {cell['method']} x {cell['task']} @ {cell['steps']} | {vals} | {prov['trials']} "
                     f"({prov['pruned']}) | {secs:.0f} s | {prov['value']:.2f} ({prov['chosen']}) | "
                     + ("skips the cell" if prov["official_value"] is None else f"{prov['official_value']:.2f}")
                     + f" | {b:.2f} |")
    lines.append(f"\nTrial time of all studies: {total / 60:.1f} min (the sum over trials, each one process with 1 "
                 "torch thread; a study with parallel workers counts each worker's time).")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--dataset", default="sample")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--presets", type=Path, default=None, help="also list these presets (e.g. tuned/adm64_imagenet96)")
    ap.add_argument("--steps", type=int, default=None, help="only the cells of this step budget (default: all)")
    a = ap.parse_args(argv)
    lines, failures = table(a.results, a.dataset, a.steps)
    text = "\n".join(lines) + f"\n\n{failures} cell(s) fail the acceptance rule (beat the input; sr4: within " \
                              f"{MARGIN_SR} dB of bicubic).\n"
    if a.presets:
        text += "\n" + "\n".join(presets_table(a.results, a.presets, a.steps)) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
