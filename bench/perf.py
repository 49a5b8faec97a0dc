"""``python -m bench.perf``: throughput of the real restore code paths, random weights, several speed modes.

For each method (``unet``: the ADM prior's forward; ``ldm_unet``: the LDM-SR UNet forward at the latent
size; ``ddrm``, ``gdp_x0``, ``srldm``: the methods' ``restore`` on task ``--task``), batch and step count,
it builds the method in every speed mode with RANDOM weights of the configured architecture (no download),
warms each up (``--warmup`` calls and at least ``--warmup-seconds``; compilation happens there), then
times ``--repeats`` calls per mode with device synchronisation, interleaved across modes (repeat r of
every mode before repeat r+1, so drifting background load hits every mode alike). It reports images/s
(from the median call; ``images_per_s_best`` from the fastest), image-steps/s (= images/s x NFE/image),
NFE/image, peak memory and the device, with the speed-up against the fp32 eager run of the same cell
measured in the same invocation (the ``fp32`` mode is added when missing)::

    python -m bench.perf --device cuda --model adm_imagenet256 --ldm hub-shapes --methods unet,ddrm,gdp_x0,srldm \\
        --batch 8,32 --steps 20 --image-size 256 --modes fp32,bf16,bf16+cl+compile --out perf.json

Modes: ``<precision>[+cl][+compile]`` with precision fp32 | bf16 | fp16; ``cl`` = channels_last. They go
through the model config's ``speed:`` block (:class:`bench.models.prior.Precision`, the same path as a
normal run), with the CPU opt-ins (``cpu_autocast``, ``cpu_compile``) switched on because the mode was
asked for explicitly. ``--ldm hub-shapes`` builds diffusers ``UNet2DModel`` / ``VQModel`` with the CompVis
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
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench import seeding
from bench.models import prior as prior_mod
from bench.models.prior import PRECISIONS, FastForward, Precision, apply_speed, load_prior
from bench.paths import conf_dir
from bench.provenance import device_name, environment, now_iso
from bench.results import write_json

CONF = conf_dir()
METHODS = ("unet", "ldm_unet", "ddrm", "gdp_x0", "srldm")
LDM_SR_UNET_PARAMETERS = 113_622_563  # reference-implementations.md A8 (openaimodel layout)
#: reference-implementations.md A9: official code on one H100 80GB, random weights (for context only)
REFERENCE_H100 = {
    "adm256_forward_fp16_b32_image_steps_per_s": 80, "adm256_forward_fp32_b32_image_steps_per_s": 66,
    "adm256_forward_bf16_sdpa_cl_compile_b32_image_steps_per_s": 168,
    "ddrm_sr4_fp16_b8_20steps_images_per_s": 3.36, "ddrm_sr4_fp16_b8_100steps_images_per_s": 0.68,
    "ddrm_sr4_fp16_b32_20steps_images_per_s": 3.90,
    "ldm_sr_unet_fp16_b128_image_steps_per_s": 1873, "ldm_sr_unet_bf16_cl_compile_b128_image_steps_per_s": 2574,
}


def err(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


def parse_mode(text: str) -> dict:
    """``bf16+cl+compile`` -> {"name", "precision", "channels_last", "compile"}."""
    parts = [p.strip().lower() for p in text.split("+") if p.strip()]
    if not parts or parts[0] not in PRECISIONS:
        raise ValueError(f"mode {text!r}: start with a precision ({' | '.join(PRECISIONS)}), e.g. bf16+cl+compile")
    extra = set(parts[1:])
    bad = extra - {"cl", "channels_last", "compile"}
    if bad:
        raise ValueError(f"mode {text!r}: unknown part(s) {sorted(bad)}; allowed: cl, compile")
    cl, comp = bool(extra & {"cl", "channels_last"}), "compile" in extra
    name = parts[0] + ("+cl" if cl else "") + ("+compile" if comp else "")
    return {"name": name, "precision": parts[0], "channels_last": cl, "compile": comp}


def speed_block(mode: dict) -> dict:
    return {"precision": mode["precision"], "channels_last": mode["channels_last"], "compile": mode["compile"],
            "cpu_autocast": True, "cpu_compile": True}


def model_config(name: str, mode: dict) -> dict:
    """``conf/model/<name>.yaml`` with random weights (asset: null) and the mode's speed block."""
    path = CONF / "model" / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
        raise ValueError(f"--model {name!r}: no {path}; available: {names}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {**cfg, "asset": None, "speed": speed_block(mode)}


class SpeedUNet(torch.nn.Module):
    """A diffusers UNet2DModel called through :class:`FastForward` (float32 ``.sample``)."""

    def __init__(self, unet: torch.nn.Module, forward: FastForward | None):
        super().__init__()
        self.unet, self.fast = unet, forward

    @property
    def config(self):
        return self.unet.config

    def forward(self, z, t):
        return self.unet(z, t) if self.fast is None else self.fast(z, t)


def ldm_parts(kind: str, device, mode: dict):
    """(LDMSR with a :class:`SpeedUNet`, speed settings); ``kind`` tiny | hub-shapes, random weights."""
    from diffusers import UNet2DModel, VQModel

    from bench.models.ldm import HUB_SCHEDULER_CONFIG, LDMSR, _frozen, tiny_ldm_sr

    if kind == "tiny":
        ldm = tiny_ldm_sr(0, "cpu")
    elif kind == "hub-shapes":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = UNet2DModel(  # CompVis bsr_sr: model_channels 160, mult 1,2,2,4, attention at rate 8
                sample_size=64, in_channels=6, out_channels=3, layers_per_block=2,
                block_out_channels=(160, 320, 320, 640), attention_head_dim=32, norm_num_groups=32,
                down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"))
            vqvae = VQModel(  # ch 128, ch_mult 1,2,4, 2 res blocks, z 3, n_embed 8192
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512),
                layers_per_block=2, latent_channels=3, num_vq_embeddings=8192, vq_embed_dim=3,
                norm_num_groups=32, sample_size=256)
        from diffusers import DDIMScheduler

        ldm = LDMSR(_frozen(unet), _frozen(vqvae), dict(DDIMScheduler(**HUB_SCHEDULER_CONFIG).config),
                    origin="hub-shapes-random(seed=0)", meta={"meaningful": False})
    else:
        raise ValueError(f"--ldm {kind!r}: use tiny | hub-shapes")
    ldm.to(device)
    fast, settings = apply_speed(ldm.unet, Precision.from_config(speed_block(mode)), device)
    ldm.unet = SpeedUNet(ldm.unet, fast)
    return ldm, settings


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Cell:
    """One (method, mode, batch, steps) cell: ``call(prepare())`` is one timed restore (or ``steps`` forwards)."""

    def __init__(self, row: dict, prepare, call, method_obj=None, weights_mb: float = 0.0):
        self.row, self.prepare, self.call, self.method_obj, self.weights_mb = row, prepare, call, method_obj, weights_mb
        self.times: list[float] = []
        self.extra_mb = 0.0  # CUDA: max over timed calls of (peak during the call - allocated before it)

    def warm_up(self, device, warmup: int, warmup_seconds: float) -> None:
        """``warmup`` untimed calls, more until ``warmup_seconds`` have passed (at most 100 calls)."""
        t_start, n = time.perf_counter(), 0
        while n < warmup or (n < 100 and time.perf_counter() - t_start < warmup_seconds):
            self.call(self.prepare())
            _sync(device)
            n += 1
        self.row["warmup_calls"] = n

    def timed(self, device) -> None:
        args = self.prepare()
        _sync(device)
        if device.type == "cuda":
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        self.call(args)
        _sync(device)
        self.times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            self.extra_mb = max(self.extra_mb, (torch.cuda.max_memory_allocated(device) - before) / 2**20)

    def result(self, device) -> dict:
        r = self.row
        if self.method_obj is not None:
            r["nfe_per_image"] = self.method_obj.last_nfe
        med = statistics.median(self.times)
        r.update(seconds=self.times, seconds_median=med, images_per_s=r["batch"] / med,
                 images_per_s_best=r["batch"] / min(self.times))  # best call: least disturbed by other load
        r["image_steps_per_s"] = r["images_per_s"] * r["nfe_per_image"]
        if device.type == "cuda":
            r["peak_memory_mb"], r["memory_kind"] = self.weights_mb + self.extra_mb, "cuda_weights_plus_call_peak"
        else:
            r["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            r["memory_kind"] = "process_max_rss"
        return r


def _mb(module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


def build_cell(method: str, mode: dict, batch: int, steps: int, args, device, cache: dict) -> Cell:
    """Build one cell; priors / LDM parts are cached per mode in ``cache`` (random weights)."""
    from bench.cli import build_task

    size = args.image_size
    ids = [f"perf{i}" for i in range(batch)]
    gen = torch.Generator().manual_seed(0)
    if method in ("unet", "ddrm", "gdp_x0"):
        if "prior" not in cache:
            cache["prior"] = load_prior(model_config(args.model, mode), device)
        prior = cache["prior"]
        settings, weights = prior.info["speed"], _mb(prior.net)
        arch = {"model": args.model, "parameters": prior.info["parameters"]}
    else:
        if "ldm" not in cache:
            cache["ldm"] = ldm_parts(args.ldm, device, mode)
        ldm, settings = cache["ldm"]
        weights = _mb(ldm.unet) + (_mb(ldm.vqvae) if method == "srldm" else 0.0)
        arch = {"ldm": args.ldm, **{k: v for k, v in ldm.describe().items() if k.endswith("parameters")}}
    row = {"method": method, "mode": mode["name"], "precision": settings["precision"],
           "autocast": settings["autocast"], "channels_last": settings["channels_last"],
           "compile": settings["compile"], "batch": batch, "steps": steps, "image_size": size,
           "task": None, "nfe_per_image": steps, "device_name": device_name(device), "architecture": arch,
           "notes": settings["notes"]}

    if method in ("unet", "ldm_unet"):
        if method == "unet":
            shape, fn = (batch, 3, size, size), prior.model_output
        else:
            lat = size // ldm.scale_factor
            shape, fn = (batch, ldm.unet.config.in_channels, lat, lat), ldm.unet
        x = torch.randn(shape, generator=gen).to(device)
        t = torch.full((batch,), 500, device=device, dtype=torch.long)

        def forwards(_):
            with torch.no_grad():
                for _ in range(steps):
                    fn(x, t)
        return Cell(row, lambda: None, forwards, weights_mb=weights)

    tcfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / f"{args.task}.yaml"), resolve=True)
    task = build_task(tcfg)
    if method == "ddrm":
        from bench.methods.ddrm import DDRM
        m = DDRM(model=model_config(args.model, mode), steps=steps)
    elif method == "gdp_x0":
        from bench.methods.gdp import GDP
        m = GDP(model=model_config(args.model, mode), steps=steps, variant="x0")
    else:
        from bench.methods.srldm import SRLDM
        m = SRLDM(ldm={"source": "tiny"}, steps=steps)
        m.ldm = ldm  # setup keeps an attached model
    reason = m.unsupported_reason(task)
    if reason:
        raise ValueError(reason)
    m.setup(device)  # the prior comes from load_prior's per-process cache (built above)
    deg = task.build(size, device, 0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade", device))
    row["task"] = args.task

    def restore(gens):
        m.restore(y, deg, gens)
    return Cell(row, lambda: seeding.make_generators(0, ids, "restore", device), restore, m, weights)


def run_cells(method: str, batch: int, steps: int, args, device, caches: dict) -> list[dict]:
    """Every mode of one (method, batch, steps): build and warm up each, then time them interleaved
    (repeat r of every mode before repeat r+1), so drifting background load hits all modes alike."""
    cells, rows = {}, []
    for mode in args.modes:
        err(f"{method} {mode['name']} batch={batch} steps={steps}: build + warm-up ...")
        try:
            cells[mode["name"]] = build_cell(method, mode, batch, steps, args, device,
                                             caches.setdefault(mode["name"], {}))
            cells[mode["name"]].warm_up(device, args.warmup, args.warmup_seconds)
        except (RuntimeError, ValueError) as e:  # OOM, compile failure, unsupported task: recorded
            cells.pop(mode["name"], None)
            rows.append({"method": method, "mode": mode["name"], "batch": batch, "steps": steps,
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            err(f"  failed: {rows[-1]['error']}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for _ in range(args.repeats):
        for c in cells.values():
            c.timed(device)
    for name, c in cells.items():
        rows.append(c.result(device))
        err(f"  {name}: {rows[-1]['images_per_s']:.3f} images/s, {rows[-1]['image_steps_per_s']:.2f} image-steps/s")
    return rows


def _ints(text: str) -> list[int]:
    vals = [int(v) for v in text.split(",") if v.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--methods", default="unet,ddrm,gdp_x0,srldm", help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--model", default="adm_tiny", help="conf/model/<name>.yaml architecture (random weights)")
    ap.add_argument("--ldm", default="tiny", choices=("tiny", "hub-shapes"), help="LDM-SR parts for srldm")
    ap.add_argument("--batch", type=_ints, default=[4], help="comma list, e.g. 8,32")
    ap.add_argument("--steps", type=_ints, default=[20], help="comma list (sampler steps; forwards for unet)")
    ap.add_argument("--image-size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--modes", default="fp32,bf16,bf16+cl+compile", help="comma list of prec[+cl][+compile]")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per cell before timing")
    ap.add_argument("--warmup-seconds", type=float, default=2.0,
                    help="keep warming up until this long has passed (CPU allocators and clocks settle)")
    ap.add_argument("--task", default="sr4", help="conf/task/<name>.yaml for the methods")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path (atomic write)")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {bad}; choose from {list(METHODS)}")
    try:
        modes = [parse_mode(m) for m in args.modes.split(",") if m.strip()]
    except ValueError as e:
        ap.error(str(e))
    if "fp32" not in [m["name"] for m in modes]:
        modes.insert(0, parse_mode("fp32"))  # the baseline the ratios are taken against
    args.modes = list({m["name"]: m for m in modes}.values())
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    if args.image_size is None:
        args.image_size = int(model_config(args.model, args.modes[0])["image_size"])
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here; use --device cpu", file=sys.stderr)
        return 2
    rows, caches = [], {}
    for method in args.methods:
        for batch in args.batch:
            for steps in args.steps:
                rows += run_cells(method, batch, steps, args, dev, caches)
    caches.clear()
    prior_mod.clear_cache()
    gc.collect()
    base = {(r["method"], r["batch"], r["steps"]): r for r in rows if r["mode"] == "fp32" and not r.get("error")}
    for r in rows:
        b = base.get((r["method"], r["batch"], r["steps"]))
        ok = b is not None and not r.get("error")
        r["speedup_vs_fp32"] = r["images_per_s"] / b["images_per_s"] if ok else None
        r["speedup_vs_fp32_best"] = r["images_per_s_best"] / b["images_per_s_best"] if ok else None
    print(table(rows))
    if args.out is not None:
        write_json(args.out, {
            "schema": "bench.perf/1", "created_at": now_iso(), "command": ["python", "-m", "bench.perf", *sys.argv[1:]],
            "device": str(dev), "device_name": device_name(dev), "environment": environment(dev),
            "torch_threads": torch.get_num_threads(),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
            "settings": {"methods": args.methods, "model": args.model, "ldm": args.ldm, "batch": args.batch,
                         "steps": args.steps, "image_size": args.image_size, "modes": args.modes,
                         "repeats": args.repeats, "warmup": args.warmup,
                         "warmup_seconds": args.warmup_seconds, "task": args.task},
            "baseline": "fp32 eager (mode fp32) of the same method/batch/steps in this invocation",
            "weights": "random (architecture only; outputs NOT meaningful)",
            "reference_ldm_sr_unet_parameters": LDM_SR_UNET_PARAMETERS,
            "reference_h100_official": REFERENCE_H100, "results": rows})
        err(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
