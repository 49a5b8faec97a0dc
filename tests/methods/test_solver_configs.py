"""The new solver YAMLs are constructible as the CLI / bench.perf build them (model and steps resolved), their
declared support matches the tasks, and the solvers_imagenet preset keeps each method's official steps."""

from __future__ import annotations

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose
from tests.methods.test_ddrm import task

SOLVERS = ["dps", "ddnm", "ddnm_plus", "pigdm", "diffpir", "red_diff"]
OFFICIAL_STEPS = {"dps": 1000, "ddnm": 100, "ddnm_plus": 100, "pigdm": 100, "diffpir": None, "red_diff": 100}
LINEAR = ["sr4", "sr4_bicubic", "sr4_noisy", "deblur_gauss", "deblur_uniform", "denoise", "inpaint", "colorize"]


@pytest.mark.parametrize("name", SOLVERS)
def test_yaml_builds_with_model_and_steps_resolved(name):
    # an official prior keeps the method's official step count; the embedded demo prior runs its tuned
    # presets' budget, 20 steps (model.default_steps), unless steps=N is given
    official = OmegaConf.to_container(compose(f"method={name}", "model=adm_imagenet256"), resolve=True)
    assert official["steps"] == OFFICIAL_STEPS[name] and official["tuned"] == "official"
    cfg = OmegaConf.to_container(compose(f"method={name}"), resolve=True)
    assert cfg["steps"] == 20 and cfg["tuned"] == "auto" and cfg["method"]["model"]["name"] == "adm64_imagenet96"
    method = instantiate({k: v for k, v in cfg["method"].items() if k != "name"})
    assert method.steps == 20
    small = instantiate({k: v for k, v in OmegaConf.to_container(compose(f"method={name}", "steps=10"),
                                                                   resolve=True)["method"].items() if k != "name"})
    assert small.steps == 10
    reasons = {t: method.unsupported_reason(task(t)) for t in LINEAR + ["lowlight"]}
    assert reasons["lowlight"] is not None
    noisy = {t for t in LINEAR if task(t).sigma > 0}
    assert {t for t in LINEAR if reasons[t] is not None} == (noisy if name == "ddnm" else set())
    d = method.describe()
    assert d["name"] == method.name and "model" in d


@pytest.mark.parametrize("name", SOLVERS)
def test_steps_beyond_the_priors_training_steps_are_refused(name):
    """Every solver refuses steps > T (model.diffusion.steps) when it is built, naming both and the fix."""
    node = OmegaConf.to_container(compose(f"method={name}", "steps=1001"), resolve=True)["method"]
    cls, kwargs = get_class(node.pop("_target_")), {k: v for k, v in node.items() if k != "name"}
    with pytest.raises(ValueError, match=rf"^{name}: steps=1001 exceeds the prior's 1000 training steps\. "
                                         r"Fix: steps<=1000$"):
        cls(**kwargs)


def test_solvers_preset_keeps_per_method_steps():
    for name in SOLVERS + ["ddrm"]:
        cfg = compose("+experiment=solvers_imagenet", f"method={name}", "dataset.root=/nonexistent")
        assert cfg.steps == OFFICIAL_STEPS.get(name, 20), name
        assert cfg.model.name == "adm_imagenet256" and cfg.dataset.name == "imagenet_val"
    sweep = OmegaConf.load(CONF_DIR / "experiment" / "solvers_imagenet.yaml").hydra.sweeper.params
    assert set(sweep.method.split(",")) >= set(SOLVERS) and sweep.task == "sr4,deblur_gauss,inpaint,denoise,colorize"
