"""Issue 26: the results browser (``reports/<name>/index.html``) of a small synthetic results tree
(tools/browser/tree.py: a real run's provenance, 6 runs x 12 images of 32 px).

* without a browser: the page's data holds exactly the markdown's table cells, verdicts, paired differences and
  budget rows (one computation, two renderings), with the static figures' colours;
* in headless Chromium (skipped with the reason when there is none; ``.ci/run`` installs Debian's package),
  one session: no console error, sorting a column reorders the rows, a filter hides rows, every row links to
  its run files, the thumbnails load, zoom keeps both panes aligned, the arrow key moves to the next image, the
  slider changes the pixels shown, a plot point answers hovering with its value and interval.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tools.browser import cdp
from tools.browser.tree import SMALL, small_report

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_OFFLINE", "1")
    mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        out = small_report(tmp_path_factory.mktemp("site"))
    finally:
        mp.undo()
    text = (out / "browser" / "data.js").read_text()
    return out, json.loads(text[text.index("{"):text.rstrip().rindex(";")])


def md_tables(block: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of ``block``: (headers, rows), cells unescaped as written by markdown_table."""
    out, cur = [], []
    for ln in block.splitlines() + [""]:
        if ln.startswith("|"):
            cur.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]])
        elif cur:
            out.append((cur[0], cur[2:]))
            cur = []
    return out


def test_page_data_is_the_markdown(site):
    from bench.report.figures import style_map

    out, data = site
    readme = (out / "README.md").read_text()
    (sec,) = data["sections"]
    block = readme.split(f"## {sec['dataset']} / {sec['task']}\n", 1)[1]
    tables = md_tables(block)
    ours, paired = tables[0], tables[1]
    budget = next(t for t in tables if t[0][0] == "NFE budget")
    assert (sec["table"]["headers"], sec["table"]["rows"]) == ours
    assert (sec["paired"]["headers"], sec["paired"]["rows"]) == paired
    assert (sec["budget"]["headers"], sec["budget"]["rows"]) == budget
    assert len(ours[1]) == len(SMALL) and any("**" in c for r in ours[1] for c in r)  # bold marks travel too
    verdicts = [ln[2:] for ln in block.split("**Verdict**", 1)[1].split("\n\n", 2)[1].splitlines()]
    assert sec["verdicts"] == verdicts and len(verdicts) == 3
    assert all(f"- {u}" in block for u in sec["table"]["under"])
    # the plot values are the table's: PSNR mean ± h of each row
    for run, row in zip(sec["runs"], ours[1]):
        mean, lo, hi = run["values"]["psnr"]
        assert row[ours[0].index("PSNR ↑")].strip("*") == f"{mean:.2f} ± {(hi - lo) / 2:.2f}"
    colours = style_map(r["base_label"] for r in sec["runs"])
    assert all(r["colour"] == colours[r["base_label"]][0] for r in sec["runs"])
    assert len(sec["images"]["ids"]) == 12 and (out / sec["images"]["thumbs"] / "img00000.png").is_file()


def _file(page: Path, href: str) -> Path:
    return (page.parent / unquote(urlparse(href).path)).resolve()


@pytest.mark.skipif(cdp.find() is None, reason="no Chromium on PATH ($CHROMIUM unset): `apt-get install chromium` "
                    "(.ci/run installs it) to run the browser test")
def test_page_in_chromium(site):
    out, data = site
    page = out / "index.html"
    with cdp.Chromium() as c:
        c.open(page.as_uri())
        # ---------------------------------------------------------------- leaderboard: sort, filter, links
        first_col = "[...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.dataset.run)"
        before = c.eval(first_col)
        assert len(before) == len(SMALL)
        c.eval("[...document.querySelectorAll('#leaderboard th')].find(h => h.textContent.startsWith('PSNR')).click()")
        asc = c.eval(first_col)
        psnr = {r["run_dir"]: r["values"]["psnr"][0] for r in data["sections"][0]["runs"]}
        assert asc != before and [psnr[d] for d in asc] == sorted(psnr.values())
        c.eval("[...document.querySelectorAll('#leaderboard th')].find(h => h.textContent.startsWith('PSNR')).click()")
        assert c.eval(first_col) == asc[::-1]
        c.eval("{ const f = document.querySelector('select[data-filter=steps]'); f.value = '10'; "
               "f.dispatchEvent(new Event('change')); }")
        assert c.eval(first_col) == [r["run_dir"] for r in data["sections"][0]["runs"] if r["steps"] == 10]
        links = c.eval("[...document.querySelectorAll('#leaderboard td.links a')].map(a => a.href)")
        assert len(links) == 2 * 4 and all(_file(page, h).exists() for h in links)
        assert {Path(h).name for h in links} >= {"config.yaml", "manifest.json", "run.log"}
        # ---------------------------------------------------------------- images: thumbnails, panes, zoom, keys
        c.eval("document.querySelector('#tabs [data-view=images]').click()")
        assert c.eval("Promise.all([...document.querySelectorAll('.thumbs img')].map(i => i.decode()))"
                      ".then(() => [...document.querySelectorAll('.thumbs img')].every(i => i.naturalWidth > 0))")
        # open a comparison and switch its right-hand method before the per-image metrics have arrived: the table
        # must describe the method shown, not the one of the first drawing (a stale callback once overwrote it)
        c.eval("document.querySelector('.thumbs figure').click(); "
               "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}))")
        loaded = "Promise.all([...document.querySelectorAll('.pane img')].map(i => i.decode())).then(() => true)"
        assert c.eval(loaded)
        shown = ("new Promise(ok => { const f = () => document.querySelector('#metrics td') ? ok(["
                 "document.querySelector('#metrics td').textContent, "
                 "document.querySelector('#right').selectedOptions[0].text]) : setTimeout(f, 20); f(); })")
        name, selected = c.eval(shown)
        assert name == selected, (name, selected)
        # one metrics script per section however often it was asked for (each extra one ran a callback of its own)
        assert c.eval("document.querySelectorAll('script[src*=\"browser/images/\"]').length") == 1
        rects = ("[...document.querySelectorAll('.pane')].map(p => { const a = p.getBoundingClientRect(), "
                 "b = p.querySelector('img').getBoundingClientRect(); return [b.left - a.left, b.top - a.top, b.width]; })")
        box = c.eval("(() => { const r = document.querySelector('.pane').getBoundingClientRect(); "
                     "return [r.left + r.width / 3, r.top + r.height / 3]; })()")
        w0 = c.eval(rects)[0][2]
        c.mouse("mouseWheel", *box, deltaX=0, deltaY=-100)
        c.mouse("mouseWheel", *box, deltaX=0, deltaY=-100)
        left, right = c.eval(rects)
        assert left == right and left[2] == 4 * w0  # two zoom steps, both panes identical
        c.mouse("mousePressed", *box, button="left", clickCount=1)
        c.mouse("mouseMoved", box[0] + 37, box[1] + 11, button="left")
        c.mouse("mouseReleased", box[0] + 37, box[1] + 11, button="left", clickCount=1)
        moved = c.eval(rects)
        assert moved[0] == moved[1] and moved[0][0] == left[0] + 37 and moved[0][1] == left[1] + 11
        assert c.eval("getComputedStyle(document.querySelector('.pane img')).imageRendering") == "pixelated"
        c.key("ArrowRight")
        assert c.eval("document.querySelector('#imgid').textContent") == "img00001"
        assert c.eval("document.querySelectorAll('#metrics tr').length") == 2  # header + the one run beside GT
        # ---------------------------------------------------------------- the before/after slider
        c.eval("document.querySelector('#mode').click()")
        assert c.eval(loaded)
        c.eval("document.querySelector('#zfit').click()")
        # the split at 3/4 of the image, then at 1/4: the pixels at its middle go from left to right source
        where = c.eval("(() => { const p = document.querySelector('.pane.slider').getBoundingClientRect(), "
                       "r = document.querySelector('.pane.slider img').getBoundingClientRect(), "
                       "at = f => (r.left + f * r.width - p.left) / p.width * 100; "
                       "return [at(0.75), at(0.25), {x: r.left + r.width / 2, y: r.top + r.height / 2, width: 4, "
                       "height: 4, scale: 1}]; })()")
        shots = []
        for pos in where[:2]:
            c.eval(f"{{ const s = document.querySelector('#slider'); s.value = {pos}; s.dispatchEvent(new Event('input')); }}")
            shots.append(c.call("Page.captureScreenshot", format="png", clip=where[2], session=True)["data"])
        assert c.eval("document.querySelector('.over').style.clipPath").startswith(f"inset(0px 0px 0px {where[1]:.1f}")
        assert shots[0] != shots[1]
        # ---------------------------------------------------------------- trade-off plot: hover
        c.eval("document.querySelector('#tabs [data-view=plots]').click()")
        n = c.eval("document.querySelectorAll('#tradeoff g[data-i]').length")
        assert n == len(SMALL)
        pt = c.eval("(() => { const r = document.querySelector('#tradeoff g[data-i=\"1\"]').getBoundingClientRect(); "
                    "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        c.mouse("mouseMoved", *pt)
        tip = c.eval("document.querySelector('#tip').hidden ? '' : document.querySelector('#tip').textContent")
        assert re.search(r"steps \d+, NFE/img \d+", tip) and re.search(r"PSNR \(dB\) [\d.]+ \[[\d.]+, [\d.]+\]", tip), tip
        assert c.errors == []
