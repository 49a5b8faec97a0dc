"""BigGAN-deep generators (the ``pytorch-pretrained-biggan`` package) for DGP: loading and a tiny stand-in.

Where the weights come from, in this order (``method.generator``):

1. ``local_dir``: a directory holding ``config.json`` + ``pytorch_model.bin`` exactly as the package
   writes them (or the path of the ``.bin`` with ``config.json`` beside it). See :func:`save_biggan`.
2. ``source`` = ``biggan-deep-128|256|512``: the package's own download cache
   (``$PYTORCH_PRETRAINED_BIGGAN_CACHE``, default ``~/.pytorch_pretrained_biggan``; files named
   ``sha256(url)[.sha256(etag)]``, as ``BigGAN.from_pretrained`` leaves them).
3. Not cached and online: downloaded into that cache by the package's ``cached_path`` (the same URLs as
   ``BigGAN.from_pretrained``). Offline (``BENCH_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) or a failed download
   is an :class:`~bench.models.assets.AssetError` that says which files to place where.

The weights are read with ``torch.load(weights_only=True)`` (:func:`bench.models.assets.load_state_dict`),
not with the package's unrestricted ``torch.load``; the config with ``BigGANConfig.from_json_file``. No
sha256 is pinned upstream, so the digest of the file actually loaded is recorded for provenance.

``source=embedded`` (the default of ``method=dgp``): :func:`load_embedded`, the small 64x64 BigGAN-deep this
project trained on ImageNet-sample-96 (``bench/train/gan.py``, card ``bench/priors/biggan64_imagenet96.md``),
shipped as fp16 safetensors whose metadata holds the ``BigGANConfig``; fetched through
:func:`bench.models.assets.fetch` (``method.generator.asset``: path + pinned sha256) and loaded strictly.
It is *unconditional* (``num_classes=1``: one class embedding; the data has one image per class).

``source=tiny``: :func:`tiny_biggan`, a random 32x32 BigGAN-deep with 4-channel-wide blocks, for tests.
Its images are NOT meaningful.

Fine-tuning groups (:func:`finetune_groups`), DGP's ``Generator.get_params(i)`` transposed to the deep
architecture: group 0 = the z/class input layer ``gen_z``; group k >= 1 = the GenBlocks (and the
self-attention layer) up to and including the k-th upsampling block, i.e. one group per output resolution
(BigGAN-deep-256: 6 groups, 8x8 ... 256x256). The output layer (batch norm + conv_to_rgb) is in no group:
DGP never fine-tunes it either (its optimizer holds groups 0..len(blocks) only).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from bench.cli_errors import reject_unknown_keys
from bench.models.assets import AssetError, _is_offline, asset_from_config, fetch, load_state_dict, sha256_file

SOURCES = ("embedded", "tiny", "biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
PRETRAINED = SOURCES[2:]
GENERATOR_KEYS = ("source", "local_dir", "seed", "asset")
#: the shipped generator (``source=embedded``) when ``method.generator.asset`` names no other file
EMBEDDED_PATH = "bench/priors/biggan64_imagenet96.safetensors"
WEIGHTS_NAME, CONFIG_NAME = "pytorch_model.bin", "config.json"
_S3 = "https://s3.amazonaws.com/models.huggingface.co/biggan"


def urls(source: str) -> dict[str, str]:
    """The package's download URLs for ``source`` (``PRETRAINED_*_ARCHIVE_MAP`` in its model.py)."""
    return {WEIGHTS_NAME: f"{_S3}/{source}-pytorch_model.bin", CONFIG_NAME: f"{_S3}/{source}-config.json"}


def check_generator_config(gen) -> dict:
    """Validate ``method.generator``: keys ``source`` (one of :data:`SOURCES`), ``local_dir``, ``seed``,
    ``asset`` (``{name, url, sha256, path}`` of the ``embedded`` safetensors file)."""
    gen = {str(k): v for k, v in dict(gen or {}).items()}
    reject_unknown_keys("method.generator", gen, GENERATOR_KEYS)
    source, local_dir = gen.get("source") or None, gen.get("local_dir") or None
    if source is None and local_dir is None:
        raise ValueError(f"method.generator needs source ({' | '.join(SOURCES)}) or local_dir=/path/to/dir")
    if source is not None and source not in SOURCES:
        close = difflib.get_close_matches(str(source), SOURCES, 1, cutoff=0.5)
        raise ValueError(f"method.generator.source={source!r} is not one of {list(SOURCES)}"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    seed = gen.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"method.generator.seed={seed!r} must be an integer (init seed of the tiny model)")
    asset = gen.get("asset") if source == "embedded" and local_dir is None else None  # only embedded reads it
    asset = None if asset is None else {str(k): v for k, v in dict(asset).items()}
    if asset is not None:
        asset_from_config(asset)  # unknown keys / a malformed sha256 fail here, before any run starts
    return {"source": source, "local_dir": None if local_dir is None else str(local_dir), "seed": seed,
            "asset": asset}


# ------------------------------------------------------------------------------------------------ tiny
def tiny_config():
    """32x32 output, 3 upsamplings (4 -> 32), channel_width 8, z/class embedding 16-d, 1000 classes."""
    from pytorch_pretrained_biggan import BigGANConfig

    return BigGANConfig(
        output_dim=32, z_dim=16, class_embed_dim=16, channel_width=8, num_classes=1000,
        layers=[(False, 16, 16), (True, 16, 8), (False, 8, 4), (True, 4, 2), (False, 2, 1), (True, 1, 1)],
        attention_layer_position=4, eps=1e-4, n_stats=51,
    )


def tiny_biggan(seed: int = 0) -> nn.Module:
    """A tiny random BigGAN-deep (~190k parameters). Deterministic in ``seed``; the global RNG state is
    restored afterwards. For tests and the offline CLI default only: its images are NOT meaningful.

    Beyond PyTorch's default init: the output batch norm's affine parameters (left uninitialised by the
    package) are set to 1/0, the attention gain to 0.5 (so the layer is exercised), and every spectral-norm
    ``u``/``v`` buffer to the exact top singular vectors of its weight, as converged training leaves them
    (in eval mode the package divides by u^T W v without power iterations)."""
    model = init_biggan(tiny_config(), seed)
    with torch.no_grad():
        for layer in model.generator.layers:
            if hasattr(layer, "gamma"):
                layer.gamma.fill_(0.5)
    exact_spectral_vectors(model)
    return _frozen(model)


def init_biggan(config, seed: int = 0) -> nn.Module:
    """``BigGAN(config)`` with PyTorch's default init drawn under ``seed`` (the global RNG state is restored)
    and the output batch norm's affine parameters, which the package leaves uninitialised, set to 1/0."""
    from pytorch_pretrained_biggan import BigGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = BigGAN(config)
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
    return model


@torch.no_grad()
def exact_spectral_vectors(model: nn.Module) -> nn.Module:
    """Set every spectral-norm ``u``/``v`` buffer to the exact top singular vectors of its weight, as
    converged power iteration leaves them (in eval mode the package divides by u^T W v without iterating)."""
    for module in model.modules():
        if hasattr(module, "weight_orig") and hasattr(module, "weight_u"):
            w = module.weight_orig.reshape(module.weight_orig.shape[0], -1).float()
            u, _, vh = torch.linalg.svd(w, full_matrices=False)
            module.weight_u.copy_(u[:, 0])
            module.weight_v.copy_(vh[0])
    return model


def save_biggan(model: nn.Module, directory) -> Path:
    """Write ``config.json`` + ``pytorch_model.bin`` in the package's format (loadable by
    ``BigGAN.from_pretrained(directory)`` and by ``method.generator.local_dir``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG_NAME).write_text(model.config.to_json_string())
    torch.save(model.state_dict(), d / WEIGHTS_NAME)
    return d


# ---------------------------------------------------------------------------------------------- loading
def package_cache_dir() -> Path:
    """The package's download cache, read at call time (the package reads it once at import)."""
    env = os.environ.get("PYTORCH_PRETRAINED_BIGGAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".pytorch_pretrained_biggan"


def _cached(url: str, cache: Path) -> Path | None:
    """The newest cache entry for ``url`` (``sha256(url)`` with or without the ``.sha256(etag)`` suffix)."""
    prefix = hashlib.sha256(url.encode("utf-8")).hexdigest()
    if not cache.is_dir():
        return None
    hits = [p for p in cache.glob(prefix + "*") if p.is_file() and not p.name.endswith(".json")]
    return max(hits, key=lambda p: p.stat().st_mtime) if hits else None


def _fix_text(source: str, cache: Path) -> str:
    u = urls(source)
    return (f"Fix: download\n  {u[CONFIG_NAME]}\n  {u[WEIGHTS_NAME]}\n"
            f"into a directory as {CONFIG_NAME} and {WEIGHTS_NAME} and set method.generator.local_dir=<that dir>;\n"
            f"or run once online (BigGAN.from_pretrained({source!r}) fills the package cache {cache});\n"
            f"or use method.generator.source=tiny (random, NOT meaningful) for a smoke run.")


def _resolve_files(source: str | None, local_dir: str | None, cache_dir, offline: bool | None):
    """(config path, weights path, origin) for a local directory/file or a named pretrained model."""
    if local_dir:
        p = Path(local_dir).expanduser()
        root = p.parent if p.is_file() else p
        weights = p if p.is_file() else p / WEIGHTS_NAME
        config = root / CONFIG_NAME
        missing = [str(f) for f in (config, weights) if not f.is_file()]
        if missing:
            raise AssetError(f"method.generator.local_dir={local_dir}: missing {missing}; the directory needs "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME} as pytorch-pretrained-biggan saves them "
                             f"(bench.models.biggan.save_biggan writes that format).")
        return config, weights, f"local:{weights.resolve()}"
    if source not in PRETRAINED:
        raise AssetError(f"no pretrained BigGAN named {source!r}; choose one of {list(PRETRAINED)} or set "
                         "method.generator.local_dir")
    cache = Path(cache_dir).expanduser() if cache_dir else package_cache_dir()
    u = urls(source)
    found = {name: _cached(url, cache) for name, url in u.items()}
    if all(found.values()):
        return found[CONFIG_NAME], found[WEIGHTS_NAME], f"cache:{found[WEIGHTS_NAME]}"
    missing = [name for name, f in found.items() if f is None]
    if _is_offline(offline):
        raise AssetError(f"BigGAN {source!r}: {missing} not in the package cache {cache} and downloads are off "
                         f"(BENCH_OFFLINE=1 or HF_HUB_OFFLINE=1).\n" + _fix_text(source, cache))
    from pytorch_pretrained_biggan.file_utils import cached_path

    try:
        paths = {name: Path(cached_path(url, cache_dir=str(cache))) for name, url in u.items()}
    except (OSError, ValueError) as e:  # requests' errors are OSError subclasses
        raise AssetError(f"BigGAN {source!r}: download failed ({type(e).__name__}: {e}).\n"
                         + _fix_text(source, cache)) from e
    return paths[CONFIG_NAME], paths[WEIGHTS_NAME], f"download:{u[WEIGHTS_NAME]}"


def load_biggan(source: str | None, local_dir: str | None = None, *, cache_dir=None,
                offline: bool | None = None) -> tuple[nn.Module, dict]:
    """Load a pretrained BigGAN-deep (see the module docstring for the order). Returns the frozen model in
    eval mode on CPU and provenance ``{origin, sha256, output_dim}``. Every failure is an AssetError."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    config_path, weights_path, origin = _resolve_files(source, local_dir, cache_dir, offline)
    try:
        config = BigGANConfig.from_json_file(str(config_path))
    except (OSError, ValueError) as e:
        raise AssetError(f"could not read the BigGAN config {config_path}: {e}") from e
    state = load_state_dict(weights_path)
    with torch.random.fork_rng(devices=[]):  # the constructor's random init must not move the global RNG
        try:
            model = BigGAN(config)
        except (TypeError, KeyError, IndexError, ValueError) as e:
            raise AssetError(f"{config_path} is not a BigGAN-deep config: {e}") from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    missing_params = [k for k in missing if k in params]
    if missing_params or unexpected:
        raise AssetError(f"{weights_path} does not match {config_path}: missing parameters "
                         f"{missing_params[:8]}, unexpected keys {list(unexpected)[:8]}")
    return _frozen(model), {"origin": origin, "sha256": sha256_file(weights_path),
                            "output_dim": int(config.output_dim)}


def load_embedded(asset_cfg: dict | None = None, *, offline: bool | None = None) -> tuple[nn.Module, dict]:
    """The shipped generator: ``asset_cfg`` (default: :data:`EMBEDDED_PATH`, unverified) is fetched and
    verified by :func:`bench.models.assets.fetch`; the safetensors metadata ``config`` is the BigGANConfig
    (JSON); every tensor (parameters, spectral-norm vectors, per-truncation BN statistics) loads strictly."""
    import json

    from pytorch_pretrained_biggan import BigGANConfig
    from safetensors import safe_open

    asset = asset_from_config(asset_cfg or {"path": EMBEDDED_PATH}, node="method.generator.asset")
    path = fetch(asset, offline=offline, progress=False)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        config = BigGANConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, OSError) as e:
        raise AssetError(f"{path}: no BigGANConfig in its safetensors metadata ('config'); write it with "
                         f"bench.train.gan (python -m bench.train --config-name gan64): {e}") from e
    model = init_biggan(config)
    try:
        model.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as e:
        raise AssetError(f"{path} does not match its own config: {str(e).splitlines()[0]}") from e
    return _frozen(model), {"origin": f"embedded:{path}", "path": str(path), "sha256": sha256_file(path),
                            "verified": asset.sha256 is not None, "output_dim": int(config.output_dim),
                            "conditional": int(config.num_classes) > 1, "steps": meta.get("step"),
                            "note": "embedded demo prior (64 px, trained on 1000 images): NOT BigGAN-deep"}


def build_generator(cfg: dict) -> tuple[nn.Module, dict]:
    """``method.generator`` (validated by :func:`check_generator_config`) -> (model, provenance)."""
    if not cfg["local_dir"] and cfg["source"] == "embedded":
        return load_embedded(cfg.get("asset"))
    if cfg["local_dir"] or cfg["source"] != "tiny":
        return load_biggan(cfg["source"], cfg["local_dir"])
    model = tiny_biggan(cfg["seed"])
    return model, {"origin": f"tiny(seed={cfg['seed']})", "sha256": None, "output_dim": 32,
                   "note": "random weights: NOT meaningful"}


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------------ fine-tuning
def finetune_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """DGP's parameter groups, shallow to deep: [gen_z] + one group per output resolution (module docstring)."""
    from pytorch_pretrained_biggan.model import GenBlock

    g = model.generator
    groups, current = [list(g.gen_z.parameters())], []
    for layer in g.layers:
        current.extend(layer.parameters())
        if isinstance(layer, GenBlock) and layer.up_sample:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def describe_config(model: nn.Module) -> dict:
    c = model.config
    return {"output_dim": c.output_dim, "z_dim": c.z_dim, "channel_width": c.channel_width,
            "num_classes": c.num_classes, "layers": len(c.layers), "groups": len(finetune_groups(model)),
            "parameters": sum(p.numel() for p in model.parameters())}
