"""method=dcdp against the official DCDP code, on identical inputs and noise: tools/equivalence/dcdp.py (the
linear T_k schedule, 100 SGD steps of ``CSGM_Solver_Pixel_Space``, the official q_sample + DDIM purification at
T_k = 400, 15 and the bumped last level 1, and a whole 3-iteration loop, on sr4 / deblur_gauss / inpaint; about
10 s on one CPU thread). Differences are ~1e-6: the official tables are cast to float32.

The official code is not part of this repository: set BENCH_OFFICIAL_DCDP to a checkout of
https://github.com/Morefre/Decoupled-Data-Consistency-with-Diffusion-Purification-for-Image-Restoration to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV = "BENCH_OFFICIAL_DCDP"
URL = "https://github.com/Morefre/Decoupled-Data-Consistency-with-Diffusion-Purification-for-Image-Restoration"


def test_matches_official_dcdp():
    out = run_tool("dcdp.py", checkout(ENV, URL, "dcdp.py"))
    assert "OK: worst difference" in out and "FAIL" not in out and "whole loop K=3" in out
