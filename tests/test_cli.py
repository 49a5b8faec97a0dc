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
    log = (run / "run.log").read_text()
    proc = run_cli("method=bicubic", "task=sr4", "dataset.limit=3", results_root=tmp_path)
    assert "nothing to do" in proc.stdout
    after = _snapshot(tmp_path)
    assert after.pop(run / "run.log") != before.pop(run / "run.log")  # the log is appended, nothing else changes
    assert after == before
    new_lines = (run / "run.log").read_text()[len(log):].splitlines()
    assert len(new_lines) == 2 and "start: python -m bench method=bicubic task=sr4 dataset.limit=3" in new_lines[0]
    assert "all 3 images of this shard are done and verified; nothing to do" in new_lines[1]


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
    proc = run_cli("method=bicubic", "dataset=folder", results_root=res, check=False)  # root left at ???
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "MissingMandatoryValue" not in proc.stderr
    assert "error: dataset.root is required for dataset=folder; pass dataset.root=" in proc.stderr

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


# ----------------------------------------------------------------------------- run identity, resume, verify
def _run(root, *overrides):
    return run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=3", *overrides,
                                   f"run.results_root={root}", "run.progress=false", "run.device=cpu"))


def test_step_less_method_with_a_steps_sweep_is_one_run(tmp_path, capsys):
    first = _run(tmp_path, "steps=10", "dataset.limit=1")
    assert first.name.startswith("default-")  # labelled by the method's own steps (bicubic has none)
    assert _run(tmp_path, "steps=20", "dataset.limit=1") == first
    assert "nothing to do" in capsys.readouterr().out
    assert run_dirs(tmp_path) == [first]


def test_changed_code_gets_a_new_run_directory(tmp_path, monkeypatch):
    import shutil

    from bench import cli
    from bench.results import PACKAGE_DIR, code_fingerprint

    old = _run(tmp_path, "dataset.limit=1")
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["code"] == code_fingerprint()
    assert "bench/methods/baselines.py" in manifest["code"]["modules"]
    # the same run with an edited bench/methods/baselines.py (a copy of the package: the fingerprint is
    # computed from its files exactly as from the real ones)
    edited = tmp_path / "edited" / "bench"
    shutil.copytree(PACKAGE_DIR, edited, ignore=shutil.ignore_patterns("__pycache__", "priors"))
    f = edited / "methods" / "baselines.py"
    f.write_text(f.read_text() + "\n# an edit\n")
    monkeypatch.setattr(cli, "code_fingerprint", lambda: code_fingerprint(edited))
    new = _run(tmp_path, "dataset.limit=1")
    assert new != old and new.parent == old.parent
    assert json.loads((new / "manifest.json").read_text())["code"]["fingerprint"] != manifest["code"]["fingerprint"]


def test_force_recomputes_into_a_fresh_directory_and_keeps_the_old_one(tmp_path, capsys):
    run = _run(tmp_path, "dataset.limit=2")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert _run(tmp_path, "dataset.limit=2", "run.force=true") == run
    (moved,) = (run.parent / ".replaced").iterdir()
    assert {p.relative_to(moved): p.read_bytes() for p in moved.rglob("*") if p.is_file()} == before
    assert len(list((run / "rows").glob("*.json"))) == 2 and len(list((run / "timing").glob("*.json"))) == 1
    assert f"moved the previous run to {moved}" in (run / "run.log").read_text()
    from bench.verify import find_runs

    assert find_runs(tmp_path) == [run]  # the old run is out of reports, verification and resumes
    with pytest.raises(ValueError, match="run.force=true with dataset.num_shards > 1"):
        _run(tmp_path, "run.force=true", "dataset.num_shards=2")


def test_resume_verifies_files_redoes_damaged_images_and_verify_reports_them(tmp_path, capsys):
    from bench.verify import main as verify

    run = _run(tmp_path)
    ref_dir = next((tmp_path / "sample" / "_reference").iterdir())
    good = {p.name: p.read_bytes() for sub in ("images", "degraded") for p in (run / sub).glob("*.png")}
    assert verify([str(tmp_path)]) == 0
    capsys.readouterr()

    (run / "rows" / "astronaut.json").write_text((run / "rows" / "astronaut.json").read_text()[:40])  # truncated row
    png = run / "images" / "chelsea.png"
    png.write_bytes(png.read_bytes()[:100])  # truncated image, row intact
    deg = run / "degraded" / "coffee.png"
    data = bytearray(deg.read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    deg.write_bytes(bytes(data))
    ref = ref_dir / "coffee.png"
    ref.write_bytes(ref.read_bytes()[:50])  # truncated ground truth
    assert verify([str(run)]) == 1
    out = capsys.readouterr().out
    assert "rows/astronaut.json is not readable JSON" in out and "images/chelsea.png is truncated" in out
    assert "degraded/coffee.png does not match its recorded sha256" in out

    # the report skips the damaged images with a warning instead of a traceback
    from bench.report.aggregate import scan

    with pytest.warns(UserWarning) as warned:
        assert scan(tmp_path) == []  # each of the 3 images has a damaged file or row
    assert sum("left out of the report" in str(w.message) for w in warned) == 3

    _run(tmp_path)
    out = capsys.readouterr().out
    assert "redo astronaut: rows/astronaut.json is not readable JSON" in out and "rows/.quarantine/" in out
    assert "redo chelsea: images/chelsea.png is truncated or was changed (100 bytes" in out
    assert "redo coffee: degraded/coffee.png does not match" in out
    assert "resume: 0 of 3 images are done and verified; restoring 3" in out
    assert {p.name: p.read_bytes() for sub in ("images", "degraded") for p in (run / sub).glob("*.png")} == good
    assert sorted(p.name.split(".")[0] for p in (run / "rows" / ".quarantine").iterdir()) == [
        "astronaut", "chelsea", "coffee"]
    log = (run / "run.log").read_text()
    assert log.count("start: ") == 2 and "redo chelsea" in log and "finished: " in log
    assert verify([str(tmp_path)]) == 0

    # a damaged ground truth of a finished image is rewritten from the dataset, without redoing the image
    ref.write_bytes(ref.read_bytes()[:50])
    capsys.readouterr()
    _run(tmp_path)
    out = capsys.readouterr().out
    assert "rewrote the ground truth of coffee" in out and "nothing to do" in out
    # a stored metric that does not match the PNGs is a verify error
    row = json.loads((run / "rows" / "coffee.json").read_text())
    row["psnr"] += 0.5
    (run / "rows" / "coffee.json").write_text(json.dumps(row))
    assert verify([str(run)]) == 1 and "coffee: stored psnr=" in capsys.readouterr().out


def test_verify_builds_the_metrics_once_for_runs_that_share_them(tmp_path, monkeypatch, capsys):
    """LPIPS (its backbone, hundreds of MB) is loaded once per verify invocation, not once per run."""
    import shutil

    import bench.metrics.per_image as per_image
    from bench.verify import main as verify

    run = _run(tmp_path, "dataset.limit=2")
    shutil.copytree(run, run.with_name(run.name + "-copy"))  # a second run with the same metrics config
    built, real = [], per_image.PerImageMetrics
    monkeypatch.setattr(per_image, "PerImageMetrics", lambda *a, **k: built.append(a) or real(*a, **k))
    capsys.readouterr()
    assert verify([str(tmp_path)]) == 0
    assert "2 run(s), 4 image(s) verified, 0 problem(s)" in capsys.readouterr().out and len(built) == 1


# ----------------------------------------------------------------------------- bad values, before any directory
@pytest.mark.parametrize("overrides, expect", [
    (("task=denoise", "task.sigma=nan"), "task.sigma=nan must be a number >= 0 and <= 1, not NaN"),
    (("task=denoise", "task.sigma=2"), "task.sigma=2 must be a number >= 0 and <= 1"),
    (("run.batch_size=0",), "run.batch_size=0 is not allowed: it must be an integer >= 1"),
    (("run.batch_size=-2",), "run.batch_size=-2 is not allowed"),
    (("run.batch_size=2.5",), "run.batch_size=2.5 is not allowed"),
    (("run.batch_size=four",), "run.batch_size='four' is not allowed"),
    (("dataset.limit=0",), "dataset.limit=0 is not allowed: it must be null (every image) or an integer >= 1"),
    (("dataset=folder",), "dataset.root is required for dataset=folder; pass dataset.root=/path/to/images."),
    (("dataset=imagenet_val",), "dataset.root is required for dataset=imagenet_val; pass dataset.root=/path/to"
                                "/images or set the environment variable IMAGENET_VAL_ROOT"),
    (("dataset=folder", "dataset.root='/nonexistent/Bilder ü_日本'"), "'/nonexistent/Bilder ü_日本' does not exist"),
    (("run.device=gpu",), "run.device='gpu' is not a device"),
    (("dataset.limit=2", "dataset.num_shards=4", "dataset.shard=3"),
     "shard 3 of dataset.num_shards=4 is empty: dataset=sample has 2 image(s)"),
])
def test_bad_values_fail_with_the_fix_before_any_directory(tmp_path, monkeypatch, overrides, expect):
    monkeypatch.delenv("IMAGENET_VAL_ROOT", raising=False)
    res = tmp_path / "results"
    with pytest.raises(ValueError) as err:
        run_from_config(compose("method=bicubic", *overrides, f"run.results_root={res}", "run.progress=false"))
    assert expect in str(err.value)
    assert "Fix:" in str(err.value) or "pass " in str(err.value)
    assert not res.exists()


def test_unwritable_results_root_fails_with_the_path_and_the_fix(tmp_path, monkeypatch):
    import os

    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root, expect in ((a_file, "is a file"), (a_file / "sub" / "results", f"lies under the file {str(a_file)!r}")):
        with pytest.raises(ValueError, match="Fix: pass run.results_root=") as err:
            _run(root)
        assert expect in str(err.value)
    # a read-only file system (what access(2) reports there; root ignores permission bits, so simulated)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(ValueError, match=r"is not writable \(read-only file system or no permission\)"):
        _run(tmp_path / "results")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_full_disk_mid_run_keeps_finished_images_and_says_the_fix(tmp_path, monkeypatch):
    import errno

    from bench import runner
    from bench.checks import StorageError

    real_save, calls = runner.save_png, []

    def save_png(img, path):
        calls.append(path)
        if len(calls) == 3:  # the second image's restored PNG: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(img, path)

    monkeypatch.setattr(runner, "save_png", save_png)
    with pytest.raises(StorageError) as err:
        _run(tmp_path, "run.batch_size=1")
    msg = str(err.value)
    assert "No space left on device" in msg and "the disk is full" in msg and str(calls[2]) in msg
    assert "Fix: free space on it, or pass run.results_root=" in msg
    (run,) = run_dirs(tmp_path)
    assert not (run / "rows" / "chelsea.json").exists() and (run / "rows" / "astronaut.json").is_file()
    assert "error: cannot write" in (run / "run.log").read_text()
    monkeypatch.setattr(runner, "save_png", real_save)
    _run(tmp_path, "run.batch_size=1")
    assert len(list((run / "rows").glob("*.json"))) == 3
