"""Where the time of one restore (or forward) call goes: ``torch.profiler`` grouped into categories.

:func:`profile_call` runs ``call()`` once under ``torch.profiler`` (CPU activities, plus CUDA ones when
the call runs on a GPU), then :func:`summarize` sorts the measured time into

    convolution | groupnorm_silu | attention | matmul | elementwise | memory | other | launch_gaps

* CUDA: the **kernels** (events on the device) are categorised by name; ``launch_gaps`` = wall time of
  the call - sum of kernel times, i.e. the time the GPU sat idle (kernels of one stream do not overlap):
  Python and launch overhead, host synchronisations, CPU-side work between kernels.
* CPU: the **self CPU time** of every operator (each microsecond counted once, in the innermost op);
  ``launch_gaps`` = wall - sum of those, i.e. Python and dispatcher overhead outside any operator.

So the categories sum to the wall time by construction (a negative gap, possible on CUDA when kernels of
several streams overlap, is reported as is). Names are matched by :data:`RULES` in order (first match
wins), so an inductor kernel such as ``triton_red_fused_convolution_native_group_norm_0`` (a conv bias
fused into a GroupNorm reduction) counts as GroupNorm. :func:`write_summary` writes ``profile.json``
(every cell, the top operators/kernels with their category) and ``profile.md`` (one table per cell).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

CATEGORIES = ("convolution", "groupnorm_silu", "attention", "matmul", "elementwise", "memory", "other",
              "launch_gaps")
#: (category, regex on the lower-cased kernel / operator name), first match wins
RULES: tuple[tuple[str, re.Pattern], ...] = tuple((c, re.compile(p)) for c, p in (
    ("attention", r"attention|flash|fmha|sdpa|softmax"),
    ("groupnorm_silu", r"group_norm|groupnorm|native_group|silu|swish|sigmoid"),
    ("memory", r"memcpy|memset|copy_|nchwtonhwc|nhwctonchw|to_copy|contiguous|clone|\bcat\b|aten::cat|"
               r"catarray|concat|transpose|permute|_to_copy|aten::to\b|expand|pad"),
    ("convolution", r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|implicit_convolve|mkldnn_convolution"),
    ("matmul", r"gemm|gemv|\bmm\b|aten::mm|bmm|addmm|matmul|linear|cublas|cutlass|nvjet|sm90_xmma|triton_tem"),
    ("elementwise", r"elementwise|vectorized|triton_poi|triton_per|triton_red|aten::(add|mul|sub|div|neg|"
                    r"sqrt|exp|where|clamp|fill|zero|rsub|pow|lerp|addcmul|randn|normal|uniform|mean|sum)|"
                    r"reduce|unrolled|add|mul|fill"),
))


def categorize(name: str) -> str:
    low = name.lower()
    for cat, pattern in RULES:
        if pattern.search(low):
            return cat
    return "other"


def _device_events(prof):
    """(name, self microseconds) of CUDA kernels / memcpys, or of CPU operators when none ran on a GPU."""
    avgs = prof.key_averages()
    cuda = [(e.key, float(getattr(e, "self_device_time_total", 0.0) or 0.0)) for e in avgs
            if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    cuda = [(k, t) for k, t in cuda if t > 0]
    if cuda:
        return "cuda", cuda
    return "cpu", [(e.key, float(e.self_cpu_time_total)) for e in avgs if e.self_cpu_time_total > 0]


def summarize(prof, wall_s: float, top: int = 25) -> dict:
    """Categorised times (ms, and % of wall) of a finished profiler run of one call taking ``wall_s``."""
    kind, events = _device_events(prof)
    ms = dict.fromkeys(CATEGORIES, 0.0)
    rows = []
    for name, us in events:
        cat = categorize(name)
        ms[cat] += us / 1e3
        rows.append({"name": name[:160], "category": cat, "ms": us / 1e3})
    busy = sum(v for k, v in ms.items() if k != "launch_gaps")
    wall_ms = wall_s * 1e3
    ms["launch_gaps"] = wall_ms - busy
    rows.sort(key=lambda r: -r["ms"])
    return {
        "timed": "CUDA kernels (device time)" if kind == "cuda" else "CPU operators (self CPU time)",
        "wall_ms": wall_ms, "busy_ms": busy, "categories_ms": ms,
        "categories_pct": {k: (100.0 * v / wall_ms if wall_ms > 0 else 0.0) for k, v in ms.items()},
        "top": rows[:top], "events": len(rows),
        "rule": "launch_gaps = wall - sum(categorised times); categories sum to wall",
    }


def profile_call(call: Callable[[], object], device: torch.device, top: int = 25) -> dict:
    """Run ``call()`` once under torch.profiler (CUDA activities on a GPU) and summarise it."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with profile(activities=acts, record_shapes=False) as prof:
        t0 = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    return summarize(prof, wall, top=top)


def forward_gflop(build: Callable[[], torch.nn.Module], *inputs_shape_dtype) -> float:
    """GFLOP of one forward of the net ``build()`` makes, counted by ``torch.utils.flop_counter`` on the
    meta device (no memory, no weights; convolutions, matmuls, attention as their math form). Inputs are
    ``(shape, dtype)`` pairs; integer dtypes get zeros. METHOD.md's first number: FLOP / measured rate =
    the time floor of a forward."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = build()
        args = [torch.zeros(s, dtype=d) if not d.is_floating_point else torch.randn(s, dtype=d)
                for s, d in inputs_shape_dtype]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*args)
    return counter.get_total_flops() / 1e9


def markdown(cells: list[dict]) -> str:
    """One table per profiled cell: category, ms, % of wall; then its top operators/kernels."""
    out = ["# Profile summary (`python -m bench.perf --profile`)", "",
           "Categories sum to the call's wall time; `launch_gaps` = wall - sum of the timed kernels/ops "
           "(GPU idle time on CUDA; Python/dispatcher overhead on CPU). See bench/perf/profiling.py.", ""]
    for c in cells:
        s = c["summary"]
        out += [f"## {c['method']} | {c['mode']} | batch {c['batch']} | steps {c['steps']} | {c['device_name']}",
                "", f"wall {s['wall_ms']:.1f} ms per call; timed: {s['timed']}; {s['events']} distinct names",
                "", "| category | ms | % of wall |", "|---|---:|---:|"]
        out += [f"| {k} | {s['categories_ms'][k]:.1f} | {s['categories_pct'][k]:.1f} |" for k in CATEGORIES]
        out += ["", "| top kernel / operator | category | ms |", "|---|---|---:|"]
        out += [f"| `{r['name'][:90]}` | {r['category']} | {r['ms']:.2f} |" for r in s["top"][:12]]
        out.append("")
    return "\n".join(out)


def write_summary(cells: list[dict], directory: Path, meta: dict) -> tuple[Path, Path]:
    """``profile.json`` + ``profile.md`` in ``directory`` (atomic writes)."""
    from bench.imageio import atomic_write_bytes
    from bench.results import write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jpath, mpath = directory / "profile.json", directory / "profile.md"
    write_json(jpath, {"schema": "bench.profile/1", **meta, "cells": cells})
    atomic_write_bytes(mpath, markdown(cells).encode())
    return jpath, mpath
