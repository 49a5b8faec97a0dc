"""The restoration loop: dataset shard -> degrade (task) -> restore (method) -> PNGs + per-image rows.

Typed arguments only (the CLI builds them from the config). Timing follows DESIGN.md: images/s of the
``restore`` call alone, device synchronised, the first (warm-up) batch excluded when there is more than
one; model loading, I/O and metrics are timed separately.
"""

from __future__ import annotations

import math
import resource
import time
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench import seeding
from bench.data import ImageDataset, Item
from bench.imageio import png_bytes, save_png, to_uint8
from bench.methods.base import Method
from bench.metrics.per_image import PerImageMetrics
from bench.metrics.pixel import psnr_ssim
from bench.notices import notice
from bench.provenance import device_name, now_iso
from bench.results import RunStore, reference_problem, write_json, write_reference
from bench.tasks import Degradation, Task


@dataclass
class RunOptions:
    seed: int = 0
    batch_size: int = 4
    num_workers: int = 0
    progress: bool = True
    reference_dir: Path | None = None
    load_seconds: float = 0.0  # time the caller spent in method.setup (timed separately)
    metrics: PerImageMetrics | None = None  # the stored per-image metrics (default: conf/metrics/default.yaml)
    batch_rule: dict | None = None  # how batch_size was chosen (bench.batching.resolve_batch_size)


@dataclass
class Timer:
    """Seconds per phase; "io" and "metrics" are measured on the writer thread, overlapping sampling."""

    seconds: dict = field(default_factory=lambda: {"load": 0.0, "io": 0.0, "metrics": 0.0, "degrade": 0.0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, t0: float) -> None:
        with self.lock:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB -> MiB (process RSS)


def _shape(item: Item) -> tuple[int, ...]:
    return tuple((item.image if item.image is not None else item.low).shape)


def _groups(items: list[Item]) -> list[list[Item]]:
    """Split a batch into runs of equal image shape (native-size datasets mix shapes)."""
    out: list[list[Item]] = []
    for it in items:
        if out and _shape(out[-1][0]) == _shape(it):
            out[-1].append(it)
        else:
            out.append([it])
    return out


class DegradationCache:
    """One operator per image shape (square sizes for linear tasks; any shape for non-linear ones)."""

    def __init__(self, task: Task, device: torch.device, seed: int):
        self.task, self.device, self.seed, self.cache = task, device, seed, {}

    def get(self, h: int, w: int) -> Degradation:
        if (h, w) not in self.cache:
            if h != w and self.task.linear:
                raise ValueError(
                    f"task {self.task.name!r} needs square images but got {w}x{h}. Fix: set "
                    "dataset.image_size=<size> to center-crop and resize."
                )
            size = h if h == w else (h, w)
            self.cache[(h, w)] = self.task.build(size, self.device, self.seed)
        return self.cache[(h, w)]


def _stack(items: list[Item], attr: str, device: torch.device) -> torch.Tensor | None:
    vals = [getattr(it, attr) for it in items]
    if any(v is None for v in vals):
        return None
    return torch.stack(vals).to(device)


def load_method(method: Method, device: torch.device) -> float:
    """``method.setup(device)`` (weights, device moves); returns the seconds it took."""
    t0 = time.perf_counter()
    method.setup(device)
    _sync(device)
    return time.perf_counter() - t0


def warm_up_writer(metrics: PerImageMetrics | None = None) -> None:
    """Run the writer's code paths (the per-image metrics - PSNR/SSIM, LPIPS when available - and PNG
    encoding) once on a tiny image in the main thread before sampling starts. Their first use imports
    modules and initialises kernels (PIL plugins, the LPIPS backbone's first forward); done lazily on the
    writer thread that held the GIL while the second batch, the first TIMED one, was launching kernels
    (measured on an H100 when this was torchmetrics: DDRM deblur_gauss on the 8 sample photos reported
    0.34 img/s, 12.9 with this warm-up), so short runs under-reported throughput."""
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)  # >= LPIPS-alex's 31 px minimum
    if metrics is not None:
        metrics.full_reference(x, x)
    else:
        psnr_ssim(x, x)
    png_bytes(x[0])  # save_png's encoder, without the file


def restore_dataset(dataset: ImageDataset, task: Task, method: Method, store: RunStore,
                    device: torch.device, opts: RunOptions) -> dict | None:
    """Restore every image of ``dataset`` not yet in ``store`` with an already set-up ``method``;
    returns this invocation's timing record (None when there was nothing to do)."""
    done = store.done_ids()
    pending = [i for i, e in enumerate(dataset.entries) if e.id not in done]
    if not pending:
        return None
    t0 = time.perf_counter()
    timer = Timer()
    timer.seconds["load"] = opts.load_seconds
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, pending), batch_size=opts.batch_size,
        num_workers=opts.num_workers, collate_fn=list,
    )
    degradations = DegradationCache(task, device, opts.seed)
    if opts.metrics is None:
        opts.metrics = PerImageMetrics(device=device)
    if opts.metrics.lpips_na:
        notice(f"LPIPS n/a for this run: {opts.metrics.lpips_na}")  # once per sweep (bench/notices.py)
    t_warm = time.perf_counter()
    warm_up_writer(opts.metrics)
    timer.seconds["writer_warmup"] = time.perf_counter() - t_warm
    batch_times, batch_sizes, nfes, costs = [], [], [], []
    bar = tqdm(total=len(pending), desc=f"{method.name}/{task.name}", unit="img", disable=not opts.progress)
    writer = Writer()
    try:
        for items in loader:
            for group in _groups(items):
                _restore_group(group, degradations, method, store, device, opts, timer, batch_times,
                               batch_sizes, nfes, writer)
                costs.append(dict(method.last_cost))
                bar.update(len(group))
    finally:
        writer.close()  # every finished batch is written, even when a later batch fails
        bar.close()

    timed = slice(1, None) if len(batch_times) > 1 else slice(None)
    n_timed, t_timed = sum(batch_sizes[timed]), sum(batch_times[timed])
    return {
        "invocation": uuid.uuid4().hex[:12],
        "finished_at": now_iso(),
        "shard": dataset.shard,
        "num_shards": dataset.num_shards,
        "images": sum(batch_sizes),
        "timed_images": n_timed,
        "warmup_excluded": len(batch_times) > 1,
        "restore_seconds": t_timed,
        "images_per_s": n_timed / t_timed if t_timed > 0 else math.inf,
        "nfe_per_image": (sum(n * b for n, b in zip(nfes, batch_sizes)) / sum(batch_sizes)),
        "cost_per_image": _mean_cost(costs, batch_sizes),
        "peak_memory_mb": _peak_memory_mb(device),
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "device_name": device_name(device),
        "num_threads": torch.get_num_threads(),  # CPU threads: throughput depends on them
        "batch_size": opts.batch_size,
        "batch_rule": opts.batch_rule,
        "seconds": {**timer.seconds, "total": time.perf_counter() - t0},
    }


def _mean_cost(costs: list[dict], sizes: list[int]) -> dict[str, float]:
    """Each counted quantity of ``Method.last_cost`` per image, averaged over the batches (weighted by their size);
    {} for a method that counts only its NFE."""
    keys = sorted({k for c in costs for k in c})
    return {k: sum(c.get(k, 0) * b for c, b in zip(costs, sizes)) / sum(sizes) for k in keys}


def _restore_group(group, degradations, method, store, device, opts, timer, batch_times, batch_sizes, nfes,
                   writer: "Writer"):
    ids = [it.id for it in group]
    x = _stack(group, "image", device)
    low = _stack(group, "low", device)
    ref = x if x is not None else low
    deg = degradations.get(ref.shape[-2], ref.shape[-1])

    t0 = time.perf_counter()
    y = deg.degrade(x, seeding.make_generators(opts.seed, ids, "degrade", device), low=low)
    gens = seeding.make_generators(opts.seed, ids, "restore", device)
    _sync(device)
    timer.add("degrade", t0)

    if hasattr(method, "set_labels"):  # class-conditional methods (DGP) use the dataset's labels
        method.set_labels([it.label for it in group])
    t0 = time.perf_counter()
    out = method.restore(y, deg, gens)
    _sync(device)
    batch_times.append(time.perf_counter() - t0)
    batch_sizes.append(len(group))
    nfes.append(method.last_nfe)

    bad = [i for i, v in zip(ids, torch.isnan(out).flatten(1).any(1).tolist()) if v]
    if bad:
        raise FloatingPointError(
            f"method {method.name!r} produced NaN for images {bad} on task {deg.name!r}; nothing was saved "
            "for them. Fix: check the model weights / step size (e.g. lower the guidance scale)."
        )
    t0 = time.perf_counter()
    out_u8_dev = to_uint8(out)
    meas_u8_dev = to_uint8(deg.measurement_image(y).clamp(0, 1))
    gt_u8_dev = to_uint8(x) if x is not None else None  # once: the GPU metrics and the reference PNG
    metrics = _device_metrics(opts.metrics, deg, out_u8_dev, y, meas_u8_dev, gt_u8_dev, device)
    timer.add("metrics", t0)
    t0 = time.perf_counter()
    out_u8, meas_u8 = out_u8_dev.cpu(), meas_u8_dev.cpu()
    gt_u8 = gt_u8_dev.cpu() if gt_u8_dev is not None else None
    timer.add("io", t0)
    # (CPU metrics,) PNG and row writes run on the writer thread, overlapping the next batch's sampling
    info = {"nfe": method.last_nfe, "restore_seconds": batch_times[-1] / len(group), "batch_size": len(group)}
    writer.submit(_write_group, group, out_u8, meas_u8, gt_u8, info, store, opts, timer, metrics)


def _device_metrics(pm: PerImageMetrics, deg, out_u8, y, meas_u8, gt_u8, device) -> dict[str, list]:
    """The metrics computed where the batch is: consistency always (it needs the operator and y); on CUDA
    also the full-reference ones (milliseconds there, while on the writer thread's CPU a 256-px float64
    SSIM used to cost ~125 ms per image: measured on an H100, slower than compiled DDRM sampling)."""
    values = pm.consistency(deg, out_u8, y, meas_u8)
    if device.type == "cuda" and gt_u8 is not None:
        values.update(pm.full_reference(out_u8, gt_u8))
    return values


def _write_group(group, out_u8, meas_u8, gt_u8, info, store, opts, timer, metrics) -> None:
    """Full-reference metrics from the 8-bit images (unless computed on the GPU already), then PNGs, then
    the row (its presence marks "done")."""
    if "psnr" not in metrics:
        t0 = time.perf_counter()
        metrics = {**metrics, **opts.metrics.full_reference(out_u8, gt_u8)}
        timer.add("metrics", t0)

    t0 = time.perf_counter()
    for k, item in enumerate(group):
        if gt_u8 is not None and opts.reference_dir is not None:
            ref_path = Path(opts.reference_dir) / f"{item.id}.png"
            if reference_problem(ref_path) is not None:  # absent, or truncated / changed: (re)write it
                write_reference(gt_u8[k], ref_path)
        save_png(out_u8[k], store.image_path(item.id))
        save_png(meas_u8[k], store.degraded_path(item.id))
        store.write_row({"id": item.id, "label": item.label, **{key: v[k] for key, v in metrics.items()},
                         "reference": "ground_truth" if gt_u8 is not None else None, **info,
                         "files": store.file_records(item.id)})  # sha256 + size: what resume checks
    timer.add("io", t0)


class Writer:
    """One background thread for metrics + writes: keeps order (a row after its PNGs, groups in order),
    bounds the queue so memory stays flat, and re-raises a failed write in the main thread."""

    def __init__(self, max_pending: int = 4):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-writer")
        self.pending: list[Future] = []
        self.max_pending = max_pending

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.max_pending or (self.pending and self.pending[0].done()):
            self.pending.pop(0).result()

    def close(self) -> None:
        try:
            for fut in self.pending:
                fut.result()
        finally:
            self.pool.shutdown(wait=True)
