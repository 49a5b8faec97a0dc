"""Guided-diffusion (ADM, Dhariwal & Nichol 2021) UNet, compatible with the official checkpoints.

:class:`ADMUNet` reproduces the module tree of ``guided_diffusion.unet.UNetModel`` so that a
released checkpoint (e.g. ``256x256_diffusion_uncond.pt``) loads with ``strict=True``;
:func:`create_model` takes the same flags as ``guided_diffusion.script_util.create_model``
(plus ``in_channels``), so flag sets copied from the official README work unchanged.

Differences from the official code, all numerically benign:

* attention uses ``F.scaled_dot_product_attention`` (same math, both channel orders);
* ``use_checkpoint`` uses ``torch.utils.checkpoint`` (non-reentrant) on residual and attention
  blocks; it only matters when gradients are being recorded (training, or guidance that
  back-propagates through the network) and changes memory, not results.  Official code
  checkpoints attention blocks whenever gradients flow; here both follow ``use_checkpoint``.
* ``use_fp16``: the official model casts the torso's convolution weights to float16.  Here the
  flag is recorded (``self.dtype`` is float16, as upstream) but, by default, the weights stay
  float32 and the torso (input/middle/output blocks) runs under ``torch.autocast`` with
  ``self.autocast_dtype`` (float16 for ``use_fp16``; set it to ``torch.bfloat16`` for an
  overflow-safe alternative on recent GPUs, or ``None`` for full float32).  Autocast is applied only
  on CUDA inputs; on CPU the model runs in float32.  GroupNorm always computes in float32
  and the output head (``out``) runs in the input dtype, as upstream.  Call
  :meth:`ADMUNet.convert_to_fp16` to reproduce the official fp16 weight cast exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from bench.models.adm_layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    group_norm_silu,
    normalization,
    timestep_embedding,
    zero_module,
)

__all__ = ["ADMUNet", "create_model", "random_init_", "default_channel_mult", "NUM_CLASSES"]

NUM_CLASSES = 1000

# guided-diffusion's choice of channel multipliers when ``channel_mult=""``.
_DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """Official default channel multipliers for ``image_size`` (512, 256, 128 or 64)."""
    try:
        return _DEFAULT_CHANNEL_MULT[int(image_size)]
    except KeyError:
        raise ValueError(f"no default channel_mult for image_size {image_size}; pass channel_mult") from None


class ADMUNet(nn.Module):
    """The ADM UNet with timestep (and optional class) conditioning.

    Arguments mirror ``UNetModel``: ``attention_resolutions`` are *downsample rates*
    (1 = full resolution) at which attention blocks are inserted; ``num_head_channels``
    (if not -1) overrides ``num_heads``; ``num_heads_upsample`` (-1 = ``num_heads``) sets the
    heads of decoder attention blocks when ``num_head_channels`` is -1.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)
        self.dropout = dropout
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.use_fp16 = use_fp16
        self.dtype = torch.float16 if use_fp16 else torch.float32  # upstream attribute
        self.autocast_dtype: torch.dtype | None = torch.float16 if use_fp16 else None
        self._torso_fp16 = False
        self.fused_norm = False  # see set_fused_norm

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(
                cin, emb_dim, dropout, out_channels=cout, use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm, **kw,
            )

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch, num_heads=heads, num_head_channels=num_head_channels,
                use_checkpoint=use_checkpoint, use_new_attention_order=use_new_attention_order,
            )

        ch = first_ch = int(self.channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        n_levels = len(self.channel_mult)
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                out_ch = int(mult * model_channels)
                layers: list[nn.Module] = [res(ch, out_ch)]
                ch = out_ch
                if ds in self.attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != n_levels - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, out_channels=ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(n_levels)):
            mult = self.channel_mult[level]
            for i in range(num_res_blocks + 1):
                out_ch = int(mult * model_channels)
                layers = [res(ch + skip_chans.pop(), out_ch)]
                ch = out_ch
                if ds in self.attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level > 0 and i == num_res_blocks:
                    up = res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, out_channels=ch)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(first_ch, out_channels, 3, padding=1))
        )

    # ------------------------------------------------------------------ precision
    def _torso_convs(self) -> Iterable[nn.Module]:
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    yield m

    def convert_to_fp16(self) -> None:
        """Cast the torso's conv weights to float16 exactly like upstream (disables autocast)."""
        for m in self._torso_convs():
            m.half()
        self._torso_fp16 = True

    def convert_to_fp32(self) -> None:
        """Undo :meth:`convert_to_fp16`."""
        for m in self._torso_convs():
            m.float()
        self._torso_fp16 = False

    def set_fused_norm(self, enabled: bool = True) -> None:
        """Compute every GroupNorm -> (FiLM) -> SiLU pair (residual blocks and the output head) with
        :func:`~bench.models.adm_layers.group_norm_silu`. Only the forward changes: the modules, hence the
        state_dict keys of the guided-diffusion checkpoint layout, stay as they are."""
        self.fused_norm = bool(enabled)
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.fused_norm = self.fused_norm

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the network output ``[N, out_channels, H, W]`` for inputs ``x`` at ``timesteps``.

        ``timesteps`` is a 1-D tensor of N (possibly fractional) steps or a scalar shared by the
        batch; ``y`` holds N class labels and must be given iff the model is class-conditional.
        """
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("y must be given if and only if the model is class-conditional")
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if y is not None:
            if y.shape != (x.shape[0],):
                raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        return self.forward_embedded(x, emb)

    def forward_embedded(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The network after the conditioning embedding ``emb`` (B, 4 * model_channels): torso and head
        (shared with :class:`bench.models.palette_unet.PaletteUNet`, which embeds a noise level instead)."""
        if self._torso_fp16:
            h = self._torso(x.half(), emb)
        elif self.autocast_dtype is not None and x.device.type == "cuda":
            # no cast cache while a CUDA graph is being captured (bench/models/cuda_graph.py): the casts are
            # recorded as kernels either way, and a cached cast must not outlive the capture
            with torch.autocast("cuda", dtype=self.autocast_dtype,
                                cache_enabled=not torch.cuda.is_current_stream_capturing()):
                h = self._torso(x, emb)
        else:
            h = self._torso(x, emb)
        if self.fused_norm:
            return self.out[2](group_norm_silu(h.to(x.dtype), self.out[0]))
        return self.out(h.to(x.dtype))

    def _torso(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return h


def _flag(value) -> bool:
    """Boolean flag that also accepts the strings official scripts use ("True", "false", "1", ...)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "t", "yes", "y"):
            return True
        if lowered in ("0", "false", "f", "no", "n", ""):
            return False
        raise ValueError(f"not a boolean flag: {value!r}")
    return bool(value)


def _parse_channel_mult(channel_mult, image_size: int) -> tuple[float, ...]:
    if channel_mult is None or channel_mult == "":
        return default_channel_mult(image_size)
    items = channel_mult.split(",") if isinstance(channel_mult, str) else list(channel_mult)
    mults = []
    for item in items:
        value = float(item)
        mults.append(int(value) if value.is_integer() else value)
    return tuple(mults)


def _parse_attention_resolutions(attention_resolutions, image_size: int) -> tuple[int, ...]:
    """Image sizes ("32,16,8", 16 or [32, 16, 8]) -> downsample rates (image_size // size)."""
    if isinstance(attention_resolutions, str):
        sizes = [int(s) for s in attention_resolutions.split(",") if s.strip()]
    elif isinstance(attention_resolutions, int):
        sizes = [attention_resolutions]
    else:
        sizes = [int(s) for s in attention_resolutions]
    return tuple(image_size // s for s in sizes)


def create_model(
    image_size,
    num_channels,
    num_res_blocks,
    channel_mult="",
    learn_sigma=False,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=False,
    dropout=0.0,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    in_channels=3,
) -> ADMUNet:
    """Build an :class:`ADMUNet` from guided-diffusion ``create_model`` flags (same names and meaning).

    ``channel_mult`` "" picks the official default for ``image_size``; a comma string or a list
    is also accepted.  ``attention_resolutions`` are image sizes (e.g. "32,16,8"), converted to
    downsample rates.  ``learn_sigma`` doubles the output channels (eps + variance interpolation;
    6 for the default ``in_channels=3``, as upstream);
    ``class_cond`` adds a 1000-class label embedding.
    """
    image_size = int(image_size)
    return ADMUNet(
        image_size=image_size,
        in_channels=int(in_channels),
        model_channels=int(num_channels),
        out_channels=2 * int(in_channels) if _flag(learn_sigma) else int(in_channels),
        num_res_blocks=int(num_res_blocks),
        attention_resolutions=_parse_attention_resolutions(attention_resolutions, image_size),
        dropout=float(dropout),
        channel_mult=_parse_channel_mult(channel_mult, image_size),
        num_classes=NUM_CLASSES if _flag(class_cond) else None,
        use_checkpoint=_flag(use_checkpoint),
        use_fp16=_flag(use_fp16),
        num_heads=int(num_heads),
        num_head_channels=int(num_head_channels),
        num_heads_upsample=int(num_heads_upsample),
        use_scale_shift_norm=_flag(use_scale_shift_norm),
        resblock_updown=_flag(resblock_updown),
        use_new_attention_order=_flag(use_new_attention_order),
    )


def random_init_(model: nn.Module, seed: int = 0, zero_init_std: float = 1e-2) -> nn.Module:
    """Re-initialise ``model`` in place, deterministically from ``seed`` (global RNG untouched).

    Every layer gets PyTorch's default init drawn from a forked RNG (CPU parameters: the same
    values everywhere; parameters already on CUDA draw from the CUDA generator instead).
    ADM zero-initialises the last conv of each residual branch, of each attention block and of
    the output head, so a
    fresh model predicts exactly 0; with ``zero_init_std > 0`` those layers are instead drawn
    from N(0, zero_init_std^2) so that random-weight configs (``asset: null``) give non-trivial,
    reproducible -- but not meaningful -- outputs.  Use ``zero_init_std=0`` for upstream init.
    """
    zero_layers = set()
    for module in model.modules():
        if isinstance(module, ResBlock):
            zero_layers.add(module.out_layers[3])
        elif isinstance(module, AttentionBlock):
            zero_layers.add(module.proj_out)
    if isinstance(model, ADMUNet):
        zero_layers.add(model.out[2])
    cuda_devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
        torch.default_generator.manual_seed(int(seed))
        for index in cuda_devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if module in zero_layers:
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, zero_init_std) if zero_init_std > 0 else p.zero_()
    return model
