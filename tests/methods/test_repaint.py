"""RePaint: the jump schedule (hand-checked cases, the official 2,410 calls), its validation, the sampler on the
analytic Gaussian prior (known region honoured, unknown region from the prior, exact NFE, paste_known, batch
independence), task support, the YAML and one tiny CLI run. The official-code comparison is
tests/equivalence/test_official_repaint.py."""

from __future__ import annotations

import json

import pytest
import torch

from bench import api
from bench.methods.repaint import RePaint, inject_known, undo
from bench.methods.repaint_schedule import count_forward_steps, count_network_calls, jump_schedule
from tests.conftest import compose
from tests.methods.solvers_common import GAUSS_MODEL, gaussian_prior, gens, task


def test_schedule_hand_checked_cases():
    # t_T = 5, jumps of 2 at the points 0 and 2 (below t_T - 2), once each
    assert jump_schedule(t_T=5, jump_length=2, jump_n_sample=2) == [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    # no jump points (jump_length >= t_T - 0) or no repeats: the plain walk
    assert jump_schedule(t_T=4, jump_length=10, jump_n_sample=10) == [3, 2, 1, 0, -1]
    assert jump_schedule(t_T=6, jump_length=2, jump_n_sample=1) == [5, 4, 3, 2, 1, 0, -1]
    # n_sample = 2: one up-down pair after every step below t_T - 2
    assert jump_schedule(t_T=3, jump_length=10, jump_n_sample=1, n_sample=2) == [2, 1, 0, 1, 0, -1]
    # start_resampling = 2: only the jump point 0 (0 <= 2 - 2) jumps
    assert jump_schedule(t_T=5, jump_length=2, jump_n_sample=2, start_resampling=2) == [4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    # a nested level: jump2 (length 1, once) at t = 0 and 1, refilled after the coarse jump (length 2) at 0
    ts = jump_schedule(t_T=3, jump_length=2, jump_n_sample=2, jump2_length=1, jump2_n_sample=2)
    assert ts == [2, 1, 2, 1, 0, 1, 0, 1, 2, 1, 2, 1, 0, 1, 0, -1]


def test_official_default_has_2410_network_calls():
    ts = jump_schedule()
    assert (len(ts), count_network_calls(ts), count_forward_steps(ts)) == (4571, 2410, 2160)
    assert ts[:30] == list(range(249, 229, -1)) + list(range(231, 241))  # down to 230, jump back up to 240
    # 24 jump points (0, 10, ..., 230) x 9 repeats x 10 steps on top of the 250-step walk
    assert count_network_calls(ts) == 250 + 24 * 9 * 10
    assert all(abs(a - b) == 1 for a, b in zip(ts[:-1], ts[1:])) and ts[-1] == -1 and max(ts) == 249


@pytest.mark.parametrize("kw, key", [({"t_T": 0}, "t_T"), ({"jump_length": 0}, "jump_length"),
                                     ({"jump_n_sample": 2.5}, "jump_n_sample"), ({"n_sample": True}, "n_sample"),
                                     ({"jump3_n_sample": -1}, "jump3_n_sample"),
                                     ({"start_resampling": "10"}, "start_resampling")])
def test_schedule_refuses_bad_values(kw, key):
    fix = "steps" if key == "t_T" else f"method\\.{key}"
    with pytest.raises(ValueError, match=rf"^repaint: {key}=.* is invalid: .*Fix: {fix}="):
        jump_schedule(**kw)


def test_injection_and_undo_formulas():
    x, known, z = torch.full((1, 1, 2, 2), 3.0), torch.full((1, 1, 2, 2), -0.5), torch.full((1, 1, 2, 2), 2.0)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    a = torch.tensor(0.64)
    out = inject_known(x, known, mask, a, z)
    torch.testing.assert_close(out, torch.tensor([[[[0.8 * -0.5 + 0.6 * 2.0, 3.0], [3.0, 0.8 * -0.5 + 0.6 * 2.0]]]]))
    torch.testing.assert_close(undo(x, torch.tensor(0.36), z), 0.8 * x + 0.6 * z)


def repaint(**kw) -> RePaint:
    m = RePaint(GAUSS_MODEL, **{"steps": 10, "jump_length": 2, "jump_n_sample": 3, **kw})
    m.use_prior(gaussian_prior(0.1, 0.1, size=16), "cpu")
    return m


def restore(method, ids=(0, 1), value=0.25):
    deg = task("inpaint").build(16)
    x01 = torch.full((len(ids), 3, 16, 16), value)
    return deg, method.restore(deg.operator.A(x01), deg, gens(ids))


def test_known_region_is_honoured_and_the_rest_comes_from_the_prior():
    """Independent pixels x0 ~ N(0.1, 0.1^2) in [-1, 1] (exact eps); known pixels -0.5 (0.25 in [0, 1]), far from
    the prior. Without pasting, the known pixels end near -0.5 (re-injected before every call, the last one at
    abar ~ 1); the missing ones are prior draws, untouched by the known region (the prior is independent per
    pixel): mean ~0.1, std ~0.1 (0.078 measured at t_T = 100: the ancestral sampler under-disperses at few
    steps, 0.098 at 1000, 0.026 at 10). NFE is the schedule's: 100 + 9 points x 2 repeats x 10 = 280."""
    m = repaint(steps=100, jump_length=10, jump_n_sample=3)
    deg, out = restore(m)
    assert m.last_nfe == count_network_calls(m.times) == 280 and m.nfe == 280
    keep = deg.operator.mask.expand_as(out[0])
    known, free = out[:, keep] * 2 - 1, out[:, ~keep] * 2 - 1
    assert (known - -0.5).abs().max() < 0.08
    assert abs(float(free.mean()) - 0.1) < 0.02 and 0.06 < float(free.std()) < 0.13


def test_paste_known_and_batch_independence():
    deg, pasted = restore(repaint(paste_known=True))
    keep = deg.operator.mask.expand_as(pasted[0])
    assert torch.equal(pasted[:, keep], torch.full_like(pasted[:, keep], 0.25))
    _, raw = restore(repaint())
    assert not torch.equal(raw[:, keep], pasted[:, keep]) and torch.equal(raw[:, ~keep], pasted[:, ~keep])
    _, alone = restore(repaint(), ids=(1,))
    torch.testing.assert_close(alone, raw[1:], rtol=0, atol=1e-6)


def test_task_support_and_validation():
    m = RePaint(GAUSS_MODEL, steps=20)
    assert m.unsupported_reason(task("inpaint")) is None
    assert "keep-mask" in m.unsupported_reason(task("sr4"))
    assert "lowlight" in m.unsupported_reason(task("lowlight"))
    assert "noiseless" in m.unsupported_reason(task("inpaint", sigma=0.05))
    with pytest.raises(ValueError, match=r"^repaint: steps=1001 exceeds the prior's 1000 training steps"):
        RePaint(GAUSS_MODEL, steps=1001)
    with pytest.raises(ValueError, match=r"^repaint: paste_known='yes' must be true or false"):
        RePaint(GAUSS_MODEL, paste_known="yes")
    with pytest.raises(ValueError, match=r"^repaint: variance='big' is invalid; allowed: learned_range"):
        RePaint(GAUSS_MODEL, variance="big")
    with pytest.raises(ValueError, match=r"^repaint: jump_length=0 is invalid"):
        RePaint(GAUSS_MODEL, jump_length=0)


def test_yaml_official_budget_and_embedded_default():
    official = compose("method=repaint", "model=adm_imagenet256")
    assert official.steps == 250 and official.method.jump_length == 10 and official.method.jump_n_sample == 10
    assert compose("method=repaint").steps == 20  # the embedded prior's default_steps: 110 NFE (repaint.yaml)
    assert count_network_calls(jump_schedule(t_T=20)) == 110


def test_tiny_end_to_end_run(tmp_path):
    """The real run path (bench.api.run = python -m bench): adm_tiny, t_T = 4 with jumps of 2 -> 4 + 1 x 2 = 6 NFE."""
    run = api.run("repaint", "inpaint", overrides=["model=adm_tiny", "steps=4", "method.jump_length=2",
                                                    "method.jump_n_sample=2", "dataset.limit=1",
                                                    f"run.results_root={tmp_path}", "run.progress=false"])
    manifest = json.loads((run / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert '"nfe": 6' in text and "RePaint (Algorithm 1" in text
    assert len(list((run / "images").glob("*.png"))) == 1
    assert api.run("repaint", "sr4", overrides=["model=adm_tiny", "steps=4", "dataset.limit=1",
                                                f"run.results_root={tmp_path}", "run.progress=false"]) is None
