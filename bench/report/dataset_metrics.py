"""Dataset-level metrics of one run, cached in the run directory.

* **FID / KID** (``bench.metrics.fid``) of the run's restored PNGs against the ground truth of the *same
  image ids* in ``<root>/<dataset>/_reference/<size>-<sha8>/`` (the folder matching the run manifest's
  dataset sha256 and image size). Inception features of the run are stored in ``<run>/fid_features.npz``
  under keys prefixed with the extractor weights' sha256 (``<sha16>_ids``, ``<sha16>_features``), extended
  incrementally (merged shards add only their new ids); reference statistics are cached once per dataset,
  size, id set and extractor by :func:`bench.metrics.fid.reference_stats` as
  ``_reference/.../inception_stats-fidref-<size>-<key>.npz`` (per-image reference features in
  ``_reference/.../inception_features.npz``, so a grown id set computes only its new images).
  Weights: ``--inception-weights PATH`` (any file; a sha256 other than the official pin is flagged in the report) or the hash-pinned asset cache
  (``INCEPTION_ASSET``); offline and absent -> ``n/a`` with the AssetError's instructions.
* **LOE** for ``lowlight`` runs: reference = the low-light input PNG in ``degraded/`` (never the ground
  truth), MATLAB ``loe.m`` on the uint8 PNGs (``short_side = 50``, :mod:`bench.metrics.loe`).
* **NIQE** and **PI** for *every* run (no-reference: they also run without ground truth), Y channel,
  ``crop_border = 4`` (PIRM / GDP's evaluator; ``--niqe-crop-border``), NIQE variant ``matlab`` (rounded Y;
  ``--niqe-variant``). Every image is size-checked (two 96x96 blocks after the crop); if any is too small the
  run's NIQE is n/a with the count and the first offender. NIQE needs BasicSR's ``niqe_pris_params.npz``; PI
  additionally needs the Ma (NRQM) score from the optional ``pyiqa`` package, otherwise ``n/a``.

Reasons (``{"na": ...}``) are one short line without absolute paths or URLs (the report prints the download
instructions once, in its conventions).

``<run>/dataset_metrics.json`` holds one entry per metric, each with a ``key`` = sha256 of (sorted image
ids, metric version, parameters/weights sha256); an entry is recomputed only when its key changes (rows
added, weights or protocol changed) and the file is rewritten only when its content changes. ``COUNTS``
tallies the expensive work done in this process (tests use it to prove the cache is hit).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.imageio import atomic_write_bytes, read_png_u8
from bench.metrics import MetricUnavailable
from bench.metrics.fid import save_npz
from bench.report.aggregate import Run

FID_VERSION = ("fid:torch-fidelity-inception-v3-compat,pool3-2048,uint8-png,"
               "kid-poly3-100 subsets of min(1000, N//2 if N<=1000)-seed0;v2")
LOE_SHORT_SIDE = 50
NIQE_CROP_BORDER = 4
PI_VERSION = "pi:PIRM,0.5*((10-Ma)+NIQE);v2"
CACHE_VERSION = 2
_ABS_PATH = re.compile(r"(?<![\w.$~:/])(?:/[^\s/:;,()'\"]+)+/([^\s/:;,()'\"]*)")


def short_reason(text: str) -> str:
    """One line, ``|`` escaped, absolute paths reduced to their file name (reports carry no absolute paths)."""
    line = "; ".join(s.strip() for s in str(text).splitlines() if s.strip()).replace("|", "/")
    return _ABS_PATH.sub(lambda m: m.group(1) or "<path>", line)


COUNTS: Counter = Counter()  # inception_images, reference_stats, loe_runs, niqe_runs, pi_runs
NIQE_HINT = "pass --niqe-params (BasicSR's niqe_pris_params.npz)"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    from bench.models.assets import sha256_file

    return sha256_file(path)


@dataclass
class Resources:
    """What dataset-level metrics need; each is loaded on first use and its failure becomes a reason."""

    inception_weights: Path | None = None
    niqe_params: Path | None = None
    nrqm_weights: Path | None = None
    device: str = "cpu"
    niqe_variant: str = "matlab"
    niqe_crop_border: int = NIQE_CROP_BORDER
    _cache: dict = field(default_factory=dict)

    def extractor(self):
        """``(InceptionFeatures, None)`` or ``(None, reason)``."""
        if "inception" not in self._cache:
            self._cache["inception"] = self._load_extractor()
        return self._cache["inception"]

    def _load_extractor(self):
        from bench.metrics.fid import INCEPTION_NAME, InceptionFeatures
        from bench.models.assets import AssetError, fetch

        if self.inception_weights is not None:
            path = Path(self.inception_weights).expanduser()
            if not path.is_file():
                return None, f"Inception weights missing: --inception-weights {path.name} is not a file"
        else:
            from bench.metrics import fid as fidmod

            try:
                path = fetch(fidmod.INCEPTION_ASSET)
            except AssetError as err:
                first = str(err).strip().splitlines()[0]
                why = "offline and not in $BENCH_CACHE" if "offline" in first else "not in $BENCH_CACHE"
                if "sha256" in first:
                    why = "the cached file has the wrong sha256"
                return None, f"Inception weights {INCEPTION_NAME} unavailable ({why})"
        return InceptionFeatures(path, device=self.device), None

    def niqe(self):
        """``(NIQEParams, sha256)`` or ``(None, reason)``."""
        if "niqe" not in self._cache:
            from bench.metrics.niqe import NIQEParams

            p = self.niqe_params
            if p is None:
                self._cache["niqe"] = (None, f"NIQE parameters not found: {NIQE_HINT}")
            elif not Path(p).is_file():
                self._cache["niqe"] = (None, f"NIQE parameters not found at {Path(p).name}: {NIQE_HINT}")
            else:
                self._cache["niqe"] = (NIQEParams.load(p), _file_sha(Path(p)))
        return self._cache["niqe"]


# --------------------------------------------------------------------------- small IO helpers
def _load_u8(paths: list[Path]) -> list[torch.Tensor]:
    return [read_png_u8(p) for p in paths]


def _features(extractor, paths: list[Path], chunk: int = 16) -> np.ndarray:
    """(N, 2048) Inception features of PNG files, batched by equal shape."""
    out = []
    for s in range(0, len(paths), chunk):
        imgs = _load_u8(paths[s:s + chunk])
        groups: list[list[torch.Tensor]] = []
        for im in imgs:
            if groups and groups[-1][0].shape == im.shape:
                groups[-1].append(im)
            else:
                groups.append([im])
        for g in groups:
            out.append(extractor(torch.stack(g)).numpy())
    COUNTS["inception_images"] += len(paths)
    return np.concatenate(out) if out else np.zeros((0, 2048))


def cached_features(npz: Path, ids: list[str], folder: Path, extractor) -> np.ndarray:
    """Features of ``folder/<id>.png`` for ``ids`` (in that order), cached per image in ``npz`` under the
    extractor's sha256 (``<sha16>_ids``, ``<sha16>_features``): only ids not yet there are computed."""
    tag = extractor.weights_sha256[:16]
    arrays = {}
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    have = dict(zip(arrays.get(f"{tag}_ids", np.array([], dtype=str)).tolist(),
                    arrays.get(f"{tag}_features", np.zeros((0, 2048)))))
    missing = [i for i in ids if i not in have]
    if missing:
        have.update(zip(missing, _features(extractor, [folder / f"{i}.png" for i in missing])))
        keys = sorted(have)
        arrays[f"{tag}_ids"] = np.array(keys, dtype=str)
        arrays[f"{tag}_features"] = np.stack([have[i] for i in keys])
        save_npz(npz, arrays)
    return np.stack([have[i] for i in ids])


def run_features(run: Run, extractor) -> np.ndarray:
    """Features of ``run``'s images in sorted-id order, from/into ``<run>/fid_features.npz``."""
    return cached_features(run.dir / "fid_features.npz", run.ids, run.dir / "images", extractor)


def reference_dir_of(root: Path, run: Run) -> Path:
    from bench.results import reference_dir

    d = run.manifest.get("dataset", {})
    return reference_dir(root, run.dataset, d.get("image_size"), str(d.get("manifest_sha256", "")))


# --------------------------------------------------------------------------- the metrics
def fid_entry(root: Path, run: Run, res: Resources, ids: list[str] | None = None) -> dict:
    """FID/KID of ``run`` over its images, or over ``ids`` (a subset: a table's common images; computed from
    the per-image feature caches, the result is not cached in ``dataset_metrics.json``)."""
    from bench.metrics.fid import INCEPTION_SHA256, fid_from_features, reference_stats, stats_cache_key

    ids = sorted(run.ids if ids is None else ids)
    has_gt = "reference" in run.rows and run.rows["reference"].notna().all()
    if not has_gt:
        return {"na": "no ground truth (unpaired data: FID needs reference images)"}
    if len(ids) < 2:
        return {"na": f"FID needs at least 2 images, {'the run has' if ids == run.ids else 'the table shares'} "
                      f"{len(ids)}"}
    ref_dir = reference_dir_of(root, run)
    ref_paths = [ref_dir / f"{i}.png" for i in ids]
    absent = [p.name for p in ref_paths if not p.is_file()]
    if absent:
        return {"na": f"{len(absent)} ground-truth images missing in {ref_dir.relative_to(root).as_posix()} "
                      f"(first: {absent[0]})"}
    extractor, reason = res.extractor()
    if extractor is None:
        return {"na": reason}
    sha = extractor.weights_sha256
    key = _digest({"ids": ids, "ref": ref_dir.name, "version": FID_VERSION, "extractor": sha})
    cached = _cached(run, "fid", key)
    if cached is not None:
        return cached
    h, w = read_png_u8(ref_paths[0]).shape[-2:]
    ids_digest = _digest(ids)[:16]
    cache_key = "inception_stats-" + stats_cache_key(f"{run.manifest['dataset']['manifest_sha256']}:{ids_digest}",
                                                     (int(h), int(w)), sha)
    ref = reference_stats(lambda: cached_features(ref_dir / "inception_features.npz", ids, ref_dir, extractor),
                          cache_key, ref_dir)
    COUNTS["reference_stats"] += 0 if ref["cached"] else 1
    fake = cached_features(run.dir / "fid_features.npz", ids, run.dir / "images", extractor)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = fid_from_features(ref["features"], fake)
    v.update({"extractor_sha256": sha, "extractor_standard": sha == INCEPTION_SHA256})
    return {"key": key, "version": FID_VERSION, "value": v}


def loe_entry(run: Run) -> dict:
    from bench.metrics.loe import loe, loe_protocol, loe_version

    protocol = loe_protocol(LOE_SHORT_SIDE)
    key = _digest({"ids": run.ids, "version": loe_version(LOE_SHORT_SIDE)})
    cached = _cached(run, "loe", key)
    if cached is not None:
        return cached
    per = {}
    for i in run.ids:
        enh = read_png_u8(run.dir / "images" / f"{i}.png")[None].double() / 255
        low = read_png_u8(run.dir / "degraded" / f"{i}.png")[None].double() / 255
        if enh.shape != low.shape:
            return {"na": f"LOE needs the input and output at one size; {i}: {tuple(low.shape)} vs {tuple(enh.shape)}"}
        per[i] = float(loe(enh, low, short_side=LOE_SHORT_SIDE)[0])
    COUNTS["loe_runs"] += 1
    return {"key": key, "protocol": protocol, "version": loe_version(LOE_SHORT_SIDE), "per_image": per}


def _niqe_size_reason(run: Run, paths: list[Path], crop: int) -> str | None:
    """Every image is checked (header only); None when all fit, else the count and the first offender."""
    from PIL import Image

    from bench.metrics.niqe import niqe_size_problem

    bad = []
    for i, p in zip(run.ids, paths):
        with Image.open(p) as im:
            w, h = im.size
        problem = niqe_size_problem(h, w, crop)
        if problem:
            bad.append((i, problem))
    if not bad:
        return None
    if len(bad) == len(paths) and len({p for _, p in bad}) == 1:
        return f"images too small for NIQE: {bad[0][1]}"
    return f"{len(bad)} of {len(paths)} images too small for NIQE (first: {bad[0][0]}, {bad[0][1]})"


def niqe_pi_entries(run: Run, res: Resources) -> dict:
    """``{"niqe": entry, "pi": entry}``; PI needs NIQE and Ma (pyiqa NRQM)."""
    from bench.metrics.niqe import ma_score, niqe, niqe_version

    params, sha = res.niqe()
    if params is None:
        return {"niqe": {"na": sha}, "pi": {"na": f"PI needs NIQE: {sha}"}}
    crop = int(res.niqe_crop_border)
    paths = [run.dir / "images" / f"{i}.png" for i in run.ids]
    small = _niqe_size_reason(run, paths, crop)
    if small:
        return {"niqe": {"na": small}, "pi": {"na": f"PI needs NIQE: {small}"}}
    out = {}
    version = niqe_version(res.niqe_variant, crop)
    nkey = _digest({"ids": run.ids, "params": sha, "version": version})
    out["niqe"] = _cached(run, "niqe", nkey)
    if out["niqe"] is None:
        per = {i: float(niqe(read_png_u8(p)[None].double() / 255, params, crop_border=crop,
                             variant=res.niqe_variant)[0]) for i, p in zip(run.ids, paths)}
        COUNTS["niqe_runs"] += 1
        out["niqe"] = {"key": nkey, "version": version, "per_image": per}
    pkey = _digest({"ids": run.ids, "niqe": nkey, "nrqm": str(res.nrqm_weights), "version": PI_VERSION})
    out["pi"] = _cached(run, "pi", pkey)
    if out["pi"] is None:
        try:
            per = {}
            for i, p in zip(run.ids, paths):
                ma = float(ma_score(read_png_u8(p)[None].float() / 255, res.nrqm_weights, crop_border=crop)[0])
                per[i] = 0.5 * ((10 - ma) + out["niqe"]["per_image"][i])
        except MetricUnavailable as err:
            out["pi"] = {"na": short_reason(f"PI needs Ma: {err.reason}")}
        else:
            COUNTS["pi_runs"] += 1
            out["pi"] = {"key": pkey, "version": PI_VERSION, "per_image": per}
    return out


# --------------------------------------------------------------------------- cache
_LOADED: dict[Path, dict] = {}


def _cached(run: Run, metric: str, key: str) -> dict | None:
    entry = _LOADED.get(run.dir, {}).get("metrics", {}).get(metric)
    return entry if entry is not None and entry.get("key") == key else None


def run_dataset_metrics(root: Path, run: Run, res: Resources) -> dict:
    """All dataset-level metrics of ``run`` (entries ``{"na": reason}`` or cached values)."""
    path = run.dir / "dataset_metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    _LOADED[run.dir] = old if old.get("version") == CACHE_VERSION else {}
    try:
        out = {"fid": fid_entry(root, run, res)}
        if run.task == "lowlight":
            out["loe"] = loe_entry(run)
        out.update(niqe_pi_entries(run, res))
    finally:
        _LOADED.pop(run.dir, None)
    # reasons are not cached (weights may appear later); an entry that is n/a now keeps its old value
    keep = dict(old.get("metrics", {})) if old.get("version") == CACHE_VERSION else {}
    keep.update({k: v for k, v in out.items() if "key" in v})
    new = {"version": CACHE_VERSION, "ids_sha256": _digest(run.ids), "metrics": dict(sorted(keep.items()))}
    blob = (json.dumps(new, indent=1, sort_keys=True, allow_nan=True) + "\n").encode()
    if not path.is_file() or path.read_bytes() != blob:
        atomic_write_bytes(path, blob)
    return out


def all_dataset_metrics(root: Path, runs: list[Run], res: Resources) -> dict[Path, dict]:
    return {r.dir: run_dataset_metrics(root, r, res) for r in runs}
