"""The run store.

Layout of one run (a cell of a sweep)::

    <results_root>/<dataset>/<task>/<method>/<steps>-<hash8>/
        config.yaml            resolved config (what to rerun)
        manifest.json          provenance: git, packages, device, seeds, dataset/task/metric versions
        images/<id>.png        restored outputs, lossless 8-bit PNG
        degraded/<id>.png      the measurement as a picture (what the method was given, quantised)
        rows/<id>.json         one per-image row (metrics), written last: its presence marks "done"
        per_image.parquet      all rows, rebuilt from rows/ whenever new rows were added
        timing/<invocation>.json  restore throughput of each invocation (shards and resumes add files)
    <results_root>/<dataset>/_reference/<size>-<dataset_sha8>/<id>.png   ground truth, shared by runs

Every file is written atomically (temp file + rename), and a row is written only after its PNGs, so a
killed run leaves only complete images; rerunning skips ids that have a row and never duplicates one.
Shards of one run write into the same directory (the shard split is not part of the hash).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from bench.imageio import atomic_write_bytes

# keys that do not change results: excluded from the run hash
NON_SEMANTIC = {
    "run": None,  # device, batch size, workers, paths, progress bars, logging
    "dataset": ("root", "shard", "num_shards", "limit", "num_workers"),
    # the prior enters the hash through ``method.model: ${model}`` for methods that use one, so a
    # baseline's run directory does not change with the (unused) model choice
    "model": None,
    "logger": None,
}


def semantic_config(cfg: dict) -> dict:
    out = {}
    for key, value in cfg.items():
        if key in NON_SEMANTIC and NON_SEMANTIC[key] is None:
            continue
        if key in NON_SEMANTIC and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NON_SEMANTIC[key]}
        out[key] = value
    return out


def config_hash(cfg: dict, dataset_sha256: str) -> str:
    body = json.dumps({"config": semantic_config(cfg), "dataset": dataset_sha256}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


class RunStore:
    def __init__(self, root: Path, dataset: str, task: str, method: str, steps: int | None, chash: str):
        label = f"steps{steps}" if steps is not None else "default"
        self.dir = Path(root) / dataset / task / method / f"{label}-{chash}"
        self.hash = chash

    # -------------------------------------------------------------- paths
    def image_path(self, image_id: str) -> Path:
        return self.dir / "images" / f"{image_id}.png"

    def degraded_path(self, image_id: str) -> Path:
        return self.dir / "degraded" / f"{image_id}.png"

    def row_path(self, image_id: str) -> Path:
        return self.dir / "rows" / f"{image_id}.json"

    # -------------------------------------------------------------- state
    def done_ids(self) -> set[str]:
        rows = self.dir / "rows"
        return {p.stem for p in rows.glob("*.json")} if rows.is_dir() else set()

    def write_once(self, name: str, data: str) -> bool:
        """Write ``name`` if absent (first invocation or shard wins; identical content otherwise)."""
        path = self.dir / name
        if path.exists():
            return False
        atomic_write_bytes(path, data.encode())
        return True

    def write_row(self, row: dict) -> None:
        write_json(self.row_path(row["id"]), row)

    def rows(self) -> pd.DataFrame:
        files = sorted((self.dir / "rows").glob("*.json"))
        return pd.DataFrame([read_json(p) for p in files])

    def consolidate(self) -> pd.DataFrame:
        """Rebuild per_image.parquet from rows/ (atomic). Concurrent shards each write a full table."""
        df = self.rows().sort_values("id").reset_index(drop=True) if self.done_ids() else pd.DataFrame()
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.dir / "per_image.parquet", buf.getvalue())
        return df

    def timings(self) -> list[dict]:
        return [read_json(p) for p in sorted((self.dir / "timing").glob("*.json"))]


def timing_summary(timings: list[dict]) -> dict:
    """Images-weighted throughput and NFE over the run's timing files (shards and resumes add files)."""
    if not timings:
        return {"images_per_s": math.nan, "nfe_per_image": math.nan, "peak_memory_mb": math.nan,
                "memory_kind": "", "device_name": "", "batch_size": "", "timed_images": 0,
                "restore_seconds": math.nan}
    imgs = sum(int(t.get("timed_images", 0)) for t in timings)
    secs = sum(float(t.get("restore_seconds", 0.0)) for t in timings)
    n_all = sum(int(t.get("images", 0)) for t in timings)
    nfe = (sum(float(t.get("nfe_per_image", 0.0)) * int(t.get("images", 0)) for t in timings) / n_all
           if n_all else math.nan)
    uniq = lambda key: " / ".join(sorted({str(t.get(key, "")) for t in timings}))  # noqa: E731
    return {"images_per_s": imgs / secs if secs > 0 else math.inf, "nfe_per_image": nfe,
            "peak_memory_mb": max(float(t.get("peak_memory_mb", math.nan)) for t in timings),
            "memory_kind": uniq("memory_kind"), "device_name": uniq("device_name"),
            "batch_size": uniq("batch_size"), "timed_images": imgs, "restore_seconds": secs}


def reference_dir(root: Path, dataset: str, image_size: int | None, dataset_sha256: str) -> Path:
    size = f"{image_size}" if image_size is not None else "native"
    return Path(root) / dataset / "_reference" / f"{size}-{dataset_sha256[:8]}"
