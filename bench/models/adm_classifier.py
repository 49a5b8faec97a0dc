"""The guided-diffusion (ADM) noisy-image classifier p(y | x_t, t), compatible with the released checkpoints.

:class:`ADMClassifier` has the module tree of ``guided_diffusion.unet.EncoderUNetModel`` (the encoder half of the
ADM UNet: ``time_embed``, ``input_blocks``, ``middle_block``, then an ``out`` head), so ``256x256_classifier.pt``
loads with ``strict=True``; :func:`create_classifier` takes the flags of ``guided_diffusion.script_util.
create_classifier`` (``classifier_width``, ``classifier_depth``, ...), plus ``channel_mult``, ``num_head_channels``
and ``num_classes`` for small test configurations (official: the default multipliers of the image size, 64, 1000).
The blocks are :mod:`bench.models.adm_layers`' (the same ResBlock / AttentionBlock / Downsample as the UNet).

Heads (``classifier_pool``): ``attention`` (the released classifiers: GroupNorm, SiLU, :class:`AttentionPool2d`, a
CLIP-style attention pooling whose query is the spatial mean token) and ``adaptive`` (GroupNorm, SiLU, global
average pool, 1x1 conv). The ``spatial`` heads of the official code are not implemented (no released checkpoint
uses them): a ValueError says so.

:func:`load_classifier` builds one from a config mapping (``conf/classifier/*.yaml``: ``name``, ``arch`` = the
flags, ``asset`` = ``{name, url, sha256, path}`` or null for random weights from ``init_seed``) the way
:func:`bench.models.prior.load_prior` builds a prior: fetched through :mod:`bench.models.assets`, loaded strictly,
eval mode, ``requires_grad=False`` on its parameters (guidance differentiates w.r.t. the input only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from bench.models.adm_layers import (
    AttentionBlock,
    Downsample,
    QKVAttention,
    ResBlock,
    TimestepEmbedSequential,
    normalization,
    timestep_embedding,
    zero_module,
)
from bench.models.adm_unet import NUM_CLASSES, _flag, _parse_attention_resolutions, _parse_channel_mult, \
    random_init_
from bench.models.assets import AssetError, asset_from_config, fetch, fetched_assets, load_state_dict

__all__ = ["AttentionPool2d", "ADMClassifier", "create_classifier", "load_classifier", "POOLS"]

#: the heads implemented here (official also has "spatial" and "spatial_v2", used by no released checkpoint)
POOLS = ("attention", "adaptive")


class AttentionPool2d(nn.Module):
    """Attention pooling: tokens = [mean over space, every position] + a learned positional embedding; one
    multi-head attention (qkv in the "split q/k/v, then heads" order); the mean token's output, projected.

    Keys: ``positional_embedding`` (C, S^2 + 1), ``qkv_proj`` and ``c_proj`` (1x1 Conv1d)."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None = None):
        super().__init__()
        if embed_dim % num_head_channels:
            raise ValueError(f"attention pooling: {embed_dim} channels not divisible by num_head_channels "
                             f"{num_head_channels}")
        self.positional_embedding = nn.Parameter(torch.empty(embed_dim, spatial_dim ** 2 + 1))
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.attention = QKVAttention(embed_dim // num_head_channels, legacy_order=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The positional embedding only (the convs reset themselves): N(0, 1 / C), as upstream."""
        with torch.no_grad():
            self.positional_embedding.normal_(0.0, 1.0 / math.sqrt(self.positional_embedding.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None].to(x.dtype)
        return self.c_proj(self.attention(self.qkv_proj(x)))[:, :, 0]


class ADMClassifier(nn.Module):
    """The ADM encoder with a classification head: ``forward(x, t) -> logits (B, num_classes)``.

    Arguments as ``EncoderUNetModel``'s: ``attention_resolutions`` are downsample rates; ``num_head_channels``
    (if not -1) overrides ``num_heads``; ``pool`` one of :data:`POOLS`."""

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions, dropout: float = 0.0,
                 channel_mult=(1, 2, 4, 8), conv_resample: bool = True, use_checkpoint: bool = False,
                 use_fp16: bool = False, num_heads: int = 1, num_head_channels: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, pool: str = "adaptive"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"classifier pool={pool!r} is not implemented; allowed: {', '.join(POOLS)} "
                             "(the released guided-diffusion classifiers use attention)")
        if pool == "attention" and num_head_channels == -1:
            raise ValueError("classifier pool=attention needs num_head_channels (official: 64)")
        self.image_size, self.in_channels, self.model_channels = image_size, in_channels, model_channels
        self.out_channels, self.num_res_blocks, self.pool = out_channels, num_res_blocks, pool
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)
        self.channel_mult = tuple(channel_mult)
        self.use_fp16 = use_fp16
        #: torso autocast dtype on CUDA for ``use_fp16`` (as :class:`bench.models.adm_unet.ADMUNet`); CPU: float32
        self.autocast_dtype: torch.dtype | None = torch.float16 if use_fp16 else None
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(cin, emb_dim, dropout, out_channels=cout, use_checkpoint=use_checkpoint,
                            use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads=num_heads, num_head_channels=num_head_channels,
                                  use_checkpoint=use_checkpoint, use_new_attention_order=use_new_attention_order)

        ch = int(self.channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        ds = 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in self.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(self.channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, out_channels=ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        if pool == "attention":
            head: nn.Module = AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels)
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), head)
        else:
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     zero_module(nn.Conv2d(ch, out_channels, 1)), nn.Flatten())

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of ``x`` (B, C, H, W) in [-1, 1] at the model timesteps ``timesteps`` (B,)."""
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = x
        if self.autocast_dtype is not None and x.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.autocast_dtype):
                h = self._torso(h, emb)
        else:
            h = self._torso(h, emb)
        return self.out(h.to(x.dtype))

    def _torso(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.input_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb)


def create_classifier(image_size, classifier_use_fp16=False, classifier_width=128, classifier_depth=2,
                      classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
                      classifier_resblock_updown=True, classifier_pool="attention", channel_mult="",
                      num_head_channels=64, num_classes=NUM_CLASSES, in_channels=3) -> ADMClassifier:
    """An :class:`ADMClassifier` from guided-diffusion ``create_classifier`` flags (same names, same defaults as
    its ``classifier_defaults()``); ``channel_mult`` "" = the official multipliers of ``image_size``."""
    image_size = int(image_size)
    return ADMClassifier(
        image_size=image_size, in_channels=int(in_channels), model_channels=int(classifier_width),
        out_channels=int(num_classes), num_res_blocks=int(classifier_depth),
        attention_resolutions=_parse_attention_resolutions(classifier_attention_resolutions, image_size),
        channel_mult=_parse_channel_mult(channel_mult, image_size), use_fp16=_flag(classifier_use_fp16),
        num_head_channels=int(num_head_channels), use_scale_shift_norm=_flag(classifier_use_scale_shift_norm),
        resblock_updown=_flag(classifier_resblock_updown), pool=str(classifier_pool))


_CACHE: dict[tuple, ADMClassifier] = {}


def load_classifier(cfg: Mapping, device: torch.device | str, node: str = "method.classifier") -> ADMClassifier:
    """Build (or reuse) the classifier of a config mapping ``{name, arch, asset, init_seed}`` on ``device``:
    the checkpoint strictly loaded (``asset`` set) or random weights from ``init_seed`` (``asset: null``, NOT
    meaningful); eval mode, parameters frozen. ``node`` names the mapping in error messages."""
    from bench.models.prior import to_plain

    cfg = to_plain(cfg)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict) or "image_size" not in cfg["arch"]:
        raise ValueError(f"{node}={cfg!r} must be a classifier config with an arch block holding image_size "
                         "(conf/classifier/adm_imagenet256.yaml). Fix: +classifier=adm_imagenet256, or "
                         f"{node}=null for no classifier")
    key = (str(cfg.get("name")), str(device), repr(sorted(cfg.items(), key=lambda kv: kv[0])))
    if key in _CACHE:
        return _CACHE[key]
    asset = asset_from_config(cfg.get("asset"), node=f"{node}.asset")
    path = None if asset is None else fetch(asset)
    try:
        net = create_classifier(**cfg["arch"])
    except TypeError as e:
        raise ValueError(f"{node}.arch: {e}; the keys are create_classifier's flags "
                         "(bench/models/adm_classifier.py)") from e
    if path is None:
        random_init_(net, seed=int(cfg.get("init_seed", 0)))
        info = {"name": cfg.get("name"), "asset": None, "init_seed": int(cfg.get("init_seed", 0)),
                "meaningful": False}
    else:
        try:
            net.load_state_dict(load_state_dict(path), strict=True)
        except RuntimeError as e:
            raise AssetError(f"checkpoint {path} does not match classifier {cfg.get('name')!r} (arch "
                             f"{cfg['arch']}): {e}\nFix: point {node}.asset at the checkpoint made for it") from e
        rec = fetched_assets().get(asset.name, {})
        info = {"name": cfg.get("name"), "asset": {"name": asset.name, "url": asset.url, "path": str(path),
                                                  "sha256": rec.get("sha256"), "verified": rec.get("verified")},
                "meaningful": True}
    info["parameters"] = sum(p.numel() for p in net.parameters())
    net = net.to(device).eval().requires_grad_(False)
    net.info = info  # provenance, read by the methods' describe()
    _CACHE[key] = net
    return net
