"""Packaging: a wheel that holds conf/, datasets/ and the priors; a non-editable install that runs from any
directory; the `bench` console script, its tab completion, the Hydra app name and --help."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bench import paths
from tests.conftest import REPO

# what a wheel build needs from the source tree (the rest of a clone is not packaged)
SOURCES = ("bench", "conf", "datasets", "tuned", "pyproject.toml", "README.md")


def _can_build_wheels_offline() -> str | None:
    """None, or why `pip wheel --no-build-isolation` cannot work in this environment."""
    try:
        version = tuple(int(x) for x in md.version("setuptools").split(".")[:2])
    except md.PackageNotFoundError:
        return "setuptools is not installed (pip install -e '.[dev]' brings it)"
    if version < (70, 1):
        try:
            md.version("wheel")
        except md.PackageNotFoundError:
            return f"setuptools {version} < 70.1 needs the `wheel` package (pip install -e '.[dev]' brings both)"
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    reason = _can_build_wheels_offline()
    if reason:
        pytest.skip(f"cannot build a wheel offline: {reason}")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:  # a copy, so the build's build/ and *.egg-info never land in the checkout
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("restoration_bench-*.whl")
    return whl


def test_wheel_holds_every_module_conf_datasets_and_priors(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {str(p.relative_to(REPO)) for p in (REPO / "bench").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(want - names)
    assert not missing, (f"{missing} are not in the wheel: add their package to [tool.setuptools] packages "
                         "in pyproject.toml")
    for top, installed in (("conf", "bench/_conf"), ("datasets", "bench/_datasets"), ("tuned", "bench/_tuned")):
        files = [p for p in (REPO / top).rglob("*") if p.is_file()]
        assert files and {f"{installed}/{p.relative_to(REPO / top)}" for p in files} <= names, top
    priors = [str(p.relative_to(REPO)) for p in (REPO / "bench" / "priors").rglob("*") if p.is_file()]
    assert "bench/priors/adm64_imagenet96.safetensors" in priors and set(priors) <= names
    assert {f"bench/train/conf/{p.name}" for p in (REPO / "bench" / "train" / "conf").glob("*.yaml")} <= names
    assert not any(n.startswith(("conf/", "datasets/", "tuned/", "tests/")) for n in names)  # nothing top-level leaks
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "bench = bench.cli:main" in entry_points


def _fresh_venv(root: Path) -> tuple[Path, dict]:
    """A new venv without pip whose only view of the outer environment is its site-packages added as a
    plain path: torch & co. come from there, but NOT the outer (editable) restoration-bench, whose
    .pth finder is not run for such a path. ``python -m venv --system-site-packages`` would expose the
    base interpreter, not this venv, so it would lack torch."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_outer_site.pth").write_text("\n".join(sorted(outer)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", BENCH_OFFLINE="1", HF_HUB_OFFLINE="1")
    return purelib, env


@pytest.mark.slow
def test_non_editable_install_runs_the_main_job_from_another_directory(wheel, tmp_path):
    """`pip install .` (here: the wheel it builds) into a fresh venv, then `bench` elsewhere: no checkout."""
    purelib, env = _fresh_venv(tmp_path / "venv")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp_path / "venv" / "bin" / "python"),
                           "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300, env=env)  # no PYTHONPATH: a checkout on
    # it would look installed already ("Requirement already satisfied") and nothing would be installed
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["BENCH_CACHE"] = str(tmp_path / "cache")

    def run(*cmd: str) -> subprocess.CompletedProcess:
        p = subprocess.run(list(cmd), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
        return p

    facts = json.loads(run("python", "-c", "import json, bench, bench.paths as p, bench.data as d, "
                           "bench.models.assets as a; print(json.dumps([bench.__file__, str(p.checkout_root()), "
                           "str(p.conf_dir()), str(d.DATASETS_DIR), "
                           "str(a.resolve_local_path('bench/priors/adm64_imagenet96.safetensors')), str(p.tuned_dir())]))"
                           ).stdout)
    pkg = purelib / "bench"
    assert facts == [str(pkg / "__init__.py"), "None", str(pkg / "_conf"), str(pkg / "_datasets"),
                     str(pkg / "priors" / "adm64_imagenet96.safetensors"), str(pkg / "_tuned")]
    assert list((pkg / "_tuned" / "adm64_imagenet96").rglob("*.yaml")), "the shipped presets are not installed"

    # the main job (DDRM, embedded prior, sample images), shortened: the console script from another folder
    out = run("bench", "dataset.limit=1", "steps=2", "run.progress=false").stdout
    assert "psnr" in out and re.search(r"\n  images +: 1\n", out), out
    (manifest,) = (elsewhere / "results").rglob("manifest.json")
    assert str(pkg / "priors" / "adm64_imagenet96.safetensors") in manifest.read_text()
    assert "== Configuration groups ==" in (help_ := run("python", "-m", "bench", "--help").stdout)
    assert help_.startswith("bench:") and "\ntrain:" not in help_

    # tab completion exactly as README documents it, for the installed console script
    script = ('eval "$(bench -sc install=bash)"; COMP_LINE="bench method=dd"; COMP_POINT=${#COMP_LINE}; '
              'COMP_CWORD=1; hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"')
    want = {f"method={p.stem}" for p in (REPO / "conf" / "method").glob("dd*.yaml")}  # ddnm, ddrm, ...
    assert len(want) >= 2 and set(run("bash", "-c", script).stdout.split()) == want


def test_checkout_layout_wins_in_a_clone():
    assert paths.checkout_root() == REPO
    assert paths.conf_dir() == REPO / "conf" and paths.datasets_dir() == REPO / "datasets"
    assert paths.package_root() == REPO


def _main(monkeypatch, capsys, *argv: str, env: dict | None = None) -> str:
    """Run the real `bench` entry point in-process (what the console script calls) and return stdout."""
    from hydra.core.global_hydra import GlobalHydra

    from bench.cli import main

    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    GlobalHydra.instance().clear()
    try:
        main()
    except SystemExit as e:
        assert e.code in (None, 0), capsys.readouterr()
    finally:
        GlobalHydra.instance().clear()
    return capsys.readouterr().out


def test_app_is_named_bench_and_help_lists_only_the_run_groups(monkeypatch, capsys):
    help_ = _main(monkeypatch, capsys, "--help")
    groups = help_.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    assert listed == {"classifier", "dataset", "experiment", "logger", "method", "metrics", "model", "task"}
    assert help_.startswith("bench: restore a dataset") and "install=bash" in help_
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.create(_main(monkeypatch, capsys, "--cfg", "hydra")).hydra
    assert hydra_cfg.job.name == "bench"  # not "cli", the module's name
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    slurm = OmegaConf.create(_main(monkeypatch, capsys, "--cfg", "hydra", "hydra/launcher=slurm")).hydra
    assert slurm.launcher.name == "bench"  # submitit's job name is ${hydra.job.name}: SLURM shows "bench"


def test_completion_query_offers_the_config_groups(monkeypatch, capsys):
    """What the installed bash function asks the app (`bench -sc query=bash`), answered from conf/."""
    out = _main(monkeypatch, capsys, "-sc", "query=bash", env={"COMP_LINE": "bench task=sr", "COMP_POINT": "13"})
    assert set(out.split()) == {"task=sr4", "task=sr4_bicubic", "task=sr4_noisy", "task=sr8"}
