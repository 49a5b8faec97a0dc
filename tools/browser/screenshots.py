"""Regenerate docs/img/browser-*.png: the results browser of the small synthetic tree (tools/browser/tree.py)
in headless Chromium, one screenshot per page kind.

    python tools/browser/screenshots.py            # writes docs/img/browser-{leaderboard,images,compare,slider,plots}.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tools.browser.cdp import Chromium  # noqa: E402
from tools.browser.tree import small_report  # noqa: E402

#: (file stem, JavaScript that brings the page there); run in this order in one session
STEPS = (
    ("leaderboard", "document.querySelector('#tabs [data-view=board]').click();"
                    "[...document.querySelectorAll('#leaderboard th')].find(h => h.textContent.startsWith('PSNR'))"
                    ".click()"),
    ("images", "document.querySelector('#tabs [data-view=images]').click()"),
    ("compare", "document.querySelector('.thumbs figure:nth-child(3)').click();"
                "{ const r = document.querySelector('#right'); r.value = [...r.options].find(o => o.text === "
                "'ddrm, 50 steps').value; r.dispatchEvent(new Event('change')); }"
                "document.querySelector('#zin').click(); document.querySelector('#zin').click()"),
    ("slider", "document.querySelector('#mode').click(); document.querySelector('#zfit').click();"
               "{ const p = document.querySelector('.pane').getBoundingClientRect(), r = document.querySelector("
               "'.pane img').getBoundingClientRect(), s = document.querySelector('#slider');"
               "s.value = (r.left + 0.4 * r.width - p.left) / p.width * 100; s.dispatchEvent(new Event('input')); }"),
    ("plots", "document.querySelector('#tabs [data-view=plots]').click()"),
)
IMAGES = "Promise.all([...document.images].map(i => i.decode().catch(() => null))).then(() => true)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for browser-<kind>.png")
    a = p.parse_args(argv)
    os.environ.setdefault("BENCH_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp, Chromium(width=1200, height=760) as c:
        page = small_report(Path(tmp), bootstrap=200) / "index.html"
        c.open(page.as_uri())
        for stem, js in STEPS:
            c.eval(js)
            c.eval(IMAGES)
            if stem == "plots":  # hover the second point: the tooltip shows its values
                x, y = c.eval("(() => { const r = document.querySelector('#tradeoff g[data-i=\"2\"]')"
                              ".getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
                c.mouse("mouseMoved", x, y)
            print(c.screenshot(a.out / f"browser-{stem}.png"))
        if c.errors:
            print("\n".join(c.errors), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
