"""The run store: run identity, layout, integrity records and resume checks.

Layout of one run (a cell of a sweep)::

    <results_root>/<dataset>/<task>/<method>/<steps>-<hash8>/
        config.yaml            resolved config (what to rerun)
        manifest.json          provenance: command, git, code fingerprint, packages, device, seeds, versions
        run.log                appended by every invocation: resume decisions, redone images, errors
        images/<id>.png        restored outputs, lossless 8-bit PNG
        degraded/<id>.png      the measurement as a picture (what the method was given, quantised)
        rows/<id>.json         one per-image row (metrics + sha256/size of its PNGs), written last: "done"
        rows/.quarantine/<id>.json.<time>   rows set aside by a resume check (unreadable, or files bad)
        per_image.parquet      all rows, rebuilt from rows/ whenever new rows were added
        timing/<invocation>.json  restore throughput of each invocation (shards and resumes add files)
    <results_root>/<dataset>/<task>/<method>/.replaced/<steps>-<hash8>.<time>/   runs moved aside by run.force
    <results_root>/<dataset>/_reference/<size>-<dataset_sha8>/<id>.png   ground truth, shared by runs
                                                         .../<id>.png.sha256  its sha256 (sha256sum format)

Every file is written atomically (temp file + rename), and a row is written only after its PNGs, so a
killed run leaves only complete images; rerunning skips ids whose row AND files check out (size + sha256)
and redoes the others, never duplicating one. Shards of one run write into the same directory (the shard
split is not part of the identity).

Run identity (the ``<hash8>``, :func:`config_hash`): what determines the outputs, nothing else:
* the resolved config minus :data:`NON_SEMANTIC` (execution knobs, paths, documentation strings, and the
  top-level ``steps`` / ``model`` that only feed ``method.steps`` / ``method.model``: a step-less method
  such as ``bicubic`` ignores ``steps``; a file identified by ``sha256`` ignores its ``path``);
* the dataset's content manifest sha256 (file hashes of every image, before limit / sharding);
* the task version (in the task node) and the metric definitions' versions;
* the code fingerprint (:func:`code_fingerprint`): sha256 of the source of every ``bench/**/*.py`` except
  :data:`CODE_EXCLUDED` (modules that never run while outputs are made), plus the embedded priors' weights
  and configs (``bench/priors/``), so changed code or weights never reuse old outputs. Any byte change of
  those files counts (comments too): it is cheap to hash and cannot miss.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

from bench.imageio import atomic_write_bytes, save_png
from bench.models.assets import sha256_file  # the one file-hash helper
from bench.paths import PACKAGE_DIR  # the bench/ package folder (re-exported: the fingerprint's default)

# config keys that do not change outputs: excluded from the run hash. ``None`` drops the whole top-level
# node; a tuple drops those keys of it.
NON_SEMANTIC = {
    "run": None,  # device, batch size, workers, paths, progress bars, force
    "hydra": None,
    "logger": None,
    # interpolation sources: ``method.model: ${model}`` and ``method.steps: ${steps}`` carry them into the
    # method's own node for methods that use them, so a baseline's run does not change with the unused
    # model choice, and a step-less method (bicubic) with ``steps=10,20`` is ONE run, not two
    "model": None,
    "steps": None,
    "gan": None,  # likewise feeds ``method.generator.source`` (DGP) only
    "dataset": ("root", "shard", "num_shards", "limit", "num_workers", "split", "validation"),  # split: labels
    "tune": None,  # the tuning tool's settings and the method's search space (bench.tune)
    "task": ("description", "conventions"),  # documentation strings
}

#: modules of ``bench/`` (paths relative to it, fnmatch patterns) that never run while a run makes its
#: outputs (images, degraded images, rows): the report, verification, training, the perf tool, experiment
#: trackers, provenance collection, the entry point, the sweep bookkeeping, the up-front value and
#: command-line checks and the notices (printed text only, bench/notices.py).
#: Every other ``*.py`` under ``bench/`` is in the code fingerprint (cli, runner, results, data, imageio,
#: tasks, seeding, diffusion, operators/, methods/, models/, metrics/, ... and any new module not listed).
CODE_EXCLUDED = ("report/*", "verify.py", "train/*", "perf/*", "loggers.py", "provenance.py", "__main__.py",
                 "sweep.py", "checks.py", "cli_errors.py", "notices.py", "tune/*")


def _drop_path_of_hashed_files(node):
    """A file identified by a sha256 is the same file wherever it lies: drop its ``path`` key."""
    if isinstance(node, dict):
        has_hash = node.get("sha256") not in (None, "")
        return {k: _drop_path_of_hashed_files(v) for k, v in node.items() if not (has_hash and k == "path")}
    if isinstance(node, list):
        return [_drop_path_of_hashed_files(v) for v in node]
    return node


def semantic_config(cfg: dict) -> dict:
    """The part of a resolved config that determines the outputs (see the module docstring)."""
    out = {}
    for key, value in cfg.items():
        if key in NON_SEMANTIC and NON_SEMANTIC[key] is None:
            continue
        if key in NON_SEMANTIC and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NON_SEMANTIC[key]}
        out[key] = _drop_path_of_hashed_files(value)
    return out


def identity(cfg: dict, dataset_sha256: str, code: str | None = None, versions: dict | None = None) -> dict:
    """Everything the run hash covers (recorded in the manifest, so two runs' identities can be diffed)."""
    return {"config": semantic_config(cfg), "dataset": dataset_sha256, "code": code, "versions": versions or {}}


def config_hash(cfg: dict, dataset_sha256: str, code: str | None = None, versions: dict | None = None) -> str:
    """8 hex digits of sha256 over :func:`identity`."""
    body = json.dumps(identity(cfg, dataset_sha256, code, versions), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:8]


#: data files shipped in ``bench/`` that outputs depend on: the embedded priors' weights and configs (their
#: model cards and loss plots are documentation and stay out)
CODE_DATA = ("priors/*",)
CODE_DATA_DOCS = ("*.md", "*.png")
_DATA_SHA: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: the weights are hashed once per process


def code_modules(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The files in the code fingerprint, sorted: every ``*.py`` except :data:`CODE_EXCLUDED`, and the
    :data:`CODE_DATA` files."""
    files = []
    for p in sorted(package_dir.rglob("*")):
        rel = p.relative_to(package_dir).as_posix()
        if not p.is_file() or "__pycache__" in rel:
            continue
        if p.suffix == ".py":
            if not any(fnmatch.fnmatch(rel, pat) for pat in CODE_EXCLUDED):
                files.append(p)
        elif any(fnmatch.fnmatch(rel, pat) for pat in CODE_DATA) and not any(
                fnmatch.fnmatch(p.name, pat) for pat in CODE_DATA_DOCS):
            files.append(p)
    return files


def _data_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DATA_SHA:
        _DATA_SHA[key] = sha256_file(path)
    return _DATA_SHA[key]


def code_fingerprint(package_dir: Path = PACKAGE_DIR) -> dict:
    """``{"fingerprint": sha256 hex, "modules": ["bench/cli.py", ...]}`` of the code that makes outputs:
    sha256 over (relative path, content) of every :func:`code_modules` file; sources are read with
    ``\r\n`` as ``\n`` (a Windows checkout is the same code), data files enter by their sha256."""
    h = hashlib.sha256()
    names = []
    for p in code_modules(package_dir):
        name = f"{package_dir.name}/{p.relative_to(package_dir).as_posix()}"
        names.append(name)
        body = p.read_bytes().replace(b"\r\n", b"\n") if p.suffix == ".py" else _data_sha(p).encode()
        h.update(name.encode() + b"\0" + body + b"\0")
    return {"fingerprint": h.hexdigest(), "modules": names}


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


# ------------------------------------------------------------------ file integrity records
def file_record(path: Path) -> dict:
    """``{"sha256", "bytes"}`` of a file as it is on disk."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def file_problem(path: Path, record: dict | None, name: str) -> str | None:
    """None when ``path`` matches ``record`` (size first, then sha256); otherwise why not (``name`` is how
    the message calls the file)."""
    if not isinstance(record, dict) or "sha256" not in record or "bytes" not in record:
        return f"no sha256/size is recorded for {name}"
    path = Path(path)
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{name} is truncated or was changed ({size} bytes, {record['bytes']} recorded)"
    if sha256_file(path) != record["sha256"]:
        return f"{name} does not match its recorded sha256 (same size: the content changed)"
    return None


# ------------------------------------------------------------------ ground-truth references
def reference_dir(root: Path, dataset: str, image_size: int | None, dataset_sha256: str) -> Path:
    size = f"{image_size}" if image_size is not None else "native"
    return Path(root) / dataset / "_reference" / f"{size}-{dataset_sha256[:8]}"


def run_reference_dir(run_dir: Path, manifest: dict) -> Path:
    """The ground-truth folder of a run directory ``<root>/<dataset>/<task>/<method>/<run>``, from its
    manifest's ``dataset`` entry (KeyError when the manifest lacks it)."""
    run_dir, d = Path(run_dir), manifest["dataset"]
    return reference_dir(run_dir.parents[3], run_dir.parts[-4], d.get("image_size"), str(d["manifest_sha256"]))


def _sidecar(ref_png: Path) -> Path:
    return ref_png.with_name(ref_png.name + ".sha256")


def reference_problem(ref_png: Path) -> str | None:
    """None when a reference PNG matches its ``<id>.png.sha256`` record (``sha256sum -c`` format)."""
    ref_png = Path(ref_png)
    name = f"reference {ref_png.parent.name}/{ref_png.name}"
    if not ref_png.is_file():
        return f"{name} is missing"
    try:
        recorded = _sidecar(ref_png).read_text().split()[0]
    except (OSError, IndexError):
        return f"{name} has no readable sha256 record ({_sidecar(ref_png).name})"
    if sha256_file(ref_png) != recorded:
        return f"{name} does not match its recorded sha256 (truncated or changed)"
    return None


def write_reference(img_u8, ref_png: Path) -> None:
    """Save a ground-truth PNG, then its sha256 record (so a record always describes a complete file)."""
    ref_png = Path(ref_png)
    save_png(img_u8, ref_png)
    atomic_write_bytes(_sidecar(ref_png), f"{sha256_file(ref_png)}  {ref_png.name}\n".encode())


# ------------------------------------------------------------------ rows
def load_row(path: Path) -> tuple[dict | None, str | None]:
    """``(row, None)`` or ``(None, why it is unusable)``: not JSON (a truncated file), or not this id's row."""
    try:
        row = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"rows/{Path(path).name} is not readable JSON ({err})"
    if not isinstance(row, dict) or str(row.get("id")) != Path(path).stem:
        return None, f"rows/{Path(path).name} does not hold the row of image {Path(path).stem!r}"
    return row, None


#: the PNGs a row describes: its ``files`` key -> the run sub-folder (fixed keys keep per_image.parquet's
#: schema flat: one struct column, not one per image)
ROW_FILES = {"image": "images", "degraded": "degraded"}


def row_files_problem(run_dir: Path, row: dict) -> str | None:
    """None when every PNG a row describes (:data:`ROW_FILES`) matches its recorded size + sha256."""
    files = row.get("files")
    if not isinstance(files, dict):
        return f"row {row.get('id')!r} records no file hashes (written by an older version)"
    for kind, sub in ROW_FILES.items():
        rel = f"{sub}/{row['id']}.png"
        problem = file_problem(Path(run_dir) / rel, files.get(kind), rel)
        if problem is not None:
            return problem
    return None


def check_row(run_dir: Path, path: Path) -> tuple[dict | None, str | None]:
    """:func:`load_row`, then for a readable row :func:`row_files_problem`: ``(row or None, None or why the
    row is unusable)`` (the row is returned also when its files fail)."""
    row, problem = load_row(path)
    if row is not None:
        problem = row_files_problem(run_dir, row)
    return row, problem


def load_rows(run_dir: Path, check_files: bool = False) -> tuple[list[dict], list[str]]:
    """Every usable row of a run (sorted by file name) and a message per row left out: unreadable, or
    (``check_files``) with a missing / truncated / changed PNG. Nothing is moved (see RunStore.verify)."""
    rows, problems = [], []
    for p in sorted((Path(run_dir) / "rows").glob("*.json")):
        row, problem = check_row(run_dir, p) if check_files else load_row(p)
        if problem is None:
            rows.append(row)
        else:
            problems.append(f"{p.stem}: {problem}")
    return rows, problems


def steps_label(steps: int | None) -> str:
    """``steps<N>``, or ``default`` for a method without a step count: a run directory's prefix."""
    return f"steps{steps}" if steps is not None else "default"


class RunStore:
    def __init__(self, root: Path, dataset: str, task: str, method: str, steps: int | None, chash: str):
        self.dir = Path(root) / dataset / task / method / f"{steps_label(steps)}-{chash}"
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
        """Ids with a row file (not re-checked: :meth:`verify` does that once per invocation)."""
        rows = self.dir / "rows"
        return {p.stem for p in rows.glob("*.json")} if rows.is_dir() else set()

    def verify(self, ids: Iterable[str]) -> tuple[set[str], list[str]]:
        """Resume check of the rows of ``ids``: returns the ids whose row is readable and whose PNGs match
        the recorded size + sha256, and one message per other row, which is moved to
        ``rows/.quarantine/<id>.json.<time>`` (kept for inspection; the image is then redone)."""
        good, notes = set(), []
        for image_id in ids:
            path = self.row_path(image_id)
            if not path.is_file():
                continue
            _, problem = check_row(self.dir, path)
            if problem is None:
                good.add(image_id)
                continue
            dest = self.quarantine(path)
            notes.append(f"redo {image_id}: {problem}; the row was moved to {dest.relative_to(self.dir)}")
        return good, notes

    def quarantine(self, row_path: Path) -> Path:
        dest = row_path.parent / ".quarantine" / f"{row_path.name}.{_stamp()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(row_path, dest)
        return dest

    def move_aside(self) -> Path:
        """``run.force``: rename the whole run directory to ``<method>/.replaced/<name>.<time>`` (one atomic
        rename: the old run stays complete, and out of reports and resumes)."""
        dest = self.dir.parent / ".replaced" / f"{self.dir.name}.{_stamp()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir, dest)
        return dest

    def file_records(self, image_id: str) -> dict:
        """What a row records about its PNGs (called after they are written): ``{kind: {sha256, bytes}}``."""
        return {kind: file_record(self.dir / sub / f"{image_id}.png") for kind, sub in ROW_FILES.items()}

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
        """All readable rows (an unreadable one is left out with a warning; resume quarantines it)."""
        rows, problems = load_rows(self.dir)
        for msg in problems:
            warnings.warn(f"{self.dir}: row left out: {msg}", stacklevel=2)
        return pd.DataFrame(rows)

    def consolidate(self) -> pd.DataFrame:
        """Rebuild per_image.parquet from rows/ (atomic). Concurrent shards each write a full table."""
        df = self.rows() if self.done_ids() else pd.DataFrame()
        if len(df):
            df = df.sort_values("id").reset_index(drop=True)
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

