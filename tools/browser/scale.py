"""Time the report and the results browser on a large synthetic results root (issue 26, point 5).

    python tools/browser/scale.py --tree /tmp/bench-scale --runs 100 --images 2000 --tasks 4

Writes the tree (tools/browser/tree.py; reused when present), then times ``build_report`` in-process (the
default options: 1000 bootstrap resamples, ``--jobs`` worker processes = the usable CPU cores; CPU time is
this process's plus its workers') with the HTML part (``bench.report.html.write_site``) timed on its
own, then opens ``index.html`` in a fresh headless Chromium: the navigation timing (DOMContentLoaded, load),
the image overview (first page of thumbnails decoded) and one comparison (both panes decoded and the
per-image metrics of the section loaded). Prints one line per number; docs/results-browser.md quotes them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tools.browser.cdp import Chromium  # noqa: E402
from tools.browser.tree import default_runs, write_tree  # noqa: E402

TASKS = ("sr4", "deblur_gauss", "denoise", "inpaint", "colorize", "sr4_noisy", "deblur_uniform", "lowlight")
DECODED = "Promise.all([...document.querySelectorAll('{0}')].map(i => i.decode())).then(() => true)"


def _workers_cpu() -> float:
    """CPU seconds of the finished child processes (the report's workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ch.ru_utime + ch.ru_stime


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", type=Path, required=True, help="results root (written when absent)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--tasks", type=int, default=1, help="spread the runs over this many tasks (sections)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=None, help="report worker processes (default: the usable CPU cores)")
    a = p.parse_args(argv)
    os.environ.setdefault("BENCH_OFFLINE", "1")
    if not a.tree.is_dir():
        t = time.perf_counter()
        cells = default_runs(a.runs)
        for k, task in enumerate(TASKS[:a.tasks]):
            write_tree(a.tree, cells[k::a.tasks], a.images, a.size, task=task)
        print(f"tree: {a.runs} runs x {a.images} images ({a.size} px) over {a.tasks} task(s) written in "
              f"{time.perf_counter() - t:.0f} s")
    from bench.report import ReportOptions, build_report, html

    spent, original = {}, html.write_site

    def timed(*args, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kw)
        finally:
            spent["html"], spent["html_cpu"] = time.perf_counter() - t0, time.process_time() - c0

    html.write_site = timed
    with tempfile.TemporaryDirectory() as tmp:
        load, t, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time() + _workers_cpu()
        out = build_report(ReportOptions(results=a.tree, name="scale", out=Path(tmp), bootstrap=a.bootstrap,
                                         jobs=a.jobs))
        total, cpu = time.perf_counter() - t, time.process_time() + _workers_cpu() - cpu
        print(f"report: {total:.1f} s wall ({cpu:.1f} s CPU, workers included) in all, of which the HTML (data, "
              f"per-image files, thumbnails) {spent['html']:.1f} s wall ({spent['html_cpu']:.1f} s CPU); "
              f"--jobs {a.jobs or 'default'}, {os.cpu_count()} CPUs, load average {load:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after")
        print(f"report: browser/data.js {(out / 'browser' / 'data.js').stat().st_size / 1e6:.2f} MB, per-image files "
              f"{_size(out / 'browser' / 'images') / 1e6:.1f} MB, thumbnails {_size(out / 'thumbs') / 1e6:.1f} MB")
        with Chromium() as c:
            t = time.perf_counter()
            c.open((out / "index.html").as_uri())
            wall = time.perf_counter() - t
            nav = c.eval("(() => { const n = performance.getEntriesByType('navigation')[0]; "
                         "return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
            rows = c.eval("document.querySelectorAll('#leaderboard tbody tr').length")
            print(f"page: DOMContentLoaded {nav[0]:.0f} ms, load {nav[1]:.0f} ms, navigate-to-load wall "
                  f"{wall * 1000:.0f} ms; leaderboard rows {rows}")
            t = time.perf_counter()
            c.eval("document.querySelector('#tabs [data-view=images]').click()")
            c.eval(DECODED.format(".thumbs img"))
            ms = (time.perf_counter() - t) * 1000
            n = c.eval("document.querySelectorAll('.thumbs img').length")
            print(f"page: image overview (first {n} thumbnails decoded) {ms:.0f} ms")
            t = time.perf_counter()
            c.eval("document.querySelector('.thumbs figure').click()")
            c.eval(DECODED.format(".pane img"))
            c.eval("new Promise(r => { const w = () => document.querySelector('#metrics table') ? r(true) : "
                   "setTimeout(w, 5); w(); })")
            print(f"page: comparison (both panes and the section's per-image metrics) "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms")
            t = time.perf_counter()
            c.key("ArrowRight")
            c.eval(DECODED.format(".pane img"))
            print(f"page: next image (arrow key) {(time.perf_counter() - t) * 1000:.0f} ms")
            if c.errors:
                print("\n".join(c.errors), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
