"""The SR3 UNet (Saharia et al. 2021) in the layout of Janspiry's unofficial SR3 code.

Janspiry/Image-Super-Resolution-via-Iterative-Refinement ``model/sr3_modules/unet.py``: a DDPM-style
ResNet UNet whose input is ``cat[c, x_t]`` (c = the bicubic-upsampled low-resolution image, 3 channels,
then the noisy high-resolution image) and whose output is the noise estimate eps. It is conditioned on
the *continuous* noise level ``gamma = sqrt(abar)`` (a WaveGrad-style sinusoidal encoding of the scalar,
then an MLP), added to the features of every residual block.

The module tree (attribute names, ``nn.Sequential`` indices, module order) follows the official file so
that a released ``*_gen.pth`` loads with ``strict=True`` (after dropping its ``denoise_fn.`` prefix and the
schedule buffers: :func:`bench.models.conditional.official_unet_state`). The code is an independent
re-implementation; the numerics are the official ones, including two quirks kept on purpose because the
checkpoints were trained with them:

* self-attention divides the logits by ``sqrt(channels)`` (all heads together), not ``sqrt(head_dim)``;
  the released configs use one head, where the two agree;
* ``ResnetBlock`` never receives ``use_affine_level`` from the UNet, so the noise level is always added
  (no FiLM scale) -- the official argument is unused and not exposed here.

``attn_res`` are feature-map sizes (16 = attention where the features are 16x16), derived from
``image_size`` exactly as upstream, so the same network built for another image size puts its attention
elsewhere (as the official code does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["SR3UNet", "noise_level_encoding"]


def noise_level_encoding(gamma: torch.Tensor, dim: int) -> torch.Tensor:
    """WaveGrad's encoding of a continuous noise level: ``[sin(gamma f_i), cos(gamma f_i)]`` with
    ``f_i = exp(-ln(1e4) i / h)``, ``h = dim // 2``, i = 0..h-1. ``gamma`` (B,) -> (B, 2h)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=gamma.dtype, device=gamma.device) / half)
    angles = gamma[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class NoiseLevelEncoding(nn.Module):
    """Parameter-free (kept as a module at index 0 of ``noise_level_mlp``, as upstream)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        return noise_level_encoding(gamma, self.dim)


class Block(nn.Module):
    """``block``: GroupNorm -> SiLU -> (Dropout) -> 3x3 conv; the conv sits at index 3 either way."""

    def __init__(self, dim: int, dim_out: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, dim), nn.SiLU(), nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class NoiseLevelAdd(nn.Module):
    """``noise_func.0``: a linear map of the noise-level embedding, added per channel."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(emb_dim, channels))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.noise_func(emb)[:, :, None, None]


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, emb_dim: int, dropout: float, norm_groups: int):
        super().__init__()
        self.noise_func = NoiseLevelAdd(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups=norm_groups)
        self.block2 = Block(dim_out, dim_out, groups=norm_groups, dropout=dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.noise_func(self.block1(x), emb))
        return h + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-conv qkv (no bias), softmax(q^T k / sqrt(C)) v, 1x1 output conv, residual."""

    def __init__(self, channels: int, n_head: int = 1, norm_groups: int = 32):
        super().__init__()
        self.n_head = n_head
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, d = self.n_head, c // self.n_head
        q, k, v = self.qkv(self.norm(x)).view(b, n, 3 * d, h * w).chunk(3, dim=2)  # (b, n, d, hw) each
        attn = torch.softmax(torch.einsum("bndi,bndj->bnij", q, k) / math.sqrt(c), dim=-1)
        out = torch.einsum("bnij,bndj->bndi", attn, v).reshape(b, c, h, w)
        return self.out(out) + x


class ResnetBlocWithAttn(nn.Module):
    """Residual block (``res_block``) optionally followed by self-attention (``attn``)."""

    def __init__(self, dim: int, dim_out: int, *, emb_dim: int, norm_groups: int, dropout: float,
                 with_attn: bool):
        super().__init__()
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, dropout, norm_groups)
        self.attn = SelfAttention(dim_out, norm_groups=norm_groups) if with_attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, emb)
        return self.attn(x) if self.attn is not None else x


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SR3UNet(nn.Module):
    """eps_theta(cat[c, x_t], gamma) with gamma = sqrt(abar) of shape (B,) or (B, 1).

    Arguments carry the official JSON names (``model.unet`` of ``config/sr_sr3_*.json``;
    ``channel_multiplier`` there is ``channel_mults`` here, as in ``networks.define_G``).
    """

    def __init__(self, in_channel: int = 6, out_channel: int = 3, inner_channel: int = 32,
                 norm_groups: int = 32, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 attn_res: Iterable[int] = (8,), res_blocks: int = 3, dropout: float = 0.0,
                 image_size: int = 128):
        super().__init__()
        attn_res = tuple(int(r) for r in attn_res)
        self.in_channel, self.out_channel, self.image_size = int(in_channel), int(out_channel), int(image_size)
        emb = inner_channel
        self.noise_level_mlp = nn.Sequential(
            NoiseLevelEncoding(inner_channel), nn.Linear(inner_channel, inner_channel * 4), nn.SiLU(),
            nn.Linear(inner_channel * 4, inner_channel),
        )

        def block(cin: int, cout: int, with_attn: bool) -> ResnetBlocWithAttn:
            return ResnetBlocWithAttn(cin, cout, emb_dim=emb, norm_groups=norm_groups, dropout=dropout,
                                      with_attn=with_attn)

        ch, res = inner_channel, int(image_size)
        skip_chans = [ch]
        downs: list[nn.Module] = [nn.Conv2d(in_channel, inner_channel, 3, padding=1)]
        for level, mult in enumerate(channel_mults):
            out_ch = inner_channel * mult
            for _ in range(res_blocks):
                downs.append(block(ch, out_ch, res in attn_res))
                ch = out_ch
                skip_chans.append(ch)
            if level != len(channel_mults) - 1:
                downs.append(Downsample(ch))
                skip_chans.append(ch)
                res //= 2
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch, False)])

        ups: list[nn.Module] = []
        for level in reversed(range(len(channel_mults))):
            out_ch = inner_channel * channel_mults[level]
            for _ in range(res_blocks + 1):
                ups.append(block(ch + skip_chans.pop(), out_ch, res in attn_res))
                ch = out_ch
            if level > 0:
                ups.append(Upsample(ch))
                res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(ch, out_channel, groups=norm_groups)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """``x`` = cat[c, x_t] (B, in_channel, H, W); ``gamma`` = sqrt(abar) per image, (B,) or (B, 1)."""
        emb = self.noise_level_mlp(gamma.reshape(-1).to(x.dtype))
        skips = []
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, emb)
        for layer in self.ups:
            x = layer(torch.cat([x, skips.pop()], dim=1), emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
        return self.final_conv(x)
