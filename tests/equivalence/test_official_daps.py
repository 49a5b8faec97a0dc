"""method=daps against the official zhangbingliang2019/DAPS code (``main``), on identical inputs and noise:
tools/equivalence/daps.py runs the official ``DAPS.sample`` (EDM annealing, torchdiffeq Euler PF-ODE, MCMCSampler
with Langevin and with HMC, VPPrecond) and ours with ``official_data_weight=true, time_map=vp`` on a small random
eps network and the sr4 operator (about 3 s on one CPU thread; needs torchdiffeq).

The official code is not part of this repository: set BENCH_OFFICIAL_DAPS to a checkout of
https://github.com/zhangbingliang2019/DAPS to run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_DAPS", "https://github.com/zhangbingliang2019/DAPS"


def test_matches_official_daps():
    path = checkout(ENV, URL, "cores/mcmc.py")
    tdq = pytest.importorskip("torchdiffeq", reason="the official DAPS code needs torchdiffeq (pip install torchdiffeq)")
    out = run_tool("daps.py", path, str(Path(tdq.__file__).parents[1]))
    assert "OK: worst relative difference" in out and "NFE ours 12" in out
