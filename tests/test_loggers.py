"""W&B logging, offline (WANDB_MODE=offline): the files written are inspected, nothing leaves the machine."""

from __future__ import annotations

import json

import pytest

from tests.conftest import compose, run_dirs

wandb = pytest.importorskip("wandb")


@pytest.fixture()
def wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _run(root, limit: int, task: str = "sr4"):
    from bench.cli import run_from_config

    return run_from_config(compose("method=bicubic", f"task={task}", "logger=wandb", f"dataset.limit={limit}",
                                   f"run.results_root={root}", "run.progress=false", "run.device=cpu"))


def _staged_tables(data_dir):
    """The per-image tables staged for upload (offline: the artifact files under WANDB_DATA_DIR), deduplicated
    (W&B stages a logged table once per artifact that refers to it)."""
    out = []
    for f in sorted((data_dir / "artifacts" / "staging").glob("*")):
        try:
            obj = json.loads(f.read_text())
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and obj.get("_type") == "table" and obj not in out:
            out.append(obj)
    return out


def test_offline_per_image_table_ground_truth_and_nothing_new(wandb_offline, capsys):
    root = wandb_offline / "results"
    _run(root, 2)
    (run,) = run_dirs(root)
    runs = sorted((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    state = json.loads((run / "wandb.json").read_text())
    assert state["logged_ids"] == ["astronaut", "chelsea"] and len(state["run_id"]) == 16
    (table,) = _staged_tables(wandb_offline / "wandb-data")
    assert table["columns"][:4] == ["id", "restored", "degraded", "ground_truth"]
    assert {"psnr", "ssim", "lpips", "consistency", "consistency_gdp"} <= set(table["columns"])
    assert [r[0] for r in table["data"]] == ["astronaut", "chelsea"]
    assert all(isinstance(r[1], dict) and r[1]["_type"] == "image-file" for r in table["data"])
    assert all(isinstance(r[3], dict) and r[3]["_type"] == "image-file" for r in table["data"])  # ground truth
    pngs = {f.read_bytes() for f in (wandb_offline / "wandb-data" / "artifacts" / "staging").glob("*")
            if f.read_bytes()[:4] == b"\x89PNG"}
    assert len(pngs) == 2 * 3  # restored, degraded, ground truth per image
    blob = runs[0].joinpath(next(p.name for p in runs[0].glob("*.wandb"))).read_bytes()
    assert b"psnr" in blob and b"samples/ground_truth" in blob

    capsys.readouterr()
    _run(root, 2)  # complete, everything logged: nothing is sent, and it says so
    out = capsys.readouterr().out
    assert "nothing new to log" in out and "2 images" in out
    assert len(sorted((root / "wandb").glob("offline-run-*"))) == 1

    _run(root, 3)  # one more image: only that one is logged, to the same W&B run id
    assert json.loads((run / "wandb.json").read_text())["logged_ids"] == ["astronaut", "chelsea", "coffee"]
    new = [t for t in _staged_tables(wandb_offline / "wandb-data") if len(t["data"]) == 1]
    assert [t["data"][0][0] for t in new] == ["coffee"]
    # the run id from each offline run's `run-<id>.wandb` file, not from the directory name: W&B appends
    # "-1" to the directory when two invocations start within the same second
    ids = {f.name[len("run-"):-len(".wandb")] for f in (root / "wandb").glob("offline-run-*/run-*.wandb")}
    assert len(list((root / "wandb").glob("offline-run-*"))) == 2 and ids == {state["run_id"]}


def test_report_pushes_dataset_level_metrics(wandb_offline, capsys):
    """``bench.report --wandb``: the report's dataset-level metrics (LOE here) reach the run's W&B summary;
    a second report has nothing new."""
    from bench.report.__main__ import main

    root = wandb_offline / "results"
    _run(root, 2, task="lowlight")
    args = ["--results", str(root), "--out", str(wandb_offline / "rep"), "--bootstrap", "0",
            "--wandb", "restoration-bench"]
    capsys.readouterr()
    assert main(args) == 0
    assert "logged 0 new images and 1 dataset-level metrics" in capsys.readouterr().out
    latest = sorted((root / "wandb").glob("offline-run-*"))
    assert len(latest) == 2
    assert b"dataset/loe" in next(latest[-1].glob("*.wandb")).read_bytes()
    assert main(args) == 0
    assert "nothing new to log" in capsys.readouterr().out
