"""Where the harness finds its configs, dataset manifests and shipped priors.

Two layouts, one answer:

* **a checkout** (``git clone`` + ``pip install -e .``, or ``python -m bench`` inside the clone): the
  top-level ``conf/``, ``datasets/`` and ``tuned/`` next to the ``bench/`` package;
* **an installed package** (``pip install .``, a wheel): the copies the build put into the package,
  ``bench/_conf``, ``bench/_datasets`` and ``bench/_tuned`` (``[tool.setuptools.package-dir]`` in pyproject.toml maps them).

A checkout is recognised by ``pyproject.toml`` and ``conf/config.yaml`` beside the package, so a stray
``conf/`` folder in site-packages is never taken for ours. Paths in configs such as
``bench/priors/adm64_imagenet96.safetensors`` are relative to :func:`package_root`, the folder that holds
the ``bench`` package: the repository root of a checkout, ``site-packages`` of an install; the shipped
priors are at that relative path in both.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def package_root() -> Path:
    """The folder holding the ``bench`` package (a checkout's root, or site-packages)."""
    return PACKAGE_DIR.parent


def checkout_root() -> Path | None:
    """The repository root when this code runs from a checkout, else None (an installed package)."""
    root = package_root()
    if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file():
        return root
    return None


def _resource(top_level: str, installed: str) -> Path:
    root = checkout_root()
    if root is not None:
        return root / top_level
    path = PACKAGE_DIR / installed
    if not path.is_dir():
        raise FileNotFoundError(
            f"neither a checkout's {top_level}/ (beside {PACKAGE_DIR}) nor the installed copy {path} exists: "
            "this installation of restoration-bench is incomplete. Fix: reinstall it (`pip install .` from a "
            "clone builds the copy) or run from a clone (`pip install -e .`)."
        )
    return path


def conf_dir() -> Path:
    """The primary Hydra config folder (``conf/``)."""
    return _resource("conf", "_conf")


def tuned_dir() -> Path:
    """The shipped tuned presets (``tuned/``; outside ``conf/``, where Hydra would take it for a config group)."""
    return _resource("tuned", "_tuned")


def datasets_dir() -> Path:
    """The dataset manifests folder (``datasets/``)."""
    return _resource("datasets", "_datasets")
