"""``python -m bench``: the only place that touches DictConfig / instantiate.

Checks every value up front (:mod:`bench.checks`: one-paragraph errors, before any directory is made),
builds task, method and dataset from their config groups (``_target_``), skips unsupported (method, task)
pairs with a recorded reason, then restores into the run directory of the run's identity
(:mod:`bench.results`) and prints a summary. Rerunning the same command resumes: rows whose PNGs still
match their recorded sha256 are kept, the others are redone (said in the output and in ``run.log``).

Exit codes of a single run: 0 done, 2 a user error (one paragraph, no traceback), 130 Ctrl-C, 143 SIGTERM
(finished images are kept in both). In a multirun a user error is raised instead, so Hydra records the
failed job and the sweep goes on; :mod:`bench.sweep` lists the failed cells at the end and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bench.checks import (ConfigError, RunLog, StorageError, check_dataset_options, check_missing,
                          check_results_root, check_run_options, check_targets, storage_error)
from bench.batching import resolve_batch_size
from bench.cli_errors import checked
from bench.data import DatasetError
from bench.models.assets import AssetError
from bench.paths import conf_dir
from bench.loggers import log_wandb, run_summary
from bench.imageio import ImageReadError, remove_stale_temps, to_uint8
from bench.metrics.per_image import MetricsConfig, PerImageMetrics
from bench.provenance import environment, git_info, now_iso
from bench.results import (RunStore, code_fingerprint, config_hash, identity, reference_dir, reference_problem,
                           write_json, write_reference)
from bench.runner import RunOptions, load_method, restore_dataset
from bench.tasks import Task
from bench.tuned import apply as apply_preset

log = logging.getLogger("bench")

#: errors that are the user's input, printed without a traceback
USER_ERRORS = (DatasetError, ImageReadError, ValueError, FileNotFoundError, FloatingPointError, AssetError,
               StorageError)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the handler :func:`main` installs (like KeyboardInterrupt, it is
    not an ``Exception``: nothing on the way catches it, and the writer thread still flushes)."""


class Interrupted(BaseException):
    """A run stopped by Ctrl-C / SIGTERM: the message and the exit code (130 / 143)."""

    def __init__(self, cause: BaseException, done: int | None = None, total: int | None = None,
                 run_dir: Path | None = None):
        self.code = 143 if isinstance(cause, Terminated) else 130
        what = "terminated (SIGTERM)" if self.code == 143 else "interrupted"
        if not done:
            kept = "no image was finished yet"
        else:
            kept = f"{done} of {total} images finished are kept in {run_dir}"
        self.message = f"{what}; {kept}; rerun the same command to resume"
        super().__init__(self.message)


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
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"run.device={name!r} is not a device ({err}); allowed: auto, cpu, cuda, cuda:N. "
                          "Fix: e.g. run.device=auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but CUDA is not available here. Fix: run.device=cpu or auto")
    return dev


def command_line() -> str:
    """The command that reruns this cell: ``python -m bench <the job's overrides>`` when Hydra runs it
    (a multirun job or a submitit/SLURM job gets its own cell's overrides, not the sweep's or submitit's
    command line), else ``sys.argv``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return shlex.join(["python", "-m", "bench", *HydraConfig.get().overrides.task])
    return shlex.join(sys.argv)


def _empty_shard_error(dataset, dname: str) -> DatasetError:
    n = len(dataset.all_entries)
    return DatasetError(
        f"shard {dataset.shard} of dataset.num_shards={dataset.num_shards} is empty: dataset={dname} has {n} "
        f"image(s) to split. Fix: use dataset.num_shards <= {max(n, 1)} (or a larger dataset.limit).")


@dataclass
class Cell:
    """What one run needs, built and checked by :func:`run_from_config`."""

    c: dict  # the resolved config
    root: Path
    task: Task
    method: object
    dataset: object
    dman: dict
    code: dict
    versions: dict
    chash: str
    store: RunStore
    device: object
    force: bool
    metrics: PerImageMetrics
    outcome: dict  # see run_from_config


def _job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_from_config(cfg: DictConfig, outcome: dict | None = None, overrides: list[str] | None = None) -> Path | None:
    """Run one cell. Returns the run directory (None when skipped). ``outcome``, when given, receives what a
    sweep's summary shows of the cell (:mod:`bench.sweep`): ``skipped`` (the reason), or ``expected`` (the
    shard's images), ``new`` (restored by this invocation) and ``summary`` (the printed summary).
    ``overrides``: the command line's overrides (default: the Hydra job's), whose ``method.*`` keys win over
    a tuned preset (:mod:`bench.tuned`)."""
    outcome = {} if outcome is None else outcome
    c = OmegaConf.to_container(cfg, resolve=True)
    check_missing(c, OmegaConf.to_container(cfg, resolve=False))
    check_run_options(c["run"])
    check_dataset_options(c["dataset"])
    check_targets(c)
    settings = apply_preset(c, _job_overrides() if overrides is None else overrides)  # before the identity
    if settings:
        print(f"[bench] {settings}")
    metrics_cfg = MetricsConfig.from_config(c.get("metrics"))
    root = check_results_root(c["run"]["results_root"])
    force = bool(c["run"].get("force", False))
    if force and int(c["dataset"].get("num_shards", 1)) > 1:
        raise ConfigError("run.force=true with dataset.num_shards > 1 would let every shard move the others' "
                          "images aside. Fix: recompute once without shards (run.force=true), or move the run "
                          "directory aside yourself and rerun the shards.")
    task = build_task(c["task"])
    device = resolve_device(c["run"]["device"])
    method = _instantiate(_strip(c["method"], "name"))
    method.name = c["method"]["name"]
    dname = c["dataset"]["name"]

    reason = method.unsupported_reason(task)
    if reason is not None:
        skip = root / dname / task.name / method.name / "SKIPPED.json"
        write_json(skip, {"method": method.name, "task": task.name, "reason": reason, "at": now_iso()})
        print(f"[bench] skipped {method.name} x {task.name}: {reason} (recorded in {skip})")
        outcome["skipped"] = reason
        return None

    dataset = _instantiate(_strip(c["dataset"], "name", "split", "validation"))
    if len(dataset) == 0:
        raise _empty_shard_error(dataset, dname)
    dataset.check_files(progress=bool(c["run"]["progress"]))  # full decode of the shard, before any dir
    dman = dataset.manifest()
    code = code_fingerprint()
    metrics = PerImageMetrics(metrics_cfg, device)  # LPIPS weights (or the reason they are n/a) once
    versions = {"metrics": metrics.manifest_entry()["versions"]}
    chash = config_hash(c, dman["sha256"], code["fingerprint"], versions)
    store = RunStore(root, dname, task.name, method.name, method.steps, chash)
    cell = Cell(c, root, task, method, dataset, dman, code, versions, chash, store, device, force, metrics,
                outcome)
    ids = {e.id for e in dataset.entries}
    runlog = RunLog()
    try:
        return _run_cell(cell, runlog)
    except (KeyboardInterrupt, Terminated) as err:
        stop = Interrupted(err, len(store.done_ids() & ids), len(ids), store.dir)
        runlog.note(stop.message, echo=False)
        raise stop from None
    except USER_ERRORS as err:
        runlog.note(f"error: {err}", echo=False)
        raise
    except Exception as err:
        mapped = storage_error(err, store.dir) if isinstance(err, OSError) else None
        if mapped is None:
            runlog.note(f"failed: {''.join(traceback.format_exception(err)).rstrip()}", echo=False)
            raise
        runlog.note(f"error: {mapped}", echo=False)
        raise mapped from None
    finally:
        runlog.close()


def _run_cell(cell: Cell, runlog: RunLog) -> Path:
    store, dataset = cell.store, cell.dataset
    ids = [e.id for e in dataset.entries]
    opts = RunOptions(
        seed=int(cell.c["seed"]), batch_size=0,  # resolved once the method is loaded (run.batch_size=auto)
        num_workers=int(cell.c["run"]["num_workers"]), progress=bool(cell.c["run"]["progress"]),
        metrics=cell.metrics, reference_dir=reference_dir(cell.root, cell.c["dataset"]["name"], dataset.image_size, cell.dman["sha256"]),
    )
    runlog.note(f"start: {command_line()} (shard {dataset.shard}/{dataset.num_shards}, {len(ids)} images, "
                f"device {cell.device}, code {cell.code['fingerprint'][:12]})", echo=False)
    replace = cell.force and store.dir.exists()
    done: set[str] = set()
    if replace:
        runlog.note("run.force=true: recomputing every image; the previous run is moved to "
                    f"{store.dir.parent / '.replaced'}/ once the method has loaded")
    elif store.dir.exists():
        runlog.attach(store.dir)
        done, notes = store.verify(ids)
        notes += _repair_references(dataset, done, opts.reference_dir)
        for msg in notes:
            runlog.note(msg)
        if len(done) == len(ids):
            runlog.note(f"{store.dir}: all {len(ids)} images of this shard are done and verified; nothing to do")
            cell.outcome.update(expected=len(ids), new=0, summary=print_summary(store))
            _log(cell.c, store, cell.root)
            return store.dir
        runlog.note(f"resume: {len(done)} of {len(ids)} images are done and verified; restoring "
                    f"{len(ids) - len(done)}")
        stale = remove_stale_temps(store.dir)
        if stale:
            runlog.note(f"removed {len(stale)} temp files left by an interrupted run")
    opts.load_seconds = load_method(cell.method, cell.device)  # before the manifest: describe() knows the checkpoint
    opts.batch_size, opts.batch_rule = resolve_batch_size(cell.c["run"]["batch_size"], cell.method,
                                                          len(ids) - len(done), cell.device, dataset.image_size or 256)
    if replace:
        runlog.note(f"run.force=true: moved the previous run to {store.move_aside()}")
    store.write_once("config.yaml", OmegaConf.to_yaml(OmegaConf.create(cell.c)))
    store.write_once("dataset_manifest.json", json.dumps(cell.dman, indent=1) + "\n")
    store.write_once("manifest.json", json.dumps(_manifest(cell), indent=2, sort_keys=True, default=str) + "\n")
    runlog.attach(store.dir)
    timing = restore_dataset(dataset, cell.task, cell.method, store, cell.device, opts)
    if timing is not None:
        write_json(store.dir / "timing" / f"{timing['invocation']}.json", timing)
    store.consolidate()
    cell.outcome.update(expected=len(ids), new=len(ids) - len(done), summary=print_summary(store))
    runlog.note(f"finished: {json.dumps(cell.outcome['summary'], default=str)}", echo=False)
    _log(cell.c, store, cell.root)
    return store.dir


def _log(c: dict, store: RunStore, root: Path) -> None:
    """The experiment logger (W&B logs only what is new, and says so when nothing is)."""
    lcfg = c.get("logger") or {}
    if lcfg.get("kind") == "wandb":
        log_wandb(store, c, root, **{k: v for k, v in lcfg.items() if k != "kind"})


def _repair_references(dataset, done: set[str], ref_dir: Path) -> list[str]:
    """Ground-truth PNGs of finished images that are missing or fail their sha256 record are rewritten
    from the dataset (decoding one image is cheaper than redoing its restoration)."""
    notes = []
    for i, e in enumerate(dataset.entries):
        if e.id not in done or e.path is None:
            continue
        ref = Path(ref_dir) / f"{e.id}.png"
        problem = reference_problem(ref)
        if problem is not None:
            write_reference(to_uint8(dataset[i].image), ref)
            notes.append(f"rewrote the ground truth of {e.id} from the dataset: {problem}")
    return notes


def _manifest(cell: Cell) -> dict:
    c, task, method, dataset, dman = cell.c, cell.task, cell.method, cell.dataset, cell.dman
    return {
        "created_at": now_iso(),
        "config_hash": cell.chash,
        "identity": identity(c, dman["sha256"], cell.code["fingerprint"], cell.versions),
        "command": command_line(),
        "argv": sys.argv,
        "code": cell.code,
        "git": git_info(),
        "environment": environment(cell.device),
        "seed": {"run": c["seed"], "per_image": "sha256('<run>/<stream>/<image id>')[:8], streams degrade|restore"},
        "dataset": {"name": c["dataset"]["name"], "manifest_sha256": dman["sha256"], "count": dman["count"],
                    "image_size": dataset.image_size, "preprocessing": dataset.preprocessing_rule},
        "task": task.describe(),
        "method": {**method.describe(), "backprop_through_prior": bool(method.backprop_through_prior)},
        "tuned": c.get("tuned", "official"),  # official, or the applied preset's record (bench/tuned.py)
        "metrics": cell.metrics.manifest_entry(),
    }


def print_summary(store: RunStore) -> dict:
    line = {"run": str(store.dir), **run_summary(store)}
    for key, digits in (("psnr", 3), ("ssim", 4), ("lpips", 4), ("consistency", 6), ("consistency_psnr", 3),
                        ("consistency_gdp", 3)):
        if key in line:
            line[key] = round(line[key], digits)
    if "images_per_s" in line:
        line["images_per_s"] = round(line["images_per_s"], 3)
    width = max(len(k) for k in line)
    print("\n".join(f"  {k:<{width}} : {v}" for k, v in line.items()))
    return line


# an absolute path: ``python -m bench`` runs the module as __main__, where a relative path is ambiguous;
# the checkout's conf/ or the copy installed with the package (bench/paths.py)
CONF_DIR = str(conf_dir())


@contextlib.contextmanager
def sigterm_raises():
    """While running, SIGTERM raises :class:`Terminated` in the main thread (a second one kills at once).
    Installed only over the default handler in the main thread: under submitit, whose own SIGTERM/USR2
    handlers requeue SLURM jobs, nothing changes."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@checked  # misspelt keys and options, unquoted values: "did you mean", exit 2 before Hydra starts
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict:
    """Returns the run directory and the outcome: a multirun job's return value, which
    :class:`bench.sweep.SweepSummary` records for the sweep's summary (a single run ignores it)."""
    with sigterm_raises():
        outcome: dict = {}
        try:
            outcome["run_dir"] = run_from_config(cfg, outcome)
            return outcome
        except Interrupted as stop:
            print(f"[bench] {stop.message}", file=sys.stderr)
            sys.exit(stop.code)
        except (KeyboardInterrupt, Terminated) as err:  # before the run directory was known
            stop = Interrupted(err)
            print(f"[bench] {stop.message}", file=sys.stderr)
            sys.exit(stop.code)
        except USER_ERRORS as err:
            if _in_multirun():
                raise  # Hydra records the failed job and goes on; bench.sweep lists it at the end
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
