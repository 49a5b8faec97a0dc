"""The inpaint_* mask tasks, sr8 and jpeg (issue 24): every method that runs inpaint / sr4 declares support
for them, methods that need a linear operator skip jpeg with the reason, and the real CLI runs them."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import bench
from tests.conftest import compose, run_dirs
from tests.methods.test_ddrm import task

MASK_TASKS = ["inpaint_box", "inpaint_wide", "inpaint_narrow", "inpaint_half", "inpaint_expand", "inpaint_lines",
              "inpaint_sr2"]
#: methods that run task=inpaint and task=sr4; the last three also run the non-linear jpeg
LINEAR_ONLY = ["ddrm", "ddnm", "ddnm_plus", "dps", "pigdm", "diffpir", "red_diff"]
ANY = ["gdp_x0", "gdp_xt", "bicubic"]


@pytest.mark.parametrize("name", LINEAR_ONLY + ANY)
def test_methods_support_the_new_tasks(name):
    node = OmegaConf.to_container(compose(f"method={name}"), resolve=True)["method"]
    method = instantiate({k: v for k, v in node.items() if k != "name"})
    for t in ["inpaint", "sr4", *MASK_TASKS, "sr8"]:
        assert method.unsupported_reason(task(t)) is None, (name, t)
    reason = method.unsupported_reason(task("jpeg"))
    if name in ANY:
        assert reason is None
    else:
        assert "non-linear" in reason and "'jpeg'" in reason


@pytest.mark.parametrize("name", ["repaint", "palette", "sd_inpaint"])
def test_the_mask_only_inpainters_run_every_mask_task_and_skip_the_rest(name):
    model = ["model=palette_tiny"] if name == "palette" else []
    node = OmegaConf.to_container(compose(f"method={name}", *model), resolve=True)["method"]
    method = instantiate({k: v for k, v in node.items() if k != "name"})
    for t in ["inpaint", *MASK_TASKS]:
        assert method.unsupported_reason(task(t)) is None, (name, t)
    for t in ["sr4", "sr8", "deblur_gauss", "jpeg"] + (["colorize"] if name != "palette" else []):
        assert f"{t!r}" in method.unsupported_reason(task(t)), (name, t)


def test_sr3_and_ldg_run_sr8():
    for name, model in [("sr3", ["model=sr3_tiny"]), ("ldg", [])]:
        node = OmegaConf.to_container(compose(f"method={name}", *model), resolve=True)["method"]
        method = instantiate({k: v for k, v in node.items() if k != "name"})
        assert method.unsupported_reason(task("sr8")) is None, name


def test_gdp_through_the_operator_cannot_run_jpeg():
    from bench.methods.gdp import GDP, default_scale

    assert default_scale("jpeg") is not None and default_scale("sr8") == 2000.0
    reason = GDP({"name": "x"}, learn_degradation=False).unsupported_reason(task("jpeg"))
    assert "not differentiable" in reason and "learn_degradation=null" in reason


@pytest.mark.parametrize("method, task_name", [("ddnm", "inpaint_wide"), ("gdp_x0", "jpeg"), ("ddrm", "jpeg")])
def test_cli_runs_or_skips(tmp_path, method, task_name):
    run_dir = bench.run(method, task_name, model="adm_tiny", steps=2, dataset__limit=1, dataset__image_size=32,
                        run__results_root=str(tmp_path), run__progress=False, run__device="cpu")
    if method == "ddrm":  # needs an SVD: skipped with the reason, nothing written
        assert run_dir is None
        (skip,) = tmp_path.rglob("SKIPPED.json")
        assert "non-linear" in json.loads(skip.read_text())["reason"]
        assert not list(tmp_path.rglob("*.png"))
        return
    assert run_dirs(tmp_path) == [run_dir] and len(list((run_dir / "images").glob("*.png"))) == 1
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["task"]["name"] == task_name and man["task"]["version"] == 1
