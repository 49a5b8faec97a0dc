"""RePaint's class-conditional + classifier-guided variant against the official andreas128/RePaint code
(tools/equivalence/repaint_classifier.py): the 256x256 classifier's state_dict layout, a small classifier's logits
with copied weights, one guided p_sample and a whole guided loop on identical inputs and noise.

The official code is not part of this repository: set BENCH_OFFICIAL_REPAINT to a checkout of
https://github.com/andreas128/RePaint to run it (about 10 s on one CPU thread)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ENV = "BENCH_OFFICIAL_REPAINT"


def test_classifier_guidance_matches_official_repaint():
    path = os.environ.get(ENV)
    if not path:
        pytest.skip(f"{ENV} is not set: point it at a checkout of https://github.com/andreas128/RePaint to compare "
                    "RePaint's classifier guidance with the official code")
    if not (Path(path) / "guided_diffusion" / "unet.py").is_file():
        pytest.fail(f"{ENV}={path} is not a RePaint checkout (no guided_diffusion/unet.py)")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "equivalence" / "repaint_classifier.py"), path],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: every difference <= 1e-05" in proc.stdout and "keys and shapes identical" in proc.stdout
