"""docs/extending.md's worked example, run as written: the test writes every ``# file: ...`` block of the
guide into a temporary folder, saves a tiny random diffusers DDPM where the guide's model config points,
and runs the guide's ``# run:`` command (a user method, operator/task, dataset and prior from outside the
package, in one sweep with a packaged method)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_dirs

GUIDE = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"```(?:python|yaml|bash)\n(.*?)```", re.S)


def blocks():
    files, commands = {}, []
    for body in BLOCK.findall(GUIDE.read_text()):
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = rest
        elif first.startswith("# run:"):
            commands.append(rest.replace("\\\n", " ").strip())
    return files, commands


def test_guide_has_the_example():
    files, commands = blocks()
    assert {"my_bench_ext/my_ext.py", "my_bench_ext/conf/method/tikhonov.yaml", "my_bench_ext/conf/task/rows2.yaml",
            "my_bench_ext/conf/dataset/my_photos.yaml", "my_bench_ext/conf/model/my_ddpm.yaml"} <= set(files)
    assert len(commands) == 1 and "hydra.searchpath" in commands[0]


def _photos(directory):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(2):
        arr = (torch.rand(40, 36, 3, generator=g) * 255).to(torch.uint8).numpy()
        (directory / f"sub{i}").mkdir(parents=True)
        Image.fromarray(arr).save(directory / f"sub{i}" / f"photo{i}.png")


@pytest.mark.slow
def test_worked_example_runs(tmp_path):
    from diffusers import DDPMScheduler

    from tests.models.test_diffusers_prior import tiny_unet

    files, (command,) = blocks()
    photos, ddpm = tmp_path / "photos", tmp_path / "ddpm"
    _photos(photos)
    unet = tiny_unet()
    unet.register_to_config(sample_size=32)  # the guide says image_size 32; the UNet is size-agnostic
    unet.save_pretrained(ddpm)
    DDPMScheduler().save_pretrained(ddpm)
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("/path/to/my/photos", str(photos)).replace("/path/to/my/ddpm", str(ddpm)))
    env_part, _, cli = command.partition(" python ")
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "my_bench_ext"), str(REPO)])}
    args = [a.replace("$PWD", str(tmp_path)) for a in shlex.split(cli)]
    assert env_part.startswith("PYTHONPATH=") and args[:2] == ["-m", "bench"]
    args += [f"run.results_root={tmp_path / 'results'}", "run.progress=false", "hydra.sweep.dir=" + str(tmp_path / "mr")]
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {json.loads((d / "manifest.json").read_text())["method"]["name"]: d for d in run_dirs(tmp_path / "results")}
    assert set(runs) == {"tikhonov", "ddrm"}
    for name, d in runs.items():
        assert d.parent.parent.name == "rows2" and d.parents[2].name == "my_photos"
        assert len(list((d / "images").glob("*.png"))) == 2
    man = json.loads((runs["ddrm"] / "manifest.json").read_text())
    assert man["method"]["model"]["kind"] == "diffusers" and man["task"]["keep_every"] == 2
    assert json.loads((runs["tikhonov"] / "manifest.json").read_text())["method"]["alpha"] == 0.01
