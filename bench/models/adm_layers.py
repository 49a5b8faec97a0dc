"""Building blocks of the guided-diffusion (ADM) UNet.

The module tree (attribute names, ``nn.Sequential`` indices, layer types) follows
``openai/guided-diffusion``'s ``unet.py`` / ``nn.py`` so that the official checkpoints
load with ``strict=True``.  The code itself is an independent re-implementation:

* attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`
  (both the legacy "split heads, then q/k/v" channel layout and the newer
  "split q/k/v, then heads" layout are supported, with identical math to the
  official einsum version: softmax(q^T k / sqrt(d)) v);
* gradient checkpointing uses :func:`torch.utils.checkpoint.checkpoint`.

Parameter-free modules (activations, dropout, pooling, the attention kernel) keep
their official positions so that Sequential indices, hence state_dict keys, match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

__all__ = [
    "GroupNorm32",
    "group_norm_silu",
    "normalization",
    "zero_module",
    "timestep_embedding",
    "qkv_attention",
    "QKVAttention",
    "TimestepBlock",
    "TimestepEmbedSequential",
    "Upsample",
    "Downsample",
    "ResBlock",
    "AttentionBlock",
]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always normalises in float32 and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def group_norm_silu(x: torch.Tensor, norm: nn.GroupNorm, scale: torch.Tensor | None = None,
                    shift: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(GroupNorm(x) [* (1 + scale) + shift])`` in one function, computed in float32, returned in
    ``x.dtype`` (the fused form of ``norm -> [FiLM] -> SiLU`` used when ``fused_norm`` is on).

    Same parameters (``norm.weight``, ``norm.bias``), so the state_dict is unchanged. In float32 it equals
    the unfused modules exactly (same ops in the same order); under bf16/fp16 autocast it is slightly *more*
    accurate, since the FiLM modulation and SiLU stay in float32 until the one final cast (the unfused path
    casts after the norm). Written as one function so that torch.compile sees one pattern (inductor emits
    the GroupNorm reduction plus a single fused pointwise kernel) and eager mode runs SiLU in place.
    """
    h = F.group_norm(x.float(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    if scale is not None:
        h = h * (1 + scale.float()) + shift.float()
    return F.silu(h, inplace=not torch.is_grad_enabled()).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The ADM normalisation layer: 32 groups, eps 1e-5, affine."""
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place (ADM's init for residual outputs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t*f_0..f_{h-1}), sin(t*f_0..f_{h-1})]``, zero-padded if ``dim`` is odd.

    ``f_i = max_period ** (-i / h)`` with ``h = dim // 2``; timesteps may be fractional.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def qkv_attention(qkv: torch.Tensor, num_heads: int, legacy_order: bool) -> torch.Tensor:
    """Multi-head self-attention on a packed ``[B, 3*H*C, T]`` tensor, returning ``[B, H*C, T]``.

    ``legacy_order=True`` reads the channels as ``(H, 3, C)`` (heads outermost, the
    ``QKVAttentionLegacy`` layout that the released checkpoints use); ``False`` reads
    them as ``(3, H, C)`` (``QKVAttention``, ``use_new_attention_order``).  Scale is
    ``1/sqrt(C)``, the same as the official ``(q * C**-0.25) . (k * C**-0.25)``.
    """
    b, width, length = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"qkv width {width} is not divisible by 3 * num_heads ({num_heads})")
    ch = width // (3 * num_heads)
    if legacy_order:
        q, k, v = qkv.reshape(b, num_heads, 3, ch, length).unbind(dim=2)
    else:
        q, k, v = qkv.reshape(b, 3, num_heads, ch, length).unbind(dim=1)
    # [B, H, C, T] -> [B, H, T, C] as SDPA expects (sequence, head_dim) in the last two dims.
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2).reshape(b, num_heads * ch, length)


class QKVAttention(nn.Module):
    """Parameter-free attention kernel (kept as a submodule for parity with the official tree)."""

    def __init__(self, num_heads: int, legacy_order: bool = True):
        super().__init__()
        self.n_heads = num_heads
        self.legacy_order = legacy_order

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return qkv_attention(qkv, self.n_heads, self.legacy_order)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, legacy_order={self.legacy_order}"


class TimestepBlock(nn.Module):
    """Marker base class: ``forward(x, emb)`` takes the timestep embedding as well."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential container that feeds ``emb`` to the children that are :class:`TimestepBlock`."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """2x nearest-neighbour upsampling, optionally followed by a 3x3 conv (attribute ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling by a stride-2 3x3 conv or 2x2 average pooling (attribute ``op`` either way)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """ADM residual block with timestep conditioning (additive or FiLM scale/shift).

    State-dict layout: ``in_layers.{0: norm, 2: conv}``, ``emb_layers.1`` (linear),
    ``out_layers.{0: norm, 3: conv}``, optional ``skip_connection`` conv.
    With ``up``/``down`` the resampling happens between ``in_layers``' activation and conv
    (and on the skip path), with parameter-free ``h_upd``/``x_upd``. ``fused_norm = True`` computes
    each norm -> (FiLM) -> SiLU pair with :func:`group_norm_silu` (same modules, same keys).
    """

    #: compute norm -> (FiLM) -> SiLU with :func:`group_norm_silu` (``ADMUNet.set_fused_norm``)
    fused_norm = False

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return _torch_checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_in, norm_out = self.in_layers[0], self.out_layers[0]
        h = group_norm_silu(x, norm_in) if self.fused_norm else self.in_layers[1](norm_in(x))
        if self.updown:
            h, x = self.h_upd(h), self.x_upd(x)
        h = self.in_layers[2](h)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = (group_norm_silu(h, norm_out, scale, shift) if self.fused_norm
                 else self.out_layers[1](norm_out(h) * (1 + scale) + shift))
        else:
            h = group_norm_silu(h + e, norm_out) if self.fused_norm else self.out_layers[1](norm_out(h + e))
        h = self.out_layers[3](self.out_layers[2](h))  # dropout, conv
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention: ``norm`` (GroupNorm32), ``qkv`` and ``proj_out`` (1x1 Conv1d)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.attention = QKVAttention(self.num_heads, legacy_order=not use_new_attention_order)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return _torch_checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(flat))))
        return (flat + h).reshape(b, c, *spatial)
