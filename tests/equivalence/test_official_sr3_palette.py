"""Equality with Janspiry's official SR3 and Palette code (tools/equivalence/sr3_palette.py): runs when
BENCH_OFFICIAL_SR3 and BENCH_OFFICIAL_PALETTE name local clones of
github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement and
github.com/Janspiry/Palette-Image-to-Image-Diffusion-Models; skipped otherwise (the project ships no official code)."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool


def test_matches_official_sr3_and_palette():
    sr3 = checkout("BENCH_OFFICIAL_SR3", "https://github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement",
                   "model/sr3_modules/unet.py")
    palette = checkout("BENCH_OFFICIAL_PALETTE", "https://github.com/Janspiry/Palette-Image-to-Image-Diffusion-Models",
                       "models/network.py")
    assert "OK: 9/9 within 1e-05" in run_tool("sr3_palette.py", sr3, palette)
