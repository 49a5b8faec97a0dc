"""Device-side checks of issue 16 that are not timings of bench.perf (run by h200_round.sh).

1. ceilings: a device-to-device copy (bytes read + written per second) and a bf16 matrix product
   (FLOP/s) on random data, as METHOD.md asks, to put the measured UNet rate against;
2. batch-size tolerance: DDRM ``deblur_gauss`` with the embedded prior (real weights) on N images, batch
   1 vs 2 vs 4 vs N, per speed setting (fp32 / bf16 eager, with and without ``micro_batch=1``): max
   difference in 8-bit levels and the fraction of values that differ, against batch 1;
3. host syncs inside DDRM's restore on CUDA (``torch.cuda.set_sync_debug_mode("warn")``, warnings counted);
4. what ``run.batch_size=auto`` picks for ADM-256 DDRM (the probe and the rule, no timing).

    python tools/device/perf/cuda_checks.py --out cuda_checks.json [--images DIR] [--dry-run]

``--dry-run`` runs the same code on the CPU with adm_tiny at 32 px (plumbing check only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import seeding  # noqa: E402
from bench.batching import resolve_batch_size  # noqa: E402
from bench.cli import build_task  # noqa: E402
from bench.imageio import to_uint8  # noqa: E402
from bench.methods.ddrm import DDRM  # noqa: E402
from bench.models import prior as prior_mod  # noqa: E402
from bench.provenance import device_name, environment  # noqa: E402
from bench.results import write_json  # noqa: E402


def model_cfg(name: str, **speed) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"), resolve=True)
    cfg["speed"] = {**(cfg.get("speed") or {}), **speed}
    return cfg


def ceilings(dev) -> dict:
    if dev.type != "cuda":
        return {"skipped": "CPU"}
    out = {}
    a = torch.empty(2**30, dtype=torch.float32, device=dev).uniform_()  # 4 GiB
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize(dev)
    out["copy_bytes_per_s"] = 10 * 2 * a.numel() * 4 / (time.perf_counter() - t0)
    del a, b
    n = 8192
    x, y = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        x @ y
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(10):
        x @ y
    torch.cuda.synchronize(dev)
    out["bf16_matmul_flop_per_s"] = 10 * 2 * n**3 / (time.perf_counter() - t0)
    return out


def load_images(folder: Path | None, n: int, size: int) -> torch.Tensor:
    if folder is not None and folder.exists():
        from bench.data import FolderDataset

        ds = FolderDataset(root=str(folder), image_size=size, allow_upscale=True, limit=n)
        return torch.stack([ds[i].image for i in range(min(n, len(ds)))])
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def batch_tolerance(dev, model: str, size: int, images: torch.Tensor, steps: int) -> list[dict]:
    deg = build_task(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "deblur_gauss.yaml"))).build(
        size, dev, 0)
    n = images.shape[0]
    ids = [f"img{i}" for i in range(n)]
    x = images.to(dev)
    rows = []
    speeds = {"fp32": {"precision": "fp32"}, "fp32+mb1": {"precision": "fp32", "micro_batch": 1},
              "bf16": {"precision": "bf16", "cpu_autocast": True},
              "bf16+mb1": {"precision": "bf16", "cpu_autocast": True, "micro_batch": 1}}
    for name, speed in speeds.items():
        prior_mod.clear_cache()
        method = DDRM(model_cfg(model, compile=False, channels_last=False, **speed), steps=steps)
        method.setup(dev)
        outs = {}
        for b in sorted({1, 2, 4, n}):
            parts = []
            for i in range(0, n, b):
                y = deg.degrade(x[i:i + b], seeding.make_generators(0, ids[i:i + b], "degrade", dev))
                parts.append(method.restore(y, deg, seeding.make_generators(0, ids[i:i + b], "restore", dev)))
            outs[b] = to_uint8(torch.cat(parts)).cpu().int()
        for b, o in outs.items():
            d = (o - outs[1]).abs()
            rows.append({"speed": name, "batch": b, "vs": 1, "max_levels": int(d.max()),
                         "fraction_differing": float((d > 0).float().mean()),
                         "images_differing": int((d.flatten(1).amax(1) > 0).sum()), "values": d.numel()})
    return rows


def sync_count(dev, model: str, size: int) -> dict:
    if dev.type != "cuda":
        return {"skipped": "CPU"}
    deg = build_task(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "sr4.yaml"))).build(size, dev, 0)
    method = DDRM(model_cfg(model, compile=False), steps=4)
    method.setup(dev)
    ids = ["a", "b"]
    x = torch.rand(2, 3, size, size, device=dev)
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade", dev))
    gens = seeding.make_generators(0, ids, "restore", dev)
    method.restore(y, deg, gens)  # warm-up
    torch.cuda.synchronize(dev)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method.restore(y, deg, seeding.make_generators(0, ids, "restore", dev))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    msgs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": 4, "sync_warnings": len(msgs), "first": msgs[:5]}


def auto_batch(dev, model: str, size: int) -> dict:
    prior_mod.clear_cache()
    method = DDRM(model_cfg(model, compile=False), steps=20)
    method.setup(dev)
    b, rule = resolve_batch_size("auto", method, 512, dev, size)
    return {"model": model, "image_size": size, "n_images": 512, "chosen": b, "rule": rule}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    small = ("adm_tiny", 32) if args.dry_run else ("adm64_imagenet96", 64)
    big = ("adm_tiny", 32) if args.dry_run else ("adm_imagenet256", 256)
    n = 4 if args.dry_run else 8
    rec = {"device_name": device_name(dev), "environment": environment(dev), "dry_run": args.dry_run}
    for key, fn in (("ceilings", lambda: ceilings(dev)),
                    ("batch_tolerance", lambda: {"model": small[0], "image_size": small[1], "steps": 20,
                                                 "rows": batch_tolerance(dev, *small, load_images(
                                                     args.images, n, small[1]), 20 if not args.dry_run else 2)}),
                    ("sync_in_ddrm_restore", lambda: sync_count(dev, *small)),
                    ("auto_batch", lambda: auto_batch(dev, *big))):
        t0 = time.perf_counter()
        try:
            rec[key] = fn()
        except (RuntimeError, ValueError, OSError) as e:
            rec[key] = {"error": f"{type(e).__name__}: {e}"}
        rec.setdefault("seconds", {})[key] = time.perf_counter() - t0
        write_json(args.out, rec)
        print(f"[cuda_checks] {key}: {json.dumps(rec[key], default=str)[:400]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
