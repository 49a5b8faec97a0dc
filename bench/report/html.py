"""The browsable report: ``reports/<name>/index.html``, rendered from the same per-section data as the markdown.

:func:`bench.report.build_report` computes each (dataset, task) section once (:func:`bench.report._section`:
the comparison, the table cells, the verdicts, the captions) and hands the same objects to both renderings, so
every number, interval, significance mark and verdict of the page is the string the markdown prints.

Files written next to ``README.md`` (static, no network, open ``index.html`` from ``file://``):

* ``index.html``, ``browser/browser.js``, ``browser/browser.css`` (written here, small, no library);
* ``browser/data.js``: ``window.BENCH = {...}`` - the sections: table headers and cells, verdicts, captions,
  per run its filters (prior, steps, NFE, settings), figure colour and marker (:func:`figures.style_map`, as in
  the static figures), the table's means and intervals for the plots, and links to its run folder;
* ``browser/images/<section>.js``: per-image metrics of the section's runs on its common images, loaded only
  when the image view opens (a ``<script>`` tag, which ``file://`` allows where ``fetch`` is refused);
* ``thumbs/<dataset>/<reference folder>/<id>.png``: thumbnails of the ground truth for the overview (written
  once, reused when present); the full images are not copied: the page loads them lazily from the results
  root by relative path, so the report folder must stay at the same place relative to the results.
"""

from __future__ import annotations

import io
import json
import math
import os
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from PIL import Image

from bench.imageio import atomic_write_bytes
from bench.report.compare import NAMES, UNITS

__all__ = ["THUMB", "PLOT_METRICS", "site_data", "write_site"]

THUMB = 96  # longest side of an overview thumbnail, in pixels
#: per-image metrics the page shows and plots (the table's columns where a run has them)
PLOT_METRICS = ("psnr", "ssim", "lpips", "consistency", "consistency_gdp", "loe", "niqe", "pi")
RUN_FILES = ("config.yaml", "manifest.json", "run.log")
_MARKERS = {"o": "circle", "s": "square", "^": "triangle-up", "v": "triangle-down", "D": "diamond", "<": "triangle-left",
            ">": "triangle-right", "P": "plus", "X": "cross", "h": "hexagon"}


def _clean(x):
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def _num(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _run_entry(row, run, root_rel: str, styles: dict) -> dict:
    colour, marker = styles.get(str(row["base_label"]), ("#444444", "o"))
    d = str(row["run_dir"])
    return {"run_dir": d, "label": str(row["label"]), "base_label": str(row["base_label"]),
            "method": str(row["method"]), "prior": str(row.get("prior", "")),
            "steps": None if pd.isna(row["steps"]) else int(row["steps"]),
            "nfe": _num(row.get("nfe_per_image")), "images_per_s": _num(row.get("images_per_s")),
            "settings": str(row.get("settings") or "official settings"),
            "tuned": str(row.get("settings") or "official settings") != "official settings",
            "colour": colour, "marker": _MARKERS.get(marker, "circle"), "href": quote(f"{root_rel}/{d}"),
            "files": [f for f in RUN_FILES if (run.dir / f).is_file()]}


def _plot_values(frame, d: str) -> dict:
    row = frame[frame["run_dir"] == d].iloc[0]
    out = {}
    for m in PLOT_METRICS:
        mean = _num(row.get(f"{m}_mean"))
        if mean is not None:
            out[m] = [mean, _num(row.get(f"{m}_ci_lo")), _num(row.get(f"{m}_ci_hi"))]
    return out


def _thumbs(out: Path, section: dict, ids: list[str]) -> str:
    """Thumbnails of the ground truth (else the first run's degraded input) for ``ids``; their folder,
    relative to ``out``."""
    ref = section.get("reference")
    first = next(iter(section["runs"].values()))
    src = Path(ref) if ref is not None else first.dir / "degraded"
    rel = (Path("thumbs") / section["dataset"] / (Path(ref).name if ref is not None else
                                                   f"{section['task']}-{first.dir.name}"))
    for i in ids:
        dst = out / rel / f"{i}.png"
        if dst.is_file() or not (src / f"{i}.png").is_file():
            continue
        with Image.open(src / f"{i}.png") as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, format="PNG", compress_level=1)
        atomic_write_bytes(dst, buf.getvalue())
    return rel.as_posix()


def _image_size(section: dict, ids: list[str]) -> list[int] | None:
    first = next(iter(section["runs"].values()))
    p = first.dir / "images" / f"{ids[0]}.png"
    if not p.is_file():
        return None
    with Image.open(p) as im:
        return list(im.size)


def site_data(out: Path, root: Path, sections: list[dict], values: dict, styles: dict) -> tuple[dict, dict]:
    """``(page data, {section id: per-image detail})`` of the computed ``sections`` (:func:`bench.report._section`)."""
    root_rel = Path(os.path.relpath(root, out)).as_posix()
    page, detail = [], {}
    for k, s in enumerate(sections):
        sid = f"s{k}"
        entry = {"id": sid, "dataset": s["dataset"], "task": s["task"], "skipped": s["skipped"]}
        if "tab" in s:
            tab = s["tab"]
            ids = list(tab.common)
            rows = [_run_entry(r, s["runs"][str(r["run_dir"])], root_rel, styles) for _, r in tab.runs.iterrows()]
            for r in rows:
                r["values"] = _plot_values(s["frame"], r["run_dir"])
            ref = s.get("reference")
            entry.update(n=tab.n, warnings=s["warnings"], verdicts=s["verdicts"], table=s["table"],
                         paired=s.get("paired"), budget=s.get("budget"), figures=s["figures"], runs=rows,
                         images={"ids": ids, "thumbs": quote(_thumbs(out, s, ids)), "size": _image_size(s, ids),
                                 "reference": None if ref is None else
                                 quote(f"{root_rel}/{Path(ref).relative_to(root).as_posix()}")})
            detail[sid] = {d: {m: [_num(values[d][m].get(i)) for i in ids] for m in PLOT_METRICS
                               if any(i in values[d][m] for i in ids)} for d in tab.runs["run_dir"]}
        page.append(entry)
    return {"sections": page}, detail


def _js(var: str, obj) -> bytes:
    text = json.dumps(_clean(obj), ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{var}{text};\n".encode()


def write_site(out: Path, root: Path, sections: list[dict], values: dict, styles: dict, *, title: str, intro: str,
               assets: list[str]) -> Path:
    """Write ``index.html`` and ``browser/`` (see the module docstring); returns the page."""
    data, detail = site_data(out, root, sections, values, styles)
    data.update(title=title, intro=intro, assets=[a[2:] if a.startswith("- ") else a for a in assets if a],
                metrics=[[m, NAMES[m] + (f" ({UNITS[m].strip()})" if m in UNITS else "")] for m in PLOT_METRICS])
    static = resources.files("bench.report") / "static"
    for name in ("browser.js", "browser.css"):
        atomic_write_bytes(out / "browser" / name, (static / name).read_bytes())
    atomic_write_bytes(out / "browser" / "data.js", _js("window.BENCH = ", data))
    for sid, d in detail.items():
        atomic_write_bytes(out / "browser" / "images" / f"{sid}.js",
                           _js(f"window.BENCH_IMAGES = window.BENCH_IMAGES || {{}}; window.BENCH_IMAGES.{sid} = ", d))
    atomic_write_bytes(out / "index.html", (static / "index.html").read_bytes())
    return out / "index.html"
