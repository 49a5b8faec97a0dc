"""bench.run: the notebook API runs one cell like the CLI, returns its run directory, converts keyword
overrides, finds user config folders, and leaves Hydra's global state as it found it."""

from __future__ import annotations

import json

import pytest
from hydra.core.global_hydra import GlobalHydra

import bench
from bench.api import compose, to_overrides


def test_overrides_are_written_in_hydra_grammar(tmp_path):
    ov = to_overrides("ddrm", "sr4", overrides=["+x=1"], steps=3, dataset__limit=2, run__progress=False,
                      seed=None, method__eta=0.5, dataset__root="/a b", tags=["a", 1])
    assert ov[:2] == ["method=ddrm", "task=sr4"]
    assert {"steps=3", "dataset.limit=2", "run.progress=false", "seed=null", "method.eta=0.5",
            "dataset.root='/a b'", "tags=[a,1]", "+x=1"} <= set(ov)
    with pytest.raises(TypeError, match="list of strings"):
        to_overrides(overrides="steps=3")
    with pytest.raises(FileNotFoundError, match="config_dirs"):
        to_overrides(config_dirs=[tmp_path / "absent"])


def test_run_returns_the_run_directory_and_restores_hydra_state(tmp_path):
    assert not GlobalHydra.instance().is_initialized()
    run_dir = bench.run("bicubic", "sr4", dataset__limit=2, run__results_root=str(tmp_path), run__progress=False)
    assert not GlobalHydra.instance().is_initialized()
    assert run_dir.parent.parent.name == "sr4" and run_dir.parent.name == "bicubic"
    assert len(list((run_dir / "images").glob("*.png"))) == 2
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["task"]["name"] == "sr4" and man["dataset"]["count"] == 8
    # the same call resumes (nothing to do) and returns the same directory
    assert bench.run("bicubic", "sr4", dataset__limit=2, run__results_root=str(tmp_path),
                     run__progress=False) == run_dir
    # unsupported pair: None, with the reason recorded as the CLI does
    assert bench.run("ddrm", "lowlight", run__results_root=str(tmp_path)) is None
    assert (tmp_path / "sample" / "lowlight" / "ddrm" / "SKIPPED.json").is_file()
    assert not GlobalHydra.instance().is_initialized()


def test_errors_propagate_and_state_is_still_restored(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'no_such_method' for 'method'"):  # bench/cli_errors.py
        bench.run("no_such_method", "sr4", run__results_root=str(tmp_path))
    assert not GlobalHydra.instance().is_initialized()


def test_config_dirs_add_user_groups(tmp_path):
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "sr2.yaml").write_text(
        "name: sr2\nversion: 1\noperator:\n  _target_: bench.operators.SuperResolution\n  factor: 2\nsigma: 0.0\n")
    cfg = compose("bicubic", "sr2", config_dirs=[tmp_path / "conf"])
    assert cfg.task.operator.factor == 2 and cfg.method.name == "bicubic"
    assert not GlobalHydra.instance().is_initialized()


def test_a_method_file_whose_package_header_is_not_first_says_so(tmp_path):
    """Hydra reads `# @package _global_` only at the top of a file: below another comment line the method
    lands under `method:`. The run then used to fail inside the user's class ("unexpected keyword argument
    'name'"); it now names the header and the fix before building anything (bench/checks.py)."""
    from bench.checks import ConfigError

    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "headerless.yaml").write_text(
        "# file: conf/method/headerless.yaml\n# @package _global_\nsteps: null\n"
        "method:\n  _target_: bench.methods.baselines.Bicubic\n  name: headerless\n  mode: bicubic\n")
    with pytest.raises(ConfigError, match=r"(?s)`# @package _global_` the first line of your method/headerless\.yaml"):
        bench.run("headerless", "sr4", config_dirs=[tmp_path / "conf"], run__results_root=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    assert not GlobalHydra.instance().is_initialized()


def test_a_node_without_target_names_the_expected_shape(tmp_path):
    from bench.checks import ConfigError

    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "no_target.yaml").write_text("name: no_target\nroot: x\nlimit: null\n")
    with pytest.raises(ConfigError, match=r"dataset: the config has no _target_ \(keys: \['limit', 'name', 'root'\]\)"):
        bench.run("bicubic", "sr4", dataset="no_target", config_dirs=[tmp_path / "conf"],
                  run__results_root=str(tmp_path / "r"))
