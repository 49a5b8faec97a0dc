"""End-to-end conditional pixel DDPMs (SR3, Palette): network, noise schedule and weights from a model config.

A ``conf/model/<name>.yaml`` with ``kind: sr3`` or ``kind: palette`` (not a prior for the zero-shot solvers:
these nets take the condition image as 3 extra input channels) holds

* ``arch``: the UNet's arguments under the official JSON names (``model.unet`` of the SR3 configs, the
  ``unet`` args of Palette's ``which_networks``; SR3's ``channel_multiplier`` is ``channel_mults``);
* ``schedule``: the *sampling* beta schedule (SR3 ``beta_schedule.val``, Palette ``beta_schedule.test``):
  ``schedule`` (linear | quad), ``n_timestep``, ``linear_start``, ``linear_end``;
* ``asset``: the checkpoint (``model.asset.path`` for a local file; ``url`` + ``sha256`` where public), or
  null for random weights from ``init_seed`` (tests only: NOT meaningful outputs).

Checkpoints in the official formats load strictly (:func:`official_unet_state`): SR3's ``I{iter}_E{epoch}_gen.pth``
and Palette's ``{epoch}_Network[_ema].pth`` are ``state_dict()`` s of the diffusion wrapper, i.e. the UNet under
``denoise_fn.`` plus the schedule buffers that ``set_new_noise_schedule`` registered (``betas``, ``gammas``,
``posterior_*`` ...); a bare UNet state dict is accepted too. The buffers are dropped: the schedule comes from
the config, as in the official test scripts (which rebuild it from the JSON before sampling).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from bench.diffusion import make_betas
from bench.models.adm_unet import random_init_
from bench.models.assets import AssetError, asset_from_config, fetch, fetched_assets, load_state_dict
from bench.models.palette_unet import PaletteUNet
from bench.models.prior import to_plain
from bench.models.sr3_unet import SR3UNet

#: kind -> (network class, the noise level the net is conditioned on)
KINDS = {"sr3": (SR3UNet, "sqrt_abar"), "palette": (PaletteUNet, "abar")}
SCHEDULES = ("linear", "quad")
SCHEDULE_KEYS = ("schedule", "n_timestep", "linear_start", "linear_end")
#: buffers of the official wrappers' ``set_new_noise_schedule`` (SR3 GaussianDiffusion, Palette Network)
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas",
})
WRAPPER_PREFIX = "denoise_fn."
#: the model configs of each kind (conf/model/), for error messages
MODEL_HINTS = {"sr3": "sr3_ffhq16_128 | sr3_ffhq64_512 | sr3_tiny",
               "palette": "palette_celebahq256 | palette_places2_256 | palette_tiny"}


@dataclass
class ConditionalDDPM:
    """A loaded conditional DDPM: ``net(cat[c, x_t], gamma)`` -> eps, its sampling betas (float64, (T,))."""

    kind: str
    net: nn.Module
    betas: Tensor
    noise_level: str  # "sqrt_abar" (SR3) | "abar" (Palette)
    image_size: int
    info: dict = field(default_factory=dict)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (one 2x downsampling per UNet level but the last)."""
        mults = self.info["arch"]["channel_mults"]
        return 2 ** (len(mults) - 1)


def official_unet_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The UNet's entries of an official checkpoint: ``denoise_fn.`` (and a DataParallel ``module.``) prefix
    removed, the wrapper's schedule buffers dropped; a bare UNet state dict passes through."""
    out = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k in SCHEDULE_BUFFERS:
            continue
        out[k[len(WRAPPER_PREFIX):] if k.startswith(WRAPPER_PREFIX) else k] = value
    return out


def sampling_betas(name: str, schedule: Mapping) -> Tensor:
    """float64 betas of an official ``beta_schedule`` entry (``make_beta_schedule``: linear | quad)."""
    missing = [k for k in SCHEDULE_KEYS if k not in schedule]
    unknown = sorted(set(schedule) - set(SCHEDULE_KEYS))
    if missing or unknown:
        raise ValueError(f"model {name!r}: schedule needs exactly the keys {list(SCHEDULE_KEYS)}; missing "
                         f"{missing}, unknown {unknown}. Fix: copy the official beta_schedule entry")
    kind = schedule["schedule"]
    if kind not in SCHEDULES:
        raise ValueError(f"model {name!r}: schedule.schedule={kind!r} is not supported; allowed: "
                         f"{', '.join(SCHEDULES)} (the official configs use linear)")
    T = schedule["n_timestep"]
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"model {name!r}: schedule.n_timestep={T!r} must be a positive integer (e.g. 2000)")
    start, end = float(schedule["linear_start"]), float(schedule["linear_end"])
    if not 0 < start <= end < 1:
        raise ValueError(f"model {name!r}: need 0 < linear_start <= linear_end < 1, got {start}, {end}")
    return make_betas(kind, T, start, end)


def _weights(net: nn.Module, model: dict) -> dict:
    asset = asset_from_config(model.get("asset"))
    if asset is None:
        seed = int(model.get("init_seed", 0))
        random_init_(net, seed=seed)
        return {"asset": None, "init_seed": seed, "meaningful": False}
    path = fetch(asset)
    try:
        net.load_state_dict(official_unet_state(load_state_dict(path)), strict=True)
    except RuntimeError as e:
        raise AssetError(f"checkpoint {path} does not match model {model['name']!r} (arch {model['arch']}): "
                         f"{e}\nFix: point model.asset.path at a checkpoint of this architecture, or fix "
                         f"model.arch to the JSON the checkpoint was trained with") from e
    rec = fetched_assets().get(asset.name, {})
    return {"asset": {"name": asset.name, "sha256": rec.get("sha256"), "source": rec.get("source"),
                      "url": asset.url, "path": str(path), "verified": rec.get("verified")},
            "init_seed": None, "meaningful": True}


def check_kind(model: Mapping, kind: str) -> None:
    """A ValueError naming the fix unless ``model`` is a ``kind`` (sr3 | palette) model config."""
    if model.get("kind") != kind:
        raise ValueError(f"method {kind} needs a model of kind {kind!r}; model {model.get('name')!r} has kind "
                         f"{model.get('kind')!r}. Fix: model={MODEL_HINTS[kind]}")


def load_conditional(model: Mapping, device: torch.device | str, kind: str) -> ConditionalDDPM:
    """Build the ``kind`` (sr3 | palette) network of a resolved model config on ``device`` and load its weights."""
    model = to_plain(model)
    check_kind(model, kind)
    name = model["name"]
    for key in ("arch", "schedule", "image_size"):
        if key not in model:
            raise ValueError(f"model {name!r}: missing key {key!r} (see conf/model/{kind}_tiny.yaml)")
    cls, noise_level = KINDS[kind]
    arch = dict(model["arch"])
    try:
        net = cls(**arch)
    except TypeError as e:
        allowed = [p for p in cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]]
        bad = [k for k in arch if k not in allowed]
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, allowed, 1)) else k for k in bad]
        raise ValueError(f"model {name!r}: bad arch {hints or arch}: {e}; allowed keys: {allowed}") from e
    betas = sampling_betas(name, model["schedule"])
    info = {"model": name, "kind": kind, "image_size": int(model["image_size"]), "arch": arch,
            "schedule": dict(model["schedule"]), **_weights(net, model)}
    info["parameters"] = sum(p.numel() for p in net.parameters())
    net = net.to(device).eval().requires_grad_(False)
    return ConditionalDDPM(kind=kind, net=net, betas=betas, noise_level=noise_level,
                           image_size=int(model["image_size"]), info=info)
