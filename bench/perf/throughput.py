"""``python -m bench.perf``: throughput of the real restore code paths, random weights, several speed modes.

For each method (``unet``: the ADM prior's forward; ``ldm_unet``: the LDM-SR UNet forward at the latent
size; any ``conf/method/<name>.yaml``: the method's ``restore`` on task ``--task``, built generically, see
:mod:`bench.perf.cells`), batch and step count,
it builds the method in every speed mode with RANDOM weights of the configured architecture (no download),
warms each up (``--warmup`` calls and at least ``--warmup-seconds``; compilation happens there), then
times ``--repeats`` calls per mode with device synchronisation, interleaved across modes (repeat r of
every mode before repeat r+1, so drifting background load hits every mode alike). It reports images/s
(from the median call; ``images_per_s_best`` from the fastest), image-steps/s (= images/s x NFE/image),
NFE/image, peak memory and the device, with the speed-up against the fp32 eager run of the same cell
measured in the same invocation (the ``fp32`` mode is added when missing)::

    python -m bench.perf --device cuda --model adm_imagenet256 --ldm hub-shapes --methods unet,ddrm,gdp_x0,srldm \\
        --batch 8,32 --steps 20 --image-size 256 --modes fp32,bf16,bf16+cl+compile --out perf.json

Modes: ``<precision>[+cl][+fused][+cudnn][+mbN][+compile[=MODE]][+graph]`` with precision fp32 | bf16 |
fp16; ``cl`` = channels_last, ``fused`` = fused GroupNorm+SiLU, ``cudnn`` = cudnn.benchmark, ``mbN`` =
micro-batches of N, ``compile=MODE`` a torch.compile mode (``ro`` = ``compile=reduce-overhead``,
``autotune`` = ``compile=max-autotune-no-cudagraphs``), ``graph`` = manual CUDA-graph capture. They go
through the model config's ``speed:`` block (:class:`bench.models.speed.Precision`, the same path as a
normal run), with the CPU opt-ins (``cpu_autocast``, ``cpu_compile``) switched on because the mode was
asked for explicitly. ``--batch`` takes integers and ``auto`` (:mod:`bench.batching`'s memory model).
``--fp32-methods`` limits the fp32 baseline to some methods, ``--grad-modes`` gives the modes of methods
that back-propagate through the prior (compiling a backward is slow), ``--method-steps name=N`` overrides
``--steps`` per method. ``--profile DIR`` profiles one extra call of every cell of ``--profile-modes``
(:mod:`bench.perf.profiling`: profile.json + profile.md). The JSON is rewritten after every method, so a run
cut short keeps what it measured. ``--ldm hub-shapes`` builds diffusers ``UNet2DModel`` / ``VQModel`` with the CompVis
LDM-SR shapes (reference-implementations.md A5); the UNet has 113,622,563 parameters, equal to the
reference count of the openaimodel layout (attention only at downsample rate 8: CompVis'
``attention_resolutions [16, 8]`` are rates, and rate 16 never occurs with channel_mult 1,2,2,4).

Peak memory: on CUDA the cell's weights plus the largest ``max_memory_allocated`` rise during one timed
call (the nets of all modes stay resident, so a plain peak would count the other modes' weights); on CPU
the process's maximum RSS (a high-water mark of the whole process, never reset). Progress goes to
stderr, the table to stdout, the JSON (``--out``) is written atomically.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

from bench.models import prior as prior_mod
from bench.models.speed import COMPILE_MODES, PRECISIONS, Precision
from bench.perf.cells import BUILTIN, build_cell, method_names, method_spec, model_config, speed_block
from bench.perf.profiling import profile_call, write_summary
from bench.provenance import device_name, environment, now_iso
from bench.results import write_json

LDM_SR_UNET_PARAMETERS = 113_622_563  # reference-implementations.md A8 (openaimodel layout)
#: reference-implementations.md A9: official code on one H100 80GB, random weights (for context only)
REFERENCE_H100 = {
    "adm256_forward_fp16_b32_image_steps_per_s": 80, "adm256_forward_fp32_b32_image_steps_per_s": 66,
    "adm256_forward_bf16_sdpa_cl_compile_b32_image_steps_per_s": 168,
    "ddrm_sr4_fp16_b8_20steps_images_per_s": 3.36, "ddrm_sr4_fp16_b8_100steps_images_per_s": 0.68,
    "ddrm_sr4_fp16_b32_20steps_images_per_s": 3.90,
    "ldm_sr_unet_fp16_b128_image_steps_per_s": 1873, "ldm_sr_unet_bf16_cl_compile_b128_image_steps_per_s": 2574,
}
MODE_ALIASES = {"channels_last": "cl", "ro": "compile=reduce-overhead", "autotune": "compile=max-autotune-no-cudagraphs"}


def err(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


def parse_mode(text: str) -> dict:
    """``bf16+cl+compile`` -> {"name", "precision", "channels_last", "compile", "compile_mode", ...}."""
    parts = [MODE_ALIASES.get(p.strip().lower(), p.strip().lower()) for p in text.split("+") if p.strip()]
    if not parts or parts[0] not in PRECISIONS:
        raise ValueError(f"mode {text!r}: start with a precision ({' | '.join(PRECISIONS)}), e.g. bf16+cl+compile")
    mode = {"precision": parts[0], "channels_last": False, "compile": False, "compile_mode": None,
            "cuda_graph": False, "fused_norm": False, "cudnn_benchmark": None, "micro_batch": None}
    for part in parts[1:]:
        if part == "cl":
            mode["channels_last"] = True
        elif part == "fused":
            mode["fused_norm"] = True
        elif part == "cudnn":
            mode["cudnn_benchmark"] = True
        elif part == "graph":
            mode["cuda_graph"] = True
        elif part == "compile" or part.startswith("compile="):
            mode["compile"], cm = True, part.partition("=")[2] or None
            if cm is not None and cm not in COMPILE_MODES:
                raise ValueError(f"mode {text!r}: compile mode {cm!r} not in {list(COMPILE_MODES)}")
            mode["compile_mode"] = None if cm == "default" else cm
        elif part.startswith("mb") and part[2:].isdigit() and int(part[2:]) >= 1:
            mode["micro_batch"] = int(part[2:])
        else:
            raise ValueError(f"mode {text!r}: unknown part {part!r}; allowed: cl, fused, cudnn, mb<N>, compile, "
                             f"compile=<{'|'.join(COMPILE_MODES)}>, ro, autotune, graph")
    Precision.from_config(speed_block(mode))  # e.g. graph + reduce-overhead is refused here
    name = [mode["precision"]] + [tag for key, tag in (("channels_last", "cl"), ("fused_norm", "fused"),
                                                        ("cudnn_benchmark", "cudnn")) if mode[key]]
    name += [f"mb{mode['micro_batch']}"] if mode["micro_batch"] else []
    name += ([f"compile={mode['compile_mode']}" if mode["compile_mode"] else "compile"] if mode["compile"] else [])
    name += ["graph"] if mode["cuda_graph"] else []
    return {"name": "+".join(name), **mode}


def modes_for(method: str, args) -> list[dict]:
    """The modes a method runs in: fp32 only without an ADM prior / LDM UNet; ``--grad-modes`` for methods
    that back-propagate through the prior; fp32 added as the baseline for ``--fp32-methods``."""
    spec = {"model": True, "ldm": False} if method in BUILTIN else method_spec(method)
    if not (spec["model"] or spec["ldm"]) and method not in BUILTIN:
        return [parse_mode("fp32")]
    modes = args.modes
    if args.grad_modes is not None and method not in BUILTIN and _backprops(method):
        modes = args.grad_modes
    names = [m["name"] for m in modes]
    if method in args.fp32_methods and "fp32" not in names:
        modes = [parse_mode("fp32"), *modes]
    elif method not in args.fp32_methods:
        modes = [m for m in modes if m["name"] != "fp32"] or modes
    return modes


def _backprops(method: str) -> bool:
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from bench.perf.cells import CONF

    target = OmegaConf.load(CONF / "method" / f"{method}.yaml").method.get("_target_")
    return bool(getattr(get_class(target), "backprop_through_prior", False)) if target else False


def run_cells(method: str, batch, steps: int, args, device, caches: dict, profiles: list) -> list[dict]:
    """Every mode of one (method, batch, steps): build and warm up each, then time them interleaved
    (repeat r of every mode before repeat r+1), so drifting background load hits all modes alike."""
    cells, rows = {}, []
    for mode in modes_for(method, args):
        err(f"{method} {mode['name']} batch={batch} steps={steps}: build + warm-up ...")
        try:
            cells[mode["name"]] = build_cell(method, mode, batch, steps, args, device,
                                             caches.setdefault(mode["name"], {}))
            cells[mode["name"]].warm_up(device, args.warmup, args.warmup_seconds)
        except (RuntimeError, ValueError, TypeError) as e:  # OOM, compile failure, unsupported task: recorded
            cells.pop(mode["name"], None)
            rows.append({"method": method, "mode": mode["name"], "batch_spec": batch, "batch": batch,
                         "steps": steps, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            err(f"  failed: {rows[-1]['error']}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for _ in range(args.repeats):
        for c in cells.values():
            c.timed(device)
    for name, c in cells.items():
        rows.append(c.result(device))
        err(f"  {name}: {rows[-1]['images_per_s']:.3f} images/s, {rows[-1]['image_steps_per_s']:.2f} image-steps/s")
        if args.profile is not None and (args.profile_modes is None or name in args.profile_modes):
            summary = profile_call(c.once, device)
            profiles.append({k: c.row.get(k) for k in ("method", "mode", "batch", "steps", "task", "device_name")}
                            | {"summary": summary})
            cats = summary["categories_pct"]
            err(f"  profile {name}: " + ", ".join(f"{k} {v:.0f}%" for k, v in cats.items() if abs(v) >= 1))
    return rows


def _ints(text: str) -> list:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    try:
        out = [v if v == "auto" else int(v) for v in vals]
    except ValueError:
        out = []
    if not out or any(v != "auto" and v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers (or auto for --batch)")
    return out


def _method_steps(text: str) -> dict:
    out = {}
    for item in filter(None, (v.strip() for v in text.split(","))):
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"--method-steps {item!r}: use name=N, e.g. srldm=100")
        out[name.strip()] = int(n)
    return out


def _mode_list(ap, text: str | None):
    if text is None:
        return None
    try:
        return list({m["name"]: m for m in (parse_mode(v) for v in text.split(",") if v.strip())}.values())
    except ValueError as e:
        ap.error(str(e))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--methods", default="unet,ddrm,gdp_x0,srldm",
                    help=f"comma list of {', '.join(BUILTIN)}, conf/method names, or all (= every conf/method)")
    ap.add_argument("--model", default="adm_tiny", help="conf/model/<name>.yaml architecture (random weights)")
    ap.add_argument("--latent-model", default="latent_tiny",
                    help="conf/model/<name>.yaml latent prior for the latent solvers (latent_dps, psld, resample)")
    ap.add_argument("--ldm", default="tiny", choices=("tiny", "hub-shapes"), help="LDM-SR parts for srldm")
    ap.add_argument("--batch", type=_ints, default=[4], help="comma list, e.g. 8,32,auto")
    ap.add_argument("--steps", type=_ints, default=[20], help="comma list (sampler steps; forwards for unet)")
    ap.add_argument("--method-steps", type=_method_steps, default={}, help="per-method steps, e.g. srldm=100")
    ap.add_argument("--image-size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--modes", default="fp32,bf16,bf16+cl+compile", help="comma list of modes (see above)")
    ap.add_argument("--grad-modes", default=None, help="modes for methods that back-propagate through the prior")
    ap.add_argument("--fp32-methods", default=None, help="methods that get the fp32 baseline (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per cell before timing")
    ap.add_argument("--warmup-seconds", type=float, default=2.0,
                    help="keep warming up until this long has passed (CPU allocators and clocks settle)")
    ap.add_argument("--task", default="sr4", help="conf/task/<name>.yaml for the methods")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--profile", type=Path, default=None, help="profile each cell once; summary into this dir")
    ap.add_argument("--profile-modes", default=None, help="only profile these modes (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path (atomic write)")
    args = ap.parse_args(argv)
    known = [*BUILTIN, *method_names()]
    items = [m.strip() for m in args.methods.split(",") if m.strip()]
    expanded = [x for m in items for x in ([k for k in known if k not in BUILTIN] if m == "all" else [m])]
    args.methods = list(dict.fromkeys(expanded))  # "all" = every conf/method/*.yaml; duplicates dropped
    bad = [m for m in args.methods if m not in known]
    if bad:
        ap.error(f"--methods: unknown {bad}; choose from {known}")
    args.modes = _mode_list(ap, args.modes)
    args.grad_modes = _mode_list(ap, args.grad_modes)
    args.profile_modes = None if args.profile_modes is None else [m["name"] for m in _mode_list(ap, args.profile_modes)]
    args.fp32_methods = args.methods if args.fp32_methods is None else [
        m.strip() for m in args.fp32_methods.split(",") if m.strip()]
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    if args.image_size is None:
        args.image_size = int(model_config(args.model, parse_mode("fp32"))["image_size"])
    return args


def table(rows: list[dict]) -> str:
    cols = [("method", "{}"), ("mode", "{}"), ("batch", "{}"), ("steps", "{}"), ("image_steps_per_s", "{:.2f}"),
            ("images_per_s", "{:.3f}"), ("images_per_s_best", "{:.3f}"), ("speedup_vs_fp32", "{:.2f}x"),
            ("nfe_per_image", "{}"),
            ("peak_memory_mb", "{:.0f}"), ("device_name", "{}")]
    cells = [[c for c, _ in cols]]
    for r in rows:
        if r.get("error"):
            cells.append([str(r.get(c, "")) for c, _ in cols[:4]] + [f"ERROR: {r['error']}"] + [""] * 6)
        else:
            cells.append([f.format(r[c]) if r.get(c) is not None else "-" for c, f in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def _speedups(rows: list[dict]) -> None:
    base = {(r["method"], str(r.get("batch_spec")), r["steps"]): r for r in rows
            if r["mode"] == "fp32" and not r.get("error")}
    for r in rows:
        b = base.get((r["method"], str(r.get("batch_spec")), r["steps"]))
        ok = b is not None and not r.get("error")
        r["speedup_vs_fp32"] = r["images_per_s"] / b["images_per_s"] if ok else None
        r["speedup_vs_fp32_best"] = r["images_per_s_best"] / b["images_per_s_best"] if ok else None


def _write(args, dev, rows, profiles, complete: bool) -> None:
    meta = {"created_at": now_iso(), "command": ["python", "-m", "bench.perf", *sys.argv[1:]],
            "device": str(dev), "device_name": device_name(dev), "complete": complete}
    if args.out is not None:
        write_json(args.out, {
            "schema": "bench.perf/2", **meta, "environment": environment(dev),
            "torch_threads": torch.get_num_threads(),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "settings": {"methods": args.methods, "model": args.model, "ldm": args.ldm, "batch": args.batch,
                         "steps": args.steps, "method_steps": args.method_steps, "image_size": args.image_size,
                         "modes": args.modes, "grad_modes": args.grad_modes, "fp32_methods": args.fp32_methods,
                         "repeats": args.repeats, "warmup": args.warmup,
                         "warmup_seconds": args.warmup_seconds, "task": args.task},
            "baseline": "fp32 eager (mode fp32) of the same method/batch/steps in this invocation",
            "weights": "random (architecture only; outputs NOT meaningful)",
            "reference_ldm_sr_unet_parameters": LDM_SR_UNET_PARAMETERS,
            "reference_h100_official": REFERENCE_H100, "results": rows})
    if args.profile is not None and profiles:
        write_summary(profiles, args.profile, meta)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here; use --device cpu", file=sys.stderr)
        return 2
    rows, caches, profiles = [], {}, []
    for method in args.methods:
        for batch in args.batch:
            for steps in ([args.method_steps[method]] if method in args.method_steps else args.steps):
                rows += run_cells(method, batch, steps, args, dev, caches, profiles)
        _speedups(rows)
        _write(args, dev, rows, profiles, complete=False)  # a run cut short keeps what it measured
    caches.clear()
    prior_mod.clear_cache()
    gc.collect()
    _speedups(rows)
    print(table(rows))
    _write(args, dev, rows, profiles, complete=True)
    if args.out is not None:
        err(f"wrote {args.out}")
    return 0

