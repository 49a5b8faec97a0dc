"""The diffusion prior shared by the DDRM and GDP samplers: a network plus its noise schedule.

:func:`load_prior` turns a resolved ``conf/model/<name>.yaml`` mapping into a :class:`DiffusionPrior`::

    name: adm_tiny            # identity, used in errors and provenance
    kind: adm                 # "adm": guided-diffusion UNet; "diffusers": any diffusers UNet2DModel pixel
                              # DDPM on its own scheduler config (bench/models/diffusers_prior.py)
    image_size: 32            # the resolution the prior was trained at
    arch: {...}               # bench.models.adm_unet.create_model flags
    diffusion: {steps: 1000, schedule: linear, beta_start?: 1e-4, beta_end?: 0.02, learn_sigma: true,
                variance?: learned_range | fixed_small | fixed_large}
    asset: null | {name, url, sha256, path}   # null: random weights from init_seed (NOT meaningful)
    init_seed: 0
    speed: {precision: fp32|bf16|fp16, channels_last: false, compile: false}   # optional, see below

With an asset the checkpoint is fetched (cache / override path / download, sha256-verified, see
:mod:`bench.models.assets`), loaded with ``weights_only`` and applied with ``strict=True``; offline, a
missing file raises :class:`~bench.models.assets.AssetError` saying where to place it. Loaded priors are
cached per (name, device, config) in-process, so a sweep reuses one network.

The network is put in eval mode with ``requires_grad=False`` on its parameters; :meth:`DiffusionPrior.eps`
does not disable autograd, so guidance methods (GDP) can still differentiate through it w.r.t. ``x_t``.

Speed settings (the optional ``speed:`` block) are applied by :mod:`bench.models.speed` for both kinds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bench.diffusion import VARIANCES, make_betas, split_model_output
from bench.models import diffusers_prior
from bench.models.adm_unet import create_model, random_init_
from bench.models.assets import AssetError, asset_from_config, fetch, fetched_assets, load_state_dict
from bench.models.speed import Precision, apply_speed

KINDS = ("adm", "diffusers")
#: keys every model config of a kind must have
REQUIRED = {"adm": ("arch", "diffusion"), "diffusers": ()}

_CACHE: dict[tuple[str, str, str], "DiffusionPrior"] = {}


@dataclass
class DiffusionPrior:
    """A noise-prediction network ``eps(x_t, t)`` with its beta schedule (x_t in [-1, 1] space)."""

    net: torch.nn.Module
    image_size: int
    betas: Tensor  # float64 (T,), on the net's device
    learn_sigma: bool
    info: dict = field(default_factory=dict)
    #: the reverse-process variance rule of the prior's own pipeline (:data:`bench.diffusion.VARIANCES`):
    #: "learned_range" for learned-sigma nets, else the model config's ``diffusion.variance`` (default
    #: "fixed_large", guided-diffusion's default for ``learn_sigma=False``; diffusers schedulers carry it
    #: as ``variance_type``). Ancestral samplers (GDP, DPS) read it; DDIM-style ones ignore it.
    variance: str = "learned_range"
    #: the network call under the speed settings (:class:`bench.models.speed.FastForward`); None = plain ``net`` (fp32 eager)
    forward: Callable | None = None

    @property
    def num_classes(self) -> int | None:
        """The label count of a class-conditional net (ADM ``class_cond: true``: 1000), else None."""
        return getattr(self.net, "num_classes", None)

    def model_output(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(eps, v)``: the noise prediction and, for learned-sigma nets, the variance values (else None).

        ``x_t`` (B, 3, H, W) in [-1, 1] space, ``t`` (B,) integer model timesteps in [0, T); ``y`` (B,) class
        labels for a class-conditional net (:attr:`num_classes`), None otherwise (the default: no labels).
        """
        if y is None:
            out = self.net(x_t, t) if self.forward is None else self.forward(x_t, t)
        else:
            if self.num_classes is None:
                raise ValueError(f"model {self.info.get('model')!r} is not class-conditional, so it takes no class "
                                 "labels. Fix: a class_cond model (model=adm_imagenet256_cond) or no labels")
            out = self.net(x_t, t, y) if self.forward is None else self.forward(x_t, t, y)
        return split_model_output(out, channels=x_t.shape[1])

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The noise prediction only (learned-sigma nets: the first C output channels)."""
        return self.model_output(x_t, t)[0]


def to_plain(obj):
    """Recursively turn mappings/sequences (e.g. an OmegaConf DictConfig) into dicts/lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [to_plain(v) for v in obj]
    return obj


def _require(model: dict, key: str):
    if key not in model:
        raise ValueError(f"model config {model.get('name', '?')!r} lacks key {key!r}; see conf/model/adm_tiny.yaml")
    return model[key]


def _betas(model: dict) -> Tensor:
    d = _require(model, "diffusion")
    kw = {k: float(d[k]) for k in ("beta_start", "beta_end") if d.get(k) is not None}
    return make_betas(str(d.get("schedule", "linear")), int(d.get("steps", 1000)), **kw)


def _learn_sigma(model: dict) -> bool:
    arch_flag = bool(model["arch"].get("learn_sigma", False))
    diff_flag = bool(model["diffusion"].get("learn_sigma", arch_flag))
    if arch_flag != diff_flag:
        raise ValueError(f"model {model['name']!r}: arch.learn_sigma={arch_flag} but diffusion.learn_sigma="
                         f"{diff_flag}; they must agree (the checkpoint has 6 output channels iff true)")
    return arch_flag


def _variance(model: dict) -> str:
    """The variance rule (see :attr:`DiffusionPrior.variance`); learned-sigma nets must say learned_range."""
    learned = _learn_sigma(model)
    var = model["diffusion"].get("variance") or ("learned_range" if learned else "fixed_large")
    if var not in VARIANCES:
        raise ValueError(f"model {model['name']!r}: diffusion.variance={var!r} is not one of {VARIANCES}. "
                         "Fix: model.diffusion.variance=fixed_large (guided-diffusion's default without "
                         "learned sigma) or fixed_small")
    if learned != (var == "learned_range"):
        raise ValueError(f"model {model['name']!r}: diffusion.variance={var!r} but learn_sigma={learned}; "
                         "learned_range goes with learn_sigma=true only")
    return var


def _weights(net: torch.nn.Module, model: dict, path) -> dict:
    """Load the fetched checkpoint ``path`` into ``net`` (strict) or, with no asset, random-initialise it;
    returns provenance."""
    if path is None:
        seed = int(model.get("init_seed", 0))
        random_init_(net, seed=seed)
        return {"asset": None, "init_seed": seed, "meaningful": False}
    try:
        net.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as e:
        raise AssetError(f"checkpoint {path} does not match model {model['name']!r} (arch {model['arch']}): "
                         f"{e}\nFix: point model.asset at the checkpoint made for this architecture") from e
    asset = asset_from_config(model["asset"])
    rec = fetched_assets().get(asset.name, {})
    return {"asset": {"name": asset.name, "sha256": rec.get("sha256"), "source": rec.get("source"),
                      "url": asset.url, "path": str(path), "verified": rec.get("verified")},
            "init_seed": None, "meaningful": True}


def _build(model: dict, device: torch.device) -> DiffusionPrior:
    asset = asset_from_config(model.get("asset"))
    path = None if asset is None else fetch(asset)  # fail on a missing file before building the net
    net = create_model(**model["arch"])
    info = {"model": model["name"], "kind": model["kind"], "image_size": int(model["image_size"]),
            **_weights(net, model, path)}  # weights are set on CPU: random init is machine independent
    info["parameters"] = sum(p.numel() for p in net.parameters())
    net = net.to(device).eval().requires_grad_(False)
    forward, info["speed"] = apply_speed(net, Precision.from_config(model.get("speed")), device)
    info["variance"] = _variance(model)
    return DiffusionPrior(net=net, image_size=int(model["image_size"]), betas=_betas(model).to(device),
                          learn_sigma=_learn_sigma(model), info=info, forward=forward,
                          variance=info["variance"])


def load_prior(model: Mapping, device: torch.device | str) -> DiffusionPrior:
    """Build (or reuse) the prior described by a resolved ``conf/model/*.yaml`` mapping on ``device``."""
    model = to_plain(model)
    for key in ("name", "kind", "image_size"):
        _require(model, key)
    if model["kind"] in ("ldm", "sd"):  # bench.models.latent.LATENT_KINDS (that module imports this one)
        raise ValueError(f"model {model['name']!r} is a latent diffusion prior (kind {model['kind']!r}); pixel-space "
                         "methods need a pixel prior (kind adm | diffusers). Fix: a latent solver (method=latent_dps) "
                         "or model=adm64_imagenet96")
    if model["kind"] not in KINDS:
        raise ValueError(f"model {model['name']!r}: kind={model['kind']!r} is not supported; allowed kinds: "
                         f"{', '.join(KINDS)}. Fix: model.kind=adm (guided-diffusion UNet) or diffusers")
    for key in REQUIRED[model["kind"]]:
        _require(model, key)
    if model["kind"] == "adm":
        _variance(model)  # fail before building anything
    Precision.from_config(model.get("speed"))
    device = torch.device(device)
    digest = hashlib.sha256(json.dumps(model, sort_keys=True, default=str).encode()).hexdigest()[:16]
    key = (str(model["name"]), str(device), digest)
    if key not in _CACHE:
        if model["kind"] == "diffusers":
            _CACHE[key] = DiffusionPrior(**diffusers_prior.build(model, device))
        else:
            _CACHE[key] = _build(model, device)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every cached prior (tests; freeing memory between sweeps)."""
    _CACHE.clear()
