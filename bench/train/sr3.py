"""A small SR3 for the ``sr4`` task (``python -m bench.train --config-name sr3_64``, config
``bench/train/conf/sr3_64.yaml``): Janspiry's SR3 objective on ImageNet-sample-96 crops.

Training step (Janspiry ``GaussianDiffusion.p_losses``; the noise level is continuous)::

    x_0 ~ data (random crop, random h-flip, in [-1, 1]);  y = 4x4 block average of x_0 (the sr4 operator)
    c   = PIL bicubic upsample of y to the crop size      (bench.methods.sr3.pil_bicubic_upsample, as at test time)
    t ~ U{1, ..., T};  gamma ~ U(sqrt(abar_{t-1}), sqrt(abar_t)) (abar_0 = 1);  eps ~ N(0, I)
    x_t = gamma x_0 + sqrt(1 - gamma^2) eps
    loss = mean | eps - eps_theta(cat[c, x_t], gamma) |       (L1 as upstream; mean instead of sum: only the lr scale)

AdamW with linear warm-up and an EMA of the weights as :mod:`bench.train.adm` (shared helpers in
:mod:`bench.train.common`). Outputs: ``<priors_dir>/<name>.safetensors`` (EMA weights, fp16, the UNet's own
state dict, which :func:`bench.models.conditional.load_conditional` loads strictly), ``<name>_loss.png`` and
``<model_conf_dir>/<name>.yaml`` (a ``kind: sr3`` model entry). Weights ship (with a hand-written card,
bench/priors/<name>.md) only if they beat bicubic on ``dataset=sample``; the CPU run did not (docs/methods.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.diffusion import alphas_cumprod
from bench.methods.sr3 import pil_bicubic_upsample
from bench.models.conditional import sampling_betas
from bench.models.sr3_unet import SR3UNet
from bench.train.common import (EMA, SingleNetState, export_ema, load_images, pick_device, random_crops, repo_path,
                                step_generator, train_loop, warmup_lr)


@dataclass
class SR3TrainConfig:
    """Typed settings (``bench/train/conf/sr3_64.yaml`` documents each)."""

    name: str
    arch: dict
    crop: int = 64
    factor: int = 4
    data_root: str = "../shared/data/imagenet-sample-96"
    data_limit: int | None = None
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    schedule: dict = field(default_factory=lambda: {"schedule": "linear", "n_timestep": 2000,
                                                    "linear_start": 1e-6, "linear_end": 1e-2})
    seed: int = 0
    device: str = "auto"
    ckpt_dir: str | None = None
    ckpt_every: int = 200
    resume: bool = True
    max_minutes: float | None = None
    priors_dir: str = "bench/priors"
    model_conf_dir: str = "conf/model"
    progress: bool = True
    num_threads: int | None = None
    command: str = "python -m bench.train --config-name sr3_64"

    def train(self) -> dict:
        return train_sr3(self)


def sr3_batch(x0: torch.Tensor, factor: int, gamma_lo: torch.Tensor, gamma_hi: torch.Tensor, u: torch.Tensor,
              eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(net input cat[c, x_t], gamma, eps) of one training batch (module docstring); ``u`` ~ U(0, 1) per image."""
    lr = F.avg_pool2d(x0, factor)  # the sr4 operator (block averaging) in [-1, 1] units
    c = pil_bicubic_upsample(lr, tuple(x0.shape[-2:]))
    gamma = gamma_lo + (gamma_hi - gamma_lo) * u
    g = gamma.view(-1, 1, 1, 1)
    x_t = g * x0 + (1 - g**2).sqrt() * eps
    return torch.cat([c, x_t], dim=1), gamma, eps


def train_sr3(cfg: SR3TrainConfig) -> dict:
    device = pick_device(cfg.device)
    images, data_sha = load_images(cfg.data_root, cfg.data_limit)
    betas = sampling_betas(cfg.name, cfg.schedule)
    T = betas.numel()
    sqrt_abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod(betas)]).sqrt().float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = SR3UNet(**cfg.arch).to(device)
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    identity = {"kind": "sr3", "arch": cfg.arch, "schedule": cfg.schedule, "data_sha256": data_sha, "seed": cfg.seed,
                "batch_size": cfg.batch_size, "crop": cfg.crop, "factor": cfg.factor}
    ckpt = repo_path(cfg.ckpt_dir or f"results/train/{cfg.name}") / "last.pt"
    run = SingleNetState(ckpt, identity, net, ema, opt, resume=cfg.resume, name=cfg.name)

    def step_fn(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s)
        x0 = random_crops(images, cfg.batch_size, cfg.crop, g)
        t = torch.randint(1, T + 1, (cfg.batch_size,), generator=g)
        u = torch.rand(cfg.batch_size, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        inp, gamma, eps = (v.to(device) for v in sr3_batch(x0, cfg.factor, sqrt_abar_prev[t - 1],
                                                              sqrt_abar_prev[t], u, eps))
        warmup_lr(opt, cfg.lr, cfg.warmup, s)
        net.train()
        loss = F.l1_loss(net(inp, gamma), eps)
        run.optimize(loss, cfg.grad_clip)
        return loss.detach()

    step = train_loop(step_fn, run.step, cfg.steps, losses=run.losses, save=run.save, ckpt_every=cfg.ckpt_every,
                      max_minutes=cfg.max_minutes, progress=cfg.progress, desc=cfg.name)
    wall, losses = run.wall_s(), run.losses
    return export_sr3(cfg, ema.model, step=step, losses=losses, wall_s=wall, device=device, data_sha=data_sha,
                      n_images=images.shape[0])


def export_sr3(cfg: SR3TrainConfig, ema_net: torch.nn.Module, *, step: int, losses: list[float], wall_s: float,
               device: torch.device, data_sha: str, n_images: int) -> dict:
    """Write the fp16 EMA weights, the loss curve and the ``conf/model`` entry; returns the facts for the card."""
    info = export_ema(cfg, ema_net, fmt="bench.models.sr3_unet.SR3UNet(**arch) state dict, EMA weights, fp16",
                      loss_title="SR3 L1 eps loss", step=step, losses=losses, wall_s=wall_s, device=device,
                      data_sha=data_sha)
    info.update(data_sha256=data_sha, images=n_images, command=cfg.command)
    write_model_conf(cfg, Path(info["weights"]), info["sha256"], info["parameters"], step, info["device"])
    return info


def write_model_conf(cfg: SR3TrainConfig, rel: Path, sha: str, n_params: int, step: int, device: str) -> Path:
    path = repo_path(cfg.model_conf_dir) / f"{cfg.name}.yaml"
    arch = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in cfg.arch.items())
    sched = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in cfg.schedule.items())
    text = f"""# Embedded SR3 trained by the project (`{cfg.command}`; model card bench/priors/{cfg.name}.md):
# Janspiry-layout SR3 UNet, {n_params:,} parameters, {step} steps on ImageNet-sample-96 {cfg.crop}-px crops with the
# sr4 degradation (4x4 block average, PIL bicubic condition), trained on {device}. For method=sr3 only.
name: {cfg.name}
kind: sr3
image_size: {cfg.arch['image_size']}
arch:
{arch}
schedule:
{sched}
init_seed: 0
asset:
  name: {cfg.name}.safetensors
  url: null
  sha256: {sha}
  path: {rel}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
