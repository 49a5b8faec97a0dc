"""docs/extending.md works as a user copying it would use it: every block the guide says to save is written
byte for byte (nothing stripped, no path replaced), every ```bash block runs unchanged, in order, in one
shell that starts in an empty folder, and the results are checked (run directories, manifests with the
user's ``describe()``, images, the Python API's run, the report).

The environment is the only thing the test sets: ``python`` / ``bench`` are this interpreter's, the checkout
under test comes first on ``PYTHONPATH`` (as an installed package would be importable), and downloads are off.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, run_dirs

GUIDE = REPO / "docs" / "extending.md"
FOLDER = "my_bench_ext"  # the guide: "every file name is relative to `my_bench_ext/`"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
SAVE_AS = re.compile(r"Save as `([^`]+)`")


def guide_blocks(text: str | None = None) -> tuple[dict[str, str], list[str]]:
    """(files to save: name -> exact text, bash blocks in order). Every fenced block of the guide is one of
    the two: a block whose preceding paragraph says "Save as `name`", or a ```bash block to run."""
    text = GUIDE.read_text() if text is None else text
    files, commands, end = {}, [], 0
    for m in FENCE.finditer(text):
        lang, body = m.group(1), m.group(2)
        before = text[end:m.start()].strip().split("\n\n")[-1]
        end = m.end()
        name = SAVE_AS.search(before)
        if lang == "bash" and name is None:
            commands.append(body)
        elif name is not None:
            assert name.group(1) not in files, f"docs/extending.md saves {name.group(1)} twice"
            files[name.group(1)] = body
        else:
            raise AssertionError(f"docs/extending.md: a ```{lang} block is neither a file to save (no 'Save as "
                                 f"`name`' right before it) nor a bash command:\n{body[:300]}")
    return files, commands


def test_guide_has_the_example():
    files, commands = guide_blocks()
    assert {"my_ext.py", "conf/method/tikhonov.yaml", "conf/task/rows2.yaml", "conf/dataset/my_photos.yaml",
            "conf/model/my_ddpm.yaml", "run_tikhonov.py"} <= set(files)
    assert f"every file name is relative to `{FOLDER}/`" in GUIDE.read_text()
    assert commands[0].splitlines()[-1] == f"cd {FOLDER}"
    # Hydra reads a package header only from the top of a file: it must be the method file's first line
    assert files["conf/method/tikhonov.yaml"].startswith("# @package _global_\n")
    script = "\n".join(commands)
    assert "--config-dir conf" in script and "hydra.searchpath=[file://$PWD/conf]" in script
    assert "config_dirs=" in files["run_tikhonov.py"]


def test_parser_rejects_an_unnamed_block():
    with pytest.raises(AssertionError, match="neither a file"):
        guide_blocks("Some text:\n\n```yaml\nname: x\n```\n")


def _guide_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO)
    env.update(BENCH_OFFLINE="1", HF_HUB_OFFLINE="1", HYDRA_FULL_ERROR="1")
    return env


def _manifests(results: Path) -> dict[tuple[str, float | None], tuple[Path, dict]]:
    out = {}
    for d in run_dirs(results):
        man = json.loads((d / "manifest.json").read_text())
        key = (man["method"]["name"], man["method"].get("alpha"))
        assert key not in out, f"two runs of {key}: {out[key][0]} and {d}"
        out[key] = (d, man)
    return out


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


@pytest.mark.slow
def test_worked_example_runs_as_written(tmp_path):
    files, commands = guide_blocks()
    for name, text in files.items():
        path = tmp_path / FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "\n".join(commands)], cwd=tmp_path,
                          env=_guide_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"the guide's commands failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"

    ext = tmp_path / FOLDER
    runs = _manifests(ext / "results")
    assert set(runs) == {("tikhonov", 0.01), ("ddrm", None), ("tikhonov", 0.1), ("tikhonov", 0.05)}, sorted(runs)
    for (method, alpha), (d, man) in runs.items():
        assert d.relative_to(ext / "results").parts[:3] == ("my_photos", "rows2", method)
        assert man["task"] == {"name": "rows2", "version": 1, "sigma": 0.0, "keep_every": 2}, man["task"]
        assert man["dataset"]["name"] == "my_photos" and man["dataset"]["image_size"] == 32
        pngs = sorted(p.stem for p in (d / "images").glob("*.png"))
        # dataset__limit=1 keeps the first path in sorted order: photos/cats/chelsea.png
        assert pngs == (["chelsea"] if alpha == 0.05 else ["astronaut", "chelsea"]), (d, pngs)
    ddrm = runs[("ddrm", None)][1]["method"]
    assert ddrm["steps"] == 5 and ddrm["model"]["kind"] == "diffusers", ddrm

    # Tikhonov with a small alpha keeps the measured rows (every second one) of the ground truth
    d = runs[("tikhonov", 0.01)][0]
    ref = next(ext.joinpath("results", "my_photos", "_reference").glob("32-*/astronaut.png"))  # the ground truth
    out, truth = _png(d / "images" / "astronaut.png"), _png(ref)
    assert out.shape == truth.shape == (32, 32, 3)
    assert np.abs(out[::2] - truth[::2]).max() <= 0.5 * 0.01 / (1 + 0.01) + 1 / 255

    # the Python example prints the run directory bench.run returned
    assert proc.stdout.strip().splitlines()[-1] == str(runs[("tikhonov", 0.05)][0])
    report = ext / "reports" / "my_ext" / "README.md"
    assert report.is_file() and "tikhonov" in report.read_text()
