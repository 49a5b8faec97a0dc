"""Notices (bench/notices.py) and the sweep summary's table (bench/sweep.py) without running a sweep; the
end-to-end sweeps (basic and submitit-local launchers) are in tests/test_sweeps.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import notices
from bench.sweep import summary_text


@pytest.fixture(autouse=True)
def _fresh():
    notices.start_sweep()
    yield
    notices.start_sweep()


def test_a_single_run_prints_every_notice(capsys):
    notices.notice("LPIPS n/a")
    notices.notice("LPIPS n/a")
    assert capsys.readouterr().out == "[bench] LPIPS n/a\n" * 2
    assert notices.printed() == set()


def test_in_a_sweep_a_notice_prints_once_per_process_and_every_job_collects_it(capsys):
    notices.start_job()
    notices.notice("A")
    notices.notice("A")
    assert notices.end_job() == ["A"]
    notices.start_job()  # the next job in the same process (basic launcher)
    notices.notice("A")
    notices.notice("B")
    assert notices.end_job() == ["A", "B"]
    assert capsys.readouterr().out == "[bench] A\n[bench] B\n"
    assert notices.printed() == {"A", "B"}
    notices.notice("A")  # after the job: single-run behaviour again
    assert capsys.readouterr().out == "[bench] A\n"
    notices.start_sweep()
    assert notices.printed() == set()


def _record(num, overrides, status="ok", **kw):
    return {"num": num, "overrides": overrides, "cell": kw.pop("cell", "bicubic/sr4/default"), "status": status,
            "results_root": "results", "notices": kw.pop("notices", []), **kw}


def test_the_table_shows_what_tells_cells_apart_and_each_notice_not_yet_printed():
    ok = {"expected": 2, "new": 2, "summary": {"images": 5, "psnr": 17.3734, "ssim": 0.54132, "images_per_s": 2510.0}}
    records = [
        _record(0, ["method=bicubic", "seed=0", "dataset.limit=2"], notices=["X", "Y"], **ok),
        _record(1, ["method=bicubic", "seed=1", "dataset.limit=2"], notices=["Y"],
                **{**ok, "new": 0, "summary": {"images": 2, "psnr": 20.0, "ssim": 0.5, "images_per_s": math.inf}}),
        _record(2, ["method=gdp_x0", "seed=0", "dataset.limit=2"], status="skipped", cell="gdp_x0/denoise/steps20",
                skipped="GDP has no official guidance scale for task 'denoise' (official: {...}); pass one"),
        _record(3, ["method=ddrm", "seed=1", "dataset.limit=2"], status="FAILED", cell="ddrm/sr4/steps20",
                error="DatasetError", message="bad"),
    ]
    lines = summary_text(records, Path("sweep"), printed={"X"}).splitlines()
    assert lines[0].startswith("[bench] sweep summary: 4 cell(s), 2 ok, 1 skipped, 1 failed (records in sweep;")
    assert lines[1].split() == ["#", "cell", "images", "PSNR", "SSIM", "img/s", "status"]
    assert lines[2].split() == ["0", "bicubic/sr4/default", "seed=0", "2/2", "(run:", "5)", "17.37", "0.5413",
                                "2510", "ok"]  # the means are over the run's 5 images
    assert lines[3].split() == ["1", "bicubic/sr4/default", "seed=1", "2/2", "20.00", "0.5000", "inf", "resumed",
                                "(nothing", "new)"]
    assert lines[4].endswith("skipped: GDP has no official guidance scale for task 'denoise'")
    assert lines[5].split()[:3] == ["3", "ddrm/sr4/steps20", "seed=1"] and lines[5].endswith("FAILED (below)")
    assert lines[6:] == ["[bench] Y"]  # X was printed by this process already
