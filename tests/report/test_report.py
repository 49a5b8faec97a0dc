"""``python -m bench.report`` on a small real results root (built with the real CLI, in-process), plus unit
tests of the pieces that decide numbers: bootstrap CIs, bolding, paper values, LOE, FID caching."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, SHARED_DATA, compose, run_dirs, save_random_inception

ZERO_DCE = SHARED_DATA / "zero-dce" / "Epoch99.pth"
LOWLIGHT = SHARED_DATA / "lowlight"
CELLS = [
    ("method=bicubic", "task=sr4"),
    ("method=bicubic", "task=denoise"),
    ("method=bicubic", "method.mode=bilinear", "task=sr4"),
    ("method=bicubic", "task=lowlight"),
    ("method=ddrm", "task=lowlight"),  # unsupported: recorded in SKIPPED.json
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real results root: bicubic/bilinear on sr4 + denoise, lowlight (+ Zero-DCE, + unpaired real photos)."""
    from bench.cli import run_from_config

    root = tmp_path_factory.mktemp("results")
    cells = list(CELLS)
    if ZERO_DCE.is_file():
        cells.append(("method=zero_dce", "task=lowlight", f"method.weights.path={ZERO_DCE}"))
    extra = []
    if LOWLIGHT.is_dir():  # real low-light photos without ground truth: the unpaired case
        extra.append(("method=bicubic", "task=lowlight", "dataset=lol", f"dataset.root={LOWLIGHT}",
                      "dataset.image_size=200", "dataset.limit=2"))
    for cell in cells + extra:
        limit = [] if any(c.startswith("dataset.limit") for c in cell) else ["dataset.limit=4"]
        cfg = compose(*cell, *limit, f"run.results_root={root}", "run.progress=false", "run.device=cpu")
        run_from_config(cfg)
    return root


def report(results: Path, out: Path, *args: str, name: str = "t") -> Path:
    from bench.report.__main__ import main

    assert main(["--results", str(results), "--name", name, "--out", str(out), *args]) == 0
    return out / name


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "empty-cache"))


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 architecture with random weights, saved with torch.save(state_dict)."""
    return save_random_inception(tmp_path_factory.mktemp("inception"))


def _table_rows(readme: str, section: str) -> list[list[str]]:
    """Cells of our table in ``## <section>`` (the first table after the heading)."""
    block = readme.split(f"## {section}\n", 1)[1]
    lines = [ln for ln in block.split("**Reported in the papers")[0].splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


# ----------------------------------------------------------------------------- end to end, offline
def test_report_offline_cli(results, tmp_path):
    """The real CLI (subprocess), offline without Inception weights: tables, n/a reasons, files."""
    env = {**os.environ, "BENCH_OFFLINE": "1", "BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "bench.report", "--results", str(results), "--name", "off", "--out",
           str(tmp_path), "--bootstrap", "200"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "off"
    readme = (out / "README.md").read_text()
    n_runs = len([d for d in run_dirs(results) if any((d / "rows").glob("*.json"))])
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == n_runs == len(pd.read_parquet(out / "runs.parquet")) >= 4
    for dataset, task in {(d, t) for d, t in zip(df["dataset"], df["task"])}:
        assert f"## {dataset} / {task}\n" in readme
        assert (out / "figures" / f"{dataset}_{task}_tradeoff.png").stat().st_size > 0
        assert (out / "figures" / f"{dataset}_{task}_tradeoff.svg").stat().st_size > 0
        assert (out / "figures" / f"{dataset}_{task}_grid.png").is_file()
    # FID n/a with the AssetError's instructions: which file, where
    rows = _table_rows(readme, "sample / sr4")
    fid_col = rows[0].index("FID ↓")
    fid_cell = rows[1][fid_col]
    assert fid_cell.startswith("n/a (Inception weights unavailable")
    assert "weights-inception-2015-12-05-6726825d.pth" in fid_cell and str(tmp_path / "cache") in fid_cell
    assert "--inception-weights" in fid_cell
    assert df["fid"].isna().all()
    assert df.loc[df["dataset"] == "sample", "fid_na"].str.contains("offline mode").all()
    # the figure says it is not an FID plot
    assert "FID is unavailable" in readme and "PSNR is plotted instead" in readme
    svg = (out / "figures" / "sample_sr4_tradeoff.svg").read_text()
    assert "PSNR" in svg and "FID unavailable" in svg and "<dc:date>" not in svg
    # papers side by side, with the citation
    assert "**Reported in the papers (sr4)**" in readme and "Liu Table 1" in readme and "CVPR 2023" in readme
    assert "skipped: `ddrm` x `lowlight`" in readme
    if LOWLIGHT.is_dir():
        lol = df[df["dataset"] == "lol"].iloc[0]
        assert "no ground truth" in lol["psnr_na"] and "no ground truth" in lol["fid_na"]
        assert math.isfinite(lol["niqe_mean"])  # NIQE from the default ../shared/data params
        assert math.isfinite(lol["pi_mean"]) or "PI needs Ma" in lol["pi_na"]  # pyiqa is optional
    # sample grid: columns = ground truth, degraded, one per method variant; rows of 64 px tiles
    n_variants = df[(df["dataset"] == "sample") & (df["task"] == "sr4")]["variant"].nunique()
    from bench.report.figures import grid_header_height

    with Image.open(out / "figures" / "sample_sr4_grid.png") as im:
        assert im.size[0] == (2 + n_variants) * 64 == 4 * 64
        assert (im.size[1] - 4 * 64 - 4) % 12 == 0 and im.size[1] >= grid_header_height(1) + 4 * 64


def test_bold_in_generated_table(results, tmp_path, offline):
    out = report(results, tmp_path, "--bootstrap", "100")
    df = pd.read_csv(out / "runs.csv")
    rows = _table_rows((out / "README.md").read_text(), "sample / sr4")
    head, body = rows[0], rows[1:]
    sub = df[(df["dataset"] == "sample") & (df["task"] == "sr4")].set_index("variant")
    for col, key, higher in (("PSNR ↑", "psnr_mean", True), ("SSIM ↑", "ssim_mean", True),
                             ("Throughput (img/s) ↑", "images_per_s", True)):
        best = sub[key].idxmax() if higher else sub[key].idxmin()
        for cells in body:
            assert cells[head.index(col)].startswith("**") == (cells[0] == best), (col, cells)
    assert {"bicubic (mode=bicubic)", "bicubic (mode=bilinear)"} == set(sub.index)


def test_idempotent(results, tmp_path, offline):
    a = report(results, tmp_path / "a")
    b = report(results, tmp_path / "b")
    for f in ("README.md", "runs.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    for f in ("sample_sr4_tradeoff.svg", "sample_sr4_tradeoff.png", "sample_sr4_grid.png"):
        assert (a / "figures" / f).read_bytes() == (b / "figures" / f).read_bytes()


# ----------------------------------------------------------------------------- FID with a weights file
def _cell(root: Path, *overrides: str) -> None:
    from bench.cli import run_from_config

    task = [] if any(o.startswith("task=") for o in overrides) else ["task=sr4"]
    run_from_config(compose(*task, *overrides, f"run.results_root={root}", "run.progress=false",
                            "run.device=cpu"))


def test_fid_with_weights_cached(random_inception, tmp_path, offline):
    """Numeric FID/KID with a weights file (with the n < 2048 warning); the second report recomputes nothing."""
    from bench.report import dataset_metrics as dm

    root = tmp_path / "results"  # small on purpose: Inception-v3 ~1 s per image, a 2048-D FID ~5 s on CPU
    _cell(root, "method=bicubic", "dataset.limit=2")
    weights = ["--inception-weights", str(random_inception), "--bootstrap", "50"]
    before = dm.COUNTS["inception_images"]
    out = report(root, tmp_path / "r1", *weights)
    assert dm.COUNTS["inception_images"] - before == 2 + 2  # the run + its reference set
    df = pd.read_csv(out / "runs.csv")
    assert np.isfinite(df["fid"]).all() and (df["fid"] > 0).all() and np.isfinite(df["kid_mean"]).all()
    assert (df["fid_n"] == 2).all() and df["fid_warning"].str.contains("2048").all()
    readme = (out / "README.md").read_text()
    rows = _table_rows(readme, "sample / sr4")
    fid_cell = rows[1][rows[0].index("FID ↓")]
    assert "⚠ n=2 < 2048" in fid_cell and float(fid_cell.strip("*").split()[0]) >= 0
    assert "n/a" not in rows[1][rows[0].index("KID ↓")]
    assert "not comparable with published FIDs" in readme  # random, unofficial weights are flagged
    run = root / df["run_dir"].iloc[0]
    feats, cache = run / "fid_features.npz", run / "dataset_metrics.json"
    refs = sorted((root / "sample" / "_reference").glob("*/inception_stats-*.npz"))
    assert feats.is_file() and cache.is_file() and len(refs) == 1
    stamps = [p.stat().st_mtime_ns for p in (feats, cache, refs[0])]

    before = dm.COUNTS.copy()
    out2 = report(root, tmp_path / "r2", *weights)
    assert dm.COUNTS == before  # nothing recomputed
    assert [p.stat().st_mtime_ns for p in (feats, cache, refs[0])] == stamps
    assert (out2 / "runs.csv").read_bytes() == (out / "runs.csv").read_bytes()



def test_cached_features_incremental_and_keyed_by_weights(tmp_path):
    """Per-image feature cache: only new ids are computed; other weights get their own entry."""
    from bench.imageio import save_png
    from bench.report.dataset_metrics import cached_features

    class Fake:
        def __init__(self, sha):
            self.weights_sha256, self.seen = sha, 0

        def __call__(self, x):
            self.seen += x.shape[0]
            return x.double().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    for k in range(4):
        save_png(torch.full((3, 8, 8), 10 * k, dtype=torch.uint8), tmp_path / f"im{k}.png")
    npz, a = tmp_path / "f.npz", Fake("a" * 64)
    f2 = cached_features(npz, ["im0", "im1"], tmp_path, a)
    assert a.seen == 2 and f2.shape == (2, 2048) and f2[1, 0] == 10
    f3 = cached_features(npz, ["im2", "im0", "im1"], tmp_path, a)
    assert a.seen == 3 and f3[0, 0] == 20 and np.array_equal(f3[1:], f2)  # only im2 computed, order kept
    b = Fake("b" * 64)
    cached_features(npz, ["im0"], tmp_path, b)
    assert b.seen == 1 and cached_features(npz, ["im3", "im1"], tmp_path, a)[1, 0] == 10 and a.seen == 4
    with np.load(npz) as z:
        assert sorted(z.files) == sorted([f"{'a' * 16}_ids", f"{'a' * 16}_features", f"{'b' * 16}_ids",
                                          f"{'b' * 16}_features"])


# ----------------------------------------------------------------------------- LOE
def test_loe_lowlight(results, tmp_path, offline):
    from bench.metrics.loe import loe
    from bench.imageio import read_png_u8

    out = report(results, tmp_path, "--bootstrap", "50")
    df = pd.read_csv(out / "runs.csv")
    low = df[(df["task"] == "lowlight") & (df["dataset"] == "sample")].set_index("method")
    assert (np.isfinite(low["loe_mean"]) & (low["loe_mean"] >= 0)).all()
    assert low.loc["bicubic", "loe_mean"] == 0.0  # the identity baseline: output == low-light input
    assert df[df["task"] != "lowlight"]["loe_mean"].isna().all()
    if "zero_dce" in low.index:
        run = results / low.loc["zero_dce", "run_dir"]
        ids = sorted(p.stem for p in (run / "rows").glob("*.json"))
        want = np.mean([float(loe(read_png_u8(run / "images" / f"{i}.png")[None].double() / 255,
                                  read_png_u8(run / "degraded" / f"{i}.png")[None].double() / 255)[0])
                        for i in ids])
        assert low.loc["zero_dce", "loe_mean"] == pytest.approx(want) and want > 0


def test_dataset_metrics_recomputed_when_rows_change(tmp_path, offline):
    from bench.report import dataset_metrics as dm

    root = tmp_path / "results"
    _cell(root, "method=bicubic", "task=lowlight", "dataset.limit=2")
    before = dm.COUNTS["loe_runs"]
    report(root, tmp_path / "r1", "--bootstrap", "0")
    cache = next(root.glob("sample/lowlight/bicubic/*/dataset_metrics.json"))
    stamp = cache.stat().st_mtime_ns
    report(root, tmp_path / "r2", "--bootstrap", "0")
    assert dm.COUNTS["loe_runs"] == before + 1 and cache.stat().st_mtime_ns == stamp  # cached
    _cell(root, "method=bicubic", "task=lowlight", "dataset.limit=3")  # one more row
    df = pd.read_csv(report(root, tmp_path / "r3", "--bootstrap", "0") / "runs.csv")
    assert dm.COUNTS["loe_runs"] == before + 2 and df["n_images"].iloc[0] == 3
    assert len(json_load(cache)["metrics"]["loe"]["per_image"]) == 3


def json_load(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- units
def test_bootstrap_ci_properties():
    from bench.report.aggregate import bootstrap_ci

    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 1, 20), rng.normal(10, 1, 800)
    m1, lo1, hi1 = bootstrap_ci(small, 1000, seed=3)
    m2, lo2, hi2 = bootstrap_ci(large, 1000, seed=3)
    assert lo1 < m1 < hi1 and lo2 < m2 < hi2
    assert m1 == pytest.approx(small.mean()) and m2 == pytest.approx(large.mean())
    assert (hi2 - lo2) < 0.5 * (hi1 - lo1)  # ~1/sqrt(n)
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 / math.sqrt(800), rel=0.2)
    assert bootstrap_ci(small, 1000, seed=3) == (m1, lo1, hi1)  # seeded
    assert bootstrap_ci(small, 1000, seed=4) != (m1, lo1, hi1)
    m, lo, hi = bootstrap_ci([5.0, float("inf"), float("nan")], 100)
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)  # one finite value: no interval


def test_best_mask_and_our_table():
    from bench.report.tables import best_mask, our_table

    assert best_mask(pd.Series([20.0, 25.0, float("nan"), 25.0]), higher=True).tolist() == [False, True, False, True]
    assert best_mask(pd.Series([30.0, 12.5, "n/a"]), higher=False).tolist() == [False, True, False]
    assert not best_mask(pd.Series([3.0, float("nan")]), higher=True).any()  # a single number: nothing to beat
    base = {"dataset": "d", "task": "sr4", "n_images": 4, "nfe_per_image": 10.0, "psnr_ci_lo": np.nan,
            "psnr_ci_hi": np.nan, "ssim_ci_lo": 0.1, "ssim_ci_hi": 0.3, "kid_std": 0.01, "fid_warning": "",
            "fid_na": "", "psnr_na": "", "ssim_na": ""}
    df = pd.DataFrame([
        {**base, "variant": "a", "steps": 10, "psnr_mean": 20.0, "ssim_mean": 0.9, "fid": 50.0, "kid_mean": 0.2,
         "images_per_s": 1.0},
        {**base, "variant": "b", "steps": 20, "psnr_mean": 25.0, "ssim_mean": 0.5, "fid": 40.0, "kid_mean": 0.1,
         "images_per_s": 0.5},
        {**base, "variant": "c", "steps": None, "psnr_mean": 22.0, "ssim_mean": 0.7, "fid": np.nan,
         "kid_mean": np.nan, "fid_na": "weights missing", "images_per_s": 9.0},
    ])
    md = our_table(df).splitlines()
    cells = {ln.split(" | ")[0].strip("| "): ln.strip("|").split(" | ") for ln in md[2:]}
    head = [c.strip() for c in md[0].strip("|").split(" | ")]
    col = lambda name, v: cells[v][head.index(name)].strip()  # noqa: E731
    assert col("PSNR ↑", "b") == "**25.00**" and col("PSNR ↑", "a") == "20.00"
    assert col("SSIM ↑", "a") == "**0.900 ± 0.100**"
    assert col("FID ↓", "b") == "**40.00**" and col("FID ↓", "a") == "50.00"
    assert col("FID ↓", "c") == "n/a (weights missing)"
    assert col("Throughput (img/s) ↑", "c") == "**9.00**" and col("Steps", "c") == "-"


def test_paper_values():
    from bench.report.tables import load_paper_values

    pv = load_paper_values()
    assert list(pv.columns) == ["source", "citation", "dataset", "task", "method", "PSNR", "SSIM", "FID", "LOE",
                                "PI", "throughput", "consistency", "notes"]
    one = lambda **kw: pv[np.logical_and.reduce([pv[k] == v for k, v in kw.items()])]  # noqa: E731
    r = one(source="Liu Table 3", method="ddrm")
    assert len(r) == 1 and r.iloc[0]["PSNR"] == "34.8" and r.iloc[0]["task"] == "denoise"
    assert r.iloc[0]["SSIM"] == "0.932" and r.iloc[0]["FID"] == "8.94" and r.iloc[0]["dataset"] == "imagenet_val"
    r = one(source="GDP LOL", method="gdp_x0")
    assert r.iloc[0]["LOE"] == "110.39" and r.iloc[0]["PI"] == "6.47" and r.iloc[0]["task"] == "lowlight"
    assert one(source="GDP LOL", method="zero_dce").iloc[0]["FID"] == "81.11"
    assert one(source="Liu Table 4", method="bicubic").iloc[0]["SSIM"] == "0.6603"
    assert one(source="Liu Table 2", method="srldm").iloc[0]["throughput"] == "1.6"
    assert one(source="Liu Table 1", method="ddrm_srldm").iloc[0]["PSNR"] == "14.68"
    g = one(source="GDP ImageNet linear", method="gdp_x0", task="colorize").iloc[0]
    assert (g["PSNR"], g["SSIM"], g["consistency"], g["FID"]) == ("21.41", "0.92", "36.92", "37.60")
    assert one(source="GDP ImageNet linear", method="dgp", task="inpaint").iloc[0]["FID"] == "60.65"
    assert len(one(source="GDP ImageNet linear", method="SNIPS")) == 3  # no colorization ('-' in the paper)
    assert sorted(pv["source"].unique()) == ["GDP ImageNet linear", "GDP LOL"] + [f"Liu Table {i}" for i in range(1, 5)]
    assert (pv["citation"] != "").all() and len(pv) == 16 + 21 + 16


def test_tradeoff_figure_lines_and_fallback(tmp_path):
    from bench.report.figures import tradeoff_figure

    df = pd.DataFrame({"dataset": "d", "task": "sr4", "variant": ["ddrm"] * 3 + ["srldm"] * 2,
                       "steps": pd.array([10, 20, 50, 5, 10], dtype="Int64"),
                       "images_per_s": [1.0, 0.5, 0.2, 8.0, 4.0], "fid": [60.0, 50.0, 45.0, 70.0, 55.0],
                       "psnr_mean": [20.0, 21.0, 22.0, 19.0, 19.5]})
    png, svg, caption = tradeoff_figure(df, tmp_path / "with_fid")
    assert png.is_file() and "FID (lower is better)" in caption and "<!-- FID -->" in svg.read_text()
    png, svg, caption = tradeoff_figure(df.assign(fid=np.nan), tmp_path / "no_fid", "weights missing")
    text = svg.read_text()
    assert "not an FID plot" in caption and "PSNR" in text and "<!-- FID -->" not in text
