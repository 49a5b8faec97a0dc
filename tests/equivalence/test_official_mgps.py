"""method=mgps against the official YazidJanati/mgps code, on identical inputs and noise: tools/equivalence/mgps.py
runs the official ``mgps`` sampler (midpoint VI by Adam through the network, warm start, DDPM bridges) and ours with
``official_time_offset=true`` on a small eps network and the sr4 operator, with the official default and FFHQ
gradient-step rules, and compares the network forward / backward counts (about 10 s of CPU on one thread).

The official code is not part of this repository: set BENCH_OFFICIAL_MGPS to a checkout of
https://github.com/YazidJanati/mgps to run it."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_MGPS", "https://github.com/YazidJanati/mgps"


def test_matches_official_mgps():
    out = run_tool("mgps.py", checkout(ENV, URL, "src/posterior_samplers/mgps.py"))
    assert "OK: worst relative difference" in out and "ours 50 / 20, mgps_cost 50 / 20" in out
