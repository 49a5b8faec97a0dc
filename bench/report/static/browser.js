// The results browser of `python -m bench.report` (bench/report/html.py writes the data in browser/data.js).
// Three views per (dataset, task) section: the leaderboard, the images (overview, then two panes with
// synchronized zoom / pan or a before/after slider) and the trade-off plots. No library, no network.
"use strict";
const B = window.BENCH;
const PAGE = 48;                       // thumbnails per overview page
const MNAME = Object.fromEntries(B.metrics);  // metric key -> its name with unit, in the table order
const ZOOMS = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128];  // 1 = native pixels
const $ = (sel, el = document) => el.querySelector(sel);
const S = { sec: 0, view: "board", img: null, page: 0, left: null, right: null, mode: "side",
            zoom: null, sort: null, filters: {}, metric: null, x: "images_per_s" };

function esc(s) { return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
// the markdown of a table cell or a sentence: **bold** and `code`, nothing else
function md(s) { return esc(s).replace(/\*\*(.+?)\*\*/g, "<b>$1</b>").replace(/`([^`]+)`/g, "<code>$1</code>"); }
function el(tag, attrs = {}, html = "") { const e = document.createElement(tag); for (const k in attrs) e.setAttribute(k, attrs[k]); e.innerHTML = html; return e; }
const sec = () => B.sections[S.sec];
const enc = encodeURIComponent;  // image ids in file names
const runName = r => r.label + (r.steps !== null ? `, ${r.steps} steps` : "");

// ------------------------------------------------------------------------------------------- routing
function go(view, extra = {}) { Object.assign(S, { view }, extra); location.hash = [S.sec, S.view, S.img === null ? "" : S.img].join("/"); render(); }
function fromHash() {
  const [s, v, i] = location.hash.slice(1).split("/");
  if (s !== undefined && B.sections[+s]) S.sec = +s;
  if (["board", "images", "plots"].includes(v)) S.view = v;
  S.img = i === undefined || i === "" ? null : +i;
}

function render() {
  document.querySelectorAll("#tabs button").forEach(b => b.classList.toggle("on", b.dataset.view === S.view));
  $("#section").value = S.sec;
  const main = $("#main"); main.innerHTML = "";
  const s = sec();
  if (!s.runs) { main.append(el("p", {}, "No finished run of this (dataset, task).")); skipped(main, s); return; }
  if (S.view === "board") board(main, s);
  else if (S.view === "images") (S.img === null ? overview : compare)(main, s);
  else plots(main, s);
}

// ------------------------------------------------------------------------------------------- leaderboard
function sortKey(text) {
  const t = text.replace(/\*\*/g, "");
  const m = t.match(/^[≤\s]*([-+]?\d+(\.\d+)?(e[-+]?\d+)?)/i);
  return m ? [0, parseFloat(m[1])] : [1, t.toLowerCase()];
}
function sortable(table, rows, fill) {
  // rows: [{cells: [...], ...}]; clicking a header sorts by that column (again: reverse)
  table.querySelectorAll("th").forEach((th, c) => th.addEventListener("click", () => {
    const dir = th.classList.contains("asc") ? -1 : 1;
    table.querySelectorAll("th").forEach(h => h.classList.remove("asc", "desc"));
    th.classList.add(dir > 0 ? "asc" : "desc");
    rows.sort((a, b) => {
      const x = sortKey(a.cells[c] ?? ""), y = sortKey(b.cells[c] ?? "");
      return dir * (x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
    });
    fill();
  }));
}
function plainTable(t) {
  const table = el("table", {}, "<thead><tr>" + t.headers.map(h => `<th>${md(h)}</th>`).join("") + "</tr></thead><tbody></tbody>");
  const rows = t.rows.map(cells => ({ cells }));
  const fill = () => { $("tbody", table).innerHTML = rows.map(r => "<tr>" + r.cells.map(c => `<td>${md(c)}</td>`).join("") + "</tr>").join(""); };
  sortable(table, rows, fill); fill();
  return table;
}
function filterBox(s, apply) {
  const box = el("div", { class: "filters" });
  const opts = { prior: r => r.prior, steps: r => r.steps === null ? "-" : String(r.steps), NFE: r => r.nfe === null ? "n/a" : String(r.nfe),
                 settings: r => r.tuned ? "tuned" : "official" };
  for (const [name, f] of Object.entries(opts)) {
    const vals = [...new Set(s.runs.map(f))].sort((a, b) => (parseFloat(a) - parseFloat(b)) || a.localeCompare(b));
    const sel = el("select", { "data-filter": name }, `<option value="">all</option>` + vals.map(v => `<option>${esc(v)}</option>`).join(""));
    sel.value = S.filters[name] || "";
    sel.addEventListener("change", () => { S.filters[name] = sel.value; apply(); });
    const lab = el("label", {}, esc(name) + " "); lab.append(sel); box.append(lab);
  }
  box.keep = r => Object.entries(opts).every(([n, f]) => !S.filters[n] || f(r) === S.filters[n]);
  return box;
}
function wrap(table) { const d = el("div", { class: "scroll" }); d.append(table); return d; }
function board(main, s) {
  main.append(el("p", { class: "note" }, md(B.intro)));
  if (B.assets.length) main.append(el("details", { class: "note" }, "<summary>Missing assets (n/a columns)</summary><ul>" + B.assets.map(a => `<li>${md(a)}</li>`).join("") + "</ul>"));
  s.warnings.forEach(w => main.append(el("div", { class: "warn" }, md(w.replace(/^> /, "")))));
  if (s.verdicts.length) main.append(el("div", { class: "verdict" }, `<b>Verdict</b> (paired sign-flip tests on the ${s.n} common images, Holm-corrected per metric):<ul>` + s.verdicts.map(v => `<li>${md(v)}</li>`).join("") + "</ul>"));
  main.append(el("p", { class: "note" }, md(s.table.caption)));
  const rows = s.table.rows.map((cells, i) => ({ cells, run: s.runs[i] }));
  const table = el("table", { id: "leaderboard" }, "<thead><tr>" + s.table.headers.map(h => `<th>${md(h)}</th>`).join("") + "<th>Run</th></tr></thead><tbody></tbody>");
  const filters = filterBox(s, () => fill());
  const fill = () => {
    $("tbody", table).innerHTML = rows.filter(r => filters.keep(r.run)).map(r =>
      `<tr data-run="${esc(r.run.run_dir)}">` + r.cells.map((c, j) => `<td>${j === 0 ? `<span class="swatch" style="background:${r.run.colour}"></span>` : ""}${md(c)}</td>`).join("") +
      `<td class="links">` + r.run.files.map(f => `<a href="${esc(r.run.href)}/${f}">${f}</a>`).join("") + `<a href="${esc(r.run.href)}/">folder</a></td></tr>`).join("");
  };
  sortable(table, rows, fill); fill();
  main.append(filters, wrap(table));
  s.table.under.forEach(u => main.append(el("p", { class: "note" }, md(u))));
  if (s.paired) { main.append(el("h3", {}, "Paired differences"), el("p", { class: "note" }, md(s.paired.caption)), wrap(plainTable(s.paired))); }
  if (s.budget) { main.append(el("h3", {}, "Best at ≤ N NFE"), el("p", { class: "note" }, md(s.budget.caption)), wrap(plainTable(s.budget))); }
  main.append(el("p", { class: "note" }, "Static figures: " + s.figures.map(f => `<a href="figures/${esc(f)}">${esc(f)}</a>`).join(", ")));
  skipped(main, s);
}
function skipped(main, s) { s.skipped.forEach(x => main.append(el("p", { class: "note" }, "skipped: " + md(x)))); }

// ------------------------------------------------------------------------------------------- images
function sources(s) {
  const out = [];
  if (s.images.reference) out.push({ key: "gt", name: "ground truth", path: id => `${s.images.reference}/${enc(id)}.png` });
  out.push({ key: "degraded", name: "degraded input", path: id => `${s.runs[0].href}/degraded/${enc(id)}.png` });
  s.runs.forEach(r => out.push({ key: r.run_dir, name: runName(r), run: r, path: id => `${r.href}/images/${enc(id)}.png` }));
  return out;
}
function overview(main, s) {
  const ids = s.images.ids, pages = Math.ceil(ids.length / PAGE);
  const pager = el("div", { class: "pager" }, `${ids.length} common images; page ${S.page + 1} of ${pages} `);
  [["prev", -1], ["next", 1]].forEach(([t, d]) => { const b = el("button", {}, t); b.onclick = () => { S.page = Math.min(pages - 1, Math.max(0, S.page + d)); render(); }; pager.append(b); });
  const grid = el("div", { class: "thumbs" });
  ids.slice(S.page * PAGE, (S.page + 1) * PAGE).forEach((id, k) => {
    const f = el("figure", { "data-id": id }, `<img loading="lazy" alt="${esc(id)}" src="${esc(s.images.thumbs)}/${esc(enc(id))}.png"><figcaption>${esc(id)}</figcaption>`);
    f.onclick = () => go("images", { img: S.page * PAGE + k });
    grid.append(f);
  });
  main.append(pager, grid);
}
const LOADING = {};  // section id -> callbacks waiting for its per-image metrics script (one <script> per section)
function loadDetail(s, done) {
  window.BENCH_IMAGES = window.BENCH_IMAGES || {};
  if (window.BENCH_IMAGES[s.id]) return done();
  if (LOADING[s.id]) return LOADING[s.id].push(done);
  LOADING[s.id] = [done];
  const tag = el("script", { src: `browser/images/${s.id}.js` });
  tag.onload = () => { const waiting = LOADING[s.id]; delete LOADING[s.id]; waiting.forEach(f => f()); };
  document.body.append(tag);
}
let COMPARE_GEN = 0;  // a comparison drawn before the metrics script arrived must not fill the table of a newer one
function applyZoom() {
  document.querySelectorAll(".pane img").forEach(img => { img.style.transform = `translate(${S.zoom.x}px, ${S.zoom.y}px) scale(${S.zoom.s})`; });
  const z = $("#zoomlabel"); if (z) z.textContent = `${S.zoom.s}x`;
}
function zoomAt(pane, factor, cx, cy) {
  // keep the image point under (cx, cy) of the pane fixed
  const i = ZOOMS.indexOf(S.zoom.s), j = Math.min(ZOOMS.length - 1, Math.max(0, i + factor)), s = ZOOMS[j];
  if (cx === undefined) { cx = pane.clientWidth / 2; cy = pane.clientHeight / 2; }
  S.zoom.x = cx - (cx - S.zoom.x) * s / S.zoom.s; S.zoom.y = cy - (cy - S.zoom.y) * s / S.zoom.s; S.zoom.s = s;
  applyZoom();
}
function fit(pane, size) {
  // the largest zoom step that shows the whole image, centred (kept while moving between images)
  const w = size ? size[0] : 256, h = size ? size[1] : 256;
  const s = [...ZOOMS].reverse().find(z => w * z <= pane.clientWidth && h * z <= pane.clientHeight) || ZOOMS[0];
  S.zoom = { s, x: (pane.clientWidth - w * s) / 2, y: (pane.clientHeight - h * s) / 2 };
}
function paneEvents(pane) {
  pane.addEventListener("wheel", e => { e.preventDefault(); const r = pane.getBoundingClientRect(); zoomAt(pane, e.deltaY < 0 ? 1 : -1, e.clientX - r.left, e.clientY - r.top); });
  pane.addEventListener("mousedown", e => {
    const x0 = e.clientX - S.zoom.x, y0 = e.clientY - S.zoom.y;
    const move = m => { S.zoom.x = m.clientX - x0; S.zoom.y = m.clientY - y0; applyZoom(); };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", () => window.removeEventListener("mousemove", move), { once: true });
    e.preventDefault();
  });
}
function imgTag(src, id, size) {
  const style = size ? `width:${size[0]}px;height:${size[1]}px` : "";
  return `<img draggable="false" style="${style}" alt="${esc(src.name)}" src="${esc(src.path(id))}">`;
}
function compare(main, s) {
  const gen = ++COMPARE_GEN;
  const srcs = sources(s), ids = s.images.ids, id = ids[S.img], size = s.images.size;
  if (!srcs.find(x => x.key === S.left)) S.left = srcs[0].key;
  if (!srcs.find(x => x.key === S.right)) S.right = srcs.find(x => x.run).key;
  const L = srcs.find(x => x.key === S.left), R = srcs.find(x => x.key === S.right);
  const ctl = el("div", { class: "controls" }, `<button id="back">overview</button> image <b id="imgid">${esc(id)}</b> (${S.img + 1} / ${ids.length})`);
  for (const side of ["left", "right"]) {
    const sel = el("select", { id: side }, srcs.map(x => `<option value="${esc(x.key)}">${esc(x.name)}</option>`).join(""));
    sel.value = S[side]; sel.onchange = () => { S[side] = sel.value; render(); };
    const lab = el("label", {}, side + " "); lab.append(sel); ctl.append(lab);
  }
  ctl.append(el("span", {}, `<button id="mode">${S.mode === "side" ? "before/after slider" : "side by side"}</button> <button id="zout">−</button> <span id="zoomlabel"></span> <button id="zin">+</button> <button id="z1">1:1</button> <button id="zfit">fit</button>`));
  main.append(ctl, el("p", { class: "note" }, "Keys: ←/→ image, ↑/↓ method on the right, s slider, +/− zoom (or the wheel; drag to pan), Esc overview. Zoom is nearest-neighbour; 1:1 = native pixels."));
  const view = el("div", { class: "compare" });
  if (S.mode === "side") {
    for (const x of [L, R]) { const p = el("div", { class: "pane", "data-side": x === L ? "left" : "right" }, imgTag(x, id, size) + `<span class="cap">${esc(x.name)}</span>`); paneEvents(p); view.append(p); }
  } else {
    const p = el("div", { class: "pane slider" }, `<div class="under">${imgTag(L, id, size)}</div><div class="over" style="position:absolute;inset:0;clip-path:inset(0 0 0 50%)">${imgTag(R, id, size)}</div><div class="split" style="left:50%"></div><span class="cap">${esc(L.name)} | ${esc(R.name)}</span>`);
    paneEvents(p); view.append(p);
    const range = el("input", { type: "range", min: 0, max: 100, step: 0.1, value: 50, id: "slider" });
    range.oninput = () => { $(".over", p).style.clipPath = `inset(0 0 0 ${range.value}%)`; $(".split", p).style.left = range.value + "%"; };
    ctl.append(range);
  }
  main.append(view, el("div", { id: "metrics" }));
  $("#back").onclick = () => go("images", { img: null });
  $("#mode").onclick = () => { S.mode = S.mode === "side" ? "slider" : "side"; render(); };
  $("#zin").onclick = () => zoomAt($(".pane"), 1); $("#zout").onclick = () => zoomAt($(".pane"), -1);
  $("#z1").onclick = () => { S.zoom = { s: 1, x: 0, y: 0 }; applyZoom(); };
  $("#zfit").onclick = () => { fit($(".pane"), size); applyZoom(); };
  if (!S.zoom) fit($(".pane"), size);
  applyZoom();
  loadDetail(s, () => {
    if (gen !== COMPARE_GEN) return;
    const det = window.BENCH_IMAGES[s.id], runs = [L, R].filter(x => x.run);
    const ms = B.metrics.map(x => x[0]).filter(m => runs.some(x => (det[x.key] || {})[m]));
    $("#metrics").innerHTML = runs.length ? `<table class="metrics"><tr><th>image ${esc(id)}</th>` + ms.map(m => `<th>${esc(MNAME[m])}</th>`).join("") + "</tr>" +
      runs.map(x => `<tr><td>${esc(x.name)}</td>` + ms.map(m => { const v = ((det[x.key] || {})[m] || [])[S.img]; return `<td>${v === null || v === undefined ? "n/a" : Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(3) : +v.toPrecision(5)}</td>`; }).join("") + "</tr>").join("") + "</table>" : "";
  });
}
document.addEventListener("keydown", e => {
  if (S.view !== "images" || S.img === null || e.target.tagName === "SELECT") return;
  const s = sec(), runs = sources(s).filter(x => x.run), k = runs.findIndex(x => x.key === S.right);
  const acts = { ArrowRight: () => go("images", { img: (S.img + 1) % s.images.ids.length }),
                 ArrowLeft: () => go("images", { img: (S.img - 1 + s.images.ids.length) % s.images.ids.length }),
                 ArrowDown: () => { S.right = runs[(k + 1) % runs.length].key; render(); },
                 ArrowUp: () => { S.right = runs[(k - 1 + runs.length) % runs.length].key; render(); },
                 "+": () => zoomAt($(".pane"), 1), "-": () => zoomAt($(".pane"), -1),
                 s: () => { S.mode = S.mode === "side" ? "slider" : "side"; render(); }, Escape: () => go("images", { img: null }) };
  if (acts[e.key]) { e.preventDefault(); acts[e.key](); }
});

// ------------------------------------------------------------------------------------------- plots
function ticks(lo, hi, log) {
  if (log) {  // 1-2-5 per decade; 1..9 when that leaves fewer than two ticks
    for (const subs of [[1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
      const out = []; for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) for (const m of subs) { const v = m * 10 ** p; if (v >= lo && v <= hi) out.push(v); }
      if (out.length >= 2 || subs.length > 3) return out;
    }
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1)), n = [1, 2, 5].map(m => m * step).find(st => (hi - lo) / st <= 6) || 10 * step;
  const out = []; for (let v = Math.ceil(lo / n) * n; v <= hi + 1e-12; v += n) out.push(+v.toPrecision(6)); return out;
}
function marker(shape, x, y, c, dash) {
  const r = 5, a = `fill="${c}" stroke="#222" stroke-width="0.7" class="pt"`;
  if (shape === "square") return `<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${2 * r}" ${a}/>`;
  if (shape === "diamond") return `<polygon points="${x},${y - r - 1} ${x + r + 1},${y} ${x},${y + r + 1} ${x - r - 1},${y}" ${a}/>`;
  if (shape.startsWith("triangle")) return `<polygon points="${x},${y - r - 1} ${x + r + 1},${y + r} ${x - r - 1},${y + r}" ${a}/>`;
  return `<circle cx="${x}" cy="${y}" r="${r}" ${a}/>`;
}
function plots(main, s) {
  const metrics = B.metrics.map(x => x[0]).filter(m => s.runs.some(r => r.values[m]));
  if (!metrics.length) { main.append(el("p", {}, "No per-image metric to plot.")); return; }
  if (!metrics.includes(S.metric)) S.metric = metrics[0];
  const ctl = el("div", { class: "controls" }, `<label>y <select id="ymetric">${metrics.map(m => `<option value="${m}">${esc(MNAME[m])}</option>`).join("")}</select></label> <label>x <select id="xaxis"><option value="images_per_s">img/s (restore call)</option><option value="nfe">NFE / image</option></select></label>`);
  main.append(ctl);
  $("#ymetric").value = S.metric; $("#xaxis").value = S.x;
  $("#ymetric").onchange = e => { S.metric = e.target.value; render(); };
  $("#xaxis").onchange = e => { S.x = e.target.value; render(); };
  const pts = s.runs.filter(r => r.values[S.metric] && r[S.x] > 0), left = s.runs.filter(r => !pts.includes(r));
  const W = 720, H = 440, m = { l: 60, r: 20, t: 20, b: 44 };
  if (!pts.length) { main.append(el("p", {}, "No run has both values.")); return; }
  const xs = pts.map(r => r[S.x]), ys = pts.flatMap(r => r.values[S.metric].filter(v => v !== null));
  let [x0, x1] = [Math.min(...xs) / 1.5, Math.max(...xs) * 1.5], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.05 || 1; y0 -= pad; y1 += pad;
  const X = v => m.l + (Math.log10(v) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0)) * (W - m.l - m.r);
  const Y = v => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
  let svg = `<svg class="plot" id="tradeoff" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`;
  ticks(x0, x1, true).forEach(v => { svg += `<line x1="${X(v)}" x2="${X(v)}" y1="${m.t}" y2="${H - m.b}" stroke="#eee"/><text x="${X(v)}" y="${H - m.b + 14}" text-anchor="middle">${+v.toPrecision(3)}</text>`; });
  ticks(y0, y1, false).forEach(v => { svg += `<line x1="${m.l}" x2="${W - m.r}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/><text x="${m.l - 4}" y="${Y(v) + 4}" text-anchor="end">${v}</text>`; });
  svg += `<text x="${(W + m.l) / 2}" y="${H - 8}" text-anchor="middle">${S.x === "nfe" ? "NFE / image (log)" : "images / s of the restore call (log)"}</text>`;
  svg += `<text transform="translate(14 ${(H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(MNAME[S.metric])}: mean, 95 % interval (N = ${s.n})</text>`;
  const groups = {}; pts.forEach(r => (groups[r.label] = groups[r.label] || []).push(r));
  for (const g of Object.values(groups)) {
    g.sort((a, b) => a[S.x] - b[S.x]);
    if (g.length > 1) svg += `<polyline fill="none" stroke="${g[0].colour}" stroke-width="1.5" ${g[0].tuned ? 'stroke-dasharray="5 3"' : ""} points="${g.map(r => `${X(r[S.x])},${Y(r.values[S.metric][0])}`).join(" ")}"/>`;
  }
  pts.forEach((r, i) => {
    const [v, lo, hi] = r.values[S.metric], x = X(r[S.x]);
    if (lo !== null && hi !== null) svg += `<line x1="${x}" x2="${x}" y1="${Y(lo)}" y2="${Y(hi)}" stroke="${r.colour}" stroke-width="1.2"/>`;
    svg += `<g data-i="${i}">${marker(r.marker, x, Y(v), r.colour)}</g>`;
  });
  main.append(el("div", {}, svg + "</svg>"));
  const tip = $("#tip");
  document.querySelectorAll("#tradeoff g[data-i]").forEach(g => {
    const r = pts[+g.dataset.i], [v, lo, hi] = r.values[S.metric];
    g.addEventListener("mouseenter", e => {
      tip.textContent = `${r.label}\nsteps ${r.steps ?? "-"}, NFE/img ${r.nfe ?? "n/a"}, img/s ${r.images_per_s === null ? "n/a" : +r.images_per_s.toPrecision(3)}\n${MNAME[S.metric]} ${+v.toPrecision(5)}` + (lo !== null && hi !== null ? ` [${+lo.toPrecision(5)}, ${+hi.toPrecision(5)}] (± ${+((hi - lo) / 2).toPrecision(3)})` : "") + `\n${r.settings}`;
      tip.hidden = false; tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px";
    });
    g.addEventListener("mouseleave", () => { tip.hidden = true; });
  });
  const legend = [...new Map(s.runs.map(r => [r.label, r])).values()];
  main.append(el("p", { class: "note" }, legend.map(r => `<span class="swatch" style="background:${r.colour}"></span>${esc(r.label)}${r.tuned ? " (dashed)" : ""}`).join(" &nbsp; ")));
  if (left.length) main.append(el("p", { class: "note" }, "Not drawn (no value on this axis): " + left.map(r => esc(runName(r))).join(", ")));
}

// ------------------------------------------------------------------------------------------- start
$("#title").textContent = B.title; document.title = B.title;
B.sections.forEach((s, i) => $("#section").append(el("option", { value: i }, esc(`${s.dataset} / ${s.task}`))));
$("#section").onchange = e => { S.sec = +e.target.value; S.img = null; S.page = 0; S.filters = {}; S.zoom = null; go(S.view); };
document.querySelectorAll("#tabs button").forEach(b => { b.onclick = () => go(b.dataset.view, { img: null }); });
window.addEventListener("hashchange", () => { fromHash(); render(); });
fromHash(); render();
