"""bench/tuned.py: how a run finds, checks and applies a tuned preset, and what enters its identity; and the
shipped presets (tuned/) are well-formed, tuned on a validation split, and inside their methods' spaces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from bench.api import compose
from bench.paths import tuned_dir
from bench.results import semantic_config
from bench.tune.space import parse_space
from bench.tuned import PresetError, apply, cell_of, label, relative_path


def resolved(*overrides: str, root: Path) -> dict:
    return OmegaConf.to_container(compose(overrides=[*overrides, f"run.results_root={root}"]), resolve=True)


def write_preset(path: Path, cell: dict, values: dict, forced: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"cell": cell, "values": values, "provenance": {
        "trials": 5, "objective": "psnr", "value": 30.0,
        "split": {"dataset": "sample_val", "split": "validation", "images": 4, "forced_test_split": forced}}}))
    return path


CELL = ["method=dps", "task=sr4", "steps=7"]


def test_official_leaves_the_method_alone(tmp_path):
    c = resolved(*CELL, "tuned=official", root=tmp_path)
    before = dict(c["method"])
    assert apply(c) is None and c["tuned"] == "official" and c["method"] == before


def test_auto_applies_the_matching_preset_and_its_record_enters_the_identity(tmp_path):
    c = resolved(*CELL, "tuned=auto", root=tmp_path)
    official = semantic_config(resolved(*CELL, "tuned=official", root=tmp_path) | {"tuned": "official"})
    path = write_preset(tmp_path / "tuned" / relative_path(cell_of(c)), cell_of(c), {"scale": 0.7})
    msg = apply(c)
    assert c["method"]["scale"] == 0.7 and "tuned on sample_val (5 trials)" in msg
    assert c["tuned"]["values"] == {"scale": 0.7} and c["tuned"]["path"] == str(path)
    assert semantic_config(c) != official
    # the same preset elsewhere is the same identity (a file known by its sha256 is not known by its path)
    other = tmp_path / "elsewhere" / "p.yaml"
    other.parent.mkdir()
    shutil.copy(path, other)
    c2 = resolved(*CELL, f"tuned={other}", root=tmp_path)
    apply(c2)
    assert semantic_config(c2) == semantic_config(c)
    # a changed preset is a different identity
    write_preset(other, cell_of(c), {"scale": 0.71})
    c3 = resolved(*CELL, f"tuned={other}", root=tmp_path)
    apply(c3)
    assert semantic_config(c3) != semantic_config(c)


def test_command_line_keys_win(tmp_path):
    c = resolved(*CELL, "tuned=auto", "method.rescale=false", root=tmp_path)
    write_preset(tmp_path / "tuned" / relative_path(cell_of(c)), cell_of(c), {"scale": 0.7, "rescale": True})
    msg = apply(c, ["method=dps", "method.rescale=false"])
    assert c["method"]["rescale"] is False and c["method"]["scale"] == 0.7
    assert c["tuned"]["overridden_by_command_line"] == ["rescale"] and "['rescale']" in msg
    c = resolved(*CELL, "tuned=auto", "method.scale=0.1", "method.rescale=false", root=tmp_path)
    assert "official" in apply(c, ["method.scale=0.1", "method.rescale=false"]) and c["tuned"] == "official"


def test_auto_without_a_preset_runs_official_and_says_so(tmp_path, capsys):
    c = resolved(*CELL, "tuned=auto", root=tmp_path)
    assert apply(c) is None and c["tuned"] == "official"
    out = capsys.readouterr().out
    assert "no tuned preset for dps x sr4" in out and "python -m bench.tune" in out


def test_bad_presets_are_refused_with_the_fix(tmp_path):
    c = resolved(*CELL, root=tmp_path)
    other = write_preset(tmp_path / "p.yaml", cell_of(c) | {"steps": 20}, {"scale": 0.7})
    with pytest.raises(PresetError, match=r"the preset is for .*'steps': 20.*this run is .*'steps': 7"):
        apply(resolved(*CELL, f"tuned={other}", root=tmp_path))
    bad = write_preset(tmp_path / "q.yaml", cell_of(c), {"scal": 0.7})
    with pytest.raises(PresetError, match="has no parameter method.scal"):
        apply(resolved(*CELL, f"tuned={bad}", root=tmp_path))
    with pytest.raises(PresetError, match="no such preset file, and not one of official, auto"):
        apply(resolved(*CELL, "tuned=autoo", root=tmp_path))
    (tmp_path / "r.yaml").write_text("just: text\n")
    with pytest.raises(PresetError, match="not a preset"):
        apply(resolved(*CELL, f"tuned={tmp_path / 'r.yaml'}", root=tmp_path))


def test_the_results_roots_preset_shadows_the_shipped_one(tmp_path):
    shipped = sorted(tuned_dir().rglob("*.yaml"))
    if not shipped:
        pytest.skip("no shipped preset")
    doc = yaml.safe_load(shipped[0].read_text())
    cell = doc["cell"]
    ovs = [f"method={cell['method']}", f"task={cell['task']}", f"steps={cell['steps']}", "tuned=auto"]
    c = resolved(*ovs, root=tmp_path)
    apply(c)
    assert c["tuned"]["path"] == str(shipped[0])
    key = sorted(doc["values"])[0]
    write_preset(tmp_path / "tuned" / relative_path(cell), cell, {key: doc["values"][key]})
    c = resolved(*ovs, root=tmp_path)
    apply(c)
    assert c["tuned"]["path"] == str(tmp_path / "tuned" / relative_path(cell))


def test_labels():
    assert label("official") == "official settings"
    assert label({"split": {"dataset": "v", "forced_test_split": False}, "trials": 3}) == "tuned on v (3 trials)"
    assert "TEST split, forced" in label({"split": {"dataset": "sample", "forced_test_split": True}, "trials": 3})


SHIPPED = sorted(tuned_dir().rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(tuned_dir())) for p in SHIPPED])
def test_shipped_presets_are_honest(path, tmp_path):
    from bench.data import SampleDataset

    doc = yaml.safe_load(path.read_text())
    cell, prov = doc["cell"], doc["provenance"]
    assert path.relative_to(tuned_dir()) == relative_path(cell)
    # tuned on the validation split, never on the test photos
    assert prov["split"]["split"] == "validation" and prov["split"]["forced_test_split"] is False
    assert prov["split"]["dataset"] == "sample_val"
    test_ids = {e.id for e in SampleDataset(image_size=64).entries}
    assert not set(prov["ids"]) & test_ids and len(prov["ids"]) == prov["split"]["images"]
    assert prov["trials"] >= 8
    assert prov["official_value"] is None or prov["value"] >= prov["official_value"]  # None: official skips
    # the values are the method's parameters, inside its search space (null = the official per-task value)
    c = resolved(f"method={cell['method']}", f"task={cell['task']}", f"steps={cell['steps']}", root=tmp_path)
    params = {p.name: p for p in parse_space(cell["method"], c["tune"]["space"], c["method"])}
    assert set(doc["values"]) == set(params)
    for key, value in doc["values"].items():
        assert value is None or params[key].contains(value), (key, value)
    assert apply(c | {"tuned": "auto"}) is not None
