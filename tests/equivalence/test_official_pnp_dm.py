"""method=pnp_dm against the official zihuiwu/PnP-DM-public code, on identical inputs and noise:
tools/equivalence/pnp_dm.py (the EDM grid and start indices, the VPPrecond denoiser, the SVD likelihood draw, the
edm / edm_sde prior step and five whole Gibbs iterations, with ``official_vp_time=true``; about 5 s on one CPU thread).

The official code is not part of this repository: set BENCH_OFFICIAL_PNPDM to a checkout of
https://github.com/zihuiwu/PnP-DM-public to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_PNPDM", "https://github.com/zihuiwu/PnP-DM-public"


def test_matches_official_pnp_dm():
    out = run_tool("pnp_dm.py", checkout(ENV, URL, "pnpdm/samplers/pnp_edm/denoiser_edm.py"))
    assert "OK: every difference <= 1e-05" in out and "5 Gibbs iterations, output=mean" in out
