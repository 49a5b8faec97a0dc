"""Pixel-space diffusers DDPMs as a :class:`~bench.models.prior.DiffusionPrior` (``model.kind: diffusers``).

Any unconditional diffusers ``UNet2DModel`` with its scheduler config (``DDPMScheduler`` /
``DDIMScheduler`` keys) becomes an eps function on its own schedule, so every pixel-space method (DDRM,
GDP, DPS, DDNM, PiGDM, DiffPIR, RED-diff) runs on it unchanged::

    name: ddpm_celebahq256
    kind: diffusers
    image_size: 256
    source: google/ddpm-celebahq-256   # hub id (huggingface_hub cache; downloads unless offline)
    local_dir: null                    # a directory written by save_pretrained; takes precedence
    diffusion: {steps: 1000, variance: null}   # steps must equal num_train_timesteps; variance null = the
                                               # scheduler's variance_type
    speed: {precision: fp32, channels_last: false, compile: false}

Layouts: the UNet's ``config.json`` (+ weights) at the root or in ``unet/``; ``scheduler_config.json``
at the root or in ``scheduler/`` (the google/ddpm-* repos keep both at the root; pipelines' save_pretrained
writes the subfolders). Facts used (shared notes §6, the hub configs): google/ddpm-celebahq-256 and
ddpm-(ema-)church-256 are 3 -> 3 channel UNets, linear betas 1e-4..0.02 over 1000 steps, ``variance_type
fixed_small``, epsilon prediction; their timestep indexing and betas equal ADM's, so abar is identical
(computed here in float64 from the config, as ADM does).

Mapping:

* ``prediction_type``: ``epsilon`` as is; ``v_prediction`` -> eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t;
  ``sample`` -> eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t). Anything else is rejected.
* ``variance_type`` -> ``prior.variance``: fixed_small(_log) -> fixed_small, fixed_large(_log) ->
  fixed_large, learned_range (needs out_channels = 2 x in_channels: the extra channels are returned as
  the variance values) -> learned_range; ``learned`` (raw log-variance) is rejected.
* betas: ``linear`` / ``scaled_linear`` from beta_start / beta_end in float64, ``trained_betas`` as
  given; other schedules (e.g. squaredcos_cap_v2) from diffusers' own float32 table (recorded).
* ``clip_sample`` only acts inside ``scheduler.step``, which no method here calls (recorded, unused).
* class-conditional UNets (``num_class_embeds`` / ``class_embed_type``) are rejected: no labels here.

Offline (``HF_HUB_OFFLINE=1`` / ``BENCH_OFFLINE=1``) a hub id is read from the cache only, and a missing
model is an :class:`~bench.models.assets.AssetError` that says how to get the files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from bench.diffusion import alphas_cumprod, make_betas
from bench.models.assets import AssetError, _is_offline
from bench.models.ldm import _frozen, _hf_cache_dir
from bench.models.speed import Precision, apply_speed

VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
                  "fixed_large_log": "fixed_large", "learned_range": "learned_range"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiffusersEps(torch.nn.Module):
    """``UNet2DModel`` -> eps(x_t, t) (+ variance channels), converting v / x0 predictions."""

    def __init__(self, unet: torch.nn.Module, prediction_type: str, abar: Tensor):
        super().__init__()
        self.unet, self.prediction_type = unet, prediction_type
        self.register_buffer("abar", abar.to(torch.float64), persistent=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.unet(x, t).sample
        if self.prediction_type == "epsilon":
            return out
        c = x.shape[1]
        pred, rest = out[:, :c], out[:, c:]
        a = self.abar[t.long()].to(pred.dtype).view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            eps = a.sqrt() * pred + (1 - a).sqrt() * x
        else:  # "sample": x0 prediction
            eps = (x - a.sqrt() * pred) / (1 - a).sqrt()
        return torch.cat([eps, rest], dim=1) if rest.shape[1] else eps


def _fix_text(model: dict) -> str:
    src = model.get("source") or "<hub id>"
    return (f"Fix, one of:\n"
            f"  - on a machine with internet: hf download {src} --local-dir /path/{model['name']}, copy it here,"
            f" and pass model.local_dir=/path/{model['name']}\n"
            f"  - fill the hub cache (HF_HOME / HF_HUB_CACHE) with {src} and keep HF_HUB_OFFLINE=1\n"
            f"  - unset HF_HUB_OFFLINE / BENCH_OFFLINE to let it download\n"
            f"  - model=adm64_imagenet96 for the embedded (shipped, offline) prior")


def _local_layout(root: Path, model: dict) -> tuple[str | None, str | None]:
    """(unet subfolder, scheduler subfolder) of a local directory, or an AssetError naming what is missing."""
    unet = "unet" if (root / "unet" / "config.json").is_file() else (None if (root / "config.json").is_file() else "?")
    sched = ("scheduler" if (root / "scheduler" / "scheduler_config.json").is_file()
             else (None if (root / "scheduler_config.json").is_file() else "?"))
    missing = [n for n, v in (("config.json (UNet2DModel, at the root or in unet/)", unet),
                              ("scheduler_config.json (at the root or in scheduler/)", sched)) if v == "?"]
    if missing:
        raise AssetError(f"model {model['name']!r}: model.local_dir={root} lacks {missing}; write it with "
                         "UNet2DModel.save_pretrained(dir) and DDPMScheduler.save_pretrained(dir), or "
                         f"hf download {model.get('source') or '<hub id>'} --local-dir {root}")
    return unet, sched


def load_parts(model: dict) -> tuple[torch.nn.Module, dict, str]:
    """(UNet2DModel, scheduler config dict, origin) from ``model.local_dir`` or the hub id ``model.source``."""
    from diffusers import DDPMScheduler, UNet2DModel

    local = model.get("local_dir")
    if local:
        root = Path(local).expanduser()
        if not root.is_dir():
            raise AssetError(f"model {model['name']!r}: model.local_dir={local} is not a directory.\n"
                             + _fix_text(model))
        unet_sub, sched_sub = _local_layout(root, model)
        try:
            unet = UNet2DModel.from_pretrained(str(root), subfolder=unet_sub, low_cpu_mem_usage=False)
            sched = dict(DDPMScheduler.load_config(str(root), subfolder=sched_sub))
        except (OSError, ValueError) as e:
            raise AssetError(f"model {model['name']!r}: could not load the UNet / scheduler from {root}: {e}") from e
        return unet, sched, f"local:{root.resolve()}"
    source = model.get("source")
    if not source:
        raise AssetError(f"model {model['name']!r} (kind: diffusers) needs model.source=<hub id> (e.g. "
                         "google/ddpm-celebahq-256) or model.local_dir=/path/to/saved/model")
    offline = _is_offline(None)
    kw = {"cache_dir": _hf_cache_dir(), "local_files_only": offline}
    errors = []
    for unet_sub, sched_sub in ((None, None), ("unet", "scheduler")):  # google/ddpm-* keep files at the root
        try:
            unet = UNet2DModel.from_pretrained(source, subfolder=unet_sub, low_cpu_mem_usage=False, **kw)
            sched = dict(DDPMScheduler.load_config(source, subfolder=sched_sub, **kw))
            return unet, sched, f"hub:{source}"
        except (OSError, ValueError) as e:  # huggingface_hub raises EnvironmentError (OSError) subclasses
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    state = (f"is not in the hub cache {kw['cache_dir'] or '(huggingface_hub default)'} and downloads are off "
             "(HF_HUB_OFFLINE=1 or BENCH_OFFLINE=1)" if offline else "could not be downloaded or read")
    raise AssetError(f"diffusers model {source!r} ({model['name']}) {state}: {errors[0]}\n" + _fix_text(model))


def schedule_betas(sched: dict) -> tuple[Tensor, str]:
    """float64 betas (T,) from a scheduler config, and how they were obtained."""
    T = int(sched.get("num_train_timesteps", 1000))
    if sched.get("trained_betas") is not None:
        return torch.tensor(sched["trained_betas"], dtype=torch.float64), "trained_betas"
    kind = sched.get("beta_schedule", "linear")
    if kind in ("linear", "scaled_linear"):
        return make_betas(kind, T, float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02))), kind
    from diffusers import DDPMScheduler

    cfg = {k: v for k, v in sched.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(cfg).betas.to(torch.float64), f"{kind} (diffusers float32 table)"


def build(model: dict, device: torch.device) -> dict:
    """The fields of the :class:`~bench.models.prior.DiffusionPrior` of a ``kind: diffusers`` model config
    (:func:`bench.models.prior.load_prior` builds it: this module does not import that one)."""
    unet, sched, origin = load_parts(model)
    cfg, name = unet.config, model["name"]
    if getattr(cfg, "num_class_embeds", None) or getattr(cfg, "class_embed_type", None):
        raise AssetError(f"model {name!r}: {origin} is class-conditional; only unconditional UNet2DModels work here")
    pred = sched.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise AssetError(f"model {name!r}: prediction_type={pred!r} is not supported; allowed: {PREDICTION_TYPES}")
    vtype = (model.get("diffusion") or {}).get("variance") or sched.get("variance_type", "fixed_small")
    if vtype not in VARIANCE_TYPES and vtype not in VARIANCE_TYPES.values():
        raise AssetError(f"model {name!r}: variance_type={vtype!r} is not supported (allowed: {sorted(VARIANCE_TYPES)}; "
                         "'learned' raw log-variances are not). Fix: model.diffusion.variance=fixed_small")
    variance = VARIANCE_TYPES.get(vtype, vtype)
    learned = cfg.out_channels == 2 * cfg.in_channels
    if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels) or learned != (variance == "learned_range"):
        raise AssetError(f"model {name!r}: the UNet has {cfg.in_channels} -> {cfg.out_channels} channels but the "
                         f"variance rule is {variance!r}; learned_range needs out = 2 x in, the fixed rules out = in")
    betas, betas_source = schedule_betas(sched)
    T = int((model.get("diffusion") or {}).get("steps", betas.numel()))
    if T != betas.numel():
        raise ValueError(f"model {name!r}: model.diffusion.steps={T} but the scheduler has "
                         f"{betas.numel()} num_train_timesteps. Fix: model.diffusion.steps={betas.numel()}")
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    if int(model["image_size"]) != int(size):
        raise ValueError(f"model {name!r}: model.image_size={model['image_size']} but the UNet's sample_size is "
                         f"{size}. Fix: model.image_size={size}")
    net = DiffusersEps(_frozen(unet), pred, alphas_cumprod(betas))
    info = {"model": name, "kind": "diffusers", "image_size": int(size), "asset": {"origin": origin},
            "init_seed": None, "meaningful": True, "parameters": sum(p.numel() for p in unet.parameters()),
            "prediction_type": pred, "variance": variance, "betas": betas_source,
            "clip_sample": sched.get("clip_sample"), "scheduler": sched.get("_class_name")}
    net = net.to(device).eval().requires_grad_(False)
    forward, info["speed"] = apply_speed(net, Precision.from_config(model.get("speed")), device)
    return dict(net=net, image_size=int(size), betas=betas.to(device), learn_sigma=learned, info=info,
                forward=forward, variance=variance)
