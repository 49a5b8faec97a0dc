"""python -m bench.tune end to end on the random ``adm_tiny`` prior (32 px, fast): a study writes a preset,
the CLI applies it (a different run identity from the official settings), a finished study gains no trial on a
rerun, a killed study resumes, a test split is refused unless forced, and bad input fails before any trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_dirs

pytestmark = pytest.mark.slow

@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


TINY = ["model=adm_tiny", "method=ddrm", "task=denoise", "steps=3", "tune.startup_trials=2"]


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    """Four real photos (scikit-image's, which dataset=sample also uses) as a 'validation' folder."""
    from skimage import data as skdata
    from PIL import Image

    root = tmp_path_factory.mktemp("val")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).save(root / f"{name}.png")
    return root


def split(val_dir: Path) -> list[str]:
    return ["dataset=folder", f"dataset.root={val_dir}", "dataset.image_size=32", "dataset.split=validation"]


def tune(*overrides: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m bench.tune`` in this process (its ``main``: exit codes and output as on the command line;
    the subprocess form is used where the process itself matters: the killed study)."""
    import contextlib
    import io

    from bench.tune.cli import main

    argv = [*overrides, f"run.results_root={root}"]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as stop:
            code = int(stop.code or 0)
    proc = subprocess.CompletedProcess(["python", "-m", "bench.tune", *argv], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"bench.tune {' '.join(argv)} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli(*overrides: str, results_root: Path) -> subprocess.CompletedProcess:
    """``python -m bench`` in this process (bench.run: the CLI's run path), its printed output captured."""
    import contextlib
    import io

    from bench.api import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run(overrides=[*overrides, f"run.results_root={results_root}", "run.progress=false"])
    return subprocess.CompletedProcess(["python", "-m", "bench", *overrides], 0, out.getvalue(), "")


def the_study(root: Path):
    """The one study under ``root`` (read from its journal, as optuna stores it)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    (journal,) = (root / ".tune").rglob("journal.log")
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def trial_states(root: Path) -> list[str]:
    return [t.state.name for t in the_study(root).get_trials()]


def test_a_study_writes_a_preset_the_cli_applies(tmp_path, val_dir):
    proc = tune(*TINY, *split(val_dir), "tune.trials=3", "tune.images=2", root=tmp_path)
    assert proc.stdout.count(": trial ") == 3, proc.stdout  # one progress line per trial
    (preset,) = (tmp_path / "tuned").rglob("*.yaml")
    assert preset.relative_to(tmp_path / "tuned") == Path("adm_tiny/denoise/ddrm-steps3.yaml")
    doc = yaml.safe_load(preset.read_text())
    prov = doc["provenance"]
    assert doc["cell"] == {"prior": "adm_tiny", "task": "denoise", "method": "ddrm", "steps": 3}
    assert prov["trials"] == 3 and prov["split"]["images"] == 2 and prov["split"]["forced_test_split"] is False
    assert set(doc["values"]) == set(prov["space"]) and prov["objective"].startswith("psnr")
    # the chosen value is the best of the official run and the trials on the split
    assert prov["value"] >= prov["official_value"]
    # every trial is an ordinary run directory on the validation split
    assert len([d for d in run_dirs(tmp_path) if d.parts[-4] == "folder"]) >= 2

    # the CLI applies it (tuned=auto finds <results_root>/tuned/...), official does not: two identities
    base = ["model=adm_tiny", "method=ddrm", "task=denoise", "steps=3", "dataset.image_size=32", "dataset.limit=1"]
    run_cli(*base, "tuned=auto", results_root=tmp_path)
    run_cli(*base, "tuned=official", results_root=tmp_path)
    tuned_dirs = [d for d in run_dirs(tmp_path) if d.parts[-4] == "sample"]
    records = {d.name: json.loads((d / "manifest.json").read_text())["tuned"] for d in tuned_dirs}
    assert len(records) == 2, records
    applied = [r for r in records.values() if isinstance(r, dict)]
    assert len(applied) == 1 and "official" in records.values()
    assert applied[0]["values"] == doc["values"] and applied[0]["trials"] == 3
    cfg = yaml.safe_load((next(d for d in tuned_dirs if isinstance(records[d.name], dict)) / "config.yaml").read_text())
    assert all(cfg["method"][k] == v for k, v in doc["values"].items())

    # a key set on the command line wins over the preset, and the record says so
    key = sorted(doc["values"])[0]
    proc = run_cli(*base, "tuned=auto", f"method.{key}=0.123", results_root=tmp_path)
    assert f"set on the command line instead: ['{key}']" in proc.stdout

    # rerunning the finished study adds no trial; asking for more adds exactly the difference
    before = trial_states(tmp_path)
    proc = tune(*TINY, *split(val_dir), "tune.trials=3", "tune.images=2", root=tmp_path)
    assert "no new trial" in proc.stdout and trial_states(tmp_path) == before
    tune(*TINY, *split(val_dir), "tune.trials=4", "tune.images=2", root=tmp_path)
    states = trial_states(tmp_path)
    assert len(states) == len(before) + 1 and sum(s in ("COMPLETE", "PRUNED") for s in states) == 4


def test_a_killed_study_resumes(tmp_path, val_dir):
    # start-up trials only (random points): a sampler that restarted its random stream on the rerun would
    # repeat the first trial's values
    args = [*TINY[:-1], "tune.startup_trials=3", *split(val_dir), "tune.trials=3", "tune.images=2", "steps=6"]
    cmd = [sys.executable, "-m", "bench.tune", *args, f"run.results_root={tmp_path}"]
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:  # kill it while its second trial runs
            if ": trial 1 " in line:
                time.sleep(0.3)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert not list((tmp_path / "tuned").rglob("*.yaml")), "a killed study must not have written a preset"
    states = trial_states(tmp_path)
    assert states.count("COMPLETE") + states.count("PRUNED") == 1 and states.count("RUNNING") <= 1
    done = tune(*args, root=tmp_path)
    states = trial_states(tmp_path)
    assert states.count("COMPLETE") + states.count("PRUNED") == 3, (states, done.stdout)
    if "RUNNING" in states or "FAIL" in states:  # the killed trial was failed and queued again
        assert "queued again" in done.stdout
    assert "RUNNING" not in states
    assert list((tmp_path / "tuned").rglob("*.yaml"))
    # no finished trial repeats another's values (the killed trial's values run again once, as queued)
    trials = the_study(tmp_path).get_trials()
    sampled = [tuple(sorted(t.params.items())) for t in trials
               if t.state.name in ("COMPLETE", "PRUNED") and "requeued_from" not in t.user_attrs]
    assert len(sampled) == len(set(sampled)), [(t.number, t.state.name, t.params) for t in trials]


def test_a_test_split_is_refused_unless_forced(tmp_path, val_dir):
    test_split = ["dataset=folder", f"dataset.root={val_dir}", "dataset.image_size=32"]  # folder: split test
    proc = tune(*TINY, *test_split, "tune.trials=1", "tune.images=1", root=tmp_path, check=False)
    assert proc.returncode == 2 and "is a test split" in proc.stderr and "tune.allow_test_split=true" in proc.stderr
    assert not (tmp_path / ".tune").exists() and not run_dirs(tmp_path), "refused before any work"
    tune(*TINY, *test_split, "tune.trials=1", "tune.images=1", "tune.allow_test_split=true", root=tmp_path)
    (preset,) = (tmp_path / "tuned").rglob("*.yaml")
    assert yaml.safe_load(preset.read_text())["provenance"]["split"]["forced_test_split"] is True
    from bench.tuned import label

    run = run_cli("model=adm_tiny", "method=ddrm", "task=denoise", "steps=3", "dataset.image_size=32",
                  "dataset.limit=1", "tuned=auto", results_root=tmp_path)
    assert "TEST split, forced" in run.stdout
    (d,) = [d for d in run_dirs(tmp_path) if d.parts[-4] == "sample"]
    assert "TEST split, forced" in label(json.loads((d / "manifest.json").read_text())["tuned"])


@pytest.mark.parametrize("override, message", [
    ("tune.objective=psnrr", "did you mean psnr"),
    ("tune.trials=0", "tune.trials=0 must be a positive integer"),
    ("tune.launcher=ray", "allowed: processes, local, slurm"),
    ("method.eta=0.5", "set on the command line but also searched"),
])
def test_bad_input_fails_before_any_trial(tmp_path, val_dir, override, message):
    proc = tune(*TINY, *split(val_dir), override, root=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / ".tune").exists()


def test_a_method_without_a_space_and_an_unknown_parameter(tmp_path, val_dir):
    proc = tune("method=bicubic", "task=sr4", *split(val_dir), root=tmp_path, check=False)
    assert proc.returncode == 2 and "has no tune.space" in proc.stderr
    proc = tune(*TINY, *split(val_dir), "++tune.space.etta={low:0.0,high:1.0}", root=tmp_path, check=False)
    assert proc.returncode == 2 and "has no parameter method.etta (did you mean eta?)" in proc.stderr


def worker_of_trials(root: Path) -> list:
    return [t.user_attrs.get("worker") for t in the_study(root).get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def test_parallel_workers_share_one_study(tmp_path, val_dir):
    proc = tune(*TINY, *split(val_dir), "tune.trials=4", "tune.images=1", "tune.jobs=2", "tune.prune=false",
                root=tmp_path)
    workers = worker_of_trials(tmp_path)
    assert 4 <= len(workers) <= 5, workers  # at most jobs - 1 extra when both ask at once
    assert set(workers) == {0, 1}, workers  # both workers ran trials of the one study
    assert list((tmp_path / "tuned").rglob("*.yaml")) and "preset:" in proc.stdout


def test_a_diverged_setting_is_scored_worst_not_failed(tmp_path, val_dir):
    """DPS with an absurd guidance scale makes NaN images (the runner refuses to save them): the trial is a
    result of its setting, scored as PSNR 0 so the sampler learns from it, and the study still ends."""
    tiny = ["model=adm_tiny", "method=dps", "task=sr4", "steps=2", "tune.startup_trials=1", "tune.prune=false"]
    proc = tune(*tiny, *split(val_dir), "tune.trials=2", "tune.images=1",
                "tune.space.scale.low=1e29", "tune.space.scale.high=1e30", root=tmp_path)
    assert proc.stdout.count("diverged (scored psnr 0.0)") == 2, proc.stdout
    assert trial_states(tmp_path) == ["COMPLETE", "COMPLETE"]
    (preset,) = (tmp_path / "tuned").rglob("*.yaml")
    doc = yaml.safe_load(preset.read_text())
    assert doc["values"] == {"scale": None} and doc["provenance"]["chosen"].startswith("official settings")


def test_a_cell_the_official_settings_skip_is_tuned_from_its_trials(tmp_path, val_dir):
    """GDP has no official guidance scale for denoise (it skips the cell); a tuned scale runs it."""
    tiny = ["model=adm_tiny", "method=gdp_x0", "task=denoise", "steps=2", "tune.startup_trials=1",
            "tune.prune=false"]
    proc = tune(*tiny, *split(val_dir), "tune.trials=2", "tune.images=1", root=tmp_path)
    assert "GDP has no official guidance scale for task 'denoise'" in proc.stdout
    assert "the best trial becomes the preset" in proc.stdout and "official skips the cell" in proc.stdout
    (preset,) = (tmp_path / "tuned").rglob("*.yaml")
    doc = yaml.safe_load(preset.read_text())
    assert isinstance(doc["values"]["scale"], float) and doc["provenance"]["official_value"] is None


def test_a_grid_scan_runs_every_point(tmp_path, val_dir):
    """tune.sampler=grid: every grid point once (log-spaced for a log range), no pruning, trials = grid size."""
    import math

    proc = tune(*TINY, *split(val_dir), "tune.sampler=grid", "tune.grid=3", "tune.images=1", root=tmp_path)
    assert proc.stdout.count(": trial ") == 9 and "pruned" not in proc.stdout.split("] 9 trials")[0]
    (preset,) = (tmp_path / "tuned").rglob("*.yaml")
    prov = yaml.safe_load(preset.read_text())["provenance"]
    assert prov["sampler"]["name"] == "grid" and prov["sampler"]["grid"] == {"eta": [0.0, 0.5, 1.0],
                                                                                   "eta_b": [0.0, 0.5, 1.0]}
    assert trial_states(tmp_path) == ["COMPLETE"] * 9
    from bench.tune.space import Param, grid

    assert [round(v, 6) for v in grid([Param("s", 0.01, 10.0, log=True)], 4)["s"]] == [0.01, 0.1, 1.0, 10.0]
    assert grid([Param("k", 1, 10, integer=True)], 4)["k"] == [1, 4, 7, 10]
    assert math.isclose(grid([Param("x", 0.0, 1.0)], 5)["x"][1], 0.25)
