"""Errors that suggest the fix (bench/cli_errors.py), through the real entry ``bench.cli.main`` (the
``bench`` console script and ``python -m bench``): "did you mean", the quoted form of a value Hydra's lexer
rejects, exit code 2, and nothing written or run; valid commands still reach Hydra unchanged."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

import bench.cli
from bench.cli_errors import command_line_problems
from tests.conftest import compose, run_cli, run_dirs


def _main(monkeypatch, capsys, *argv: str):
    """``bench *argv`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    GlobalHydra.instance().clear()
    code = 0
    try:
        bench.cli.main()
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def nothing_runs(tmp_path, monkeypatch):
    """The working directory is an empty folder and running a cell fails the test: a rejected command must
    neither run anything nor create results/ (nor a multirun folder)."""
    monkeypatch.chdir(tmp_path)

    def must_not_run(cfg):
        raise AssertionError("a rejected command ran a cell")

    monkeypatch.setattr(bench.cli, "run_from_config", must_not_run)
    yield tmp_path
    assert list(tmp_path.iterdir()) == []


BAD = [
    (["metod=ddrm"], ["unknown key 'metod'; did you mean 'method'? Fix: method=ddrm"]),
    (["task.sigmaa=0.1"], ["unknown key 'task.sigmaa'; did you mean 'task.sigma'? Fix: task.sigma=0.1"]),
    (["method.etta=0.5"], ["unknown key 'method.etta'; did you mean 'method.eta'? Fix: method.eta=0.5"]),
    (["tsk.sigma=0.2"], ["did you mean 'task.sigma'? Fix: task.sigma=0.2"]),
    (["experment=liu_table1"], ["did you mean 'experiment'? Fix: +experiment=liu_table1"]),
    (["method=ddrmm"], ["unknown option 'ddrmm' for 'method'; did you mean 'ddrm'? Fix: method=ddrm",
                        "Available options in 'method':\n\tbicubic\n", "\tzero_dce"]),
    (["+experiment=liu_tabel1"], ["did you mean 'liu_table1'? Fix: +experiment=liu_table1",
                                  "Available options in 'experiment':", "\tliu_table4"]),
    (["hydra/launcher=slrum"], ["did you mean 'slurm'? Fix: hydra/launcher=slurm", "\tsubmitit_local"]),
    (["hydra/launchr=slurm"], ["unknown config group 'hydra/launchr'; did you mean 'hydra/launcher'?"]),
    (["hydra.verbos=true"], ["did you mean 'hydra.verbose'? Fix: hydra.verbose=true"]),
    # nothing close: the keys at that level, and the +key=value form for a key the config lacks
    (["foo=1"], ["unknown key 'foo' (in foo=1): the top level of the config has the keys", "seed", "run",
                 "config groups method, task", "+experiment", "or +foo=1 to add a new key"]),
    (["task.zzz=1"], ["'task' has the keys name, version", "sigma", "or +task.zzz=1 to add a new key"]),
    (["~fooo"], ["cannot delete 'fooo' (in ~fooo): no such key"]),
    (["+method.eta=1"], ["'method.eta' is in the config already", "Fix: method.eta=1 (or ++method.eta=1"]),
    (["method=bicubic", "task=sr4", "dataset.limitt=2"], ["did you mean 'dataset.limit'? Fix: dataset.limit=2"]),
    # sweeps fail before the first job
    (["-m", "method=bicubic,ddrmm", "task=sr4"], ["did you mean 'ddrm'? Fix: method=bicubic,ddrm"]),
    (["-m", "task.sigmaa=0.1,0.2"], ["did you mean 'task.sigma'? Fix: task.sigma=0.1,0.2"]),
    (["-m", "method=ddrm,bicubic", "method.eta=0.5"], ["in the sweep's cell method=bicubic: method.eta=0.5 sets",
                                                       "'method' has the keys"]),
    # Hydra's lexer: the argument, and the quoted form to copy
    (["dataset.root=/data/Größe"], ["cannot parse the override 'dataset.root=/data/Größe'",
                                    "Hydra's quotes inside the shell's: 'dataset.root=\"/data/Größe\"'",
                                    'docs/usage.md "Quoting"']),
    (["dataset.root=/data/unicode", "dir", "é"], ["Hydra cannot parse 'dir' 'é'", "split at spaces",
                                                 "'dataset.root=\"/data/unicode dir é\"'"]),
    (["method=bicubic", "dataset.root=/data/Bilder/Größe", "1", "seed=1"], ["'dataset.root=\"/data/Bilder/Größe 1\"'"]),
    (["bicubic"], ["'bicubic' is not an override", "write key=value"]),
]


@pytest.mark.parametrize("argv,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_overrides_exit_2_with_the_fix_before_anything_runs(monkeypatch, capsys, nothing_runs, argv, expect):
    code, out, err = _main(monkeypatch, capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and "Traceback" not in err and "HYDRA_FULL_ERROR" not in err
    for text in expect:
        assert text in err, err
    assert "To append to your config use" not in err  # Hydra's advice, wrong for a typo


def test_the_installed_entry_point_in_a_subprocess_writes_nothing(tmp_path):
    res = tmp_path / "results"
    proc = run_cli("metod=ddrm", results_root=res, check=False)
    assert proc.returncode == 2 and "did you mean 'method'? Fix: method=ddrm" in proc.stderr, proc.stderr
    proc = run_cli("-m", "method=bicubic,ddrmm", results_root=res, check=False)
    assert proc.returncode == 2 and "did you mean 'ddrm'?" in proc.stderr, proc.stderr
    assert not res.exists()


@pytest.mark.parametrize("argv", [
    ["method=ddrm", "task=sr4"], ["+experiment=liu_table1"], ["-m", "method=bicubic,ddrm", "task=sr4,denoise"],
    ["~logger"], ["++foo=1", "foo=2"], ["+bar.baz=1"], ["hydra/launcher=local", "hydra.launcher.timeout_min=5"],
    ["hydra.verbose=true", "hydra.job.chdir=false"], ["-m", "seed=range(0,3)", "method=glob(ddrm*)"],
    ["dataset=folder", "dataset.root=\"/data/Bilder/Größe 1\""], ["method=null"],
    ["-sc", "install=bash"], ["--help"], ["-m", "method=ddrm,bicubic", "method.name=x"],
])
def test_valid_commands_have_no_problems(argv):
    assert command_line_problems(argv) == []


def test_valid_commands_still_run_through_hydra(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _main(monkeypatch, capsys, "--cfg", "job", "--resolve", "method=ddrm", "task=sr4")
    assert code == 0 and "name: ddrm" in out and "name: sr4" in out
    code, out, _ = _main(monkeypatch, capsys, "+experiment=liu_table1", "--cfg", "job")
    assert code == 0 and "name: imagenet_val" in out and "steps: 100" in out
    code, out, _ = _main(monkeypatch, capsys, "-sc", "install=bash")
    assert code == 0 and "hydra_bash_completion" in out

    cells = []
    monkeypatch.setattr(bench.cli, "run_from_config", lambda cfg, outcome=None: cells.append((cfg.method.name, cfg.task.name)))
    code, out, err = _main(monkeypatch, capsys, "-m", "method=bicubic,ddrm", "task=sr4",
                           f"run.results_root={tmp_path / 'res'}")
    assert code == 0, err
    assert cells == [("bicubic", "sr4"), ("ddrm", "sr4")]


def test_the_api_raises_the_same_text_as_a_value_error():
    from bench.api import compose as api_compose

    with pytest.raises(ValueError, match=r"unknown option 'ddrmm' for 'method'; did you mean 'ddrm'\?"):
        api_compose(method="ddrmm")
    with pytest.raises(ValueError, match=r"did you mean 'method.eta'\? Fix: method.eta=0.5"):
        api_compose(method="ddrm", method__etta=0.5)
    with pytest.raises(ValueError, match="Hydra's quotes inside the Python string"):
        api_compose(overrides=["dataset.root=/data/Größe"])
    assert api_compose(method="bicubic", dataset__limit=2).dataset.limit == 2
    assert not GlobalHydra.instance().is_initialized()


def test_the_api_suggests_from_the_users_config_dirs(tmp_path):
    from bench.api import compose as api_compose

    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "sr2.yaml").write_text(
        "name: sr2\nversion: 1\noperator:\n  _target_: bench.operators.SuperResolution\n  factor: 2\nsigma: 0.0\n")
    with pytest.raises(ValueError, match=r"unknown option 'sr22' for 'task'; did you mean 'sr2'\?"):
        api_compose("bicubic", "sr22", config_dirs=[tmp_path])
    with pytest.raises(ValueError, match=r"did you mean 'task.operator.factor'\? Fix: task.operator.factor=3"):
        api_compose("bicubic", "sr2", config_dirs=[tmp_path], task__operator__factr=3)


# ------------------------------------------------------------------------------ python -m bench.verify
def test_verify_defaults_to_results_and_says_when_it_is_missing(tmp_path, monkeypatch, capsys):
    from bench.verify import main as verify

    monkeypatch.chdir(tmp_path)
    assert verify([]) == 2
    err = capsys.readouterr().err
    assert "no results folder 'results'" in err and str(tmp_path) in err and "Fix:" in err
    (tmp_path / "results").mkdir()
    assert verify([]) == 2
    assert "no runs (folders with manifest.json) under 'results'" in capsys.readouterr().err


@pytest.mark.slow
def test_verify_without_a_path_checks_results(tmp_path, monkeypatch, capsys):
    from bench.verify import main as verify

    bench.cli.run_from_config(compose("method=bicubic", "task=sr4", "dataset.limit=1", "run.progress=false",
                                      f"run.results_root={tmp_path / 'results'}", "run.device=cpu"))
    (run,) = run_dirs(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert verify([]) == 0
    out = capsys.readouterr().out
    assert f"OK   {run.relative_to(tmp_path)}" in out and "1 run(s), 1 image(s) verified, 0 problem(s)" in out
