"""LDG, learned-degradation guidance (bench/methods/ldg.py, ldg_models.py): the learned F_Phi finds a known
degradation, the guided step lowers the fidelity loss by the stated amount, batch independence, errors, a
non-linear task, and the real CLI on lowlight and sr4.

The tiny ADM (conf/model/adm_tiny.yaml) has random weights: only properties that hold for any eps-model are
tested. The ``jpeg`` task is being added in parallel; ``BlockQuantize`` below is a test-local non-linear
stand-in with the same interface (``linear = False``, ``A`` returns an image of the same size).
"""

from __future__ import annotations

import pytest
import torch
import yaml

from bench.methods.gdp_losses import mse
from bench.methods.ldg import DEFAULTS, LDG, LearnedGuidance, task_defaults
from bench.methods.ldg_models import LearnedDegradation, PhiOptimizer
from bench.tasks import Degradation, Task
from tests.conftest import CONF_DIR, run_cli, run_dirs
from tests.methods.test_gdp import conf_task, gens, smooth_images

pytestmark = pytest.mark.usefixtures("single_thread")
SIZE = 32  # adm_tiny's image_size


@pytest.fixture(scope="module")
def tiny_model() -> dict:
    return yaml.safe_load((CONF_DIR / "model" / "adm_tiny.yaml").read_text())


def identity_guidance(kind: str, target, gain, lr, scale=1.0, optimizer="sgd", offset=True) -> LearnedGuidance:
    model = LearnedDegradation(kind, target.shape[1], gens(range(target.shape[0])), "cpu", gain, offset)
    return LearnedGuidance(lambda x: x, target, model, PhiOptimizer(optimizer, lr), scale, 1.0, mse)


class BlockQuantize:
    """A JPEG-like non-linear degradation for the tests: 4x4 block means, quantised to 8 levels."""

    linear, name = False, "block_quantize"

    def __init__(self, channels=3, size=SIZE, device="cpu", seed=0):
        self.x_shape = (channels, size, size)

    def A(self, x):  # noqa: N802
        x = x.reshape(x.shape[0], *self.x_shape)
        blocks = torch.nn.functional.avg_pool2d(x, 4)
        return (torch.nn.functional.interpolate(blocks, scale_factor=4) * 7).round() / 7

    def measurement_image(self, y):
        return y


@pytest.mark.parametrize("kind, optimizer, lr, gain", [("affine", "sgd", 0.5, 1.0), ("affine", "adam", 0.02, 0.01),
                                                      ("conv", "sgd", 0.5, 1.0)])
def test_phi_recovers_a_known_gain_and_offset(kind, optimizer, lr, gain):
    """y = 0.5 x + 0.1 with x fixed: Algorithm 1's Phi steps alone (line 7) find g = 0.5, M = 0.1."""
    x01 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    guide = identity_guidance(kind, 0.5 * x01 + 0.1, gain, lr, optimizer=optimizer)
    for _ in range(400):
        guide(2 * x01 - 1)
    p = guide.model.params
    if kind == "affine":
        torch.testing.assert_close(p["gain"], torch.full_like(p["gain"], 0.5), atol=2e-3, rtol=0)
        torch.testing.assert_close(p["offset"], torch.full_like(p["offset"], 0.1), atol=2e-3, rtol=0)
    assert (guide.history[-1] < 0.01 * guide.history[0]).all()  # the fit itself (conv: any Phi that fits)


def test_guided_step_is_minus_s_grad_and_lowers_the_fidelity_loss():
    """With Phi frozen (lr 0), guidance(x0) = -s g (F(x0) - y) exactly (eq. 9's sum, [-1, 1] units), and
    x0 + shift fits y better: with g = 1 and s = 1 the residual halves."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    y = torch.rand(2, 3, 8, 8, generator=g)
    for gain in (1.0, 0.6):
        guide = identity_guidance("affine", y, gain, lr=0.0, scale=1.0)
        shift = guide(x0)
        residual = gain * (x0 + 1) / 2 - y
        torch.testing.assert_close(shift, -gain * residual)
        after = gain * (x0 + shift + 1) / 2 - y
        assert (mse(after, y * 0) < mse(residual, y * 0)).all()
    torch.testing.assert_close(after, (1 - 0.6**2 / 2) * residual)


def restore(method, deg, y, ids):
    return method.restore(y, deg, gens(ids))


def test_batch_independent_and_phi_per_image_on_a_non_linear_task(tiny_model):
    """Conv F_Phi on a test-local JPEG-like operator: one image alone = the same image in a batch."""
    deg = Degradation(Task("block_quantize", 1, BlockQuantize), BlockQuantize(), 0.0)
    x = smooth_images(2)
    y = deg.degrade(x, gens("ab", "degrade"))
    m = LDG(tiny_model, steps=2)
    m.setup(torch.device("cpu"))
    both = restore(m, deg, y, "ab")
    w1 = m.last_degradation.params["w1"]
    assert m.last_nfe == 2 and m.last_losses.shape == (2, 2) and m.last_degradation.kind == "conv"
    alone = restore(m, deg, y[1:], "b")
    torch.testing.assert_close(both[1:], alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(w1[1:], m.last_degradation.params["w1"], atol=1e-5, rtol=0)
    assert both.shape == x.shape and 0 <= both.min() and both.max() <= 1


def test_task_defaults_and_errors(tiny_model, tmp_path):
    m = LDG(tiny_model, steps=2)
    assert m.unsupported_reason(conf_task("lowlight")) is None and m.unsupported_reason(conf_task("sr4")) is None
    m.setup(torch.device("cpu"))
    sr = conf_task("sr4").build(SIZE)
    g = m.guidance(sr.degrade(smooth_images(1), gens("a")), sr, gens("a"), (SIZE, SIZE))
    assert g.model.kind == "affine" and g.model.learned == ["gain", "offset"]
    assert g.optimizer.lr == 0.05 and g.scale == 1
    assert torch.equal(g.model.params["gain"], torch.ones(1, 3, 1, 1))
    low = conf_task("lowlight").build(SIZE)
    g = m.guidance(low.degrade(smooth_images(1), gens("a")), low, gens("a"), (SIZE, SIZE))
    assert g.model.learned == ["gain", "w1", "b1", "w2", "b2"] and g.optimizer.lr == 1.0 and g.scale == 100
    assert torch.equal(g.model.params["gain"], torch.full((1, 3, 1, 1), 0.01))
    assert task_defaults("jpeg") == task_defaults("sr4") == DEFAULTS["near_identity"] != DEFAULTS["exposure"]
    for kw, match in [({"scale": -1.0}, "scale=-1.0"), ({"optimizer": "rmsprop"}, "optimizer"),
                      ({"degradation": "mlp"}, "degradation"), ({"phi_steps": 0}, "phi_steps=0"),
                      ({"offset": "yes"}, "offset"), ({"lr": float("nan")}, "lr=nan"), ({"steps": 1001}, "exceeds")]:
        with pytest.raises(ValueError, match=match):
            LDG(tiny_model, **kw)
    with pytest.raises(ValueError, match=r"vgg16-397923af\.pth.*method\.perceptual=0"):
        LDG(tiny_model, steps=2, perceptual=0.1, vgg_path=str(tmp_path / "absent.pth")).setup(torch.device("cpu"))


@pytest.mark.slow
def test_cli_runs_on_lowlight_and_sr4(tmp_path):
    run_cli("-m", "method=ldg", "task=lowlight,sr4", "model=adm_tiny", "steps=2", "dataset.limit=1",
            "dataset.image_size=32", results_root=tmp_path)
    import json

    runs = run_dirs(tmp_path)
    assert len(runs) == 2
    for run in runs:
        man = json.loads((run / "manifest.json").read_text())
        assert man["method"]["name"] == "ldg" and man["method"]["nfe"] == 2
        assert len(list((run / "images").glob("*.png"))) == 1


def test_perceptual_term_through_a_local_vgg_backbone(tmp_path):
    """method.perceptual > 0 with vgg_path: LPIPS-VGG (random backbone saved in torchvision's format) joins
    L_total and its gradient reaches x0 and Phi."""
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("lpips")
    from bench.methods.ldg_models import VGGPerceptual

    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16-397923af.pth")
    perc = VGGPerceptual("cpu", str(tmp_path / "vgg16-397923af.pth"))
    g = torch.Generator().manual_seed(1)
    y, x0 = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    plain = identity_guidance("affine", y, 1.0, lr=0.1)
    both = identity_guidance("affine", y, 1.0, lr=0.1)
    both.perceptual, both.perceptual_fn = 0.5, perc
    shift_plain, shift_both = plain(x0), both(x0)
    extra = both.history[0] - plain.history[0]
    torch.testing.assert_close(extra, 0.5 * perc((x0 + 1) / 2, y).detach())
    assert (extra > 0).all() and torch.isfinite(shift_both).all() and not torch.equal(shift_plain, shift_both)
    assert not torch.equal(plain.model.params["gain"], both.model.params["gain"])
