"""Training-side pieces of the embedded BigGAN-deep (``bench/train/gan.py``; DGP's prior comparison).

* :func:`trainable_biggan`: the ``pytorch-pretrained-biggan`` generator with batch-statistics batch norms
  (:class:`TrainBatchNorm`, swapped in for training; same state dict as the package's);
* :class:`Discriminator`: a small BigGAN-style residual D (not shipped);
* :func:`standing_stats`: the per-truncation batch-norm statistics the package's inference path reads;
* :func:`random_generator_like`: a random generator of a given architecture, made usable exactly as the
  trained one (the "random generator of the same architecture" baseline of the model card).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.biggan import exact_spectral_vectors, init_biggan
from bench.train.common import step_generator


# ------------------------------------------------------------------------------------------ models
def _train_batchnorm_class():
    from pytorch_pretrained_biggan.model import BigGANBatchNorm

    class TrainBatchNorm(BigGANBatchNorm):
        """``BigGANBatchNorm`` that normalises with batch statistics in training mode (the package has only
        the inference path with stored statistics); eval mode is the package's forward, unchanged."""

        def forward(self, x, truncation, condition_vector=None):
            if not self.training:
                return super().forward(x, truncation, condition_vector)
            var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
            out = (x - mean) * torch.rsqrt(var + self.eps)
            if self.conditional:
                weight = 1 + self.scale(condition_vector)[..., None, None]
                bias = self.offset(condition_vector)[..., None, None]
            else:
                weight, bias = self.weight[None, :, None, None], self.bias[None, :, None, None]
            return out * weight + bias

    return BigGANBatchNorm, TrainBatchNorm


def trainable_biggan(generator: dict, seed: int = 0) -> nn.Module:
    """The package's BigGAN for the ``BigGANConfig`` kwargs ``generator`` (init under ``seed``) with its batch
    norms switched to :class:`TrainBatchNorm` (batch statistics in training mode)."""
    from pytorch_pretrained_biggan import BigGANConfig

    gen = dict(generator)
    if int(gen.get("num_classes", 1)) != 1:
        raise ValueError(f"generator.num_classes={gen['num_classes']}: this trainer trains an unconditional "
                         "generator (one image per class in the data; see bench/train/gan.py). Fix: num_classes=1")
    if gen.get("class_embed_dim", gen["z_dim"]) != gen["z_dim"]:
        raise ValueError("generator.class_embed_dim must equal z_dim (the package concatenates z and the embedding "
                         "into a 2*z_dim condition vector)")
    ups = sum(bool(layer[0]) for layer in gen["layers"])
    if 4 * 2 ** ups != int(gen["output_dim"]):
        raise ValueError(f"generator.layers upsample {ups} times: 4 * 2**{ups} != output_dim={gen['output_dim']}")
    model = init_biggan(BigGANConfig(**gen), seed)
    base, train_cls = _train_batchnorm_class()
    for m in model.modules():
        if type(m) is base:
            m.__class__ = train_cls  # same parameters and buffers: only forward() differs in training mode
    return model


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.spectral_norm(module)


class DBlock(nn.Module):
    """BigGAN D residual block: relu (not on the first block) -> conv3 -> relu -> conv3 -> avg-pool, plus a
    1x1-conv (+ pool) shortcut."""

    def __init__(self, cin: int, cout: int, down: bool, preact: bool):
        super().__init__()
        self.conv1, self.conv2 = _sn(nn.Conv2d(cin, cout, 3, padding=1)), _sn(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down, self.preact = down, preact

    def forward(self, x):
        h = F.relu(x) if self.preact else x
        h = self.conv2(F.relu(self.conv1(h)))
        s = x if self.skip is None else self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    """Unconditional BigGAN-style D for 64 px: widths ch x (1, 2, 4, 8, 8), 4 downsamplings (64 -> 4),
    ReLU, sum over space, linear."""

    def __init__(self, ch: int = 16, resolution: int = 64):
        super().__init__()
        widths = [3, ch, 2 * ch, 4 * ch, 8 * ch, 8 * ch]
        n_down = int(resolution).bit_length() - 3  # 64 -> 4
        self.blocks = nn.ModuleList(DBlock(widths[i], widths[i + 1], down=i < n_down, preact=i > 0)
                                    for i in range(len(widths) - 1))
        # the output layer is NOT spectrally normalised: with a narrow D the fully normalised net starts with
        # outputs ~0.05 and its hinge loss sat at 2.0 for the first 200 steps (measured); a free output scale
        # lets D discriminate from the start (the hinge caps what it gains from growing it)
        self.out = nn.Linear(widths[-1], 1)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.out(F.relu(x).sum(dim=(2, 3))).flatten()


# ------------------------------------------------------------------------------------------- pieces
def latents(g: torch.Generator, n: int, z_dim: int, truncation: float = 1.0) -> torch.Tensor:
    """z = truncation * TruncNormal(-2, 2), as DGP / the package's ``truncated_noise_sample``."""
    from bench.methods.dgp import truncated_normal

    return truncation * truncated_normal(g, (n, z_dim))


def generate(G: nn.Module, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
    """G(z, e) with the single class embedding e (one-hot of class 0), in [-1, 1]."""
    onehot = torch.zeros(z.shape[0], G.config.num_classes, device=z.device)
    onehot[:, 0] = 1
    return G(z, onehot, truncation)


@torch.no_grad()
def standing_stats(G: nn.Module, g: torch.Generator, batches: int, batch: int,
                   indices: list[int] | None = None) -> nn.Module:
    """Fill every batch norm's ``running_means/vars[k]`` with the mean batch statistics of its input at
    truncation t_k = k / (n_stats - 1) (module docstring), for every k or only ``indices``. Spectral norm
    stays in eval mode. G's batch norms must be :class:`TrainBatchNorm` (see :func:`trainable_biggan`)."""
    from pytorch_pretrained_biggan.model import BigGANBatchNorm

    bns = [m for m in G.modules() if isinstance(m, BigGANBatchNorm)]
    n_stats = bns[0].running_means.shape[0]
    if type(bns[0]) is BigGANBatchNorm:
        raise TypeError("standing_stats needs batch-statistics batch norms (bench.train.gan.trainable_biggan)")
    acc: dict = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: acc[m].append(torch.var_mean(
        args[0].float(), dim=(0, 2, 3), correction=0))) for m in bns]
    G.eval()
    for m in bns:
        m.train()  # batch statistics (TrainBatchNorm) while the stored ones are measured
    dev = next(G.parameters()).device
    try:
        for k in (range(n_stats) if indices is None else indices):
            t = k / (n_stats - 1)
            acc.clear()
            acc.update({m: [] for m in bns})
            for _ in range(batches):
                generate(G, latents(g, batch, G.config.z_dim, t).to(dev), max(t, 1e-6))
            for m in bns:
                m.running_vars[k] = torch.stack([v for v, _ in acc[m]]).mean(0)
                m.running_means[k] = torch.stack([mu for _, mu in acc[m]]).mean(0)
    finally:
        for h in hooks:
            h.remove()
        G.eval()
    return G


def stats_indices(truncation: float, n_stats: int) -> list[int]:
    """The stored-statistics rows the package's ``BigGANBatchNorm`` reads at ``truncation``."""
    import math

    coef, start = math.modf(truncation / (1.0 / (n_stats - 1)))  # the package's expression, bit for bit
    return [int(start)] if coef == 0.0 else [int(start), int(start) + 1]


def random_generator_like(config, seed: int, truncation: float, batches: int = 2, batch: int = 64) -> nn.Module:
    """A random generator of the architecture ``config`` (BigGANConfig), made usable as a prior baseline
    exactly as the trained one: standing statistics at ``truncation``, exact spectral vectors, frozen. The
    "random generator of the same architecture" of the model card's DGP comparison."""
    G = exact_spectral_vectors(trainable_biggan(json.loads(config.to_json_string()), seed))
    standing_stats(G, step_generator(seed, 0, stream=7), batches, batch,
                   stats_indices(truncation, config.n_stats))
    return G.eval().requires_grad_(False)


def resized_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), antialiased bilinear (the whole image, smaller)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)
