"""Latent diffusion priors (``model.kind: ldm | sd``) for the latent-space solvers (latent_dps, psld, resample).

A :class:`LatentPrior` is an eps-prediction network on autoencoder latents plus the autoencoder and the beta
schedule of the checkpoint. Pixel-space solvers (:class:`~bench.methods.prior_method.PriorMethod`) refuse it
(:func:`refuse_latent`), and :func:`load_latent_prior` refuses pixel kinds.

Kinds (``conf/model/<name>.yaml``)::

    name: ldm_celebahq256
    kind: ldm           # unconditional LDM: diffusers UNet2DModel + VQModel (``vqvae/``) or AutoencoderKL (``vae/``)
    image_size: 256     # the pixel resolution the prior was trained at
    source: CompVis/ldm-celebahq-256   # hub id, loaded at ``revision`` (40-hex; null = the pinned one, refused if none)
    revision: null
    local_dir: null     # a diffusers-format directory (save_pretrained / hf download); wins over source
    scaling_factor: null   # null = the autoencoder config's (diffusers' pipelines divide latents by it before decoding)
    dtype: float32      # float32 | float16 | bfloat16 (the networks' weights)
    diffusion: {steps: 1000}   # must equal the scheduler's num_train_timesteps (checked at load)

    kind: sd            # Stable Diffusion text-to-image: UNet2DConditionModel + AutoencoderKL + CLIP text encoder
    prompt: ""          # the text condition (the same for every image)
    negative_prompt: ""
    guidance_scale: 1.0 # classifier-free guidance: eps_u + g (eps_c - eps_u); > 1 = 2 UNet rows per image and call

    # random weights (tests, CPU smoke runs; NOT meaningful): kind ldm, no source / local_dir, an ``arch`` and a seed
    arch: {unet: {UNet2DModel kwargs}, vqvae: {VQModel kwargs}}   (or vae: {AutoencoderKL kwargs})
    scheduler: {DDIMScheduler kwargs}
    init_seed: 0

Loading reuses :mod:`bench.models.stable_diffusion` (source / pinned revision / local_dir / offline cache, the same
errors with ``model.`` keys; SD parts through :func:`~bench.models.stable_diffusion.load_sd`). Parts are frozen
(eval, no parameter grads); autograd w.r.t. the latents stays on.

Interface (stable: psld and resample build on it; additions only)::

    prior = load_latent_prior(model_cfg, device)     # cached per (name, device, config)
    prior.kind, prior.image_size, prior.info          # "ldm" | "sd"; trained pixel size; provenance
    prior.betas, prior.abar                           # float64 (T,) on the device; T = prior.num_train_steps
    prior.factor, prior.latent_channels               # pixel side / latent side (4 LDM-VQf4, 8 SD); C of z
    prior.multiple                                    # pixel sides must be multiples of this
    prior.latent_shape(h, w) -> (C, h / f, w / f)     # ValueError (with the fix) unless h, w are multiples
    prior.eps(z, t) -> eps                            # z (B, C, h, w) scaled latents, t int or (B,) long; CFG for sd;
                                                      #   v-prediction converted; differentiable w.r.t. z
    prior.decode(z) -> x                              # x (B, 3, h f, w f) in [-1, 1] (not clamped), differentiable
    prior.encode(x) -> z                              # x in [-1, 1]; z = s * (AutoencoderKL mean | VQ pre-quant h)
    prior.timesteps(K) -> list[int]                   # K descending model timesteps: the checkpoint's DDIMScheduler
                                                      #   spacing (set_timesteps(K)), as diffusers' pipelines visit
    prior.abar_prev(t_prev) -> float                  # abar at the next timestep; t_prev < 0: the final alpha
                                                      #   (1 if the scheduler sets set_alpha_to_one, else abar_0)
    prior.counter.reset(); prior.counter.per_image(B) # forward rows through unet / encoder / decoder per image
                                                      #   (a CFG call counts 2); VJPs are counted by the solvers

Images at the method boundary are [0, 1]; the solvers convert with :func:`bench.methods.prior_method.measurement_pm`
(``y_pm = 2 y - A(1)``) and decode to [-1, 1], so the operators act on [-1, 1] pictures as in DPS / PSLD / ReSample.

Facts (notes/latent-conditional-tuning.md A.1, A.2; diffusers' LDMPipeline): the unconditional LDM pipeline divides
latents by ``vqvae.config.scaling_factor`` before ``vqvae.decode`` (which quantises; its straight-through estimator
passes gradients as the identity); SD uses ``vae.config.scaling_factor`` (0.18215) and the AutoencoderKL posterior
mean to encode. Whether the hub config of CompVis/ldm-celebahq-256 sets ``scaling_factor`` (VQModel's default is
0.18215; CompVis trained its VQ LDMs with scale 1.0) is **unverified** here (no Hub access): check it and set
``model.scaling_factor`` if needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from bench.cli_errors import reject_unknown_keys
from bench.diffusion import alphas_cumprod
from bench.models.assets import AssetError
from bench.models.diffusers_prior import schedule_betas
from bench.models.ldm import _frozen
from bench.models.prior import to_plain
from bench.models.stable_diffusion import CallCounter, encode_text, load_error, load_sd, resolve_source

LATENT_KINDS = ("ldm", "sd")
#: model configs of each latent kind (conf/model/), for messages
MODEL_HINTS = "latent_tiny (random, CPU) | ldm_celebahq256 | sd15"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PREDICTION_TYPES = ("epsilon", "v_prediction")
KEYS = ("name", "kind", "image_size", "source", "revision", "local_dir", "scaling_factor", "dtype", "diffusion",
        "prompt", "negative_prompt", "guidance_scale", "arch", "scheduler", "init_seed", "default_steps",
        "tuned_default")

_CACHE: dict[tuple[str, str, str], "LatentPrior"] = {}


def is_latent(model: Mapping | None) -> bool:
    return isinstance(model, Mapping) and model.get("kind") in LATENT_KINDS


def refuse_latent(model: Mapping, method: str) -> None:
    """A ValueError for a pixel-space method given a latent prior (called before any work)."""
    if is_latent(model):
        raise ValueError(f"{method} is a pixel-space solver but model {model.get('name')!r} is a latent diffusion prior "
                         f"(kind {model.get('kind')!r}). Fix: a latent solver (method=latent_dps) with it, or a pixel "
                         "prior for this method (model=adm64_imagenet96, adm_imagenet256, ddpm_celebahq256 ...)")


def require_latent(model: Mapping, method: str) -> None:
    """A ValueError for a latent solver given a pixel (or conditional) model config."""
    if not is_latent(model):
        raise ValueError(f"{method} needs a latent diffusion prior (model kind {' | '.join(LATENT_KINDS)}); model "
                         f"{model.get('name') if isinstance(model, Mapping) else model!r} has kind "
                         f"{model.get('kind') if isinstance(model, Mapping) else None!r}. Fix: model={MODEL_HINTS}")


@dataclass
class LatentPrior:
    kind: str
    unet: torch.nn.Module
    vae: torch.nn.Module  # VQModel | AutoencoderKL
    betas: Tensor  # float64 (T,)
    scaling_factor: float
    image_size: int
    scheduler_config: dict
    prediction_type: str = "epsilon"
    #: sd: (uncond, cond) text embeddings (1, L, D) each; uncond None when guidance_scale <= 1
    text: tuple[Tensor | None, Tensor] | None = None
    guidance_scale: float = 1.0
    info: dict = field(default_factory=dict)
    counter: CallCounter | None = None

    def __post_init__(self):
        self.abar = alphas_cumprod(self.betas)
        self.dtype = next(self.unet.parameters()).dtype
        if self.counter is None:
            self.counter = CallCounter(unet=self.unet, encoder=self.vae.encoder, decoder=self.vae.decoder)

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def num_train_steps(self) -> int:
        return int(self.betas.numel())

    @property
    def factor(self) -> int:
        """Pixel side / latent side: 2 ** (autoencoder levels - 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def multiple(self) -> int:
        """Pixel sides must be multiples of this: the autoencoder factor times the UNet's downsampling."""
        return self.factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def latent_shape(self, height: int, width: int | None = None) -> tuple[int, int, int]:
        width = height if width is None else width
        if height % self.multiple or width % self.multiple:
            raise ValueError(f"model {self.info.get('model')!r}: images of {height}x{width} px do not fit the latent "
                             f"prior: sides must be multiples of {self.multiple} (autoencoder factor {self.factor} x "
                             f"UNet downsampling). Fix: dataset.image_size={max(self.multiple, self.image_size)}")
        return self.latent_channels, height // self.factor, width // self.factor

    # ----------------------------------------------------------------------------------------- schedule
    def timesteps(self, steps: int) -> list[int]:
        """``steps`` descending model timesteps of the checkpoint's DDIMScheduler spacing."""
        from diffusers import DDIMScheduler

        cfg = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        sched = DDIMScheduler.from_config(cfg)
        sched.set_timesteps(int(steps))
        return [int(t) for t in sched.timesteps]

    def abar_prev(self, t_prev: int) -> float:
        """abar at ``t_prev``; below 0 the DDIM final alpha (1 with set_alpha_to_one, the checkpoint's flag)."""
        if t_prev >= 0:
            return float(self.abar[t_prev])
        return 1.0 if self.scheduler_config.get("set_alpha_to_one", True) else float(self.abar[0])

    # ---------------------------------------------------------------------------------------- networks
    def eps(self, z: Tensor, t: int | Tensor) -> Tensor:
        """eps_theta(z_t, t) (CFG for sd when guidance_scale > 1; v-prediction converted), float32 like z."""
        B = z.shape[0]
        t = torch.as_tensor(t, device=z.device).long().reshape(-1).expand(B)
        zin = z.to(self.dtype)
        if self.kind == "sd":
            uncond, cond = self.text
            if uncond is None:
                out = self.unet(zin, t, encoder_hidden_states=cond.expand(B, -1, -1)).sample
            else:
                emb = torch.cat([uncond.expand(B, -1, -1), cond.expand(B, -1, -1)])
                out = self.unet(torch.cat([zin, zin]), torch.cat([t, t]), encoder_hidden_states=emb).sample
                out_u, out_c = out.chunk(2)
                out = out_u + self.guidance_scale * (out_c - out_u)
        else:
            out = self.unet(zin, t).sample
        out = out.to(z.dtype)
        if self.prediction_type == "v_prediction":
            a = self.abar[t].to(z.dtype).view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * z
        return out

    def decode(self, z: Tensor) -> Tensor:
        """Latents -> pictures in [-1, 1] (not clamped), differentiable w.r.t. z."""
        return self.vae.decode((z / self.scaling_factor).to(self.dtype)).sample.to(z.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """Pictures in [-1, 1] -> scaled latents (AutoencoderKL: posterior mean; VQ: pre-quantisation)."""
        out = self.vae.encode(x.to(self.dtype))
        h = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        return (h * self.scaling_factor).to(x.dtype)

    def describe(self) -> dict:
        return dict(self.info)


# ------------------------------------------------------------------------------------------------ loading
def _check_config(model: dict) -> None:
    name = model.get("name", "?")
    for key in ("name", "kind", "image_size"):
        if key not in model:
            raise ValueError(f"model {name!r} lacks key {key!r}; see conf/model/latent_tiny.yaml")
    reject_unknown_keys(f"model {name!r} (kind {model['kind']})", model, KEYS)
    if model.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"model {name!r}: dtype={model.get('dtype')!r} is not one of {list(DTYPES)}. "
                         "Fix: model.dtype=float32")
    g = model.get("guidance_scale", 1.0)
    if isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0:
        raise ValueError(f"model {name!r}: guidance_scale={g!r} must be a number >= 0 (<= 1: no guidance). "
                         "Fix: model.guidance_scale=1")
    if model["kind"] == "ldm" and (model.get("prompt") or g not in (None, 1, 1.0)):
        raise ValueError(f"model {name!r}: kind ldm is unconditional, it takes no prompt or guidance_scale. "
                         "Fix: drop them, or use a kind sd model (model=sd15)")
    if model["kind"] == "sd" and model.get("arch"):
        raise ValueError(f"model {name!r}: random weights (arch) exist for kind ldm only; a kind sd model loads "
                         "from model.local_dir or model.source")


def _random_ldm(model: dict) -> tuple[torch.nn.Module, torch.nn.Module, dict, str]:
    """UNet2DModel + VQModel / AutoencoderKL from ``model.arch`` with random weights from ``init_seed``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel

    arch, seed = model["arch"], int(model.get("init_seed", 0))
    if "unet" not in arch or sum(k in arch for k in ("vqvae", "vae")) != 1:
        raise ValueError(f"model {model['name']!r}: arch needs unet: {{...}} and one of vqvae: {{...}} (VQModel) or "
                         "vae: {...} (AutoencoderKL); see conf/model/latent_tiny.yaml")
    with torch.random.fork_rng(devices=[]):  # machine independent, global RNG untouched
        torch.manual_seed(seed)
        unet = UNet2DModel(**arch["unet"])
        vae = VQModel(**arch["vqvae"]) if "vqvae" in arch else AutoencoderKL(**arch["vae"])
    sched = {"_class_name": "DDIMScheduler", **DDIMScheduler(**(model.get("scheduler") or {})).config}
    return unet, vae, sched, f"random(init_seed={seed})"


def _load_ldm(model: dict, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module, dict, str]:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel

    if not model.get("local_dir") and not model.get("source"):
        if model.get("arch"):
            return _random_ldm(model)
        raise AssetError(f"model {model['name']!r} (kind ldm) needs model.local_dir=DIR, model.source=<hub id> (+ "
                         "revision) or arch (random weights, see conf/model/latent_tiny.yaml)")
    local, source = model.get("local_dir"), model.get("source")
    ae_sub = "vqvae"
    if local:
        ae_sub = "vae" if (Path(local).expanduser() / "vae").is_dir() else "vqvae"
    where, kw, origin = resolve_source(source, model.get("revision"), local, ("unet", ae_sub, "scheduler"), "model")
    try:
        unet = UNet2DModel.from_pretrained(where, subfolder="unet", low_cpu_mem_usage=False, torch_dtype=dtype, **kw)
        vae = (VQModel if ae_sub == "vqvae" else AutoencoderKL).from_pretrained(
            where, subfolder=ae_sub, low_cpu_mem_usage=False, torch_dtype=dtype, **kw)
        sched = dict(DDIMScheduler.load_config(where, subfolder="scheduler", **kw))
    except (OSError, ValueError) as e:
        raise load_error(e, source, kw.get("revision"), local, kw, f"latent diffusion model {model['name']!r}",
                         "model") from e
    return unet, vae, sched, origin


def _build(model: dict, device: torch.device) -> LatentPrior:
    name, kind, dtype = model["name"], model["kind"], DTYPES[model.get("dtype", "float32")]
    text, guidance = None, float(model.get("guidance_scale", 1.0) or 1.0)
    if kind == "sd":
        parts = load_sd(model.get("source"), model.get("revision"), model.get("local_dir"), device, dtype, key="model")
        unet, vae, sched, origin = parts.unet, parts.vae, parts.scheduler_config, parts.origin
        with torch.no_grad():
            cond = encode_text(parts, [str(model.get("prompt") or "")], device)
            uncond = encode_text(parts, [str(model.get("negative_prompt") or "")], device) if guidance > 1 else None
        text = (uncond, cond)
        if int(unet.config.in_channels) != int(vae.config.latent_channels):
            raise AssetError(f"model {name!r}: {origin} has a {unet.config.in_channels}-channel UNet (an inpainting "
                             "fine-tune?); a latent prior needs a text-to-image UNet on the VAE's "
                             f"{vae.config.latent_channels} latent channels. Fix: e.g. stable-diffusion-v1-5/"
                             "stable-diffusion-v1-5")
    else:
        unet, vae, sched, origin = _load_ldm(model, dtype)
        if origin.startswith("random") and dtype != torch.float32:
            unet, vae = unet.to(dtype), vae.to(dtype)
        unet, vae = _frozen(unet).to(device), _frozen(vae).to(device)
        cfg = unet.config
        if getattr(cfg, "num_class_embeds", None) or getattr(cfg, "class_embed_type", None):
            raise AssetError(f"model {name!r}: {origin} is class-conditional; kind ldm needs an unconditional UNet2DModel")
        latent_c = int(getattr(vae.config, "vq_embed_dim", None) or vae.config.latent_channels)
        if not cfg.in_channels == cfg.out_channels == latent_c:
            raise AssetError(f"model {name!r}: {origin} has a {cfg.in_channels} -> {cfg.out_channels} channel UNet on "
                             f"{latent_c} latent channels; an unconditional latent prior needs in = out = latent "
                             "channels (a conditional LDM such as the 4x SR model is method=srldm's)")
    pred = sched.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise AssetError(f"model {name!r}: prediction_type={pred!r} is not supported; allowed: {PREDICTION_TYPES}")
    betas, betas_source = schedule_betas(sched)
    T = int((model.get("diffusion") or {}).get("steps", betas.numel()))
    if T != betas.numel():
        raise ValueError(f"model {name!r}: model.diffusion.steps={T} but the scheduler has {betas.numel()} "
                         f"num_train_timesteps. Fix: model.diffusion.steps={betas.numel()}")
    s = model.get("scaling_factor")
    s = float(vae.config.scaling_factor if s is None else s)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {"model": name, "kind": kind, "image_size": int(model["image_size"]), "asset": {"origin": origin},
            "meaningful": not origin.startswith("random"), "init_seed": model.get("init_seed") if origin.startswith(
                "random") else None, "autoencoder": type(vae).__name__, "scaling_factor": s,
            "prediction_type": pred, "betas": betas_source, "scheduler": sched.get("_class_name"),
            "dtype": str(dtype).replace("torch.", ""),
            "parameters": {"unet": count(unet), "autoencoder": count(vae)}}
    if kind == "sd":
        info.update(prompt=str(model.get("prompt") or ""), negative_prompt=str(model.get("negative_prompt") or ""),
                    guidance_scale=guidance)
    return LatentPrior(kind, unet, vae, betas.to(device), s, int(model["image_size"]), sched, pred, text, guidance, info)


def load_latent_prior(model: Mapping, device: torch.device | str) -> LatentPrior:
    """Build (or reuse) the latent prior of a resolved ``conf/model/*.yaml`` mapping (kind ldm | sd) on ``device``."""
    model = to_plain(model)
    if not isinstance(model, dict) or model.get("kind") not in LATENT_KINDS:
        kind = model.get("kind") if isinstance(model, dict) else None
        raise ValueError(f"model {model.get('name') if isinstance(model, dict) else model!r}: kind={kind!r} is not a "
                         f"latent prior kind; allowed: {', '.join(LATENT_KINDS)}. Fix: model={MODEL_HINTS}")
    _check_config(model)
    device = torch.device(device)
    digest = hashlib.sha256(json.dumps(model, sort_keys=True, default=str).encode()).hexdigest()[:16]
    key = (str(model["name"]), str(device), digest)
    if key not in _CACHE:
        _CACHE[key] = _build(model, device)
    return _CACHE[key]


def clear_cache() -> None:
    _CACHE.clear()
