"""method=repaint against the official andreas128/RePaint code, on identical inputs and noise:
tools/equivalence/repaint.py (the jump schedule, one p_sample with a keep-mask, one undo, the whole 2,410-call
loop; about 5 s on one CPU thread) and tools/equivalence/repaint_classifier.py (the class-conditional +
classifier-guided variant: the 256x256 classifier's state_dict layout, a small classifier's logits with copied
weights, one guided p_sample and a whole guided loop; about 10 s).

The official code is not part of this repository: set BENCH_OFFICIAL_REPAINT to a checkout of
https://github.com/andreas128/RePaint to run them."""

from __future__ import annotations

from tests.equivalence.official import checkout, run_tool

ENV, URL = "BENCH_OFFICIAL_REPAINT", "https://github.com/andreas128/RePaint"


def test_matches_official_repaint():
    out = run_tool("repaint.py", checkout(ENV, URL, "guided_diffusion/scheduler.py"))
    assert "OK: every difference <= 1e-05" in out and "2410 network calls" in out


def test_classifier_guidance_matches_official_repaint():
    out = run_tool("repaint_classifier.py", checkout(ENV, URL, "guided_diffusion/unet.py"))
    assert "OK: every difference <= 1e-05" in out and "keys and shapes identical" in out
