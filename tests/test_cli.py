"""End-to-end runs of the real CLI on the embedded sample dataset (CPU, seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import run_from_config
from bench.imageio import read_png_u8
from bench.metrics.pixel import psnr_ssim
from tests.conftest import REPO, compose, run_cli, run_dirs

pytestmark = pytest.mark.slow


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_bicubic_sr4_writes_everything_and_rerun_rewrites_nothing(tmp_path):
    proc = run_cli("method=bicubic", "task=sr4", "dataset.limit=3", results_root=tmp_path)
    assert "psnr" in proc.stdout and "images_per_s" in proc.stdout
    (run,) = run_dirs(tmp_path)
    assert run.relative_to(tmp_path).parts[:3] == ("sample", "sr4", "bicubic")
    assert len(list((run / "images").glob("*.png"))) == 3
    assert len(list((run / "degraded").glob("*.png"))) == 3
    assert read_png_u8(next((run / "degraded").glob("*.png"))).shape == (3, 16, 16)  # the 4x smaller y
    df = pd.read_parquet(run / "per_image.parquet")
    assert sorted(df["id"]) == ["astronaut", "chelsea", "coffee"]
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("git", "environment", "seed", "dataset", "task", "method", "metrics", "config_hash"):
        assert key in manifest, key
    assert manifest["task"]["name"] == "sr4" and manifest["task"]["version"] == 1
    assert len(manifest["dataset"]["manifest_sha256"]) == 64
    assert manifest["environment"]["packages"]["torch"]
    timing = json.loads(next((run / "timing").glob("*.json")).read_text())
    assert timing["images"] == 3 and timing["images_per_s"] > 0 and timing["device_name"].startswith("cpu")

    # metrics are recomputable from what was saved
    ref_dir = next((tmp_path / "sample" / "_reference").iterdir())
    for _, row in df.iterrows():
        out = read_png_u8(run / "images" / f"{row['id']}.png")[None]
        gt = read_png_u8(ref_dir / f"{row['id']}.png")[None]
        psnr, ssim = psnr_ssim(out, gt)
        assert psnr.item() == pytest.approx(row["psnr"], abs=1e-9)
        assert ssim.item() == pytest.approx(row["ssim"], abs=1e-9)

    before = _snapshot(tmp_path)
    proc = run_cli("method=bicubic", "task=sr4", "dataset.limit=3", results_root=tmp_path)
    assert "nothing to do" in proc.stdout
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
def test_metrics_computed_on_the_gpu_equal_the_cpu_definition(tmp_path):
    """On CUDA the runner computes PSNR/SSIM on the device (bench/runner.py); the stored values must equal
    psnr_ssim on the saved PNGs recomputed on the CPU."""
    run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=3", f"run.results_root={tmp_path}",
                            "run.progress=false", "run.device=cuda"))
    (run,) = run_dirs(tmp_path)
    df = pd.read_parquet(run / "per_image.parquet")
    ref_dir = next((tmp_path / "sample" / "_reference").iterdir())
    for _, row in df.iterrows():
        psnr, ssim = psnr_ssim(read_png_u8(run / "images" / f"{row['id']}.png")[None],
                               read_png_u8(ref_dir / f"{row['id']}.png")[None])
        assert psnr.item() == pytest.approx(row["psnr"], abs=1e-9)
        assert ssim.item() == pytest.approx(row["ssim"], abs=1e-9)


def test_resume_adds_only_missing_images(tmp_path):
    run_from_config(compose("method=bicubic", "task=denoise", "dataset.limit=2", f"run.results_root={tmp_path}", "run.progress=false"))
    (run,) = run_dirs(tmp_path)
    first = {p.name: p.stat().st_mtime_ns for p in (run / "images").glob("*.png")}
    run_from_config(compose("method=bicubic", "task=denoise", "dataset.limit=5", f"run.results_root={tmp_path}", "run.progress=false"))
    assert run_dirs(tmp_path) == [run]  # the limit is not part of the run identity
    df = pd.read_parquet(run / "per_image.parquet")
    assert len(df) == 5 and df["id"].is_unique
    assert all((run / "images" / n).stat().st_mtime_ns == t for n, t in first.items())
    assert len(list((run / "timing").glob("*.json"))) == 2


def test_outputs_do_not_depend_on_batch_size(tmp_path):
    for bs, sub in ((1, "a"), (3, "b")):
        run_from_config(compose("method=bicubic", "task=sr4_noisy", "dataset.limit=4", f"run.batch_size={bs}",
                                f"run.results_root={tmp_path / sub}", "run.progress=false"))
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    assert a.name == b.name
    for png in sorted((a / "degraded").glob("*.png")):
        assert png.read_bytes() == (b / "degraded" / png.name).read_bytes()
        assert (a / "images" / png.name).read_bytes() == (b / "images" / png.name).read_bytes()


def test_multirun_over_tasks(tmp_path):
    run_cli("-m", "method=bicubic", "task=sr4,deblur_gauss,denoise,inpaint,colorize", "dataset.limit=1",
            results_root=tmp_path)
    assert sorted(d.parts[-3] for d in run_dirs(tmp_path)) == sorted(
        ["sr4", "deblur_gauss", "denoise", "inpaint", "colorize"])


def test_unknown_method_lists_the_choices(tmp_path):
    proc = run_cli("method=ddrmx", results_root=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Available options in 'method'" in proc.stderr and "bicubic" in proc.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path):
    res = tmp_path / "results"
    proc = run_cli("method=bicubic", "dataset=folder", f"dataset.root={tmp_path / 'missing'}", results_root=res, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("task=denoise", "task.sigma=-0.2", results_root=res, check=False)
    assert proc.returncode == 2 and "sigma=-0.2" in proc.stderr

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(imgs / "ok.png")
    (imgs / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    proc = run_cli("method=bicubic", "dataset=folder", f"dataset.root={imgs}", "dataset.image_size=64", results_root=res, check=False)
    assert proc.returncode == 2 and "zz_corrupt.png" in proc.stderr
    assert not res.exists() or not list(res.rglob("*.png"))


def test_unsupported_pair_is_skipped_with_a_reason(tmp_path):
    proc = run_cli("method=ddrm", "task=lowlight", results_root=tmp_path)
    assert "skipped" in proc.stdout
    (skip,) = tmp_path.rglob("SKIPPED.json")
    assert "non-linear" in json.loads(skip.read_text())["reason"]
    assert not list(tmp_path.rglob("*.png"))


def test_cfg_job_shows_the_resolved_config():
    proc = subprocess.run([sys.executable, "-m", "bench", "--cfg", "job", "method=bicubic", "task=inpaint"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    assert "bench.operators.Inpainting" in proc.stdout and "missing: 0.25" in proc.stdout
