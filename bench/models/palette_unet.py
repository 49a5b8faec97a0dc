"""The Palette UNet (Saharia et al. 2022) in the layout of Janspiry's unofficial Palette code.

Janspiry/Palette-Image-to-Image-Diffusion-Models ``models/guided_diffusion_modules/unet.py`` is the
guided-diffusion (ADM) UNet with two changes, both reproduced here:

* the embedding MLP is called ``cond_embed`` (ADM: ``time_embed``) and embeds the *continuous* noise
  level ``gamma = abar`` (not sqrt) with ADM's sinusoidal embedding (``gamma_embedding`` = ADM's
  ``timestep_embedding``, max period 10000) -- so the net sees gamma in [0, 1], not a step index;
* the arguments carry SR3's names (``in_channel``, ``inner_channel``, ``channel_mults``, ``res_blocks``,
  ``attn_res``) and the defaults ``use_scale_shift_norm=True``, ``resblock_updown=True``.

Everything else (blocks, attention, head) is :class:`bench.models.adm_unet.ADMUNet`, so the layers are
shared with the ADM priors. A released ``{epoch}_Network[_ema].pth`` loads strictly after dropping its
``denoise_fn.`` prefix and schedule buffers (:func:`bench.models.conditional.official_unet_state`).

Janspiry quirk kept (it decides where the checkpoints' attention layers are): ``attn_res`` is compared
with the *downsample rate* ``ds`` (1, 2, 4, 8 for four levels), not the feature size; the released configs
say ``attn_res: [16]`` with four levels, so those networks have attention only in the middle block.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from bench.models.adm_layers import timestep_embedding
from bench.models.adm_unet import ADMUNet

__all__ = ["PaletteUNet"]


class PaletteUNet(ADMUNet):
    """eps_theta(cat[c, y_t], gamma) with gamma = abar of shape (B,) or (B, 1)."""

    def __init__(self, image_size: int, in_channel: int, inner_channel: int, out_channel: int, res_blocks: int,
                 attn_res: Iterable[int], dropout: float = 0.0, channel_mults: Sequence[float] = (1, 2, 4, 8),
                 conv_resample: bool = True, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = True, resblock_updown: bool = True,
                 use_new_attention_order: bool = False, use_checkpoint: bool = False, use_fp16: bool = False):
        super().__init__(
            image_size=int(image_size), in_channels=int(in_channel), model_channels=int(inner_channel),
            out_channels=int(out_channel), num_res_blocks=int(res_blocks),
            attention_resolutions=tuple(int(r) for r in attn_res), dropout=float(dropout),
            channel_mult=tuple(channel_mults), conv_resample=conv_resample, use_checkpoint=use_checkpoint,
            use_fp16=use_fp16, num_heads=num_heads, num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order,
        )
        self.cond_embed = self.time_embed  # the official name (same MLP: Linear, SiLU, Linear)
        del self.time_embed

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x`` = cat[c, y_t] (B, in_channel, H, W); ``gamma`` = abar per image, (B,) or (B, 1)."""
        emb = self.cond_embed(timestep_embedding(gamma.reshape(-1), self.model_channels))
        return self.forward_embedded(x, emb)
