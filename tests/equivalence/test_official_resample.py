"""method=resample against the official ReSample sampler, on identical inputs and noise: tools/equivalence/resample.py
(stochastic resampling, the pixel and latent AdamW optimisations, and the whole ``resample_sampling`` at 40 steps with
one pixel-stage and one latent-stage event and the official quirks switched on; tiny random latent prior, float64;
about 1.5 min of CPU on one thread, 4.6 min wall on the shared 2-core machine). Measured differences <= 1e-13.

The official code is not part of this repository: set BENCH_OFFICIAL_RESAMPLE to a checkout of
https://github.com/soominkwon/resample to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV = "BENCH_OFFICIAL_RESAMPLE"
URL = "https://github.com/soominkwon/resample"


def test_matches_official_resample():
    out = run_tool("resample.py", checkout(ENV, URL, "ldm/models/diffusion/ddim.py"))
    assert "OK: worst difference" in out and "FAIL" not in out and "whole sampler" in out
