"""A synthetic results root in the real layout, for the results browser's test, screenshots and scale check.

It writes, per (method, steps): a run folder ``<dataset>/<task>/<method>/steps<N>-<hash8>/`` with
``images/``, ``degraded/``, ``rows/<id>.json`` (sha256 records, PSNR measured on the written PNGs, SSIM and
LPIPS made up from the noise level), ``timing/t.json``, a manifest with the fields the report reads,
config.yaml and run.log; plus the ground truth under ``_reference/``. The outputs are the ground truth plus
seeded noise whose level differs per method and step count, so methods differ visibly and measurably.
Nothing here is a benchmark result.

    python tools/browser/tree.py --out /tmp/tree --runs 100 --images 2000 --size 32
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

METHODS = ("ddrm", "ddnm", "dps", "pigdm", "diffpir", "daps", "red_diff", "dcdp", "pnp_dm", "gdp")
STEPS = (10, 20, 50, 100, 200, 500, 1000, 2, 5, 1)


def small_report(tmp: Path, bootstrap: int = 0) -> Path:
    """The :data:`SMALL` tree (12 images of 32 px) under ``tmp/results`` and its report ``tmp/reports/small``."""
    from bench.report import ReportOptions, build_report

    write_tree(tmp / "results", SMALL, 12, 32)
    return build_report(ReportOptions(results=tmp / "results", name="small", out=tmp / "reports", bootstrap=bootstrap))


def manifest(method: str, task: str, dataset: str, n_images: int, size: int) -> dict:
    """The fields of a run's manifest.json that the report reads (see bench/cli.py for a real one)."""
    return {"command": "synthetic run written by tools/browser/tree.py", "code": {"fingerprint": "synthetic000"},
            "dataset": {"name": dataset, "count": n_images, "image_size": size,
                        "manifest_sha256": hashlib.sha256(dataset.encode()).hexdigest()},
            "method": {"name": method}, "seed": {"run": 0}, "task": {"name": task, "sigma": 0.0, "version": 1},
            "metrics": {"config": {"channel": "rgb", "crop_border": 0, "lpips_net": "alex"},
                        "lpips": {"backbone": {"standard": True}}}, "tuned": "official"}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def ground_truth(k: int, size: int) -> np.ndarray:
    """A smooth coloured pattern with edges (different per image index ``k``), uint8 HWC."""
    g = np.random.default_rng(k)
    y, x = np.mgrid[0:size, 0:size] / size
    f = g.uniform(2, 9, 3)
    img = np.stack([np.sin(f[c] * (x + g.uniform()) + f[(c + 1) % 3] * y) for c in range(3)], -1) * 0.4 + 0.5
    img[(x - 0.5) ** 2 + (y - g.uniform(0.3, 0.7)) ** 2 < g.uniform(0.01, 0.06)] *= 0.4  # a dark disc: an edge
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def write_tree(out: Path, runs: list[tuple[str, int]], n_images: int, size: int = 32, dataset: str = "synthetic",
               task: str = "sr4") -> list[Path]:
    """Write ``runs`` ((method, steps) each; method ``bicubic`` = steps 0, no NFE) over ``n_images`` images."""
    man = manifest("", task, dataset, n_images, size)
    ref = out / dataset / "_reference" / f"{size}-{man['dataset']['manifest_sha256'][:8]}"
    ids = [f"img{k:05d}" for k in range(n_images)]
    truth = {}
    for k, i in enumerate(ids):
        truth[i] = ground_truth(k, size)
        rec = _write(ref / f"{i}.png", _png(truth[i]))
        (ref / f"{i}.png.sha256").write_text(f"{rec['sha256']}  {i}.png\n")
    dirs = []
    for r, (method, steps) in enumerate(runs):
        base = method == "bicubic"
        chash = hashlib.sha256(f"{method}{steps}".encode()).hexdigest()[:8]
        d = out / dataset / task / method / f"{'default' if base else f'steps{steps}'}-{chash}"
        level = 14.0 if base else 3.0 + 20.0 / (1 + np.log2(1 + steps)) + 2.0 * (METHODS.index(method) % 4)
        g = np.random.default_rng(1000 + r)
        (d / "rows").mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(ids):
            gt = truth[i]
            low = gt.reshape(size // 4, 4, size // 4, 4, 3).mean((1, 3)).round().astype(np.uint8)
            out_img = (gt + g.normal(0, level, gt.shape)).clip(0, 255).round().astype(np.uint8)
            mse = float(((out_img.astype(float) - gt) ** 2).mean())
            row = {"id": i, "batch_size": 4, "reference": "ground_truth", "label": None, "nfe": 0 if base else steps,
                   "psnr": 10 * np.log10(255.0 ** 2 / max(mse, 1e-10)), "ssim": float(np.clip(1 - level / 40 + g.normal(0, 0.01), 0, 1)),
                   "lpips": float(np.clip(level / 60 + g.normal(0, 0.01), 0, 1)), "restore_seconds": 0.01,
                   "files": {"image": _write(d / "images" / f"{i}.png", _png(out_img)),
                             "degraded": _write(d / "degraded" / f"{i}.png", _png(low))}}
            (d / "rows" / f"{i}.json").write_text(json.dumps(row))
        man["method"]["name"] = method
        cfg = {"method": {"name": method}, "task": man["task"], "steps": None if base else steps, "seed": 0,
               "dataset": {"name": dataset, "limit": n_images, "image_size": size, "split": "test"}}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "manifest.json").write_text(json.dumps(man))
        (d / "run.log").write_text(f"synthetic run {method} x {task}, {n_images} images (tools/browser/tree.py)\n")
        ips = 500.0 if base else 200.0 / steps
        timing = {"images": n_images, "timed_images": n_images, "restore_seconds": n_images / ips,
                  "images_per_s": ips, "nfe_per_image": 0.0 if base else float(steps), "peak_memory_mb": 900.0,
                  "memory_kind": "process_max_rss", "device_name": "cpu: synthetic (2 threads)", "num_threads": 2,
                  "batch_size": 4, "seconds": {"total": n_images / ips}}
        (d / "timing").mkdir(exist_ok=True)
        (d / "timing" / "t.json").write_text(json.dumps(timing))
        dirs.append(d)
    return dirs


def default_runs(n: int) -> list[tuple[str, int]]:
    """``n`` cells: bicubic, then each method over the step counts (100 = bicubic + 10 methods x 10 steps)."""
    return ([("bicubic", 0)] + [(m, s) for m in METHODS for s in STEPS])[:n]


#: the small tree of the browser test and the screenshots: a baseline, three methods, two with two step counts
SMALL = [("bicubic", 0), ("ddrm", 10), ("ddrm", 50), ("dps", 10), ("dps", 100), ("ddnm", 20)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results root to write (created)")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--size", type=int, default=32, help="image side in pixels (a multiple of 4)")
    a = p.parse_args(argv)
    write_tree(a.out, default_runs(a.runs), a.images, a.size)
    print(f"wrote {a.runs} runs x {a.images} images under {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
