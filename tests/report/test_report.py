"""``python -m bench.report`` on a small real results root (built with the real CLI, in-process): layout, paper
values in the same rows, context columns, duplicates, incomplete runs, skipped cells, footnotes without
absolute paths, figures, determinism; plus FID caching, LOE and NIQE at report time."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, SHARED_DATA, compose, run_dirs, save_random_inception, shared_data

pytestmark = pytest.mark.usefixtures("single_thread")

ZERO_DCE = SHARED_DATA / "zero-dce" / "Epoch99.pth"
LOWLIGHT = SHARED_DATA / "lowlight"
CELLS = [
    ("method=bicubic", "task=sr4"),
    ("method=bicubic", "task=sr4", "steps=10"),  # a step-less baseline swept with steps: the same run
    ("method=bicubic", "task=denoise"),
    ("method=bicubic", "method.mode=bilinear", "task=sr4"),
    ("method=bicubic", "method.mode=nearest", "task=sr4", "dataset.num_shards=2", "dataset.shard=0"),  # half done
    ("method=bicubic", "task=lowlight"),
    ("method=ddrm", "task=lowlight"),  # unsupported: recorded in SKIPPED.json
    ("method=ddrm", "task=sr4", "steps=2", "model=adm_tiny", "dataset.image_size=32"),  # random prior, 32 px
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real results root (see CELLS), plus Zero-DCE and unpaired real low-light photos when available."""
    from bench.cli import run_from_config

    root = tmp_path_factory.mktemp("results")
    cells = list(CELLS)
    if ZERO_DCE.is_file():
        cells.append(("method=zero_dce", "task=lowlight", f"method.weights.path={ZERO_DCE}"))
    if LOWLIGHT.is_dir():  # real low-light photos without ground truth: the unpaired case (NIQE computable)
        cells.append(("method=bicubic", "task=lowlight", "dataset=lol", f"dataset.root={LOWLIGHT}",
                      "dataset.image_size=200", "dataset.limit=2"))
    os.environ.setdefault("BENCH_OFFLINE", "1")
    for cell in cells:
        limit = [] if any(c.startswith("dataset.limit") for c in cell) else ["dataset.limit=4"]
        cfg = compose(*cell, *limit, f"run.results_root={root}", "run.progress=false", "run.device=cpu")
        run_from_config(cfg)
    # a duplicate (the run identity never makes one: a run directory merged in from another results root)
    bic = next(d for d in run_dirs(root) if d.parent.name == "bicubic" and d.parent.parent.name == "sr4"
               and (d / "config.yaml").read_text().count("mode: bicubic"))
    shutil.copytree(bic, bic.parent / "default-0000dup0")
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
    return save_random_inception(tmp_path_factory.mktemp("inception"))


def _table(readme: str, section: str, after: str = "") -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first table after ``## <section>`` (and after the text ``after`` in it)."""
    block = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = block.split(after, 1)[1] if after else block
    lines = []
    for ln in block.splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    cells = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    return cells[0], cells[2:]  # header, (separator), rows


def _col(head, row, name):
    return row[head.index(name)]


@pytest.fixture(scope="module")
def offline_report(results, tmp_path_factory):
    """The real CLI (subprocess), offline without Inception / LPIPS weights."""
    tmp = tmp_path_factory.mktemp("rep")
    env = {**os.environ, "BENCH_OFFLINE": "1", "BENCH_CACHE": str(tmp / "cache")}
    cmd = [sys.executable, "-m", "bench.report", "--results", str(results), "--name", "off", "--out", str(tmp),
           "--bootstrap", "200"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return tmp / "off"


# ----------------------------------------------------------------------------- end to end, offline
def test_files_columns_and_no_absolute_paths(results, offline_report):
    out = offline_report
    readme = (out / "README.md").read_text()
    csv = (out / "runs.csv").read_text()
    n_runs = len([d for d in run_dirs(results) if any((d / "rows").glob("*.json"))])
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == n_runs == len(pd.read_parquet(out / "runs.parquet"))
    for col in ("task_sigma", "prior", "nfe_per_image", "images_per_s", "wall_seconds", "peak_memory_mb",
                "n_images", "n_expected", "complete", "seed", "code_version", "lpips_mean", "lpips_na",
                "consistency_mean", "consistency_psnr_mean", "consistency_gdp_mean", "niqe_mean", "shown",
                "duplicate_of", "metrics_convention"):
        assert col in df, col
    for text in (readme, csv):
        for bad in (str(results), str(out), str(Path.home()), str(REPO)):
            assert bad not in text
    for dataset, task in {(d, t) for d, t in zip(df["dataset"], df["task"])}:
        assert f"## {dataset} / {task}\n" in readme
    # offline FID / LPIPS: n/a in every row, so no column but one line per table; the asset named once
    head, rows = _table(readme, "sample / sr4")
    assert "FID ↓" not in head and "LPIPS ↓" not in head and "KID ↓" not in head
    block = readme.split("## sample / sr4\n", 1)[1].split("\n## ", 1)[0]
    gone = [ln for ln in block.splitlines() if ln.startswith("- n/a for every run:")]
    assert gone and "FID" in gone[0] and "LPIPS" in gone[0] and "http" not in "".join(gone)
    assets = readme.split("## Missing assets\n", 1)[1].split("\n## ", 1)[0]
    assert assets.count("FID Inception weights") == 1 and "http" not in assets and "urlopen" not in readme
    assert readme.count("toshas/torch-fidelity/releases") == 1
    # LPIPS offline: n/a with the reason, never 0; consistency stored for linear tasks only
    paired = df[df["dataset"] == "sample"]
    assert df["lpips_mean"].isna().all() and paired["lpips_na"].str.contains("alexnet-owt-7be5be79.pth").all()
    assert np.isfinite(df.loc[df["task"] == "sr4", "consistency_mean"]).all()
    assert df.loc[df["task"] == "lowlight", "consistency_mean"].isna().all()
    assert "skipped: `ddrm` x `lowlight`" in readme


def test_one_table_context_and_paper_values_beside_it(results, offline_report):
    readme = (offline_report / "README.md").read_text()
    head, rows = _table(readme, "sample / sr4")
    for name in ("Prior", "NFE/img", "img/s ↑", "wall (s)", "peak MB", "PSNR ↑", "‖A(x̂)−y‖²/M ↓",
                 "Consist. (GDP) ↓"):
        assert name in head, name
    assert not any("[" in h for h in head) and "σ" not in head and "N" not in head  # σ = 0 for every row
    bic = rows_by(rows)["bicubic (mode=bicubic)"]
    assert _col(head, bic, "Prior") == "none" and _col(head, bic, "img/s ↑") == "—"  # NFE = 0: not timed
    ddrm = next(r for r in rows if r[0].startswith("ddrm"))
    assert _col(head, ddrm, "Prior") == "random weights (not meaningful)"
    block = readme.split("## sample / sr4\n", 1)[1].split("\n## ", 1)[0]
    assert "σ = 0" in next(ln for ln in block.splitlines() if ln.startswith("- Every row:"))
    # the papers' values: a companion table under ours
    phead, prows = _table(readme, "sample / sr4", after="**Papers' values (sr4)**")
    by = {(r[0], r[1]): r for r in prows}
    assert _col(phead, by[("bicubic", "Liu T1")], "PSNR ↑") == "25.8"
    assert _col(phead, by[("ddrm", "GDP")], "PSNR ↑") == "26.53"
    assert _col(phead, by[("ddrm", "GDP")], "Consist. (GDP) ↓") == "19.39"
    assert _col(phead, by[("gdp_x0 (not run here)", "GDP")], "PSNR ↑") == "24.42"
    # the merged-in duplicate is collapsed into one row and listed (steps=10 made no second run)
    assert sum(r[0] == "bicubic (mode=bicubic)" and _col(head, r, "Steps") == "-" for r in rows) == 1
    assert "duplicate not shown" in readme
    # the denoise caption converts the sigma units
    assert "our 0.05 in [0, 1] units = Liu's 0.1 in [-1, 1] units" in readme
    dblock = readme.split("## sample / denoise\n", 1)[1].split("\n## ", 1)[0]
    assert "σ = 0.05" in dblock and "**Papers' values (denoise)**" in dblock and "Liu T3" in dblock
    # every table says which conventions it used
    assert readme.count("Conventions of this table: PSNR/SSIM on RGB, border crop 0, LPIPS-alex") >= 3


def rows_by(rows):
    return {r[0]: r for r in rows}


def test_incomplete_run_marked_and_the_common_set_stated(results, offline_report):
    readme = (offline_report / "README.md").read_text()
    head, rows = _table(readme, "sample / sr4")
    inc = [r for r in rows if "incomplete" in r[0]]
    assert len(inc) == 1
    block = readme.split("## sample / sr4\n", 1)[1].split("\n## ", 1)[0]
    assert "Compared on the **N = 2** images common to all" in block  # the half-done shard limits the set
    assert "Runs holding other images too (not used here):" in block
    df = pd.read_csv(offline_report / "runs.csv")
    assert (~df["complete"]).sum() == 1 and df.loc[~df["complete"], "n_images"].item() == 2


def test_no_throughput_for_nfe0_and_deterministic_cis(results, offline_report):
    readme = (offline_report / "README.md").read_text()
    head, rows = _table(readme, "sample / sr4")
    for r in rows:
        if _col(head, r, "NFE/img") == "0":
            assert _col(head, r, "img/s ↑") == "—"
    df = pd.read_csv(offline_report / "runs.csv")
    dup = df[(df["task"] == "sr4") & (df["label"] == "bicubic (mode=bicubic)") & df["complete"]]
    assert len(dup) == 2 and dup["hash"].nunique() == 2  # identical outputs, different run hashes
    assert dup["psnr_ci_lo"].nunique() == 1 and dup["psnr_ci_hi"].nunique() == 1  # seeded by the cell
    assert set(df["num_threads"].astype(str)) == {"1"}  # recorded by the runtime (tests run single-threaded)


def test_paired_comparisons_table(results, offline_report):
    readme = (offline_report / "README.md").read_text()
    block = readme.split("**Paired differences (sample / sr4)**", 1)[1]
    assert "exact over all 2^2 sign patterns" in block and "no difference can be significant" in block
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert any(h.startswith("ΔPSNR vs baseline (bicubic (mode=bicubic))") for h in head)
    cells = [c.strip() for ln in lines[1:] for c in ln.strip("|").split(" | ")]
    assert "(reference)" in cells and any("[" in c and "]" in c for c in cells)
    assert not any(c.endswith("*") for c in cells)  # n = 2


def test_figures_open_and_are_readable(results, offline_report):
    from bench.report.grid import GAP, MIN_TILE

    figs = sorted((offline_report / "figures").glob("*"))
    assert figs
    for f in figs:
        if f.suffix == ".png":
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB"))
            assert min(a.shape[:2]) >= 200 and a.std() > 5, f.name
        else:
            text = f.read_text()
            assert "nan" not in text.lower().replace("nanc", "") and "<dc:date>" not in text
    df = pd.read_csv(offline_report / "runs.csv")
    n = min(4, df[(df["dataset"] == "sample") & (df["task"] == "sr4") & df["shown"]]["n_images"].min())
    with Image.open(offline_report / "figures" / "sample_sr4_grid.png") as im:  # the common images + the zoom
        assert im.size[0] == (n + 1) * MIN_TILE + n * GAP <= 1000
    readme = (offline_report / "README.md").read_text()
    assert "(default)" not in readme and "](figures/sample_sr4_grid.png)" in readme


def test_sample_grid_labels_and_tiles(results, tmp_path):
    from bench.report import aggregate
    from bench.report.grid import GAP, MIN_TILE, sample_grid

    runs = [r for r in aggregate.scan(results) if r.task == "sr4" and r.method == "bicubic" and r.complete]
    cols = [(r.variant, r) for r in runs[:2]]
    ref = next((results / "sample" / "_reference").iterdir())
    (out,), texts = sample_grid(cols, ref, tmp_path / "g.png", max_images=2, colors=["#1f77b4", "#ff7f0e"])
    assert not any("nan" in t.lower() for t in texts)
    assert any(t.startswith("PSNR ") and t.split()[1].replace(".", "").isdigit() for t in texts)
    assert any(t.startswith("zoom x4") for t in texts) and "ground truth" in texts
    assert all(r.variant in texts for r in runs[:2])  # one row per method, labelled
    with Image.open(out) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.shape[1] == 3 * MIN_TILE + 2 * GAP  # 2 images + the zoom; 64 px tiles upscaled 3x, nearest
    assert a[:5].mean() < 60  # the dark label band
    assert (a == (31, 119, 180)).all(axis=2).sum() > 100  # the first method's swatch, in its figure colour


def test_tradeoff_baseline_is_a_line_not_a_point(tmp_path):
    from bench.report.figures import tradeoff_figure

    df = pd.DataFrame({"dataset": "d", "task": "sr4", "label": ["ddrm"] * 3 + ["bicubic"],
                       "steps": pd.array([10, 20, 50, pd.NA], dtype="Int64"),
                       "images_per_s": [1.0, 0.5, 0.2, 81845.0], "nfe_per_image": [10, 20, 50, 0],
                       "complete": [True, True, False, True], "fid": [60.0, 50.0, 45.0, 70.0],
                       "psnr_mean": [20.0, 21.0, 22.0, 19.0], "psnr_ci_lo": [19.0, 20.0, 21.0, 18.0],
                       "psnr_ci_hi": [21.0, 22.0, 23.0, 20.0]})
    png, svg, caption = tradeoff_figure(df, tmp_path / "with_fid")
    text = svg.read_text()
    assert "FID (lower is better)" in caption and "<!-- FID -->" in text and "no error bars" in caption
    assert "10^{4}" not in text and "10^{5}" not in text  # bicubic's 81,845 img/s does not stretch the axis
    assert "bicubic (NFE = 0, reference)" in text
    png, svg, caption = tradeoff_figure(df.assign(fid=np.nan), tmp_path / "no_fid", "weights missing")
    assert "not an FID plot" in caption and "error bars = the 95 % intervals of the table" in caption
    png, svg, caption = tradeoff_figure(df[df["label"] == "bicubic"], tmp_path / "only_ref")
    text = svg.read_text()  # only a reference line: no empty log axis pretending to be one
    assert "no run with network evaluations" in text and "log scale" not in text


def test_idempotent(results, tmp_path, offline):
    a = report(results, tmp_path / "a", "--bootstrap", "20")
    b = report(results, tmp_path / "b", "--bootstrap", "20")
    for f in ("README.md", "runs.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    for f in sorted(p.name for p in (a / "figures").iterdir()):
        assert (a / "figures" / f).read_bytes() == (b / "figures" / f).read_bytes(), f


def test_only_skipped_cells_give_a_report(tmp_path, offline):
    from bench.cli import run_from_config

    root = tmp_path / "res"
    run_from_config(compose("method=ddrm", "task=lowlight", f"run.results_root={root}", "run.progress=false"))
    out = report(root, tmp_path / "r")
    readme = (out / "README.md").read_text()
    assert "## sample / lowlight" in readme and "No finished run" in readme
    assert "skipped: `ddrm` x `lowlight`: ddrm needs a linear degradation" in readme


def test_code_versions_are_never_averaged(tmp_path, offline):
    """A run of the same cell from another code version: its own row, labelled with the version."""
    from bench.cli import run_from_config

    root = tmp_path / "res"
    run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=2", f"run.results_root={root}",
                            "run.progress=false"))
    (run,) = run_dirs(root)
    other = run.with_name(run.name[:-8] + "0ther000")
    shutil.copytree(run, other)
    man = json.loads((other / "manifest.json").read_text())
    man["code"] = {"fingerprint": "feedbeefcafe0000", "modules": []}
    (other / "manifest.json").write_text(json.dumps(man))
    out = report(root, tmp_path / "r", "--bootstrap", "50")
    head, rows = _table((out / "README.md").read_text(), "sample / sr4")
    ours = [r for r in rows if "paper only" not in r[0]]
    assert len(ours) == 2 and {_col(head, r, "code") for r in ours} == {"feedbeefcafe", run_code(run)}
    assert any("@feedbeefcafe" in r[0] for r in ours)


def run_code(run: Path) -> str:
    from bench.report.aggregate import code_version

    return code_version(json.loads((run / "manifest.json").read_text()))


# ----------------------------------------------------------------------------- FID with a weights file
def _cell(root: Path, *overrides: str) -> None:
    from bench.cli import run_from_config

    task = [] if any(o.startswith("task=") for o in overrides) else ["task=sr4"]
    run_from_config(compose(*task, *overrides, f"run.results_root={root}", "run.progress=false",
                            "run.device=cpu"))


def test_fid_with_weights_cached(random_inception, tmp_path, offline):
    """Numeric FID with a weights file (n < 2048 flagged, KID n/a below 4 images); the second report
    recomputes nothing."""
    from bench.report import dataset_metrics as dm

    root = tmp_path / "results"  # small on purpose: Inception-v3 ~1 s per image on CPU
    _cell(root, "method=bicubic", "dataset.limit=2")
    weights = ["--inception-weights", str(random_inception), "--bootstrap", "50"]
    before = dm.COUNTS["inception_images"]
    out = report(root, tmp_path / "r1", *weights)
    assert dm.COUNTS["inception_images"] - before == 2 + 2  # the run + its reference set
    df = pd.read_csv(out / "runs.csv")
    assert np.isfinite(df["fid"]).all() and (df["fid"] > 0).all() and df["kid_mean"].isna().all()
    assert (df["fid_n"] == 2).all() and df["kid_na"].str.contains("at least 4 images").all()
    readme = (out / "README.md").read_text()
    head, rows = _table(readme, "sample / sr4")
    assert "⚠" in _col(head, rows[0], "FID ↓") and "n=2 < 2048" in readme
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


def test_fid_on_the_common_images(random_inception, tmp_path, offline):
    """A run holding more images than the table shares: its FID in the table is over the common images (from
    the cached per-image features), runs.csv keeps the FID over its own images."""
    from bench.report import aggregate
    from bench.report import dataset_metrics as dm

    root = tmp_path / "results"
    _cell(root, "method=bicubic", "dataset.limit=3")
    _cell(root, "method=bicubic", "method.mode=bilinear", "dataset.limit=2")
    out = report(root, tmp_path / "r", "--inception-weights", str(random_inception), "--bootstrap", "50")
    df = pd.read_csv(out / "runs.csv").set_index("label")
    assert df.loc["bicubic (mode=bicubic)", "fid_n"] == 3 and df.loc["bicubic (mode=bilinear)", "fid_n"] == 2
    run = next(r for r in aggregate.scan(root) if len(r.ids) == 3)
    res = dm.Resources(inception_weights=random_inception)
    on_common = dm.fid_entry(root, run, res, run.ids[:2])["value"]["fid"]
    assert on_common != pytest.approx(df.loc["bicubic (mode=bicubic)", "fid"])
    readme = (out / "README.md").read_text()
    head, rows = _table(readme, "sample / sr4")
    cell = _col(head, rows_by(rows)["bicubic (mode=bicubic)"], "FID ↓")
    assert cell.startswith(f"{on_common:.2f} ⚠") and "n=2 < 2048" in readme
    assert "not the common set" not in readme and "N = 2" in readme


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
    assert a.seen == 3 and f3[0, 0] == 20 and np.array_equal(f3[1:], f2)
    b = Fake("b" * 64)
    cached_features(npz, ["im0"], tmp_path, b)
    assert b.seen == 1 and cached_features(npz, ["im3", "im1"], tmp_path, a)[1, 0] == 10 and a.seen == 4


# ----------------------------------------------------------------------------- LOE / NIQE at report time
def test_loe_lowlight_is_loe_m_on_the_saved_pngs(results, offline_report):
    from bench.imageio import read_png_u8
    from tests.metrics.matlab_ref import loe_m

    df = pd.read_csv(offline_report / "runs.csv")
    low = df[(df["task"] == "lowlight") & (df["dataset"] == "sample")].set_index("method")
    assert low.loc["bicubic", "loe_mean"] == 0.0  # the identity baseline: output == low-light input
    assert df[df["task"] != "lowlight"]["loe_mean"].isna().all()
    if "zero_dce" in low.index:
        run = results / low.loc["zero_dce", "run_dir"]
        ids = sorted(p.stem for p in (run / "rows").glob("*.json"))
        u8 = lambda p: read_png_u8(p).permute(1, 2, 0).numpy()  # noqa: E731
        want = np.mean([loe_m(u8(run / "degraded" / f"{i}.png"), u8(run / "images" / f"{i}.png")) for i in ids])
        assert low.loc["zero_dce", "loe_mean"] == pytest.approx(want, abs=1e-9) and want > 0


def test_niqe_for_every_task_and_per_image_size_check(results, offline_report, tmp_path):
    from bench.imageio import save_png
    from bench.report.aggregate import Run
    from bench.report.dataset_metrics import _niqe_size_reason

    shared_data("niqe", "niqe_pris_params.npz")  # without them every NIQE is n/a for that reason instead
    df = pd.read_csv(offline_report / "runs.csv")
    sample = df[df["dataset"] == "sample"]
    assert sample["niqe_mean"].isna().all() and sample["niqe_na"].str.contains("too small for NIQE").all()
    if LOWLIGHT.is_dir():
        lol = df[df["dataset"] == "lol"].iloc[0]
        assert "no ground truth" in lol["psnr_na"] and math.isfinite(lol["niqe_mean"])
        assert math.isfinite(lol["pi_mean"]) or "PI needs Ma" in lol["pi_na"]
    # every image is checked, not only the first
    save_png(torch.zeros(3, 200, 200, dtype=torch.uint8), tmp_path / "a.png")
    save_png(torch.zeros(3, 100, 300, dtype=torch.uint8), tmp_path / "b.png")
    run = Run(tmp_path, "d", "t", "m", None, "h", {}, {}, pd.DataFrame({"id": ["a", "b"]}), [])
    reason = _niqe_size_reason(run, [tmp_path / "a.png", tmp_path / "b.png"], 4)
    assert reason.startswith("1 of 2 images too small") and "b, 300x100" in reason


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
    assert len(json.loads(cache.read_text())["metrics"]["loe"]["per_image"]) == 3


def test_paper_values():
    from bench.report.papers import load_paper_values

    pv = load_paper_values()
    assert list(pv.columns) == ["source", "citation", "dataset", "task", "method", "experiment", "PSNR", "SSIM",
                                "FID", "LOE", "PI", "throughput", "consistency", "notes"]
    one = lambda **kw: pv[np.logical_and.reduce([pv[k] == v for k, v in kw.items()])]  # noqa: E731
    r = one(source="Liu Table 3", method="ddrm")
    assert len(r) == 1 and r.iloc[0]["PSNR"] == "34.8" and r.iloc[0]["task"] == "denoise"
    r = one(source="GDP LOL", method="gdp_x0")
    assert r.iloc[0]["LOE"] == "110.39" and r.iloc[0]["PI"] == "6.47" and r.iloc[0]["task"] == "lowlight"
    g = one(source="GDP ImageNet linear", method="gdp_x0", task="colorize").iloc[0]
    assert (g["PSNR"], g["SSIM"], g["consistency"], g["FID"]) == ("21.41", "0.92", "36.92", "37.60")
    assert (pv["citation"] != "").all() and len(pv) == 16 + 21 + 16
