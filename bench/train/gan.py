"""``python -m bench.train --config-name gan64``: the embedded BigGAN-deep generator of DGP.

A ``pytorch-pretrained-biggan`` BigGAN-deep generator (the package's own modules, so DGP's block-wise
fine-tuning groups and the package loader work unchanged) trained as a GAN on the 1000 ImageNet-sample-96
images at 64 px (Brock et al. 2019, BigGAN-deep; DiffAugment, Zhao et al. 2020)::

    x ~ data: the 96-px image resized to ``resize`` (antialiased), a random 64-crop, random h-flip, [-1, 1]
    z ~ TruncNormal(-2, 2)^{z_dim} (truncation 1), e = the single class embedding (unconditional)
    L_D = E relu(1 - D(T(x))) + E relu(1 + D(T(G(z, e))))        hinge loss (SAGAN / BigGAN)
    L_G = -E D(T(G(z, e)))                                       T = DiffAugment color,translation,cutout
    Adam betas (0, 0.99) for G and D (BigGAN: (0, 0.999)), lr D = 2 x lr G,
    EMA of G (decay min(ema_decay, (1+n)/(10+n)))

Reconstruction term (``recon_weight`` > 0; a DEVIATION from a pure GAN, for CPU budgets): as in GLO
(Bojanowski et al. 2018), every training image i owns a learnable latent z_i (clamped to [-2, 2], the
support of the prior), and G also minimises ``recon_weight * (|G(z_i) - x_i|_1 + |G(z_i) - x_i|^2)`` on
the whole image resized to 64 px (random h-flip). With a few hundred CPU steps the adversarial game alone
leaves blocky samples whose high frequencies hurt DGP; the reconstruction term makes G span natural
images quickly (measured: see the model card). The hinge/DiffAugment/EMA parts are unchanged.

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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.train.diffaugment import check_policy, diff_augment
from bench.train.gan_parts import (Discriminator, generate, latents, random_generator_like, resized_images,
                                       standing_stats, stats_indices, trainable_biggan)
from bench.train.common import (EMA, atomic_torch_save, device_name, final_mean, load_checkpoint, load_images, loss_table,
                         pick_device, random_crops, repo_path, repo_relative, save_fp16_safetensors, step_generator,
                         train_loop, warmup_lr, window_means)

__all__ = ["GANTrainConfig", "train_gan", "trainable_biggan", "Discriminator", "generate", "latents",
           "random_generator_like", "resized_images", "standing_stats", "stats_indices"]

log = logging.getLogger("bench.train")


def _default_generator() -> dict:
    """BigGAN-deep at 64 px: the 128-px layout with its last resolution (and block pair) removed."""
    return dict(output_dim=64, z_dim=64, class_embed_dim=64, channel_width=16, num_classes=1,
                layers=[[False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4], [False, 4, 4], [True, 4, 2],
                        [False, 2, 2], [True, 2, 1]],
                attention_layer_position=6, eps=1e-4, n_stats=51)


@dataclass
class GANTrainConfig:
    """Typed settings of the GAN trainer (``bench/train/conf/gan64.yaml`` documents each)."""

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
    recon_weight: float = 0.0  # > 0: add the GLO reconstruction term (module docstring) to L_G
    recon_lr: float = 1e-2  # Adam lr of the per-image latents of the reconstruction term
    init_from: str | None = None  # start from the G / D / EMA weights of this trainer's checkpoint (last.pt)
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


# ------------------------------------------------------------------------------------------ training
def train_gan(cfg: GANTrainConfig) -> dict:
    from bench.models.biggan import exact_spectral_vectors

    check_policy(cfg.diffaugment)
    device = pick_device(cfg.device)
    raw, data_sha = load_images(cfg.data_root, cfg.data_limit)
    res = int(cfg.generator["output_dim"])
    images = resized_images(raw, cfg.resize).to(device)
    G = trainable_biggan(cfg.generator, cfg.seed).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        D = Discriminator(cfg.d_channels, res).to(device)
    if cfg.init_from:
        init = torch.load(repo_path(cfg.init_from), map_location="cpu", weights_only=True)
        G.load_state_dict(init["G"])
        D.load_state_dict(init["D"])
    ema = EMA(G, cfg.ema_decay)
    if cfg.init_from:
        ema.load_state_dict(init["ema"])
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    whole = resized_images(raw, res).to(device)  # the reconstruction term's targets: whole images at 64 px
    z_table = torch.nn.Parameter(latents(step_generator(cfg.seed, 0, stream=11), raw.shape[0],
                                         int(cfg.generator["z_dim"])).to(device))
    opt_z = torch.optim.Adam([z_table], lr=cfg.recon_lr)
    identity = json.loads(json.dumps({"kind": "gan", "generator": cfg.generator, "d_channels": cfg.d_channels,
                                      "data_sha256": data_sha, "seed": cfg.seed, "batch_size": cfg.batch_size,
                                      "resize": cfg.resize, "diffaugment": cfg.diffaugment,
                                      "recon_weight": cfg.recon_weight, "init_from": cfg.init_from}))
    ckpt = repo_path(cfg.ckpt_dir or f"results/train/{cfg.name}") / "last.pt"
    state = load_checkpoint(ckpt, identity) if cfg.resume else None
    step, d_losses, g_losses, rec_losses, wall_prev = 0, [], [], [], 0.0
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        with torch.no_grad():
            z_table.copy_(state["z_table"])
        opt_z.load_state_dict(state["opt_z"])
        rec_losses.extend(state["rec_losses"])
        step, d_losses, g_losses = int(state["step"]), list(state["d_losses"]), list(state["g_losses"])
        wall_prev = float(state["wall_s"])
        log.info("resuming %s from %s at step %d", cfg.name, ckpt, step)
    g_pending: list[torch.Tensor] = []
    rec_pending: list[torch.Tensor] = []
    t_start = time.perf_counter()
    z_dim = int(cfg.generator["z_dim"])

    def step_fn(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s)
        for opt, lr in ((opt_d, cfg.lr_d), (opt_g, cfg.lr_g)):
            warmup_lr(opt, lr, cfg.warmup, s)
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
        total = loss_g
        if cfg.recon_weight > 0:  # GLO term: G(z_i) ~ x_i for the batch's own images (module docstring)
            idx = torch.randint(0, whole.shape[0], (cfg.batch_size,), generator=g)
            flip = (torch.rand(cfg.batch_size, generator=g) < 0.5).to(device)
            x = whole[idx.to(device)].float() / 127.5 - 1
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            rec = generate(G, z_table[idx.to(device)])
            loss_rec = (rec - x).abs().mean() + (rec - x).pow(2).mean()
            total = total + cfg.recon_weight * loss_rec
            rec_pending.append(loss_rec.detach())
        opt_g.zero_grad(set_to_none=True)
        opt_z.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        if cfg.recon_weight > 0:
            opt_z.step()
            with torch.no_grad():
                z_table.clamp_(-2.0, 2.0)
        D.requires_grad_(True)
        ema.update(G)
        g_pending.append(loss_g.detach())
        return loss_d.detach()

    def save(s: int) -> None:
        new_g = torch.stack(g_pending).cpu().tolist() if g_pending else []
        g_losses.extend(new_g)
        rec_losses.extend(torch.stack(rec_pending).cpu().tolist() if rec_pending else [])
        g_pending.clear()
        rec_pending.clear()
        if not all(map(math.isfinite, new_g)):  # every G loss since the last checkpoint (earlier ones were checked)
            raise FloatingPointError(f"{cfg.name}: generator loss is not finite before step {s}; lower lr_g")
        atomic_torch_save({"identity": identity, "step": s, "G": G.state_dict(), "D": D.state_dict(),
                           "ema": ema.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                           "d_losses": d_losses, "g_losses": g_losses, "rec_losses": rec_losses,
                           "z_table": z_table.detach(), "opt_z": opt_z.state_dict(),
                           "wall_s": wall_prev + time.perf_counter() - t_start}, ckpt)

    step = train_loop(step_fn, step, cfg.steps, losses=d_losses, save=save, ckpt_every=cfg.ckpt_every,
                      max_minutes=cfg.max_minutes, progress=cfg.progress, desc=cfg.name)
    wall = wall_prev + time.perf_counter() - t_start
    G_ema = exact_spectral_vectors(ema.model)
    standing_stats(G_ema, step_generator(cfg.seed, 0, stream=7), cfg.stats_batches, cfg.stats_batch)
    return export_gan(cfg, G_ema, step=step, d_losses=d_losses, g_losses=g_losses, rec_losses=rec_losses,
                      wall_s=wall, device=device,
                      data_sha=data_sha, n_images=raw.shape[0], real=random_crops(images, 32, res,
                                                                                  step_generator(cfg.seed, 0, 8)))


# ------------------------------------------------------------------------------------------- export
def plot_gan_losses(d_losses: list[float], g_losses: list[float], rec_losses: list[float], path: Path,
                    title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    offset = len(d_losses) - len(rec_losses)  # the reconstruction term may start later (init_from)
    for losses, label, first in ((d_losses, "D hinge loss", 1), (g_losses, "G loss -D(G(z))", 1),
                                 (rec_losses, "G reconstruction L1+L2", offset + 1)):
        if losses:
            steps, means = zip(*[((a + b) / 2 + first - 1, m) for a, b, m in window_means(losses, 50)])
            ax.plot(range(first, first + len(losses)), losses, lw=0.4, alpha=0.3)
            ax.plot(steps, means, lw=1.5, label=f"{label} (window mean)")
    ax.set(xlabel="step", ylabel="loss", title=title)
    if d_losses:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def sample_grid(G: nn.Module, real: torch.Tensor, path: Path, seed: int = 0, n: int = 16) -> None:
    """PNG: two rows of training crops (top), then EMA samples at truncation 1.0, then 0.4 (DGP's default)."""
    from PIL import Image

    dev = next(G.parameters()).device
    z = latents(step_generator(seed, 0, stream=9), n, G.config.z_dim)
    rows = [real[:n].to(dev)] + [generate(G, (t * z).to(dev), t) for t in (1.0, 0.4)]
    x = torch.cat(rows).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    k, res = n // 2, x.shape[-1]
    grid = x.view(-1, k, 3, res, res).permute(0, 3, 1, 4, 2).reshape(-1, k * res, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.numpy()).save(path)


def export_gan(cfg: GANTrainConfig, G: nn.Module, *, step: int, d_losses: list[float], g_losses: list[float],
               rec_losses: list[float], wall_s: float, device, data_sha: str, n_images: int,
               real: torch.Tensor) -> dict:
    """Write the fp16 EMA generator (+ config in the metadata), loss curves, sample grid and the card."""
    out = repo_path(cfg.priors_dir)
    weights = out / f"{cfg.name}.safetensors"
    config = json.loads(G.config.to_json_string())
    meta = {"name": cfg.name, "step": str(step), "config": json.dumps(config), "data_sha256": data_sha,
            "format": "pytorch_pretrained_biggan.BigGAN(BigGANConfig(**config)) state dict, EMA weights, fp16"}
    sha = save_fp16_safetensors(G.state_dict(), weights, meta)
    plot_gan_losses(d_losses, g_losses, rec_losses, out / f"{cfg.name}_loss.png", f"{cfg.name}: losses")
    sample_grid(G, real, out / f"{cfg.name}_samples.png", cfg.seed)
    rel = repo_relative(weights)
    n_params = sum(p.numel() for p in G.parameters())
    info = {"name": cfg.name, "weights": str(rel), "sha256": sha, "parameters": n_params, "steps": step,
            "wall_s": round(wall_s, 1), "device": device_name(device), "bytes": weights.stat().st_size,
            "final_d_loss": final_mean(d_losses), "final_g_loss": final_mean(g_losses),
            "final_rec_loss": final_mean(rec_losses) if rec_losses else None}
    (out / f"{cfg.name}.md").write_text(gan_card(cfg, info, d_losses, g_losses, rec_losses, data_sha, n_images))
    log.info("wrote %s (%d parameters, sha256 %s)", weights, n_params, sha)
    return info


def gan_card(cfg: GANTrainConfig, info: dict, d_losses, g_losses, rec_losses, data_sha: str, n_images: int) -> str:
    gen, name = cfg.generator, cfg.name
    recon = (f"; + {cfg.recon_weight} x GLO reconstruction (L1 + L2, per-image latents, Adam lr {cfg.recon_lr}) "
             f"over the last {len(rec_losses)} steps, final {info['final_rec_loss']:.4f}" if rec_losses else "")
    rec_table = f"\n\nG reconstruction term (its last {len(rec_losses)} steps):\n\n{loss_table(rec_losses)}" if rec_losses else ""
    return f"""# {name}: embedded BigGAN-deep generator for DGP (embedded demo prior)

A `pytorch-pretrained-biggan` BigGAN-deep generator at {gen['output_dim']}x{gen['output_dim']} trained by
`bench/train/gan.py` as an **unconditional** GAN (`num_classes=1`: one class embedding; the data has one
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
| objective | hinge loss, DiffAugment `{cfg.diffaugment}` on real and fake{recon} |
| started from | {cfg.init_from or 'random init'} |
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

Top two rows: training crops; then two rows of EMA samples at truncation 1.0, then two at 0.4 (DGP's
default), same z.

![samples]({name}_samples.png)

![losses]({name}_loss.png)

D hinge loss:

{loss_table(d_losses)}

G loss:

{loss_table(g_losses)}{rec_table}
"""
