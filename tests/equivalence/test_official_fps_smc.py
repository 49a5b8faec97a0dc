"""method=fps_smc against the official ZehaoDou-official/FPS-SMC-2023 code, on identical inputs and noise:
tools/equivalence/fps_smc.py (whole official ``p_sample_loop`` runs, 8 steps x 4 particles with resampling, on our
sr4 / deblur_gauss / inpaint SVD operators, float64, ``official_index=true, official_init=true``, sigma_y = 0.05, and
official's SR branch on sr4_bicubic against ``official_sr_operator=true``; about 2 min on one loaded CPU thread).

The official code is not part of this repository: set BENCH_OFFICIAL_FPS to a checkout of
https://github.com/ZehaoDou-official/FPS-SMC-2023 to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_FPS", "https://github.com/ZehaoDou-official/FPS-SMC-2023"


def test_matches_official_fps_smc():
    out = run_tool("fps_smc.py", checkout(ENV, URL, "guided_diffusion/gaussian_diffusion.py"))
    assert "OK: every difference <= 0.0001" in out and "inpaint: 8 steps x 4 particles" in out
    assert "sr4_bicubic, official SR branch" in out
