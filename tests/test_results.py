"""Run identity (what enters the hash), the code fingerprint, and the integrity records resume relies on."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import torch

from bench.results import (NON_SEMANTIC, PACKAGE_DIR, RunStore, code_fingerprint, config_hash, file_problem,
                           file_record, load_row, reference_problem, row_files_problem, write_reference)

BASE = {"seed": 0, "steps": 20,
        "method": {"name": "ddrm", "steps": 20, "eta": 0.85,
                   "model": {"name": "adm", "asset": {"sha256": "ab" * 32, "path": "/a/w.pt"}}},
        "task": {"name": "sr4", "version": 1, "sigma": 0.0, "description": "x", "conventions": "y"},
        "dataset": {"name": "sample", "image_size": 64, "root": "/a", "shard": 0, "num_shards": 1, "limit": None},
        "metrics": {"per_image": ["psnr", "ssim"]},
        "model": {"name": "adm_tiny"}, "run": {"batch_size": 4, "device": "cpu", "force": False},
        "logger": {"kind": "none"}}


def _hash(cfg=BASE, data="d" * 64, code="c" * 64, versions=None):
    return config_hash(cfg, data, code, versions or {"metrics": "v1"})


def _variant(path, value):
    cfg = copy.deepcopy(BASE)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return _hash(cfg)


@pytest.mark.parametrize("path", [("run", "batch_size"), ("run", "force"), ("dataset", "root"), ("dataset", "shard"),
                                  ("dataset", "limit"), ("model", "name"), ("logger", "kind"),
                                  ("steps",),  # top level: only method.steps counts (a step-less method ignores it)
                                  ("task", "description"), ("task", "conventions"),
                                  ("method", "model", "asset", "path")])  # the file is identified by its sha256
def test_run_hash_ignores_what_does_not_change_outputs(path):
    assert _variant(path, 99) == _hash(), path


@pytest.mark.parametrize("path", [("seed",), ("method", "steps"), ("method", "eta"), ("method", "model", "name"),
                                  ("method", "model", "asset", "sha256"), ("task", "name"), ("task", "version"),
                                  ("task", "sigma"), ("dataset", "image_size"), ("metrics", "per_image")])
def test_run_hash_keeps_what_changes_outputs(path):
    assert _variant(path, 7) != _hash(), path


def test_run_hash_covers_data_code_and_versions():
    h = _hash()
    assert _hash(data="e" * 64) != h
    assert _hash(code="f" * 64) != h
    assert _hash(versions={"metrics": "v2"}) != h
    assert set(NON_SEMANTIC) >= {"run", "steps", "model", "logger"}


def test_step_less_method_is_one_run_for_any_top_level_steps():
    bicubic = {**copy.deepcopy(BASE), "method": {"name": "bicubic", "mode": "bicubic"}}
    hashes = {_hash({**bicubic, "steps": s}) for s in (None, 10, 20)}
    assert len(hashes) == 1


@pytest.fixture()
def package_copy(tmp_path):
    dst = tmp_path / "bench"
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__", "priors", "*.csv"))
    return dst


def test_code_fingerprint_changes_with_output_code_only(package_copy):
    before = code_fingerprint(package_copy)
    mods = before["modules"]
    assert {"bench/runner.py", "bench/cli.py", "bench/results.py", "bench/methods/ddrm.py",
            "bench/metrics/pixel.py", "bench/operators/deblur.py"} <= set(mods)
    assert not [m for m in mods if m.startswith(("bench/report/", "bench/train/", "bench/perf/")) or m in (
        "bench/verify.py", "bench/loggers.py", "bench/sweep.py")]
    assert any(m.startswith("bench/models/") for m in mods)

    for excluded in ("report/tables.py", "verify.py", "train/adm.py", "perf/cells.py", "loggers.py"):
        f = package_copy / excluded
        f.write_text(f.read_text() + "\nX = 1\n")
    crlf = package_copy / "seeding.py"
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))  # a Windows checkout of the same code
    assert code_fingerprint(package_copy)["fingerprint"] == before["fingerprint"]

    ddrm = package_copy / "methods" / "ddrm.py"
    ddrm.write_text(ddrm.read_text().replace("eta", "eta ", 1))
    assert code_fingerprint(package_copy)["fingerprint"] != before["fingerprint"]
    (package_copy / "methods" / "new_method.py").write_text("A = 1\n")  # a new module is in by default
    assert "bench/methods/new_method.py" in code_fingerprint(package_copy)["modules"]

    # shipped prior weights are in (by content); their model cards are not
    (package_copy / "priors").mkdir()
    (package_copy / "priors" / "p.safetensors").write_bytes(b"weights v1")
    (package_copy / "priors" / "p.md").write_text("model card")
    fp = code_fingerprint(package_copy)
    assert "bench/priors/p.safetensors" in fp["modules"] and "bench/priors/p.md" not in fp["modules"]
    (package_copy / "priors" / "p.md").write_text("model card, edited")
    assert code_fingerprint(package_copy)["fingerprint"] == fp["fingerprint"]
    (package_copy / "priors" / "p.safetensors").write_bytes(b"weights v2")  # retrained in place
    assert code_fingerprint(package_copy)["fingerprint"] != fp["fingerprint"]


def test_file_problem_sees_missing_truncated_and_changed_files(tmp_path):
    f = tmp_path / "images" / "a.png"
    f.parent.mkdir()
    f.write_bytes(b"0123456789")
    rec = file_record(f)
    assert rec == {"sha256": rec["sha256"], "bytes": 10} and file_problem(f, rec, "images/a.png") is None
    f.write_bytes(b"01234")
    assert "truncated" in file_problem(f, rec, "images/a.png")
    f.write_bytes(b"0123456780")
    assert "does not match" in file_problem(f, rec, "images/a.png")
    f.unlink()
    assert "missing" in file_problem(f, rec, "images/a.png")
    assert "no sha256" in file_problem(f, None, "images/a.png")


def test_rows_are_checked_and_quarantined(tmp_path):
    store = RunStore(tmp_path, "d", "t", "m", None, "h")
    for sub in ("images", "degraded"):
        (store.dir / sub).mkdir(parents=True)
        for i in ("a", "b", "c"):
            (store.dir / sub / f"{i}.png").write_bytes(f"{sub}-{i}".encode())
    for i in ("a", "b", "c"):
        store.write_row({"id": i, "psnr": 1.0, "files": store.file_records(i)})
    assert row_files_problem(store.dir, load_row(store.row_path("a"))[0]) is None
    store.row_path("b").write_text('{"id": "b", "ps')  # a truncated row
    (store.dir / "degraded" / "c.png").write_bytes(b"x")  # a truncated PNG under an intact row
    good, notes = store.verify(["a", "b", "c", "never-run"])
    assert good == {"a"}
    assert len(notes) == 2 and "rows/b.json is not readable JSON" in notes[0] and "degraded/c.png" in notes[1]
    assert store.done_ids() == {"a"}
    assert sorted(p.name.split(".json")[0] for p in (store.dir / "rows" / ".quarantine").iterdir()) == ["b", "c"]


def test_reference_record_is_sha256sum_compatible(tmp_path):
    ref = tmp_path / "ref" / "a.png"
    assert "missing" in reference_problem(ref)
    write_reference(torch.zeros(3, 8, 8, dtype=torch.uint8), ref)
    assert reference_problem(ref) is None
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "-c", "a.png.sha256"], cwd=ref.parent, check=True, capture_output=True)
    ref.write_bytes(ref.read_bytes()[:20])
    assert "does not match" in reference_problem(ref)
    ref.with_name("a.png.sha256").unlink()
    assert "no readable sha256 record" in reference_problem(ref)
