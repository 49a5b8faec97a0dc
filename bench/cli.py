"""``python -m bench``: the only place that touches DictConfig / instantiate.

Resolves the config, builds task, method and dataset from their config groups (``_target_``), skips
unsupported (method, task) pairs with a recorded reason, then restores into a stable run directory and
prints a summary. Rerunning the same command resumes (finished images are skipped).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bench.batching import parse_batch_size, resolve_batch_size
from bench.data import DatasetError
from bench.models.assets import AssetError
from bench.loggers import log_wandb, run_summary
from bench.imageio import ImageReadError, remove_stale_temps
from bench.metrics.pixel import METRIC_VERSION
from bench.provenance import environment, git_info, now_iso
from bench.results import RunStore, config_hash, reference_dir, write_json
from bench.runner import RunOptions, load_method, restore_dataset
from bench.tasks import Task

log = logging.getLogger("bench")

#: errors that are the user's input, printed without a traceback
USER_ERRORS = (DatasetError, ImageReadError, ValueError, FileNotFoundError, FloatingPointError, AssetError)


def _instantiate(node: dict, **kw):
    """``hydra.utils.instantiate`` that surfaces our own input errors unwrapped (Hydra wraps every
    exception raised by a target in an InstantiationException with a traceback-ish message)."""
    try:
        return instantiate(node, **kw)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def build_task(tcfg: dict) -> Task:
    op = dict(tcfg["operator"])
    op["_partial_"] = True
    return Task(
        name=tcfg["name"], version=int(tcfg["version"]), operator=_instantiate(op),
        sigma=tcfg.get("sigma", 0.0), description=tcfg.get("description", ""),
        conventions=tcfg.get("conventions", ""),
        params={k: v for k, v in tcfg["operator"].items() if not k.startswith("_")},
    )


def _strip(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but CUDA is not available here. Fix: run.device=cpu or auto")
    return dev


def run_from_config(cfg: DictConfig) -> Path | None:
    """Run one cell. Returns the run directory (None when skipped)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    root = Path(c["run"]["results_root"]).expanduser().resolve()
    task = build_task(c["task"])
    method = _instantiate(_strip(c["method"], "name"))
    method.name = c["method"]["name"]
    dname = c["dataset"]["name"]

    reason = method.unsupported_reason(task)
    if reason is not None:
        skip = root / dname / task.name / method.name / "SKIPPED.json"
        write_json(skip, {"method": method.name, "task": task.name, "reason": reason, "at": now_iso()})
        print(f"[bench] skipped {method.name} x {task.name}: {reason} (recorded in {skip})")
        return None

    dataset = _instantiate(_strip(c["dataset"], "name"))
    if len(dataset) == 0:
        raise DatasetError(f"shard {dataset.shard}/{dataset.num_shards} of {dname} is empty; use fewer shards")
    dataset.check_files()
    dman = dataset.manifest()
    chash = config_hash(c, dman["sha256"])
    store = RunStore(root, dname, task.name, method.name, method.steps, chash)
    device = resolve_device(c["run"]["device"])
    parse_batch_size(c["run"]["batch_size"])  # a bad value fails before any work

    pending = len(dataset) - len(store.done_ids() & {e.id for e in dataset.entries})
    if pending == 0:
        print(f"[bench] {store.dir}: all {len(dataset)} images of this shard are done; nothing to do")
        print_summary(store)
        return store.dir

    if store.dir.exists():
        stale = remove_stale_temps(store.dir)
        if stale:
            print(f"[bench] removed {len(stale)} temp files left by an interrupted run")
    load_seconds = load_method(method, device)  # before the manifest: describe() then knows the checkpoint
    store.write_once("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    store.write_once("dataset_manifest.json", json.dumps(dman, indent=1) + "\n")
    store.write_once("manifest.json", json.dumps(_manifest(c, task, method, dataset, dman, chash, device),
                                                 indent=2, sort_keys=True, default=str) + "\n")
    batch_size, batch_rule = resolve_batch_size(c["run"]["batch_size"], method, pending, device,
                                                dataset.image_size or 256)
    opts = RunOptions(
        seed=int(c["seed"]), batch_size=batch_size, num_workers=int(c["run"]["num_workers"]),
        progress=bool(c["run"]["progress"]), load_seconds=load_seconds, batch_rule=batch_rule,
        reference_dir=reference_dir(root, dname, dataset.image_size, dman["sha256"]),
    )
    timing = restore_dataset(dataset, task, method, store, device, opts)
    if timing is not None:
        write_json(store.dir / "timing" / f"{timing['invocation']}.json", timing)
    store.consolidate()
    print_summary(store)
    lcfg = c.get("logger") or {}
    if lcfg.get("kind") == "wandb":
        log_wandb(store, c, root, **{k: v for k, v in lcfg.items() if k != "kind"})
    return store.dir


def _manifest(c, task, method, dataset, dman, chash, device) -> dict:
    return {
        "created_at": now_iso(),
        "config_hash": chash,
        "command": sys.argv,
        "git": git_info(),
        "environment": environment(device),
        "seed": {"run": c["seed"], "per_image": "sha256('<run>/<stream>/<image id>')[:8], streams degrade|restore"},
        "dataset": {"name": c["dataset"]["name"], "manifest_sha256": dman["sha256"], "count": dman["count"],
                    "image_size": dataset.image_size, "preprocessing": "guided-diffusion center_crop_arr, 8-bit"},
        "task": task.describe(),
        "method": {**method.describe(), "backprop_through_prior": bool(method.backprop_through_prior)},
        "metrics": {"pixel": METRIC_VERSION},
    }


def print_summary(store: RunStore) -> None:
    line = {"run": str(store.dir), **run_summary(store)}
    for key in ("psnr", "ssim"):
        if key in line:
            line[key] = round(line[key], 3 if key == "psnr" else 4)
    if "images_per_s" in line:
        line["images_per_s"] = round(line["images_per_s"], 3)
    width = max(len(k) for k in line)
    print("\n".join(f"  {k:<{width}} : {v}" for k, v in line.items()))


# an absolute path: ``python -m bench`` runs the module as __main__, where a relative path is ambiguous
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_from_config(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
