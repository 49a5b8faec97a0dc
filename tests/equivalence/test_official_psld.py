"""method=psld against the official PSLD sampler, on identical inputs: tools/equivalence/psld.py (the
``general_inverse`` branch on sr4 with A^+ and on deblur_gauss with the official identity "transpose", the
``inpainting`` branch, and gamma = 0; 20 DDIM steps on the tiny random latent prior in float64; about 20 s on one CPU
thread; 50 s wall on the shared machine). Measured differences <= 2e-12.

The official code is not part of this repository: set BENCH_OFFICIAL_PSLD to a checkout of
https://github.com/LituRout/PSLD to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV = "BENCH_OFFICIAL_PSLD"
URL = "https://github.com/LituRout/PSLD"


def test_matches_official_psld():
    out = run_tool("psld.py", checkout(ENV, URL, "stable-diffusion/ldm/models/diffusion/psld.py"))
    assert "OK: worst difference" in out and "FAIL" not in out and "inpainting inpaint" in out
