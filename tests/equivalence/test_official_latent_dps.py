"""method=latent_dps (with ``official_pseudo_x0``) against ReSample's Latent-DPS inner step (the official DDIMSampler's
``p_sample_ddim`` + ``PosteriorSampling`` at zeta_t = 0.5 abar_t and 50 abar_t, 10 steps, sr4) on one tiny float64
latent prior: tools/equivalence/latent_dps.py, about 35 s on one shared CPU thread (mostly imports). Differences ~3e-6 on latents of
magnitude ~120 (the official abar tables are float32).

The official code is not part of this repository: set BENCH_OFFICIAL_RESAMPLE to a checkout of
https://github.com/soominkwon/resample to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV = "BENCH_OFFICIAL_RESAMPLE"
URL = "https://github.com/soominkwon/resample"


def test_matches_official_resample_inner_step():
    out = run_tool("latent_dps.py", checkout(ENV, URL, "ldm_inverse/condition_methods.py"))
    assert "OK: worst difference" in out and "FAIL" not in out and "zeta_t = 50.0 abar_t" in out
