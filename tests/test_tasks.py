"""Tasks from conf/task/*.yaml, measurement noise, per-image seeding and the run hash."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench import seeding
from bench.cli import build_task
from tests.conftest import CONF_DIR

TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def load_task(name: str, **override):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"), resolve=True)
    cfg.update(override)
    return build_task(cfg)


def test_all_seed_tasks_are_defined():
    assert {"sr4", "sr4_bicubic", "deblur_gauss", "deblur_uniform", "denoise", "sr4_noisy", "inpaint",
            "colorize", "lowlight"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_task_builds_degrades_and_pictures(name):
    task = load_task(name)
    assert task.version >= 1 and task.description
    deg = task.build(16, "cpu", seed=0)
    x = torch.rand(2, 3, 16, 16)
    gens = seeding.make_generators(0, ["a", "b"], "degrade")
    y = deg.degrade(x, gens)
    pic = deg.measurement_image(y)
    assert pic.ndim == 4 and pic.shape[:2] == (2, 3)
    assert deg.linear == task.linear == (name not in ("lowlight", "jpeg"))


@pytest.mark.parametrize("name", ["denoise", "sr4_noisy"])
def test_noise_is_per_image_and_has_the_configured_sigma(name):
    task = load_task(name, sigma=0.1)
    deg = task.build(32, "cpu")
    x = torch.rand(3, 3, 32, 32)
    ids = ["a", "b", "c"]
    y = deg.degrade(x, seeding.make_generators(5, ids, "degrade"))
    # the same image alone, or in another batch, gets the same y
    y_b = deg.degrade(x[1:2], seeding.make_generators(5, ["b"], "degrade"))
    assert torch.equal(y[1:2], y_b)
    resid = y - deg.operator.A(x)
    assert abs(resid.std().item() - 0.1) < 0.01
    assert not torch.equal(y, deg.degrade(x, seeding.make_generators(6, ids, "degrade")))


def test_negative_sigma_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"sigma=-0.1 must be a number >= 0.*task.sigma="):
        load_task("denoise", sigma=-0.1)


def test_lowlight_uses_real_low_images_when_given():
    deg = load_task("lowlight").build((12, 20), "cpu")
    low = torch.rand(1, 3, 12, 20) * 0.2
    assert torch.equal(deg.degrade(None, [], low=low), low)
    x = torch.rand(1, 3, 12, 20)
    assert (deg.degrade(x, seeding.make_generators(0, ["a"], "degrade")) <= x + 1e-7).all()
    with pytest.raises(ValueError, match="'jpeg' is not low-light.*task=lowlight"):  # not a JPEG measurement
        load_task("jpeg").build((12, 20), "cpu").degrade(None, [], low=low)


def test_image_seeds_are_stable_and_distinct():
    assert seeding.image_seed(0, "a", "restore") == seeding.image_seed(0, "a", "restore")
    seeds = {seeding.image_seed(s, i, st) for s in (0, 1) for i in ("a", "b") for st in ("degrade", "restore")}
    assert len(seeds) == 8


@pytest.mark.parametrize("name", TASKS)
def test_frame_image_is_the_degraded_picture_in_the_image_frame(name):
    """Full-size pictures stay as they are, SR pictures stay small (their pixels tile the image), and the
    valid convolution of deblur_gdp is edge-padded back in place: pixel (i, j) of y sits on (i+4, j+4)."""
    from bench.methods.baselines import Bicubic

    deg = load_task(name).build(24, "cpu", seed=0)
    x = torch.rand(2, 3, 24, 24)
    y = deg.degrade(x, seeding.make_generators(0, ["a", "b"], "degrade"))
    pic, frame = deg.measurement_image(y), deg.frame_image(y)
    if name == "deblur_gdp":
        assert pic.shape[-2:] == (16, 16) and frame.shape[-2:] == (24, 24)
        assert torch.equal(frame[..., 4:-4, 4:-4], pic)
        assert torch.equal(frame[..., :4, 4:-4], pic[..., :1, :].expand(-1, -1, 4, -1))
        out = Bicubic().restore(y, deg, None)
        assert torch.equal(out, frame.clamp(0, 1))  # the baseline is the picture in place, not stretched
    else:
        assert torch.equal(frame, pic)
