"""Equality with Janspiry's official SR3 and Palette code (tools/equivalence/sr3_palette.py): runs when
BENCH_OFFICIAL_SR3 and BENCH_OFFICIAL_PALETTE name local clones of
github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement and
github.com/Janspiry/Palette-Image-to-Image-Diffusion-Models; skipped otherwise (the project ships no official code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SR3, PALETTE = os.environ.get("BENCH_OFFICIAL_SR3"), os.environ.get("BENCH_OFFICIAL_PALETTE")


@pytest.mark.skipif(not (SR3 and PALETTE), reason="set BENCH_OFFICIAL_SR3 and BENCH_OFFICIAL_PALETTE to clones of "
                    "Janspiry's SR3 and Palette repositories to compare with the official code")
def test_matches_official_sr3_and_palette():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "tools" / "equivalence" / "sr3_palette.py"), SR3, PALETTE],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 9/9 within 1e-05" in r.stdout, r.stdout
