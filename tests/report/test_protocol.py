"""Issue 22: the report of a fixed results tree, checked by value - common images, honest significance,
verdicts in words, paper values under the task of their protocol, consistency of a noisy task against sigma²,
tables a reader can take in (n/a columns as one line, missing assets once, throughput flags).

The tree is built from real bicubic runs (the real CLI, 8 sample images per task) cloned into other method
folders with fixed per-image values, so every number below is known in advance:

* deblur_gauss: the issue's case. bicubic and ddrm hold 8 images, ddnm and pigdm the first 4; on all 8
  images ddrm averages 38.54 dB, on the 4 shared ones 40.24 dB against ddnm's 40.04 (differences +0.05,
  +0.10, +0.25, +0.40: a paired t-test gives p = 0.085). ddnm was timed with 1 CPU thread, the others with 2.
* sr4: the baseline wins on every one of 8 images (ddrm and ddnm identical to each other).
* denoise (sigma 0.05): bicubic = the noisy input (consistency ~0), ddrm's consistency ~sigma² per image.
* deblur_gdp: bicubic and ddrm, for GDP's paper values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import compose

pytestmark = pytest.mark.usefixtures("single_thread")

IDS = ["astronaut", "brick", "camera", "chelsea", "coffee", "moon", "motorcycle_left", "rocket"]
SHARED = IDS[:4]
DDNM = [38.0, 41.0, 39.5, 41.66]  # mean 40.04
DDRM = [a + d for a, d in zip(DDNM, [0.05, 0.10, 0.25, 0.40])] + [35.0, 37.0, 36.5, 38.86]  # 40.24 / 38.54
SIGMA = 0.05


def _clone(src: Path, method: str, steps: int, psnr: list[float], ids: list[str], threads: int = 2,
           img_s: float = 0.5, consistency: list[float] | None = None) -> Path:
    dst = src.parents[1] / method / f"steps{steps}-fixed{method[:3]}"
    shutil.copytree(src, dst)
    for i in set(IDS) - set(ids):
        for sub, ext in (("rows", "json"), ("images", "png"), ("degraded", "png")):
            (dst / sub / f"{i}.{ext}").unlink(missing_ok=True)
    for k, i in enumerate(ids):
        row = json.loads((dst / "rows" / f"{i}.json").read_text())
        row["psnr"] = psnr[k]
        if consistency is not None:
            row["consistency"] = consistency[k]
        (dst / "rows" / f"{i}.json").write_text(json.dumps(row))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["dataset"]["limit"] = len(ids)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    for t in (dst / "timing").glob("*.json"):
        t.unlink()
    timing = {"images": len(ids), "timed_images": len(ids), "restore_seconds": len(ids) / img_s,
              "nfe_per_image": float(steps), "peak_memory_mb": 1000.0, "memory_kind": "process_max_rss",
              "device_name": f"cpu: Test CPU ({threads} threads)", "num_threads": threads, "batch_size": 4,
              "seconds": {"total": 10.0}}
    (dst / "timing" / "t.json").write_text(json.dumps(timing))
    return dst


def _set_psnr(run: Path, psnr: list[float]) -> None:
    for i, v in zip(IDS, psnr):
        row = json.loads((run / "rows" / f"{i}.json").read_text())
        row["psnr"] = v
        (run / "rows" / f"{i}.json").write_text(json.dumps(row))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from bench.cli import run_from_config

    root = tmp_path_factory.mktemp("tree")
    base = {}
    for task in ("deblur_gauss", "sr4", "denoise", "deblur_gdp"):
        run_from_config(compose("method=bicubic", f"task={task}", "dataset.limit=8", f"run.results_root={root}",
                                "run.progress=false", "run.device=cpu"))
        (base[task],) = sorted((root / "sample" / task / "bicubic").iterdir())
    _set_psnr(base["deblur_gauss"], [24.0 + 0.1 * k for k in range(8)])
    _clone(base["deblur_gauss"], "ddrm", 20, DDRM, IDS)
    _clone(base["deblur_gauss"], "ddnm", 20, DDNM, SHARED, threads=1, img_s=0.3)
    _clone(base["deblur_gauss"], "pigdm", 20, [30.0, 30.5, 31.0, 29.0], SHARED, img_s=0.2)
    _set_psnr(base["sr4"], [26.0 + 0.5 * k for k in range(8)])
    lower = [26.0 + 0.5 * k - 0.6 - 0.05 * k for k in range(8)]  # below bicubic on every image
    _clone(base["sr4"], "ddrm", 20, lower, IDS)
    _clone(base["sr4"], "ddnm", 20, lower, IDS)
    ratio = [1.02, 1.05, 0.98, 1.10, 1.00, 1.04, 1.06, 1.03]
    _clone(base["denoise"], "ddrm", 20, [28.0 + 0.1 * k for k in range(8)], IDS,
           consistency=[r * SIGMA ** 2 for r in ratio])
    _clone(base["deblur_gdp"], "ddrm", 20, [30.0] * 8, IDS)
    return root


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    """The report, built twice in-process (offline, no NIQE parameters; --jobs 1: the spy sees every section),
    and what the figures received."""
    import bench.report.figures as figures
    from bench.report import ReportOptions, build_report

    seen, original = {}, figures.tradeoff_figure

    def spy(df, base, reason="", **kw):
        seen[(str(df["dataset"].iloc[0]), str(df["task"].iloc[0]))] = df.copy()
        return original(df, base, reason, **kw)

    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_OFFLINE", "1")
    mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setattr(figures, "tradeoff_figure", spy)
    out = tmp_path_factory.mktemp("rep")
    try:
        a = build_report(ReportOptions(results=tree, name="a", out=out, bootstrap=200, jobs=1))
        b = build_report(ReportOptions(results=tree, name="b", out=out, bootstrap=200, jobs=1))
    finally:
        mp.undo()
    return (a / "README.md").read_text(), (b / "README.md").read_text(), seen


def section(readme: str, task: str) -> str:
    return readme.split(f"## sample / {task}\n", 1)[1].split("\n## ", 1)[0]


def table(block: str, after: str = "") -> tuple[list[str], dict[str, list[str]]]:
    """(header, {first cell: row}) of the first table in ``block`` after the text ``after``."""
    lines = [ln for ln in block.split(after, 1)[1].splitlines()] if after else block.splitlines()
    rows = []
    for ln in lines:
        if ln.startswith("|"):
            rows.append([c.strip() for c in ln.strip().strip("|").split(" | ")])
        elif rows:
            break
    return rows[0], {r[0]: r for r in rows[2:]}


def cell(head, rows, method, col):
    return rows[method][head.index(col)]


def test_common_images_and_the_right_winner(built):
    readme, again, seen = built
    strip = lambda text, name: text.replace(f"report: {name}", "").replace(f"--name {name}", "")  # noqa: E731
    assert strip(readme, "a") == strip(again, "b")  # regenerating gives the same bytes
    s = section(readme, "deblur_gauss")
    assert "Compared on the **N = 4** images common to all 4 runs (astronaut, brick, camera, chelsea)" in s
    assert "Runs holding other images too (not used here): bicubic (8 images), ddrm (8 images)." in s
    head, rows = table(s)
    assert cell(head, rows, "ddrm", "PSNR ↑").startswith("40.24 ± ")  # not 38.54 (its 8 images)
    assert cell(head, rows, "ddnm", "PSNR ↑").startswith("40.04 ± ")
    assert cell(head, rows, "bicubic", "PSNR ↑").startswith("24.15 ± ")  # its first 4 images, not all 8
    assert "Best PSNR (higher is better) on the 4 common images: ddrm, 40.24 dB, +0.20 dB over the runner-up " \
           "ddnm (not significant: at n = 4 no test of this table can reach p < 0.05); 3 of 3 runs beat the " \
           "baseline bicubic on average, none significantly." in s
    # the figure drew the table's numbers (common images), not the runs' own means
    fig = seen[("sample", "deblur_gauss")].set_index("label")
    assert fig.loc["ddrm", "psnr_mean"] == pytest.approx(40.24) and fig.loc["ddnm", "psnr_mean"] == pytest.approx(40.04)
    assert fig.loc["bicubic", "psnr_mean"] == pytest.approx(24.15)


def test_no_star_that_n_cannot_support(built):
    readme, _, _ = built
    s = section(readme, "deblur_gauss")
    ph, pr = table(s, "**Paired differences")
    assert not any(c.endswith("*") for r in pr.values() for c in r)
    head, rows = table(s)
    assert not any("**" in c for c in (cell(head, rows, m, "PSNR ↑") for m in rows))  # no bold at n = 4
    assert "At n = 4 the smallest possible p is 0.125: no difference can be significant." in s
    assert "exact over all 2^4 sign patterns" in s and "Holm-adjusted over the 6 pairs" in s
    d = cell(ph, pr, "ddnm", "ΔPSNR vs best (ddrm)")
    assert d.startswith("-0.20 [") and d.endswith("p=0.75")  # the pair: 0.125 x 6 pairs, no `*`


def test_a_baseline_that_wins_is_said_and_significant_where_n_allows(built):
    readme, _, _ = built
    s = section(readme, "sr4")
    assert "No method beats the baseline (bicubic) on PSNR (higher is better): best on the 8 common images is " \
           "bicubic with 27.75 dB, +0.78 dB over the runner-up ddnm (tied with ddrm) (significant, Holm-adjusted p = " \
           "0.0234)." in s
    head, rows = table(s)
    assert cell(head, rows, "bicubic", "PSNR ↑").startswith("**27.75 ± ")  # significant at n = 8: bold
    ph, pr = table(s, "**Paired differences")
    assert cell(ph, pr, "ddrm", "ΔPSNR vs baseline (bicubic)").endswith("p=0.023 *")
    assert cell(ph, pr, "ddrm", "Δ‖A(x̂)−y‖²/M vs baseline (bicubic)") == "0 (identical)"  # cloned values
    assert "+0.00e+00" not in readme and not any(h.startswith("ΔPSNR vs best") for h in ph)


def test_noisy_consistency_is_judged_against_sigma2(built):
    readme, _, _ = built
    s = section(readme, "denoise")
    head, rows = table(s)
    col = "‖A(x̂)−y‖²/(Mσ²) (≈1 ideal)"
    assert "‖A(x̂)−y‖²/M ↓" not in s and col in head
    bic, ddrm = cell(head, rows, "bicubic", col), cell(head, rows, "ddrm", col)
    assert ddrm.startswith("1.04 ± ") and float(bic.split()[0]) < 0.2  # the noisy input fits the noise
    assert "**" not in bic + ddrm  # never ranked, never bold
    ph, _ = table(s, "**Paired differences")
    assert not any("‖A" in h or "Consist" in h for h in ph)
    verdict = s.split("**Verdict**", 1)[1].split("\n\n", 2)[1]
    assert "consistency" not in verdict.lower() and verdict.startswith("- Best PSNR")
    assert "ideal ≈ 1" in s and "σ = 0.05" in s.split("- Every row:", 1)[1].split("\n", 1)[0]


def test_paper_values_under_the_task_of_their_protocol(built):
    readme, _, _ = built
    gdp, gauss = section(readme, "deblur_gdp"), section(readme, "deblur_gauss")
    head, rows = table(gdp, "**Papers' values (deblur_gdp)**")
    assert cell(head, rows, "ddrm", "PSNR ↑") == "35.64" and cell(head, rows, "ddrm", "Source") == "GDP"
    assert "GDP" not in gauss.split("**Papers' values", 1)[1].split("![", 1)[0]
    head, _ = table(gauss)
    assert not any("[" in h for h in head)  # the papers' values are not columns of our table


def test_tables_a_reader_can_take_in(built):
    readme, _, _ = built
    s = section(readme, "deblur_gauss")
    head, rows = table(s)
    for gone in ("LPIPS ↓", "FID ↓", "KID ↓", "NIQE ↓", "σ", "seed", "code", "N"):
        assert gone not in head, gone
    assert "- n/a for every run: LPIPS, FID, KID, NIQE (missing assets, see Missing assets)." in s
    assert readme.count("## Missing assets") == 1 and "urlopen" not in readme and "Errno" not in readme
    assert readme.count("- LPIPS backbone `alexnet-owt-7be5be79.pth`:") == 1
    assert len(head) <= 12
    # throughput: only where NFE > 0, device and threads in the caption, the 1-thread row flagged
    assert cell(head, rows, "bicubic", "img/s ↑") == "—"
    assert cell(head, rows, "ddrm", "img/s ↑") == "**0.5**"  # >= 10 % ahead of pigdm on the same device
    assert cell(head, rows, "ddnm", "img/s ↑").startswith("0.3 †")
    assert "measured on cpu: Test CPU with 2 CPU threads" in s
    assert "measured on cpu: Test CPU with 1 CPU threads, not cpu: Test CPU with 2" in s
    assert np.isfinite(float(cell(head, rows, "ddrm", "peak MB")))
