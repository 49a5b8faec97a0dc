"""Markdown summary of one h200_round.sh run against issue 16's targets: ``summarize_round.py OUT LOGDIR``.

Reads what the round wrote (perf_adm256.json, perf_srldm.json, profile/profile.json, harness.json,
cuda_checks.json, logs/stages.txt, logs/junit.xml) and prints the tables docs/performance.md needs. Every
missing piece is said so ("not measured: <why>"), never filled in.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TARGETS = {"ddrm_img_s": 9.8, "srldm_img_s": 25.0, "gdp_per_step_within": 0.10, "harness_outside": 0.10}


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def perf_table(data: dict | None, title: str) -> list[str]:
    if not data:
        return [f"## {title}", "", "not measured: no JSON (stage skipped, failed or timed out; see logs)", ""]
    env = data.get("environment", {})
    out = [f"## {title}", "", f"device: {data.get('device_name')}; torch {env.get('packages', {}).get('torch')} "
           f"(CUDA {env.get('torch_cuda')}); complete: {data.get('complete')}; settings: "
           f"{json.dumps({k: data['settings'].get(k) for k in ('batch', 'steps', 'method_steps', 'repeats')})}", "",
           "| method | mode | batch | steps | img/s | img-steps/s | net TFLOP/s | NFE/img | peak MiB | vs fp32 |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["results"]:
        if r.get("error"):
            out.append(f"| {r['method']} | {r['mode']} | {r.get('batch')} | {r.get('steps')} | ERROR: "
                       f"{r['error'][:80]} | | | | | |")
            continue
        sp = f"{r['speedup_vs_fp32']:.2f}x" if r.get("speedup_vs_fp32") else "-"
        gflop = (r.get("architecture") or {}).get("forward_gflop_per_image")
        tf = f"{r['image_steps_per_s'] * gflop / 1e3:.3g}" if gflop else "-"
        out.append(f"| {r['method']} | {r['mode']} | {r['batch']} | {r['steps']} | {r['images_per_s']:.3f} | "
                   f"{r['image_steps_per_s']:.1f} | {tf} | {r['nfe_per_image']} | {r['peak_memory_mb']:.0f} | {sp} |")
    return out + [""]


def best(data, method):
    rows = [r for r in (data or {}).get("results", []) if r["method"] == method and not r.get("error")]
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def targets(adm, ldm, harness) -> list[str]:
    out = ["## Targets (issue 16)", "", "| target | measured | met |", "|---|---|---|"]
    d = best(adm, "ddrm")
    out.append(f"| DDRM sr4 20 steps >= {TARGETS['ddrm_img_s']} img/s | "
               + (f"{d['images_per_s']:.2f} img/s ({d['mode']}, batch {d['batch']}) | "
                  f"{'yes' if d['images_per_s'] >= TARGETS['ddrm_img_s'] else 'no'} |" if d else "not measured | - |"))
    g = [r for r in (adm or {}).get("results", []) if r["method"] == "gdp_x0" and not r.get("error")]
    if d and g:
        same = {r["mode"]: r for r in (adm or {})["results"] if r["method"] == "ddrm" and not r.get("error")}
        pairs = [(r, same[r["mode"]]) for r in g if r["mode"] in same]
        txt = "; ".join(f"{r['mode']}: {100 * (s['image_steps_per_s'] / r['image_steps_per_s'] - 1):+.1f}%"
                        for r, s in pairs)
        ok = all(s["image_steps_per_s"] / r["image_steps_per_s"] - 1 <= TARGETS["gdp_per_step_within"]
                 for r, s in pairs)
        out.append(f"| GDP-x0 per-step cost within 10% of DDRM | {txt} | {'yes' if ok and pairs else 'no'} |")
    else:
        out.append("| GDP-x0 per-step cost within 10% of DDRM | not measured | - |")
    s = best(ldm, "srldm")
    out.append(f"| SRLDM 100 steps >= {TARGETS['srldm_img_s']} img/s | "
               + (f"{s['images_per_s']:.2f} img/s ({s['mode']}) | "
                  f"{'yes' if s['images_per_s'] >= TARGETS['srldm_img_s'] else 'no'} |" if s else "not measured | - |"))
    if harness:
        out.append(f"| time outside restore <= 10% (CLI, {harness['images']} images) | "
                   f"{100 * harness['outside_fraction']:.1f}% ({harness['outside_seconds']:.1f} s of "
                   f"{harness['restore_seconds_all']:.1f} s) | {'yes' if harness['met'] else 'no'} |")
    else:
        out.append("| time outside restore <= 10% | not measured | - |")
    return out + [""]


def profile_lines(prof) -> list[str]:
    if not prof:
        return ["## Profile", "", "not measured", ""]
    out = ["## Profile (% of the call's wall time)", ""]
    cats = list(prof["cells"][0]["summary"]["categories_pct"])
    out += ["| method | mode | batch | " + " | ".join(cats) + " |", "|---|---|---|" + "---:|" * len(cats)]
    for c in prof["cells"]:
        p = c["summary"]["categories_pct"]
        out.append(f"| {c['method']} | {c['mode']} | {c['batch']} | " + " | ".join(f"{p[k]:.1f}" for k in cats) + " |")
    return out + [""]


def tests_lines(log: Path) -> list[str]:
    out = ["## Test suite", ""]
    junit = log / "junit.xml"
    if not junit.exists():
        return out + ["not run to completion (no junit.xml); see logs/tests.log", ""]
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    a = suite.attrib
    out.append(f"tests {a.get('tests')}, failures {a.get('failures')}, errors {a.get('errors')}, "
               f"skipped {a.get('skipped')}, {float(a.get('time', 0)):.0f} s")
    bad = [f"{tc.get('classname')}::{tc.get('name')}" for tc in suite.iter("testcase")
           if tc.find("failure") is not None or tc.find("error") is not None]
    cuda = [tc for tc in suite.iter("testcase") if "cuda" in tc.get("name", "").lower()]
    ran = [tc for tc in cuda if tc.find("skipped") is None]
    out.append(f"CUDA-named tests: {len(ran)} ran of {len(cuda)}; failing: {bad[:30] or 'none'}")
    return out + [""]


def main() -> int:
    out, log = Path(sys.argv[1]), Path(sys.argv[2])
    adm, ldm = load(out / "perf_adm256.json"), load(out / "perf_srldm.json")
    harness, checks, prof = load(out / "harness.json"), load(out / "cuda_checks.json"), load(out / "profile" / "profile.json")
    lines = ["# issue 16 device round: summary", ""]
    if adm and str(adm.get("device", "")).startswith("cpu"):
        lines += ["**CPU dry run** (adm_tiny, 32 px, 2 steps, no compile): checks the script's plumbing only; "
                  "the targets below are GPU targets and do not apply to these numbers.", ""]
    lines += targets(adm, ldm, harness)
    lines += perf_table(adm, "ADM-256 methods (bench.perf, random weights, sr4)")
    ceil = (checks or {}).get("ceilings", {})
    if ceil.get("bf16_matmul_flop_per_s"):
        lines += [f"Ceilings measured in this round: bf16 matmul {ceil['bf16_matmul_flop_per_s'] / 1e12:.0f} TFLOP/s, "
                  f"device copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write). net TFLOP/s = "
                  "image-steps/s x the ADM forward's FLOP (flop_counter, meta device).", ""]
    lines += perf_table(ldm, "SRLDM / DDRM-SRLDM (CompVis LDM-SR shapes)")
    lines += profile_lines(prof)
    if harness:
        lines += ["## Harness overhead", "", "```", json.dumps(harness, indent=1, default=str), "```", ""]
    if checks:
        lines += ["## CUDA checks", "", "```", json.dumps({k: v for k, v in checks.items() if k != "environment"},
                                                          indent=1, default=str)[:6000], "```", ""]
    lines += tests_lines(log)
    stages = log / "stages.txt"
    lines += ["## Stages", "", "```", stages.read_text() if stages.exists() else "(none)", "```"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
