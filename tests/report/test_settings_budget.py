"""Where a row's settings came from, and the budget view, on a small real results root (the real CLI,
in-process; the random ``adm_tiny`` prior at 32 px, 2 images):

* sr4: bicubic, and DDRM at 2 and 4 steps, each with its official settings and with a tuned preset written by
  hand under ``<results_root>/tuned/`` and applied by ``tuned=auto`` (the 4-step preset claims a forced test
  split): both rows appear, labelled, in the tables and as two lines of one colour in the figures; the NFE
  budgets 2 and 4 give the "Best at <= N NFE" table and the quality-vs-NFE figure;
* denoise: bicubic and official DDRM at 2 steps: one budget, so no budget view, and no tuning caption.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import compose
from tests.report.test_figures import _measure, _problems, sweep
from tests.report.test_report import _col, _table, report

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ("model=adm_tiny", "dataset.image_size=32", "dataset.limit=2")
CELLS = [
    ("method=bicubic", "task=sr4"),
    ("method=ddrm", "task=sr4", "steps=2", "tuned=official"),
    ("method=ddrm", "task=sr4", "steps=2", "tuned=auto"),
    ("method=ddrm", "task=sr4", "steps=4", "tuned=official"),
    ("method=ddrm", "task=sr4", "steps=4", "tuned=auto"),
    ("method=bicubic", "task=denoise"),
    ("method=ddrm", "task=denoise", "steps=2", "tuned=official"),
    ("method=bicubic", "task=inpaint", "dataset.split=validation"),  # a tuning trial's kind of run
]
SPLIT = {"dataset": "sample_val", "split": "validation", "images": 4, "ids_sha256": "0" * 64,
         "manifest_sha256": "1" * 64, "forced_test_split": False}
FORCED = {**SPLIT, "dataset": "sample", "split": "test", "forced_test_split": True}


def write_preset(root: Path, steps: int, values: dict, split: dict, trials: int = 3) -> Path:
    """A preset as bench.tune writes it (the keys bench.tuned reads), at the path tuned=auto looks at."""
    path = root / "tuned" / "adm_tiny" / "sr4" / f"ddrm-steps{steps}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"cell": {"prior": "adm_tiny", "task": "sr4", "method": "ddrm", "steps": steps}, "values": values,
           "provenance": {"split": split, "trials": trials, "objective": "psnr", "value": 1.0}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from bench.cli import run_from_config

    root = tmp_path_factory.mktemp("results")
    write_preset(root, 2, {"eta": 0.5}, SPLIT)
    write_preset(root, 4, {"eta": 0.2, "eta_b": 0.9}, FORCED, trials=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_OFFLINE", "1")
        for cell in CELLS:
            run_from_config(compose(*cell, *TINY, f"run.results_root={root}", "run.progress=false",
                                    "run.device=cpu"))
    return root


@pytest.fixture(scope="module")
def built(root, tmp_path_factory):
    """The report (in-process, offline), and the matplotlib figures it saved, by file stem."""
    from bench.report import figures

    out = tmp_path_factory.mktemp("rep")
    saved, save = {}, figures._save

    def spy(fig, base):
        saved[Path(base).name] = fig
        return save(fig, base)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_OFFLINE", "1")
        mp.setenv("BENCH_CACHE", str(out / "empty-cache"))
        mp.setattr(figures, "_save", spy)
        path = report(root, out, "--bootstrap", "50", "--jobs", "1")  # in-process: the spy sees every figure
    return path, (path / "README.md").read_text(), saved


def _block(readme: str, section: str) -> str:
    return readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]


def _rows(head, rows):
    return {(r[0], _col(head, r, "Steps")): r for r in rows}


# ----------------------------------------------------------------------------- task 1: settings per row
def test_official_and_tuned_runs_are_distinct_rows_that_say_their_settings(root, built):
    """Same method and steps, official vs tuned: two rows, two labels, each with its settings."""
    out, readme, _ = built
    head, rows = _table(readme, "sample / sr4")
    assert head[:4] == ["Method", "Settings", "Steps", "NFE/img"]
    by = _rows(head, rows)
    assert set(by) == {("bicubic", "-"), ("ddrm", "2"), ("ddrm (tuned)", "2"), ("ddrm", "4"),
                       ("ddrm (tuned)", "4")}, sorted(by)
    settings = {k: _col(head, r, "Settings") for k, r in by.items()}
    assert settings[("bicubic", "-")] == settings[("ddrm", "2")] == settings[("ddrm", "4")] == "official settings"
    assert settings[("ddrm (tuned)", "2")] == "tuned on sample_val (3 trials)"
    assert settings[("ddrm (tuned)", "4")] == "⚠ tuned on sample (TEST split, forced) (5 trials)"
    # the preset's values are not listed as a configuration difference ("ddrm (eta=0.5)"): the row says tuned
    assert "eta=" not in readme
    # the preset was applied: the two 2-step runs differ in their config and in their outputs
    df = pd.read_csv(out / "runs.csv", keep_default_na=False)
    two = df[(df["method"] == "ddrm") & (df["task"] == "sr4") & (df["steps"] == "2")].set_index("settings")
    assert two["hash"].nunique() == 2
    assert two.loc["official settings", "psnr_mean"] != two.loc["tuned on sample_val (3 trials)", "psnr_mean"]
    cfg = yaml.safe_load((root / two.loc["tuned on sample_val (3 trials)", "run_dir"] / "config.yaml").read_text())
    assert cfg["method"]["eta"] == 0.5 and cfg["tuned"]["values"] == {"eta": 0.5}


def test_caption_says_the_split_is_disjoint_and_flags_a_test_split_loudly(built):
    _, readme, _ = built
    block = _block(readme, "sample / sr4")
    caption = next(ln for ln in block.splitlines() if ln.startswith("Compared on the"))
    assert "chosen on `sample_val`, a split disjoint from the test images compared here" in caption
    assert "⚠ = tuned on a TEST split, not a validation split (ddrm (tuned) (4 steps))" in caption
    # the loud flag: first thing in the section, before the verdict and the table
    first = next(ln for ln in block.splitlines() if ln.strip())
    assert first.startswith("> ⚠ **Tuned on a TEST split: ddrm (tuned) (4 steps).**"), first
    assert block.index("> ⚠") < block.index("**Verdict**") < block.index("| Method |")
    # a section without tuned rows: no tuning caption, no warning, but every row still says its settings
    den = _block(readme, "sample / denoise")
    assert "disjoint" not in den and "⚠" not in den and "bench.tune" not in den
    head, rows = _table(readme, "sample / denoise")
    assert [_col(head, r, "Settings") for r in rows] == ["official settings"] * 2


def test_tidy_table_has_settings_and_the_preset_sha256(root, built):
    out, _, _ = built
    df = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert {"settings", "tuned_sha256", "base_label", "tuned_split", "tuned_forced_test_split"} <= set(df.columns)
    tuned = df[df["settings"] != "official settings"].set_index("steps")
    for steps in ("2", "4"):
        preset = root / "tuned" / "adm_tiny" / "sr4" / f"ddrm-steps{steps}.yaml"
        assert tuned.loc[steps, "tuned_sha256"] == hashlib.sha256(preset.read_bytes()).hexdigest()
        assert tuned.loc[steps, "label"] == "ddrm (tuned)" and tuned.loc[steps, "base_label"] == "ddrm"
    assert (df.loc[df["settings"] == "official settings", "tuned_sha256"] == "").all()
    assert list(tuned["tuned_forced_test_split"].astype(str)) == ["False", "True"]


def test_a_run_without_the_tuned_key_is_official(tmp_path):
    from bench.report.aggregate import Run, assign_variants

    rows = pd.DataFrame({"id": ["a"]})
    old = Run(tmp_path, "d", "t", "dps", 20, "h1", {}, {"method": {"scale": 1.0}}, rows, [])
    tuned = Run(tmp_path, "d", "t", "dps", 20, "h2",
                {"tuned": {"sha256": "ab" * 32, "values": {"scale": 0.4}, "split": SPLIT, "trials": 8}},
                {"method": {"scale": 0.4}}, rows, [])
    other = Run(tmp_path, "d", "t", "dps", 20, "h3", {"tuned": "official"}, {"method": {"scale": 2.0}}, rows, [])
    assign_variants([old, tuned, other])
    assert old.settings == other.settings == "official settings" and old.tuned_sha256 == ""
    assert tuned.settings == "tuned on sample_val (8 trials)"
    # official runs still differ by their values; the tuned run says tuned instead of its preset's value
    assert (old.variant, other.variant, tuned.variant) == ("dps (scale=1.0)", "dps (scale=2.0)", "dps (tuned)")
    assert tuned.base_variant == "dps"


def test_tuned_and_official_share_the_colour_in_every_figure(built):
    _, _, saved = built
    for stem in ("sample_sr4_tradeoff", "sample_sr4_nfe"):
        leg = saved[stem].axes[0].get_legend()
        handles = {t.get_text().split(",")[0]: h for t, h in zip(leg.get_texts(), leg.legend_handles)}
        off, tun = handles["ddrm"], handles["ddrm (tuned)"]
        assert off.get_color() == tun.get_color() and off.get_marker() == tun.get_marker(), stem
        assert off.get_linestyle() == "-" and tun.get_linestyle() == "--", stem
        assert _problems(_measure(saved[stem])) == [], stem
    assert saved["sample_sr4_nfe"].axes[0].get_legend().get_title().get_text() == "dashed = tuned settings"
    title = saved["sample_sr4_tradeoff"].axes[0].get_legend().get_title().get_text()
    assert title == "numbers at points = steps\ndashed = tuned settings"


# ----------------------------------------------------------------------------- task 2: the budget view
def test_budget_view_with_two_budgets(built):
    out, readme, saved = built
    block = _block(readme, "sample / sr4")
    assert "**Best at ≤ N NFE (sample / sr4)**" in block
    head, rows = _table(readme, "sample / sr4", after="**Best at ≤ N NFE (sample / sr4)**")
    assert [r[0] for r in rows] == ["≤ 2", "≤ 4"]
    assert head[:4] == ["NFE budget", "Best (PSNR)", "Settings", "Steps"]
    df = pd.read_csv(out / "runs.csv", keep_default_na=False)
    sr4 = df[(df["task"] == "sr4") & df["shown"]]
    for r in rows:
        n = float(r[0].removeprefix("≤ "))
        assert 0 < float(_col(head, r, "NFE/img")) <= n
        assert int(_col(head, r, "Runs within budget")) == int(sr4["nfe_per_image"].between(1e-9, n).sum())
        assert _col(head, r, "vs baseline (bicubic)").endswith("(p=1)")  # n = 2: nothing significant
    # the best of a budget is the run with the best mean PSNR within it (the baseline excluded; here every run
    # holds the 2 common images, so runs.csv has the table's means)
    for r in rows:
        n = float(r[0].removeprefix("≤ "))
        best = sr4[sr4["nfe_per_image"].between(1e-9, n)].sort_values("psnr_mean").iloc[-1]
        assert _col(head, r, "Best (PSNR)").startswith(best["label"])
        assert (_col(head, r, "Settings").removeprefix("⚠ "), _col(head, r, "Steps")) == (best["settings"],
                                                                                         best["steps"])
        assert _col(head, r, "PSNR ↑").startswith(f"{best['psnr_mean']:.2f} ± ")
    # the figure: linked, both files, PSNR vs NFE on a log axis, readable
    assert "![quality vs NFE, sample/sr4](figures/sample_sr4_nfe.png)" in block
    assert (out / "figures" / "sample_sr4_nfe.png").is_file() and (out / "figures" / "sample_sr4_nfe.svg").is_file()
    ax = saved["sample_sr4_nfe"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "PSNR (dB), mean over 2 common images"
    assert "NFE" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo <= 2 and hi >= 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ddrm, 2-4 steps" in labels and "ddrm (tuned), 2-4 steps" in labels
    assert "bicubic (NFE = 0, reference)" in labels


def test_no_budget_view_with_one_budget(built):
    out, readme, saved = built
    den = _block(readme, "sample / denoise")
    assert "Best at ≤" not in den and "quality vs NFE" not in den
    assert not (out / "figures" / "sample_denoise_nfe.png").exists() and "sample_denoise_nfe" not in saved


def test_budget_view_is_deterministic(root, built, tmp_path):
    out, _, _ = built
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_OFFLINE", "1")
        mp.setenv("BENCH_CACHE", str(Path(out).parent / "empty-cache"))
        again = report(root, tmp_path, "--bootstrap", "50", name=out.name)
    assert (again / "README.md").read_bytes() == (out / "README.md").read_bytes()
    for f in ("sample_sr4_nfe.png", "sample_sr4_nfe.svg", "sample_sr4_tradeoff.svg"):
        assert (again / "figures" / f).read_bytes() == (out / "figures" / f).read_bytes(), f


def test_crowded_nfe_figure_is_readable(tmp_path, monkeypatch):
    """Ten methods at 10-100 NFE (official and, for three, tuned), a step-less method and a baseline: ticks
    apart, legend outside, tuned lines dashed in their method's colour."""
    from bench.report import figures

    saved, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, base: (saved.append(fig), save(fig, base))[1])
    df = sweep()
    tuned = df[df["label"].isin(["ddrm", "pigdm", "red_diff"])].copy()
    df["base_label"], df["settings"] = df["label"], "official settings"
    tuned["base_label"], tuned["settings"] = tuned["label"], "tuned on sample_val (8 trials)"
    tuned["label"] = tuned["label"] + " (tuned)"
    tuned["psnr_mean"] += 0.7
    df = pd.concat([df, tuned], ignore_index=True)
    styles = figures.style_map(df["base_label"])
    png, svg, caption = figures.nfe_figure(df, tmp_path / "nfe", styles=styles, n_common=8)
    m = _measure(saved[-1])
    assert _problems(m) == [] and m.ax.get_xscale() == "log"
    assert "dashed lines = tuned settings" in caption
    leg = {t.get_text().split(",")[0]: h for t, h in zip(m.legend.get_texts(), m.legend.legend_handles)}
    for name in ("ddrm", "pigdm", "red_diff"):
        assert leg[name].get_color() == leg[f"{name} (tuned)"].get_color() == styles[name][0]
        assert leg[f"{name} (tuned)"].get_linestyle() == "--" and leg[name].get_linestyle() == "-"
    xs = m.ax.transData.inverted().transform(m.points)[:, 0]
    assert xs.min() >= 1 - 1e-6 and xs.max() <= 100 + 1e-6  # NFE, not images/s
    assert os.path.getsize(png) > 0


def test_validation_split_runs_are_left_out_unless_asked(root, built, tmp_path):
    _, readme, _ = built
    assert "1 runs on validation splits (sample: `python -m bench.tune`'s trials" in readme
    assert "\n## sample / inpaint\n" not in readme and "\n## sample / sr4\n" in readme
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_OFFLINE", "1")
        mp.setenv("BENCH_CACHE", str(tmp_path / "empty-cache"))
        path = report(root, tmp_path, "--bootstrap", "0", "--validation")
    text = (path / "README.md").read_text()
    assert "\n## sample / inpaint\n" in text and "left out" not in text.split("## Conventions")[0]
