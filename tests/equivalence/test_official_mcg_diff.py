"""method=mcg_diff against the official gabrielvc/mcg_diff code, on identical inputs and noise:
tools/equivalence/mcg_diff.py runs the official driver's ``run_mcg_diff`` (``particle_filter.mcg_diff``,
``EpsilonNetSVD``, the final weighted draw) and ours with ``official_last_step=true`` on a small random eps network,
noiseless sr4 and inpainting, noisy denoise and sr4_noisy (about 12 s of CPU on one thread, mostly imports;
needs the driver's imports: diffusers, matplotlib, hydra-core).

The official code is not part of this repository: set BENCH_OFFICIAL_MCGDIFF to a checkout of
https://github.com/gabrielvc/mcg_diff to run it."""

from __future__ import annotations

import pytest

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_MCGDIFF", "https://github.com/gabrielvc/mcg_diff"


def test_matches_official_mcg_diff():
    path = checkout(ENV, URL, "mcg_diff/particle_filter.py")
    for module in ("diffusers", "matplotlib", "hydra"):
        pytest.importorskip(module, reason=f"the official driver (scripts/hugging_faces_models.py) imports {module}")
    out = run_tool("mcg_diff.py", path)
    assert "OK: worst relative difference" in out and "NFE ours 320" in out
