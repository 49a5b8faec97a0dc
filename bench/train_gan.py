"""``python -m bench.train --config-name gan64``: the embedded BigGAN-deep generator of DGP.

A ``pytorch-pretrained-biggan`` BigGAN-deep generator (the package's own modules, so DGP's block-wise
fine-tuning groups and the package loader work unchanged) trained as a GAN on the 1000 ImageNet-sample-96
images at 64 px (Brock et al. 2019, BigGAN-deep; DiffAugment, Zhao et al. 2020)::

    x ~ data: the 96-px image resized to ``resize`` (antialiased), a random 64-crop, random h-flip, [-1, 1]
    z ~ TruncNormal(-2, 2)^{z_dim} (truncation 1), e = the single class embedding (unconditional)
    L_D = E relu(1 - D(T(x))) + E relu(1 + D(T(G(z, e))))        hinge loss (SAGAN / BigGAN)
    L_G = -E D(T(G(z, e)))                                       T = DiffAugment color,translation,cutout
    Adam betas (0, 0.99) for G and D (BigGAN: (0, 0.999)), lr D = 2 x lr G, EMA of G (decay min(ema_decay, (1+n)/(10+n)))

Unconditional, and why: the data holds one image per ImageNet class, so 1000 class embeddings would each
see one image (pure memorisation). The generator has ``num_classes=1`` (one embedding vector); DGP's class
search then has a single candidate class and dataset labels are ignored (``bench/methods/dgp.py``).

Batch norm: the package's ``BigGANBatchNorm`` only implements inference with *stored* statistics per
truncation (``n_stats`` values on [0, 1], as in the TF-hub BigGAN-deep). Training normalises with batch
statistics (:class:`TrainBatchNorm`, a subclass swapped in for training only; the state dict is the
package's); after training the EMA generator's "standing statistics" are measured for each stored
truncation t (z = t * TruncNormal(-2, 2), ``stats_batches`` x ``stats_batch`` samples) and written into
``running_means`` / ``running_vars``: exactly what the package's eval path reads. The spectral-norm
vectors of the EMA weights are set to their exact singular vectors first (:func:`exact_spectral_vectors`).

Discriminator (not shipped): a BigGAN-style residual D of our own (:class:`Discriminator`: spectral norm,
pre-activation blocks with average-pool downsampling, ReLU, global sum pooling, a linear output that is not
spectrally normalised: see :class:`Discriminator`).

Outputs: ``<priors_dir>/<name>.safetensors`` (EMA G, fp16; metadata ``config`` = BigGANConfig JSON),
``<name>_loss.png``, ``<name>_samples.png`` and the card ``<name>.md``. Checkpointing, resume (per-step
generators seeded by (seed, stream, step)) and ``max_minutes`` work as in :mod:`bench.train`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.diffaugment import check_policy, diff_augment
from bench.train import (EMA, atomic_torch_save, device_name, load_checkpoint, load_images, loss_table, pick_device,
                         random_crops, repo_path, save_fp16_safetensors, step_generator, train_loop, window_means)

log = logging.getLogger("bench.train")


def _default_generator() -> dict:
    """BigGAN-deep at 64 px: the 128-px layout with its last resolution (and block pair) removed."""
    return dict(output_dim=64, z_dim=64, class_embed_dim=64, channel_width=16, num_classes=1,
                layers=[[False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4], [False, 4, 4], [True, 4, 2],
                        [False, 2, 2], [True, 2, 1]],
                attention_layer_position=6, eps=1e-4, n_stats=51)


@dataclass
class GANTrainConfig:
    """Typed settings of the GAN trainer (``conf/train/gan64.yaml`` documents each)."""

    name: str = "biggan64_imagenet96"
    generator: dict = field(default_factory=_default_generator)  # BigGANConfig kwargs
    d_channels: int = 12
    data_root: str = "../shared/data/imagenet-sample-96"
    data_limit: int | None = None
    resize: int = 72
    steps: int = 4000
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 4e-4
    betas: tuple = (0.0, 0.99)
    warmup: int = 0
    ema_decay: float = 0.999
    diffaugment: str = "color,translation,cutout"
    stats_batches: int = 2
    stats_batch: int = 64
    seed: int = 0
    device: str = "auto"
    ckpt_dir: str | None = None  # None: results/train/<name>
    ckpt_every: int = 200
    resume: bool = True
    max_minutes: float | None = None
    priors_dir: str = "bench/priors"
    progress: bool = True
    num_threads: int | None = None  # torch CPU threads, applied by the CLI (python -m bench.train)
    command: str = "python -m bench.train --config-name gan64"

    def train(self) -> dict:
        return train_gan(self)


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


def build_generator(cfg: GANTrainConfig) -> nn.Module:
    """The package's BigGAN (init under ``cfg.seed``) with its batch norms switched to :class:`TrainBatchNorm`."""
    from pytorch_pretrained_biggan import BigGANConfig

    from bench.models.biggan import init_biggan

    gen = dict(cfg.generator)
    if int(gen.get("num_classes", 1)) != 1:
        raise ValueError(f"generator.num_classes={gen['num_classes']}: this trainer trains an unconditional "
                         "generator (one image per class in the data; see bench/train_gan.py). Fix: num_classes=1")
    if gen.get("class_embed_dim", gen["z_dim"]) != gen["z_dim"]:
        raise ValueError("generator.class_embed_dim must equal z_dim (the package concatenates z and the embedding "
                         "into a 2*z_dim condition vector)")
    ups = sum(bool(layer[0]) for layer in gen["layers"])
    if 4 * 2 ** ups != int(gen["output_dim"]):
        raise ValueError(f"generator.layers upsample {ups} times: 4 * 2**{ups} != output_dim={gen['output_dim']}")
    model = init_biggan(BigGANConfig(**gen), cfg.seed)
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
    stays in eval mode. G's batch norms must be :class:`TrainBatchNorm` (see :func:`build_generator`)."""
    from pytorch_pretrained_biggan.model import BigGANBatchNorm

    bns = [m for m in G.modules() if isinstance(m, BigGANBatchNorm)]
    n_stats = bns[0].running_means.shape[0]
    if type(bns[0]) is BigGANBatchNorm:
        raise TypeError("standing_stats needs batch-statistics batch norms (bench.train_gan.build_generator)")
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
    from bench.models.biggan import exact_spectral_vectors

    cfg = GANTrainConfig(generator=json.loads(config.to_json_string()), seed=seed)
    G = exact_spectral_vectors(build_generator(cfg))
    standing_stats(G, step_generator(seed, 0, stream=7), batches, batch,
                   stats_indices(truncation, config.n_stats))
    return G.eval().requires_grad_(False)


def resized_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), antialiased bilinear (the whole image, smaller)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------ training
def train_gan(cfg: GANTrainConfig) -> dict:
    from bench.models.biggan import exact_spectral_vectors

    check_policy(cfg.diffaugment)
    device = pick_device(cfg.device)
    raw, data_sha = load_images(cfg.data_root, cfg.data_limit)
    res = int(cfg.generator["output_dim"])
    images = resized_images(raw, cfg.resize).to(device)
    G = build_generator(cfg).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        D = Discriminator(cfg.d_channels, res).to(device)
    ema = EMA(G, cfg.ema_decay)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    identity = json.loads(json.dumps({"kind": "gan", "generator": cfg.generator, "d_channels": cfg.d_channels,
                                      "data_sha256": data_sha, "seed": cfg.seed, "batch_size": cfg.batch_size,
                                      "resize": cfg.resize, "diffaugment": cfg.diffaugment}))
    ckpt = repo_path(cfg.ckpt_dir or f"results/train/{cfg.name}") / "last.pt"
    state = load_checkpoint(ckpt, identity) if cfg.resume else None
    step, d_losses, g_losses, wall_prev = 0, [], [], 0.0
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, d_losses, g_losses = int(state["step"]), list(state["d_losses"]), list(state["g_losses"])
        wall_prev = float(state["wall_s"])
        log.info("resuming %s from %s at step %d", cfg.name, ckpt, step)
    g_pending: list[torch.Tensor] = []
    t_start = time.perf_counter()
    z_dim = int(cfg.generator["z_dim"])

    def lr_at(lr: float, s: int) -> float:
        return lr * min(1.0, (s + 1) / max(1, cfg.warmup))

    def step_fn(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s)
        for opt, lr in ((opt_d, cfg.lr_d), (opt_g, cfg.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr_at(lr, s)
        G.train()
        D.train()
        # D step: hinge on augmented real and fake images
        real = random_crops(images, cfg.batch_size, res, g).to(device)
        fake = generate(G, latents(g, cfg.batch_size, z_dim).to(device))  # one G forward serves both steps
        d_real = D(diff_augment(real, cfg.diffaugment, g))
        d_fake = D(diff_augment(fake.detach(), cfg.diffaugment, g))
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step on the same fakes (freshly augmented), against the updated D
        D.requires_grad_(False)
        loss_g = -D(diff_augment(fake, cfg.diffaugment, g)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        ema.update(G)
        g_pending.append(loss_g.detach())
        return loss_d.detach()

    def save(s: int) -> None:
        g_losses.extend(torch.stack(g_pending).cpu().tolist() if g_pending else [])
        g_pending.clear()
        if not all(map(lambda v: v == v and abs(v) != float("inf"), g_losses[-200:])):
            raise FloatingPointError(f"{cfg.name}: generator loss is not finite before step {s}; lower lr_g")
        atomic_torch_save({"identity": identity, "step": s, "G": G.state_dict(), "D": D.state_dict(),
                           "ema": ema.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                           "d_losses": d_losses, "g_losses": g_losses,
                           "wall_s": wall_prev + time.perf_counter() - t_start}, ckpt)

    step = train_loop(step_fn, step, cfg.steps, losses=d_losses, save=save, ckpt_every=cfg.ckpt_every,
                      max_minutes=cfg.max_minutes, progress=cfg.progress, desc=cfg.name)
    wall = wall_prev + time.perf_counter() - t_start
    G_ema = exact_spectral_vectors(ema.model)
    standing_stats(G_ema, step_generator(cfg.seed, 0, stream=7), cfg.stats_batches, cfg.stats_batch)
    return export_gan(cfg, G_ema, step=step, d_losses=d_losses, g_losses=g_losses, wall_s=wall, device=device,
                      data_sha=data_sha, n_images=raw.shape[0], real=random_crops(images, 32, res,
                                                                                  step_generator(cfg.seed, 0, 8)))


# ------------------------------------------------------------------------------------------- export
def plot_gan_losses(d_losses: list[float], g_losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for losses, label in ((d_losses, "D hinge loss"), (g_losses, "G loss -D(G(z))")):
        if losses:
            steps, means = zip(*[((a + b) / 2, m) for a, b, m in window_means(losses, 50)])
            ax.plot(range(1, len(losses) + 1), losses, lw=0.4, alpha=0.3)
            ax.plot(steps, means, lw=1.5, label=f"{label} (window mean)")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def sample_grid(G: nn.Module, real: torch.Tensor, path: Path, seed: int = 0, n: int = 32) -> None:
    """PNG: rows of training crops (top), then EMA samples at truncation 1.0 and 0.4 (DGP's default)."""
    from PIL import Image

    dev = next(G.parameters()).device
    z = latents(step_generator(seed, 0, stream=9), n, G.config.z_dim)
    rows = [real[:n].to(dev)] + [generate(G, (t * z).to(dev), t) for t in (1.0, 0.4)]
    x = torch.cat(rows).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    k, res = 16, x.shape[-1]
    grid = x.view(-1, k, 3, res, res).permute(0, 3, 1, 4, 2).reshape(-1, k * res, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.numpy()).save(path)


def export_gan(cfg: GANTrainConfig, G: nn.Module, *, step: int, d_losses: list[float], g_losses: list[float],
               wall_s: float, device, data_sha: str, n_images: int, real: torch.Tensor) -> dict:
    """Write the fp16 EMA generator (+ config in the metadata), loss curves, sample grid and the card."""
    out = repo_path(cfg.priors_dir)
    weights = out / f"{cfg.name}.safetensors"
    config = json.loads(G.config.to_json_string())
    meta = {"name": cfg.name, "step": str(step), "config": json.dumps(config), "data_sha256": data_sha,
            "format": "pytorch_pretrained_biggan.BigGAN(BigGANConfig(**config)) state dict, EMA weights, fp16"}
    sha = save_fp16_safetensors(G.state_dict(), weights, meta)
    plot_gan_losses(d_losses, g_losses, out / f"{cfg.name}_loss.png", f"{cfg.name}: hinge losses")
    sample_grid(G, real, out / f"{cfg.name}_samples.png", cfg.seed)
    try:
        rel = weights.resolve().relative_to(repo_path("."))
    except ValueError:
        rel = weights.resolve()
    n_params = sum(p.numel() for p in G.parameters())
    info = {"name": cfg.name, "weights": str(rel), "sha256": sha, "parameters": n_params, "steps": step,
            "wall_s": round(wall_s, 1), "device": device_name(device), "bytes": weights.stat().st_size,
            "final_d_loss": sum(d_losses[-100:]) / max(1, len(d_losses[-100:])),
            "final_g_loss": sum(g_losses[-100:]) / max(1, len(g_losses[-100:]))}
    (out / f"{cfg.name}.md").write_text(gan_card(cfg, info, d_losses, g_losses, data_sha, n_images))
    log.info("wrote %s (%d parameters, sha256 %s)", weights, n_params, sha)
    return info


def gan_card(cfg: GANTrainConfig, info: dict, d_losses, g_losses, data_sha: str, n_images: int) -> str:
    gen, name = cfg.generator, cfg.name
    return f"""# {name}: embedded BigGAN-deep generator for DGP (embedded demo prior)

A `pytorch-pretrained-biggan` BigGAN-deep generator at {gen['output_dim']}x{gen['output_dim']} trained by
`bench/train_gan.py` as an **unconditional** GAN (`num_classes=1`: one class embedding; the data has one
image per ImageNet class, so class conditioning would be memorisation). The default generator of
`method=dgp` (`method.generator.source=embedded`). Small and briefly trained: NOT comparable to BigGAN-deep.

| | |
|---|---|
| weights | `{info['weights']}` (EMA generator, fp16 safetensors, {info['bytes']:,} bytes; BigGANConfig in the metadata) |
| sha256 | `{info['sha256']}` |
| parameters | {info['parameters']:,} |
| generator | channel_width={gen['channel_width']}, z_dim={gen['z_dim']}, {len(gen['layers'])} GenBlocks \
({sum(bool(x[0]) for x in gen['layers'])} upsamplings 4 -> {gen['output_dim']}), attention before block \
{gen['attention_layer_position']}, n_stats={gen['n_stats']} standing BN statistics ({cfg.stats_batches} x \
{cfg.stats_batch} samples per truncation) |
| discriminator (not shipped) | BigGAN-style residual D, width {cfg.d_channels} x (1, 2, 4, 8, 8), spectral norm |
| data | {n_images} images of `{cfg.data_root}` (ImageNet-sample-96), content sha256 `{data_sha}`; resized to \
{cfg.resize} px, random {gen['output_dim']}-crops + h-flips |
| objective | hinge loss, DiffAugment `{cfg.diffaugment}` on real and fake |
| optimisation | Adam betas {tuple(cfg.betas)}, lr G {cfg.lr_g} / D {cfg.lr_d}, 1 D step per G step, batch {cfg.batch_size}, \
EMA decay {cfg.ema_decay}, seed {cfg.seed} |
| steps | {info['steps']} (of {cfg.steps} configured) |
| wall time | {info['wall_s'] / 60:.1f} min on {info['device']}; torch {torch.__version__} |
| final losses | D {info['final_d_loss']:.3f}, G {info['final_g_loss']:.3f} (means of the last 100 steps) |

Held-out evaluation images (`dataset=sample`, scikit-image photographs) are not in the training data.

## Retrain

```
{cfg.command}
```

## Samples and loss curves

Top two rows: training crops; then EMA samples at truncation 1.0, then 0.4 (DGP's default), same z.

![samples]({name}_samples.png)

![losses]({name}_loss.png)

D hinge loss:

{loss_table(d_losses)}

G loss:

{loss_table(g_losses)}
"""
