"""Every paper value sits under the task whose protocol produced it: each row of ``paper_values.csv`` is
checked against the experiment preset that reproduces it (``conf/experiment/<experiment>.yaml``)."""

from __future__ import annotations

import re

import pytest
import yaml

from bench.report.papers import load_paper_values
from tests.conftest import CONF_DIR

#: the paper table -> its preset
SOURCE_PRESET = {"Liu Table 1": "liu_table1", "Liu Table 2": "liu_table2", "Liu Table 3": "liu_table3",
                 "Liu Table 4": "liu_table4", "GDP ImageNet linear": "gdp_imagenet", "GDP LOL": "gdp_lol"}
#: the paper's column name in the citation -> our task (GDP's columns)
GDP_COLUMN_TASK = {"4x Super-resolution": "sr4", "Deblur": "deblur_gdp", "25% Inpainting": "inpaint",
                   "Colorization": "colorize", "LOL [88]": "lowlight"}


def preset(name: str) -> dict:
    """``{dataset, tasks, methods, steps}`` of ``conf/experiment/<name>.yaml`` (defaults + sweeper params)."""
    cfg = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
    over = {k.split("/", 1)[1]: v for d in cfg.get("defaults", []) if isinstance(d, dict) for k, v in d.items()
            if k.startswith("override /")}
    params = ((cfg.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    split = lambda v: [s.strip() for s in str(v).split(",")] if v is not None else []  # noqa: E731
    return {"dataset": over.get("dataset"), "tasks": split(params.get("task", over.get("task"))),
            "methods": split(params.get("method", over.get("method"))), "steps": cfg.get("steps")}


def task_sigma(task: str) -> float:
    return float(yaml.safe_load((CONF_DIR / "task" / f"{task}.yaml").read_text()).get("sigma", 0.0))


OUR_METHODS = {p.stem for p in (CONF_DIR / "method").glob("*.yaml")}
ROWS = [r for _, r in load_paper_values().iterrows()]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['source']}|{r['task']}|{r['method']}" for r in ROWS])
def test_row_sits_under_the_task_of_its_protocol(row):
    assert row["experiment"] == SOURCE_PRESET[row["source"]], "the row names the preset of its paper table"
    p = preset(row["experiment"])
    assert row["dataset"] == p["dataset"]
    assert row["task"] in p["tasks"], f"{row['task']} is not a task of conf/experiment/{row['experiment']}.yaml"
    assert row["method"] in p["methods"] or row["method"] not in OUR_METHODS, \
        f"{row['method']} is one of our methods but not run by conf/experiment/{row['experiment']}.yaml"
    cite = row["citation"]
    if row["source"].startswith("Liu"):
        assert p["steps"] == 100 and "100 steps" in cite
        m = re.search(r"sigma = ([0-9.]+)", cite)
        if task_sigma(row["task"]) > 0:  # Liu's sigma is in [-1, 1] units: twice ours (README "Task conventions")
            assert m and float(m.group(1)) == pytest.approx(2 * task_sigma(row["task"]))
        else:
            assert "noisy" not in cite and "denois" not in cite
    else:
        column = re.search(r"column '([^']+)'", cite).group(1)
        assert GDP_COLUMN_TASK[column] == row["task"], f"GDP's '{column}' column is task {GDP_COLUMN_TASK[column]}"
        assert p["steps"] == 1000


def test_gdp_deblur_is_deblur_gdp_and_each_preset_has_its_rows():
    pv = load_paper_values()
    gdp = pv[pv["source"] == "GDP ImageNet linear"]
    assert set(gdp[gdp["citation"].str.contains("column 'Deblur'")]["task"]) == {"deblur_gdp"}
    assert not (pv[pv["task"] == "deblur_gauss"]["source"].str.startswith("GDP")).any()
    assert set(pv["experiment"]) == set(SOURCE_PRESET.values())
    for name in SOURCE_PRESET.values():  # every paper preset exists and reproduces some row
        assert (CONF_DIR / "experiment" / f"{name}.yaml").is_file()
    # the GDP deblur protocol in the preset is deblur_gdp, not deblur_gauss
    assert "deblur_gdp" in preset("gdp_imagenet")["tasks"] and "deblur_gauss" not in preset("gdp_imagenet")["tasks"]


def test_deblur_gdp_table_gets_gdps_values_and_deblur_gauss_does_not():
    from bench.report.papers import paper_table

    gdp = "\n".join(paper_table(load_paper_values(), "deblur_gdp", {"ddrm"}))
    gauss = "\n".join(paper_table(load_paper_values(), "deblur_gauss", {"ddrm"}))
    assert "| ddrm | GDP | 35.64 | 0.98 | 4.78 | 50.24 |" in gdp and "| gdp_x0 (not run here) | GDP | 25.98" in gdp
    assert "GDP" not in gauss and "| ddrm | Liu T2 | 20.1 | 0.384 | 34.5 | 0.1 |" in gauss
