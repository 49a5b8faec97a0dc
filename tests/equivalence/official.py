"""What the official-code comparisons share: the checkout named by an environment variable (the test skips
with the reason when it is not set: the project ships no upstream code), and running a script of
tools/equivalence/ on it with one CPU thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def checkout(env: str, url: str, marker: str) -> str:
    """The path in ``$env``; skip when it is unset, fail when ``marker`` (a file of that repository) is missing."""
    path = os.environ.get(env)
    if not path:
        pytest.skip(f"{env} is not set: point it at a checkout of {url} to compare with the official code")
    if not (Path(path) / marker).is_file():
        pytest.fail(f"{env}={path} is not a checkout of {url} (no {marker})")
    return path


def run_tool(script: str, *checkouts: str) -> str:
    """``python tools/equivalence/<script> <checkouts...>``; asserts exit 0 and returns its stdout."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "equivalence" / script), *checkouts], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
