"""Scan a results root into runs, and build the tidy one-row-per-run table.

* :func:`scan` finds every run directory ``<root>/<dataset>/<task>/<method>/<steps>-<hash8>/`` (one holding a
  ``manifest.json`` and at least one ``rows/<id>.json``) and loads its rows, timing files and config;
  :func:`scan_skipped` lists the ``SKIPPED.json`` cells.
* :func:`bootstrap_ci`: percentile bootstrap over images (``n_boot`` resamples with replacement, 95 %),
  seeded per (report seed, run hash, metric) with a local ``numpy.random.default_rng`` so every report of the
  same inputs prints the same intervals.
* :func:`tidy_table`: per-image metric means + CI bounds, throughput (images-weighted over the timing files:
  sum timed_images / sum restore_seconds), NFE/image, peak memory, device, batch size, and the dataset-level
  metrics computed by :mod:`bench.report.dataset_metrics` (numbers, or ``<metric>_na`` reasons).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.results import load_rows, read_json, reference_dir, reference_problem, timing_summary

#: per-image metrics stored in rows/*.json by the run, and computed per image at report time
ROW_METRICS = ("psnr", "ssim")
REPORT_PER_IMAGE = ("loe", "niqe", "pi")
CI_LEVEL = 0.95


@dataclass
class Run:
    dir: Path
    dataset: str
    task: str
    method: str
    steps: int | None
    hash: str
    manifest: dict
    config: dict
    rows: pd.DataFrame
    timings: list[dict]
    variant: str = ""  # display label, unique within (dataset, task): set by assign_variants
    extra: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.rows["id"].astype(str).tolist())


def _parse_label(label: str) -> tuple[int | None, str]:
    steps, _, chash = label.rpartition("-")
    if steps.startswith("steps") and steps[5:].isdigit():
        return int(steps[5:]), chash
    return None, chash


def scan(root: Path) -> list[Run]:
    """Every run with at least one finished image, sorted by (dataset, task, method, steps, hash)."""
    runs = []
    for man in sorted(Path(root).glob("*/*/*/*/manifest.json")):
        d = man.parent
        dataset, task, method = d.parts[-4], d.parts[-3], d.parts[-2]
        if dataset.startswith(".") or task == "_reference":
            continue
        good, problems = checked_rows(root, d)
        for msg in problems:
            warnings.warn(f"{d.relative_to(root)}: left out of the report: {msg}. Fix: rerun the cell's command "
                          "(resume redoes it) and check with `python -m bench.verify`", stacklevel=2)
        if not good:
            continue
        rows = pd.DataFrame(good)
        rows["id"] = rows["id"].astype(str)
        rows = rows.sort_values("id").reset_index(drop=True)
        steps, chash = _parse_label(d.name)
        cfg_path = d / "config.yaml"
        config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
        timings = [read_json(p) for p in sorted((d / "timing").glob("*.json"))]
        runs.append(Run(d, dataset, task, method, steps, chash, read_json(man), config or {}, rows, timings))
    assign_variants(runs)
    runs.sort(key=lambda r: (r.dataset, r.task, r.variant, -1 if r.steps is None else r.steps, r.hash))
    return runs


def checked_rows(root: Path, run_dir: Path) -> tuple[list[dict], list[str]]:
    """Rows whose PNGs (and ground truth, where there is one) match their sha256 records, and a message per
    row left out: a damaged run is reported without its damaged images instead of crashing the report."""
    try:
        man = read_json(run_dir / "manifest.json")
        d = man["dataset"]
        ref = reference_dir(root, run_dir.parts[-4], d.get("image_size"), str(d["manifest_sha256"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [], [f"manifest.json is unreadable ({err})"]
    rows, problems = load_rows(run_dir, check_files=True)
    good = []
    for row in rows:
        problem = reference_problem(ref / f"{row['id']}.png") if row.get("reference") else None
        if problem is None:
            good.append(row)
        else:
            problems.append(f"{row['id']}: {problem}")
    return good, problems


def scan_skipped(root: Path) -> list[dict]:
    out = []
    for p in sorted(Path(root).glob("*/*/*/SKIPPED.json")):
        rec = read_json(p)
        out.append({"dataset": p.parts[-4], "task": p.parts[-3], "method": p.parts[-2],
                    "reason": str(rec.get("reason", ""))})
    return out


# --------------------------------------------------------------------------- method variants
def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True, default=str)
    return out


def _variant_config(cfg: dict) -> dict:
    """What distinguishes configurations of one method on one task, except the step count: the method's
    hyper-parameters (its prior included), the task parameters and the seed (not the execution knobs)."""
    flat = _flatten({k: v for k, v in cfg.items() if k in ("method", "task", "seed")})
    return {k: v for k, v in flat.items() if k != "method.steps"}


def assign_variants(runs: list[Run]) -> None:
    """Label each run ``method`` or, when one (dataset, task, method) holds several configurations besides
    the step count, ``method (key=value, ...)`` with the keys that differ (``method.`` prefix dropped)."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.task, r.method), []).append(r)
    for group in groups.values():
        flats = [_variant_config(r.config) for r in group]
        keys = sorted({k for f in flats for k in f})
        differ = [k for k in keys if len({f.get(k) for f in flats}) > 1]
        for r, f in zip(group, flats):
            if not differ:
                r.variant = r.method
                continue
            parts = [f"{k.removeprefix('method.')}={json.loads(f[k]) if k in f else None}" for k in differ]
            r.variant = f"{r.method} ({', '.join(parts)})"


# --------------------------------------------------------------------------- statistics
def stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of the finite ``values`` and its percentile bootstrap interval.

    ``n_boot`` resamples of the images with replacement, drawn from ``numpy.random.default_rng(seed)``;
    ``lo``/``hi`` are the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled means. With fewer
    than 2 finite values (or ``n_boot == 0``) the interval is ``(nan, nan)``.
    """
    v = np.asarray([x for x in np.asarray(values, dtype=np.float64).ravel() if math.isfinite(x)])
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2 or n_boot <= 0:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(n_boot), v.size))
    means = v[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return mean, float(lo), float(hi)


def _row_values(run: Run, metric: str) -> list[float]:
    if metric not in run.rows:
        return []
    vals = pd.to_numeric(run.rows[metric], errors="coerce").astype("float64")
    return [float(x) for x in vals if math.isfinite(x)]


def tidy_table(runs: list[Run], dmetrics: dict[Path, dict], root: Path, n_boot: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """One row per run (see the module docstring); ``dmetrics[run.dir]`` from ``dataset_metrics``."""
    records = []
    for r in runs:
        rec = {"dataset": r.dataset, "task": r.task, "method": r.method, "variant": r.variant,
               "steps": r.steps, "hash": r.hash, "run_dir": r.dir.relative_to(root).as_posix(),
               "n_images": len(r.rows)}
        has_gt = "reference" in r.rows and r.rows["reference"].notna().any()
        for m in ROW_METRICS:
            mean, lo, hi = bootstrap_ci(_row_values(r, m), n_boot, stable_seed(seed, r.hash, m))
            rec.update({f"{m}_mean": mean, f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
            rec[f"{m}_na"] = "" if math.isfinite(mean) else (
                "no ground truth (unpaired data)" if not has_gt else "no finite values")
        dm = dmetrics.get(r.dir, {})
        for m in REPORT_PER_IMAGE:
            entry = dm.get(m)
            if entry is None:
                continue
            if "na" in entry:
                rec.update({f"{m}_mean": math.nan, f"{m}_ci_lo": math.nan, f"{m}_ci_hi": math.nan,
                            f"{m}_na": entry["na"]})
                continue
            vals = [entry["per_image"][i] for i in sorted(entry["per_image"])]
            mean, lo, hi = bootstrap_ci(vals, n_boot, stable_seed(seed, r.hash, m))
            rec.update({f"{m}_mean": mean, f"{m}_ci_lo": lo, f"{m}_ci_hi": hi, f"{m}_na": ""})
        fid = dm.get("fid")
        if fid is not None:
            if "na" in fid:
                rec.update({"fid": math.nan, "kid_mean": math.nan, "kid_std": math.nan, "fid_n": np.nan,
                            "fid_warning": "", "fid_extractor_sha256": "", "fid_na": fid["na"]})
            else:
                v = fid["value"]
                rec.update({"fid": v["fid"], "kid_mean": v["kid_mean"], "kid_std": v["kid_std"],
                            "fid_n": min(v["n_real"], v["n_fake"]), "fid_warning": v.get("warning") or "",
                            "fid_extractor_sha256": v["extractor_sha256"], "fid_na": ""})
        rec.update(timing_summary(r.timings))
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if not df.empty:
        df["steps"] = df["steps"].astype("Int64")
        if "fid_n" in df:
            df["fid_n"] = df["fid_n"].astype("Int64")
    return df
