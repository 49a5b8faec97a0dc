"""The cells that ``python -m bench.perf`` times: one (method, speed mode, batch, steps) each.

Methods are built GENERICALLY from ``conf/method/<name>.yaml`` (any file there, including ones added
later): the YAML is resolved with ``model`` = the random-weights model config of ``--model`` carrying the
mode's ``speed:`` block (so a method config with ``model: ${model}`` gets it), ``steps`` = the cell's
steps (where the YAML has a ``steps`` value) and ``task`` = the task config; then ``method`` is
instantiated like the CLI does. A method with an ``ldm:`` block (srldm, ddrm_srldm) gets the cached LDM-SR
parts of ``--ldm`` (tiny | hub-shapes) with the mode's speed settings on its UNet. Methods that use
neither an ADM prior nor an LDM UNet (bicubic, dgp, zero_dce) run in fp32 only: speed modes do not apply.
Latent solvers (latent_dps, psld, resample: a :class:`~bench.methods.latent_method.LatentMethod`) run on the
latent prior of ``--latent-model`` (default ``latent_tiny``, random weights) at its image size, in fp32 only
(the latent prior has no speed block).
Two built-in cells time the bare networks: ``unet`` (the ADM prior's forward) and ``ldm_unet`` (the LDM-SR
UNet at the latent size), ``steps`` forwards per call.
"""

from __future__ import annotations

import functools
import resource
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from bench import seeding
from bench.batching import resolve_batch_size
from bench.methods.latent_method import LatentMethod
from bench.models.latent import LATENT_KINDS
from bench.models.prior import load_prior
from bench.models.speed import FastForward, Precision, apply_speed
from bench.perf.profiling import forward_gflop
from bench.paths import conf_dir
from bench.provenance import device_name

CONF = conf_dir()  # the checkout's conf/ or the installed copy
BUILTIN = ("unet", "ldm_unet")


def method_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def speed_block(mode: dict) -> dict:
    keys = ("precision", "channels_last", "compile", "compile_mode", "cuda_graph", "fused_norm",
            "cudnn_benchmark", "micro_batch")
    return {**{k: mode[k] for k in keys}, "cpu_autocast": True, "cpu_compile": True}


def model_config(name: str, mode: dict) -> dict:
    """``conf/model/<name>.yaml`` with random weights (asset: null) and the mode's speed block."""
    path = CONF / "model" / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
        raise ValueError(f"--model {name!r}: no {path}; available: {names}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {**cfg, "asset": None, "speed": speed_block(mode)}


def latent_model_config(name: str) -> dict:
    """``conf/model/<name>.yaml`` for the latent solvers, as written (a latent prior reads no speed block)."""
    cfg = model_config(name, {"precision": "fp32"} | dict.fromkeys(
        ("channels_last", "compile", "compile_mode", "cuda_graph", "fused_norm", "cudnn_benchmark", "micro_batch")))
    if cfg.get("kind") not in LATENT_KINDS:
        raise ValueError(f"--latent-model {name!r} is a {cfg.get('kind')!r} model; the latent solvers need one of "
                         f"kind {list(LATENT_KINDS)}, e.g. --latent-model latent_tiny")
    return {k: v for k, v in cfg.items() if k not in ("asset", "speed")}


def method_spec(name: str) -> dict:
    """What a method config uses: {"model": refers to ${model}, "ldm": has an ldm block, "latent": a latent
    solver (its class is a LatentMethod: it needs a latent prior)}."""
    raw = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    node = OmegaConf.to_container(raw.get("method", {}), resolve=False)
    text = repr(node)
    target = node.get("_target_") if isinstance(node, dict) else None
    latent = bool(target) and issubclass(get_class(target), LatentMethod)
    return {"model": "${model" in text and not latent, "ldm": isinstance(node, dict) and "ldm" in node,
            "latent": latent}


def build_method(name: str, model_cfg: dict, steps: int, task_cfg: dict):
    """Instantiate ``conf/method/<name>.yaml`` as the CLI would (see the module docstring)."""
    from bench.cli import _instantiate, _strip

    raw = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    cfg = OmegaConf.merge(raw, {"model": model_cfg, "task": task_cfg})
    if cfg.get("steps") is not None:
        cfg.steps = steps
    node = OmegaConf.to_container(cfg, resolve=True)["method"]
    if "ldm" in node:
        node["ldm"] = {"source": "tiny", "local_dir": None, "seed": 0}  # replaced by the cached parts
    m = _instantiate(_strip(node, "name"))
    m.name = node["name"]
    return m


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


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Cell:
    """One (method, mode, batch, steps) cell: ``call(prepare())`` is one timed restore (or ``steps`` forwards)."""

    def __init__(self, row: dict, prepare, call, method_obj=None, weights_mb: float = 0.0, forward=None):
        self.row, self.prepare, self.call, self.method_obj, self.weights_mb = row, prepare, call, method_obj, weights_mb
        self.forward = forward  # the FastForward in use (CUDA-graph statistics), or None
        self.times: list[float] = []
        self.extra_mb = 0.0  # CUDA: max over timed calls of (peak during the call - allocated before it)

    def once(self) -> None:
        self.call(self.prepare())

    def warm_up(self, device, warmup: int, warmup_seconds: float) -> None:
        """``warmup`` untimed calls, more until ``warmup_seconds`` have passed (at most 100 calls)."""
        t_start, n = time.perf_counter(), 0
        while n < warmup or (n < 100 and time.perf_counter() - t_start < warmup_seconds):
            self.once()
            sync(device)
            n += 1
        self.row["warmup_calls"] = n
        self.row["warmup_seconds"] = time.perf_counter() - t_start

    def timed(self, device) -> None:
        args = self.prepare()
        sync(device)
        if device.type == "cuda":
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        self.call(args)
        sync(device)
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
        graph = getattr(self.forward, "graph", None)
        if graph is not None:
            r["cuda_graph_stats"] = graph.describe()
        if device.type == "cuda":
            r["peak_memory_mb"], r["memory_kind"] = self.weights_mb + self.extra_mb, "cuda_weights_plus_call_peak"
        else:
            r["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            r["memory_kind"] = "process_max_rss"
        return r


def _mb(module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


@functools.lru_cache(maxsize=8)
def adm_gflop(model: str, size: int) -> float:
    """GFLOP of one ADM forward of ``conf/model/<model>.yaml`` per image at ``size`` px (meta device)."""
    from bench.models.adm_unet import create_model

    arch = model_config(model, {"precision": "fp32", "channels_last": False, "compile": False, "compile_mode": None,
                                "cuda_graph": False, "fused_norm": False, "cudnn_benchmark": None,
                                "micro_batch": None})["arch"]
    return forward_gflop(lambda: create_model(**arch), ((1, 3, size, size), torch.float32), ((1,), torch.long))


def _batch(spec, target, device, size: int) -> tuple[int, dict | None]:
    """An int batch passes through; "auto" is resolved by bench.batching for ``target`` (a method)."""
    if spec != "auto":
        return int(spec), None
    return resolve_batch_size("auto", target, 10**6, device, size)  # perf has no dataset: the cap applies


def build_cell(method: str, mode: dict, batch, steps: int, args, device, cache: dict) -> Cell:
    """Build one cell; priors / LDM parts are cached per mode in ``cache`` (random weights)."""
    from bench.cli import build_task

    size, gen = args.image_size, torch.Generator().manual_seed(0)
    spec = {"model": True, "ldm": False, "latent": False} if method == "unet" else (
        {"model": False, "ldm": True, "latent": False} if method == "ldm_unet" else method_spec(method))
    settings, weights, arch, fast = {"precision": "fp32", "autocast": "none", "channels_last": False,
                                     "compile": False, "notes": ["speed modes do not apply"]}, 0.0, {}, None
    if spec["model"]:
        if "prior" not in cache:
            cache["prior"] = load_prior(model_config(args.model, mode), device)
        prior = cache["prior"]
        settings, weights, fast = prior.info["speed"], _mb(prior.net), prior.forward
        arch = {"model": args.model, "parameters": prior.info["parameters"],
                "forward_gflop_per_image": adm_gflop(args.model, size)}
    if spec["ldm"]:
        if "ldm" not in cache:
            cache["ldm"] = ldm_parts(args.ldm, device, mode)
        ldm, settings = cache["ldm"]
        weights, fast = _mb(ldm.unet) + (_mb(ldm.vqvae) if method != "ldm_unet" else 0.0), ldm.unet.fast
        arch = {"ldm": args.ldm, **{k: v for k, v in ldm.describe().items() if k.endswith("parameters")}}
    row = {"method": method, "mode": mode["name"], "batch_spec": batch, "steps": steps, "image_size": size,
           "task": None, "nfe_per_image": steps, "device_name": device_name(device), "architecture": arch,
           **{k: settings.get(k) for k in ("precision", "autocast", "channels_last", "compile", "compile_mode",
                                           "cuda_graph", "fused_norm", "cudnn_benchmark", "micro_batch")},
           "notes": settings["notes"]}

    if method in BUILTIN:
        target = SimpleNamespace(prior=prior) if method == "unet" else SimpleNamespace(ldm=ldm)
        b, row["batch_rule"] = _batch(batch, target, device, size)
        if method == "unet":
            shape, fn = (b, 3, size, size), prior.model_output
        else:
            lat = size // ldm.scale_factor
            shape, fn = (b, ldm.unet.config.in_channels, lat, lat), ldm.unet
        x = torch.randn(shape, generator=gen).to(device)
        t = torch.full((b,), 500, device=device, dtype=torch.long)
        row["batch"] = b

        def forwards(_):
            with torch.no_grad():
                for _ in range(steps):
                    fn(x, t)
        return Cell(row, lambda: None, forwards, weights_mb=weights, forward=fast)

    tcfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / f"{args.task}.yaml"), resolve=True)
    task = build_task(tcfg)
    if spec["latent"]:
        model_cfg = latent_model_config(args.latent_model)
        size, arch = int(model_cfg["image_size"]), {"latent_model": args.latent_model}
        row.update(image_size=size, architecture=arch)
    else:
        model_cfg = model_config(args.model, mode)
    m = build_method(method, model_cfg, steps, tcfg)
    reason = m.unsupported_reason(task)
    if reason:
        raise ValueError(reason)
    if spec["ldm"]:
        getattr(m, "_srldm", m).ldm = ldm  # setup keeps an attached model (DDRM-SRLDM: its inner SRLDM)
    m.setup(device)  # the prior comes from load_prior's per-process cache (built above)
    b, row["batch_rule"] = _batch(batch, m, device, size)
    ids = [f"perf{i}" for i in range(b)]
    deg = task.build(size, device, 0)
    x = torch.rand(b, 3, size, size, generator=gen).to(device)
    y = deg.degrade(x, seeding.make_generators(0, ids, "degrade", device))
    row.update(task=args.task, batch=b, backprop_through_prior=bool(m.backprop_through_prior),
               steps=getattr(m, "steps", steps))

    def restore(gens):
        m.restore(y, deg, gens)
    return Cell(row, lambda: seeding.make_generators(0, ids, "restore", device), restore, m, weights, fast)


__all__ = ["BUILTIN", "Cell", "SpeedUNet", "build_cell", "build_method", "ldm_parts",
           "method_names", "method_spec", "model_config", "speed_block", "sync"]
