"""Scan a results root into runs, and build the tidy one-row-per-run table.

* :func:`scan` finds every run directory ``<root>/<dataset>/<task>/<method>/<steps>-<hash8>/`` (one holding a
  ``manifest.json`` and at least one ``rows/<id>.json``) and loads its rows, timing files, config and the
  context a reader needs: code version, prior, task sigma, seed, images finished / expected;
  :func:`scan_skipped` lists the ``SKIPPED.json`` cells.
* :func:`assign_variants` labels configurations of one method; :func:`mark_shown` collapses duplicates.
* **Settings**: a run used its method's official hyper-parameters or a tuned preset (``tuned`` in the manifest,
  :mod:`bench.tuned`; a run without the key predates presets: official). ``settings`` in the table is
  :func:`bench.tuned.label` ("official settings", "tuned on <split> (<n> trials)"), ``tuned_sha256`` the
  preset's sha256. A tuned run is its own row, labelled ``<method> (tuned)`` (its preset's values do not count
  as a configuration difference: the label says "tuned" instead of listing them); ``base_label`` = the label
  without the settings, which keys the method's colour in the figures.
* :func:`tidy_table`: per-image metric means + 95 % BCa intervals (:mod:`bench.report.stats`, seeded by the
  cell identity), throughput (images-weighted over the timing files: sum timed_images / sum restore_seconds),
  NFE/image, wall time, peak memory, device, and the dataset-level metrics of
  :mod:`bench.report.dataset_metrics` (numbers, or ``<metric>_na`` reasons).

Rules (documented in the report's "Conventions"):

* **Code versions are never averaged**: every run is its own row, labelled with its code version
  (``manifest["code"]["fingerprint"]``, else ``git:<commit[:8]>``); a table holding one (variant, steps)
  under several code versions shows the version in the label, and figures draw each version separately.
* **Duplicates** (same variant, steps and code version in different run directories: the run identity
  makes that rare - a run directory copied or merged in from elsewhere, or runs of an older version that
  hashed unused keys) are collapsed: the run with the most images (then the newest) is
  shown, the others are listed as duplicates of it (``duplicate_of`` in ``runs.csv``).
* **Incomplete** runs (fewer images than the dataset/limit asks for) are shown, marked, never bold.
* **PSNR = inf** (an output identical to its reference) counts as 100 dB in means, intervals and paired
  differences (:data:`bench.metrics.pixel.PSNR_CAP_DB`); the count is kept in ``psnr_capped``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.metrics.pixel import psnr_for_mean
from bench.report.stats import bootstrap_ci, cell_seed
from bench.results import load_rows, read_json, reference_dir, reference_problem, timing_summary

#: per-image metrics stored in rows/*.json by the run, and computed per image at report time
ROW_METRICS = ("psnr", "ssim", "lpips", "consistency", "consistency_psnr", "consistency_gdp")
REPORT_PER_IMAGE = ("loe", "niqe", "pi")
PER_IMAGE = ROW_METRICS + REPORT_PER_IMAGE
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "lpips": True, "consistency": True, "consistency_psnr": False,
                   "consistency_gdp": True, "loe": True, "niqe": True, "pi": True}


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
    variant: str = ""  # display label, unique within (dataset, task, code version): set by assign_variants
    base_variant: str = ""  # the variant without its settings tag ("dps" for "dps (tuned)"): figure colours
    extra: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.rows["id"].astype(str).tolist())

    # ------------------------------------------------------------------ context
    @property
    def code_version(self) -> str:
        return code_version(self.manifest)

    @property
    def prior(self) -> str:
        return prior_label(self.manifest.get("method") or {})

    @property
    def task_sigma(self) -> float:
        v = (self.manifest.get("task") or {}).get("sigma", (self.config.get("task") or {}).get("sigma"))
        return float(v) if v is not None else math.nan

    @property
    def split(self) -> str:
        """The dataset's split as the run's config says (test for runs made before splits were labelled)."""
        return str((self.config.get("dataset") or {}).get("split") or "test")

    @property
    def seed(self):
        s = self.manifest.get("seed")
        return s.get("run") if isinstance(s, dict) else self.config.get("seed")

    @property
    def n_expected(self) -> int:
        """Images this run should hold: the dataset's count, or ``dataset.limit`` when it was limited (never
        fewer than it holds: a later invocation may have raised the limit)."""
        count = (self.manifest.get("dataset") or {}).get("count")
        limit = (self.config.get("dataset") or {}).get("limit")
        total = int(count) if count is not None else len(self.rows)
        if limit is not None:
            total = min(total, int(limit))
        return max(total, len(self.rows))

    @property
    def complete(self) -> bool:
        return len(self.rows) >= self.n_expected

    @property
    def tuned(self) -> dict | None:
        """The applied preset's record (:func:`bench.tuned.apply`), or None for official settings (also runs
        older than presets, which have no ``tuned`` key)."""
        rec = self.manifest.get("tuned", self.config.get("tuned"))
        return rec if isinstance(rec, dict) else None

    @property
    def settings(self) -> str:
        """Where the hyper-parameters came from, in the report's words (:func:`bench.tuned.label`)."""
        from bench.tuned import label

        return label(self.tuned)

    @property
    def tuned_sha256(self) -> str:
        return str((self.tuned or {}).get("sha256") or "")

    @property
    def forced_test_split(self) -> bool:
        """True when the preset was tuned on a test split (``tune.allow_test_split=true``)."""
        return bool(((self.tuned or {}).get("split") or {}).get("forced_test_split"))

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    def values(self, metric: str) -> dict[str, float]:
        """Per-image values of a stored metric (PSNR capped as the report's means use it), finite only."""
        return row_values(self.rows, metric)


def row_values(rows: pd.DataFrame, metric: str) -> dict[str, float]:
    """``{id: value}`` of a stored metric in a run's rows, finite only, PSNR capped (:func:`psnr_for_mean`):
    what the report's means use (and the CLI's / W&B's run summary)."""
    if metric not in rows:
        return {}
    vals = pd.to_numeric(rows[metric], errors="coerce").astype("float64").tolist()
    if metric == "psnr":
        vals = psnr_for_mean(vals)
    return {i: v for i, v in zip(rows["id"].astype(str), vals) if math.isfinite(v)}


def code_version(manifest: dict) -> str:
    """``manifest["code"]["fingerprint"][:12]`` (helper i12a's code identity), else ``git:<commit[:8]>`` with
    ``+dirty`` for uncommitted changes, else ``unknown``."""
    code = manifest.get("code") or {}
    if code.get("fingerprint"):
        return str(code["fingerprint"])[:12]
    git = manifest.get("git") or {}
    if git.get("commit"):
        return f"git:{str(git['commit'])[:8]}{'+dirty' if git.get('dirty') else ''}"
    return "unknown"


_EMBEDDED = re.compile(r"bench/priors/([A-Za-z0-9_.-]+)")


def _walk(d):
    if isinstance(d, dict):
        yield d
        for v in d.values():
            yield from _walk(v)
    elif isinstance(d, list):
        for v in d:
            yield from _walk(v)


def prior_label(method_desc: dict) -> str:
    """What the method's learned prior is, from the manifest's ``method`` entry (no paths):

    random weights anywhere (``meaningful: false``, a ``tiny`` origin, "NOT meaningful") -> ``random weights
    (not meaningful)``; a file or folder under ``bench/priors/`` -> ``embedded demo prior (<name>)``; another
    checkpoint -> its name (asset/weights file name, hub id); no learned component -> ``none``."""
    dicts = list(_walk(method_desc))
    text = json.dumps(method_desc, default=str)
    if any(d.get("meaningful") is False for d in dicts) or "NOT meaningful" in text or \
            any(str(d.get("origin", "")).startswith("tiny") for d in dicts):
        return "random weights (not meaningful)"
    m = _EMBEDDED.search(text.replace("\\\\", "/"))
    if m:
        return f"embedded demo prior ({Path(m.group(1)).stem})"
    for d in dicts:
        for key in ("asset", "weights"):
            a = d.get(key)
            if isinstance(a, dict) and a.get("name"):
                return str(a["name"])
        origin = str(d.get("origin", ""))
        if origin.startswith("hub:"):
            return origin[4:]
    for d in dicts:
        if d.get("source") not in (None, "", "embedded", "tiny") and isinstance(d.get("source"), str):
            return str(d["source"])
    return "none"


def _parse_label(label: str) -> tuple[int | None, str]:
    steps, _, chash = label.rpartition("-")
    if steps.startswith("steps") and steps[5:].isdigit():
        return int(steps[5:]), chash
    return None, chash


def scan(root: Path, jobs: int = 1) -> list[Run]:
    """Every run with at least one finished image, sorted by (dataset, task, variant, steps, hash). The runs'
    rows and PNGs are read and sha256-checked by ``jobs`` worker processes (:func:`bench.report.parallel.pmap`),
    then every ground-truth PNG the rows use, once however many runs use it."""
    from bench.report.parallel import pmap

    mans = [m for m in sorted(Path(root).glob("*/*/*/*/manifest.json"))
            if not (m.parts[-5].startswith(".") or m.parts[-4] == "_reference")]
    read = pmap(lambda man: _read_run(root, man.parent), mans, jobs)
    paths = list(dict.fromkeys(p for r in read for p in _reference_pngs(r)))
    refs = dict(zip(paths, pmap(reference_problem, paths, jobs)))
    runs = []
    for man, r in zip(mans, read):
        d = man.parent
        good, problems = _with_references(r, refs)
        for msg in problems:
            warnings.warn(f"{d.relative_to(root)}: left out of the report: {msg}. Fix: rerun the cell's command "
                          "(resume redoes it) and check with `python -m bench.verify`", stacklevel=2)
        if not good:
            continue
        rows = pd.DataFrame(good)
        rows["id"] = rows["id"].astype(str)
        rows = rows.sort_values("id").reset_index(drop=True)
        steps, chash = _parse_label(d.name)
        runs.append(Run(d, d.parts[-4], d.parts[-3], d.parts[-2], steps, chash, r["manifest"], r["config"] or {},
                        rows, r["timings"]))
    assign_variants(runs)
    runs.sort(key=lambda r: (r.dataset, r.task, r.variant, -1 if r.steps is None else r.steps, r.code_version,
                             r.hash))
    return runs


def _read_run(root: Path, run_dir: Path) -> dict:
    """A run's manifest, config, timing files and rows whose own PNGs match their sha256 records (one message
    per other row), and its ground-truth folder; ``{"problems": [why]}`` for an unreadable manifest."""
    try:
        man = read_json(run_dir / "manifest.json")
        d = man["dataset"]
        ref = reference_dir(root, run_dir.parts[-4], d.get("image_size"), str(d["manifest_sha256"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"rows": [], "problems": [f"manifest.json is unreadable ({err})"]}
    rows, problems = load_rows(run_dir, check_files=True)
    out = {"rows": rows, "problems": problems, "ref": ref, "manifest": man}
    if rows:  # what scan keeps of a run with rows
        cfg_path = run_dir / "config.yaml"
        out["config"] = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
        out["timings"] = [read_json(p) for p in sorted((run_dir / "timing").glob("*.json"))]
    return out


def _reference_pngs(read: dict) -> list[Path]:
    return [read["ref"] / f"{row['id']}.png" for row in read["rows"] if row.get("reference")]


def _with_references(read: dict, refs: dict) -> tuple[list[dict], list[str]]:
    """The rows of :func:`_read_run` whose ground truth checks out (``refs``: PNG -> its problem or None)."""
    good, problems = [], list(read["problems"])
    for row in read["rows"]:
        problem = refs[read["ref"] / f"{row['id']}.png"] if row.get("reference") else None
        if problem is None:
            good.append(row)
        else:
            problems.append(f"{row['id']}: {problem}")
    return good, problems


def checked_rows(root: Path, run_dir: Path, refs: dict | None = None) -> tuple[list[dict], list[str]]:
    """Rows whose PNGs (and ground truth, where there is one) match their sha256 records, and a message per
    row left out: a damaged run is reported without its damaged images instead of crashing the report.
    ``refs`` (reference PNG -> its problem or None) remembers the ground truth already checked."""
    refs = {} if refs is None else refs
    read = _read_run(root, run_dir)
    for path in _reference_pngs(read):
        if path not in refs:
            refs[path] = reference_problem(path)
    return _with_references(read, refs)


def scan_skipped(root: Path) -> list[dict]:
    out = []
    for p in sorted(Path(root).glob("*/*/*/SKIPPED.json")):
        if p.parts[-4].startswith("."):
            continue
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
    hyper-parameters (its prior included), the task parameters, the metric conventions, the seed and the
    dataset's semantic keys (image size, preprocessing; not the execution knobs, root, limit or shards)."""
    from bench.results import semantic_config

    sem = semantic_config(cfg)
    flat = _flatten({k: v for k, v in sem.items() if k in ("method", "task", "seed", "metrics", "dataset")})
    return {k: v for k, v in flat.items() if k not in ("method.steps", "dataset.name")}


def _tuned_keys(r: Run) -> set[str]:
    """Flattened config keys (``method.<key>``) a run's preset set: they say "tuned", not a configuration."""
    return {f"method.{k}" for k in ((r.tuned or {}).get("values") or {})}


def assign_variants(runs: list[Run]) -> None:
    """Label each run ``method`` or, when one (dataset, task, method) holds several configurations besides
    the step count, ``method (key=value, ...)`` with the keys that differ (``method.`` prefix dropped); a
    tuned run adds ``tuned`` (``tuned <sha256[:8]>`` when one (variant, steps) holds several presets). The
    keys a preset set are not compared for the runs that got them from it, so the official and the tuned run
    of one method are ``dps`` and ``dps (tuned)``, not two lists of values."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.task, r.method), []).append(r)
    for group in groups.values():
        flats = [_variant_config(r.config) for r in group]
        skips = [_tuned_keys(r) for r in group]
        keys = sorted({k for f in flats for k in f})
        differ = [k for k in keys if len({f.get(k) for f, s in zip(flats, skips) if k not in s}) > 1]
        for r, f, skip in zip(group, flats, skips):
            parts = [f"{k.removeprefix('method.')}={json.loads(f[k]) if k in f else None}" for k in differ
                     if k not in skip]
            r.base_variant = f"{r.method} ({', '.join(parts)})" if parts else r.method
        presets: dict[tuple, set] = {}
        for r in group:
            if r.tuned is not None:
                presets.setdefault((r.base_variant, r.steps), set()).add(r.tuned_sha256)
        for r in group:
            tag = None
            if r.tuned is not None:
                several = len(presets[(r.base_variant, r.steps)]) > 1
                tag = f"tuned {r.tuned_sha256[:8]}" if several else "tuned"
            r.variant = r.base_variant if tag is None else (
                f"{r.base_variant[:-1]}, {tag})" if r.base_variant.endswith(")") else f"{r.base_variant} ({tag})")


def mark_shown(runs: list[Run]) -> dict[Path, Path]:
    """Collapse duplicates: ``{duplicate run dir: shown run dir}`` (see the module docstring)."""
    best: dict[tuple, Run] = {}
    for r in runs:
        key = (r.dataset, r.task, r.variant, r.steps, r.code_version)
        cur = best.get(key)
        if cur is None or (len(r.rows), r.created_at, r.hash) > (len(cur.rows), cur.created_at, cur.hash):
            best[key] = r
    return {r.dir: best[(r.dataset, r.task, r.variant, r.steps, r.code_version)].dir for r in runs
            if best[(r.dataset, r.task, r.variant, r.steps, r.code_version)] is not r}


def labels(runs: list[Run], base: bool = False) -> dict[Path, str]:
    """Display label per run: the variant, plus ``@<code version>`` when its (dataset, task, variant, steps)
    appears under more than one code version; ``base=True``: the same with the variant's settings tag left
    out (``dps @abc`` for ``dps (tuned) @abc``), the key of the method's colour."""
    versions: dict[tuple, set] = {}
    for r in runs:
        versions.setdefault((r.dataset, r.task, r.variant, r.steps), set()).add(r.code_version)
    return {r.dir: (r.base_variant or r.variant if base else r.variant)
            + (f" @{r.code_version}" if len(versions[(r.dataset, r.task, r.variant, r.steps)]) > 1 else "")
            for r in runs}


# --------------------------------------------------------------------------- the table
def metric_conventions(r: Run) -> dict:
    """The stored metrics' conventions of a run (from its manifest; older runs: legacy v1 definitions)."""
    m = r.manifest.get("metrics") or {}
    cfg = m.get("config")
    if not cfg:
        return {"metrics_convention": "legacy v1 (torchmetrics SSIM, RGB, no crop; no LPIPS/consistency)",
                "lpips_standard": None, "lpips_backbone_sha256": ""}
    lp = m.get("lpips") or {}
    conv = f"PSNR/SSIM on {cfg.get('channel', 'rgb').upper()}, border crop {cfg.get('crop_border', 0)}"
    conv += f", LPIPS-{cfg['lpips_net']}" if cfg.get("lpips_net") else ", no LPIPS"
    backbone = lp.get("backbone") or {}
    return {"metrics_convention": conv, "lpips_standard": backbone.get("standard"),
            "lpips_backbone_sha256": backbone.get("sha256", "")}


def cell_identity(r: Run, label: str) -> tuple:
    return (r.dataset, r.task, label, r.steps)


def per_image_values(r: Run, metric: str, dm: dict) -> dict[str, float]:
    """Per-image values of ``metric`` for ``r``: stored rows, or the report-time entry in ``dm``."""
    if metric in ROW_METRICS:
        return r.values(metric)
    entry = dm.get(metric) or {}
    return {i: float(v) for i, v in (entry.get("per_image") or {}).items() if math.isfinite(float(v))}


def _row_na(r: Run, metric: str) -> str:
    has_gt = "reference" in r.rows and r.rows["reference"].notna().any()
    if metric in ("psnr", "ssim", "lpips") and not has_gt:
        return "no ground truth (unpaired data)"
    if metric == "lpips" and "lpips_na" in r.rows and r.rows["lpips_na"].notna().any():
        reasons = r.rows["lpips_na"].dropna().astype(str)
        missing = int(r.rows["lpips"].isna().sum()) if "lpips" in r.rows else len(r.rows)
        why = reasons.iloc[0]
        return why if missing == len(r.rows) else f"LPIPS missing for {missing} of {len(r.rows)} images: {why}"
    if metric.startswith("consistency"):
        if metric not in r.rows:
            return "not stored by this run (older code)"
        if metric == "consistency_gdp" and "consistency" in r.rows and r.rows["consistency"].notna().all():
            return "GDP's consistency is defined through an LR image: super-resolution tasks only"
        return "not a linear task (no A to apply)"
    if metric not in r.rows:
        return "not stored by this run (older code)"
    return "no finite values"


_THREADS = re.compile(r"\((\d+) threads\)")


def threads_label(timings: list[dict]) -> str:
    """CPU threads of the restore calls: ``num_threads`` of the timing files (recorded since issue 22), else
    the ``(N threads)`` of an older CPU device name, else ``unknown``; several values joined by `` / ``."""
    found = set()
    for t in timings:
        m = _THREADS.search(str(t.get("device_name", "")))
        found.add(str(t["num_threads"]) if t.get("num_threads") is not None else m.group(1) if m else "unknown")
    return " / ".join(sorted(found)) if found else "unknown"


def tidy_table(runs: list[Run], dmetrics: dict[Path, dict], root: Path, n_boot: int = 1000,
               seed: int = 0, jobs: int = 1, values: dict | None = None) -> pd.DataFrame:
    """One row per run (see the module docstring); ``dmetrics[run.dir]`` from ``dataset_metrics``; the
    intervals are computed by ``jobs`` worker processes; ``values[run_dir][metric]`` = the runs' per-image
    values when the caller has them (:func:`per_image_values`)."""
    from bench.report.parallel import pmap

    dup = mark_shown(runs)
    lab, base = labels(runs), labels(runs, base=True)

    def interval(job) -> tuple[float, float, float]:
        r, m = job
        vals = (values[r.dir.relative_to(root).as_posix()][m] if values is not None
                else per_image_values(r, m, dmetrics.get(r.dir, {})))
        if m in ROW_METRICS and 0 < len(vals) != len(r.rows):
            return math.nan, math.nan, math.nan  # never a mean over part of the images
        return bootstrap_ci([vals[i] for i in sorted(vals)], n_boot, cell_seed(seed, *cell_identity(r, lab[r.dir]), m))

    todo = [(r, m) for r in runs for m in PER_IMAGE if m in ROW_METRICS or m in dmetrics.get(r.dir, {})]
    intervals = dict(zip([(r.dir, m) for r, m in todo], pmap(interval, todo, jobs)))
    records = []
    for r in runs:
        label = lab[r.dir]
        rec = {"dataset": r.dataset, "task": r.task, "method": r.method, "variant": r.variant, "label": label,
               "base_label": base[r.dir], "settings": r.settings, "tuned_sha256": r.tuned_sha256,
               "tuned_split": str(((r.tuned or {}).get("split") or {}).get("dataset") or ""),
               "tuned_forced_test_split": r.forced_test_split, "steps": r.steps, "hash": r.hash,
               "run_dir": r.dir.relative_to(root).as_posix(),
               "code_version": r.code_version, "prior": r.prior, "task_sigma": r.task_sigma, "seed": r.seed,
               "n_images": len(r.rows), "n_expected": r.n_expected, "complete": r.complete,
               "shown": r.dir not in dup,
               "duplicate_of": dup[r.dir].relative_to(root).as_posix() if r.dir in dup else ""}
        rec.update(metric_conventions(r))
        dm = dmetrics.get(r.dir, {})
        for m in PER_IMAGE:
            if (r.dir, m) not in intervals:
                continue
            mean, lo, hi = intervals[(r.dir, m)]
            rec.update({f"{m}_mean": mean, f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
            if math.isfinite(mean):
                rec[f"{m}_na"] = ""
            elif m in REPORT_PER_IMAGE:
                rec[f"{m}_na"] = str((dm.get(m) or {}).get("na", "no finite values"))
            else:
                rec[f"{m}_na"] = _row_na(r, m)
        rec["psnr_capped"] = int((pd.to_numeric(r.rows.get("psnr"), errors="coerce") == math.inf).sum()) \
            if "psnr" in r.rows else 0
        fid = dm.get("fid")
        if fid is not None:
            if "na" in fid:
                rec.update({"fid": math.nan, "kid_mean": math.nan, "kid_std": math.nan, "fid_n": np.nan,
                            "kid_subset_size": np.nan, "fid_warning": "", "fid_extractor_sha256": "",
                            "fid_na": fid["na"], "kid_na": "as FID"})
            else:
                v = fid["value"]
                rec.update({"fid": v["fid"], "kid_mean": v["kid_mean"], "kid_std": v["kid_std"],
                            "fid_n": min(v["n_real"], v["n_fake"]), "kid_subset_size": v.get("kid_subset_size"),
                            "fid_warning": v.get("warning") or "", "fid_extractor_sha256": v["extractor_sha256"],
                            "fid_na": "", "kid_na": v.get("kid_na", "")})
        rec.update(timing_summary(r.timings))
        rec["num_threads"] = threads_label(r.timings)
        rec["wall_seconds"] = sum(float((t.get("seconds") or {}).get("total", math.nan)) for t in r.timings) \
            if r.timings else math.nan
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if not df.empty:
        df["steps"] = df["steps"].astype("Int64")
        for col in ("fid_n", "kid_subset_size"):
            if col in df:
                df[col] = df[col].astype("Int64")
    return df
