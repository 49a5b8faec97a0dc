"""Issue 26, point 5: ``python -m bench.report --jobs N`` runs the file checks, the intervals and the sections
in worker processes, and the report is byte-identical to the in-process one (every interval and Monte Carlo
test is seeded by its cell, never by the order of execution)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from bench.report.parallel import check_jobs, pmap, usable_cpus
from tools.browser.tree import SMALL, write_tree

pytestmark = pytest.mark.usefixtures("single_thread")
fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork: --jobs runs in-process")


@fork
def test_pmap_uses_workers_and_keeps_the_order():
    assert pmap(lambda x: x * x, range(7), 2) == [x * x for x in range(7)]
    pids = pmap(lambda _: os.getpid(), range(4), 2)
    assert os.getpid() not in pids  # computed in worker processes
    assert pmap(lambda _: os.getpid(), range(4), 1) == [os.getpid()] * 4


def test_bad_jobs_named_before_any_work(tmp_path, capsys):
    from bench.report.__main__ import main

    assert check_jobs(None) == usable_cpus() >= 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"jobs={bad!r}.*--jobs N"):
            check_jobs(bad)
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "r"), "--jobs", "0"]) == 2
    assert "jobs=0" in capsys.readouterr().err and not (tmp_path / "r").exists()


@fork
def test_jobs_2_is_byte_identical_to_jobs_1(tmp_path):
    """Two sections: 12 images (Student t, exact sign-flip tests) and 40 (BCa, Monte Carlo sign flips), one
    damaged row (left out in both)."""
    from bench.report.__main__ import main

    root = tmp_path / "results"
    write_tree(root, SMALL[:4], 12, 16)
    runs = write_tree(root, [("bicubic", 0), ("ddrm", 10), ("dps", 20)], 40, 16, task="denoise")
    (runs[1] / "images" / "img00003.png").write_bytes(b"damaged")
    out = {}
    for jobs in (1, 2):
        with pytest.warns(UserWarning, match="img00003"):
            assert main(["--results", str(root), "--out", str(tmp_path / f"j{jobs}"), "--name", "r",
                         "--bootstrap", "200", "--jobs", str(jobs)]) == 0
        folder = tmp_path / f"j{jobs}" / "r"
        out[jobs] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                     if p.is_file()}
    assert {"README.md", "runs.csv", "runs.parquet", "browser/data.js"} <= set(out[1])
    assert len([k for k in out[1] if k.startswith("browser/images/")]) == 2  # one per section
    assert out[2] == out[1]
    assert b"**N = 39** images common to all 3 runs" in out[1]["README.md"]  # the damaged row is left out
