"""The embedded pixel-space prior: an ADM UNet trained as a DDPM (``python -m bench.train``, config
``bench/train/conf/adm64.yaml``).

Ho et al. 2020, Algorithm 1 "Training"::

    x_0 ~ data (random 64-crop of a 96x96 image, random h-flip, scaled to [-1, 1])
    t ~ U{0, ..., T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    loss = || eps - eps_theta(x_t, t) ||^2          (mean over pixels; "L_simple")

with T = 1000 linear betas 1e-4..0.02 (``bench.diffusion.make_betas``), AdamW, linear warm-up, an EMA
of the weights (decay ``min(ema_decay, (1+n)/(10+n))``), bf16 autocast on CUDA only.

Outputs: ``<priors_dir>/<name>.safetensors`` (EMA weights, fp16), ``<name>.md`` (model card),
``<name>_loss.png`` and ``<model_conf_dir>/<name>.yaml`` (a normal ``conf/model`` entry whose
``asset.path`` is relative to the repo root when the weights lie inside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.diffusion import alphas_cumprod, make_betas
from bench.train.common import (EMA, SingleNetState, export_ema, load_images, loss_table, pick_device, random_crops,
                                repo_path, step_generator, train_loop, warmup_lr)


@dataclass
class ADMTrainConfig:
    """Typed settings of the pixel-space prior (``bench/train/conf/adm64.yaml`` documents each)."""

    name: str
    arch: dict
    data_root: str = "../shared/data/imagenet-sample-96"
    data_limit: int | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    diffusion: dict = field(default_factory=lambda: {"steps": 1000, "schedule": "linear",
                                                     "beta_start": 1e-4, "beta_end": 0.02})
    seed: int = 0
    device: str = "auto"
    ckpt_dir: str | None = None  # None: results/train/<name>
    ckpt_every: int = 200
    resume: bool = True
    max_minutes: float | None = None
    priors_dir: str = "bench/priors"
    model_conf_dir: str = "conf/model"
    progress: bool = True
    num_threads: int | None = None  # torch CPU threads, applied by the CLI (python -m bench.train)
    command: str = "python -m bench.train"

    def train(self) -> dict:
        return train_adm(self)


def ddpm_loss(net: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              abar: torch.Tensor) -> torch.Tensor:
    """L_simple = mean || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1-abar_t) eps, t) ||^2."""
    a = abar[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return F.mse_loss(net(x_t, t).float(), eps)


def build_adm(arch: dict) -> torch.nn.Module:
    from bench.models.adm_unet import create_model

    if str(arch.get("learn_sigma", False)).lower() in ("true", "1"):
        raise ValueError("the trainer fits eps only (L_simple); set arch.learn_sigma=false")
    return create_model(**arch)


def train_adm(cfg: ADMTrainConfig) -> dict:
    device = pick_device(cfg.device)
    images, data_sha = load_images(cfg.data_root, cfg.data_limit)
    crop = int(cfg.arch["image_size"])
    d = cfg.diffusion
    betas = make_betas(d["schedule"], int(d["steps"]), float(d["beta_start"]), float(d["beta_end"]))
    abar = alphas_cumprod(betas.float()).to(device)  # float32 table, as DDRM's samplers use
    T = betas.numel()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_adm(cfg.arch).to(device)
    cuda = device.type == "cuda"
    if cuda:  # bf16 autocast + channels_last convolutions, cuDNN autotuning, fused AdamW (GPU only)
        torch.backends.cudnn.benchmark = True
        net = net.to(memory_format=torch.channels_last)
        images = images.to(device)  # crops are gathered on the GPU (27 MB for 1000 96x96 images)
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **({"fused": True} if cuda else {}))
    identity = {"kind": "adm", "arch": cfg.arch, "diffusion": cfg.diffusion, "data_sha256": data_sha,
                "seed": cfg.seed, "batch_size": cfg.batch_size}
    ckpt = repo_path(cfg.ckpt_dir or f"results/train/{cfg.name}") / "last.pt"
    run = SingleNetState(ckpt, identity, net, ema, opt, resume=cfg.resume, name=cfg.name)

    def step_fn(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s)
        x0 = random_crops(images, cfg.batch_size, crop, g).to(device)
        t = torch.randint(0, T, (cfg.batch_size,), generator=g).to(device)
        # the noise: on CPU from the step's generator (as before); on CUDA from a CUDA generator with the
        # same seed, drawn in place (no 1.5M-float host->device copy per step)
        eps = torch.randn(x0.shape, generator=step_generator(cfg.seed, s, stream=4, device=device) if cuda else g,
                          device=device)
        if cuda:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        warmup_lr(opt, cfg.lr, cfg.warmup, s)
        net.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = ddpm_loss(net, x0, t, eps, abar)
        run.optimize(loss, cfg.grad_clip)
        return loss.detach()

    step = train_loop(step_fn, run.step, cfg.steps, losses=run.losses, save=run.save, ckpt_every=cfg.ckpt_every,
                      max_minutes=cfg.max_minutes, progress=cfg.progress, desc=cfg.name)
    wall, losses = run.wall_s(), run.losses
    return export_adm(cfg, ema.model, step=step, losses=losses, wall_s=wall, device=device,
                      data_sha=data_sha, n_images=images.shape[0])


def export_adm(cfg: ADMTrainConfig, ema_net: torch.nn.Module, *, step: int, losses: list[float], wall_s: float,
               device: torch.device, data_sha: str, n_images: int) -> dict:
    """Write the fp16 EMA weights, the loss curve, the model card and the ``conf/model`` entry."""
    info = export_ema(cfg, ema_net, fmt="bench.models.adm_unet.create_model(**arch) state dict, EMA weights, fp16",
                      loss_title="DDPM eps loss", step=step, losses=losses, wall_s=wall_s, device=device,
                      data_sha=data_sha)
    write_model_conf(cfg, Path(info["weights"]), info["sha256"], info["parameters"], step, info["device"])
    (repo_path(cfg.priors_dir) / f"{cfg.name}.md").write_text(adm_card(cfg, info, losses, data_sha, n_images))
    return info


def write_model_conf(cfg: ADMTrainConfig, rel: Path, sha: str, n_params: int, step: int,
                     device: str = "an unrecorded device") -> Path:
    """``conf/model/<name>.yaml`` in the format of ``adm_tiny.yaml``, pointing at the shipped weights."""
    path = repo_path(cfg.model_conf_dir) / f"{cfg.name}.yaml"
    d = cfg.diffusion

    def val(v):
        return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)

    arch = "\n".join(f"  {k}: {val(v)}" for k, v in cfg.arch.items())
    text = f"""# Embedded prior trained by the project (`{cfg.command}`; model card bench/priors/{cfg.name}.md):
# unconditional DDPM eps-prediction ADM UNet at {cfg.arch['image_size']}x{cfg.arch['image_size']}, \
{n_params:,} parameters, {step} steps on ImageNet-sample-96 crops.
# A small prior (trained on {device}): it makes the main command work offline with MEANINGFUL
# (if weak) outputs; it is not comparable to the 256x256 guided-diffusion model (adm_imagenet256).
# asset.path is relative to the repo root (where `python -m bench` runs); fp16 weights, loaded into fp32.
name: {cfg.name}
kind: adm
image_size: {cfg.arch['image_size']}
init_seed: 0
arch:
{arch}
diffusion:
  steps: {d['steps']}
  schedule: {d['schedule']}
  beta_start: {d['beta_start']}
  beta_end: {d['beta_end']}
  learn_sigma: false
asset:
  name: {cfg.name}.safetensors
  url: null
  sha256: {sha}
  path: {rel}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def adm_card(cfg: ADMTrainConfig, info: dict, losses: list[float], data_sha: str, n_images: int) -> str:
    """The model card (markdown) of a trained ADM prior."""
    d, name = cfg.diffusion, cfg.name
    arch = ", ".join(f"{k}={v}" for k, v in cfg.arch.items())
    return f"""# {name}: embedded pixel-space diffusion prior

An unconditional ADM UNet (`bench.models.adm_unet.create_model`) trained with the DDPM eps objective
(L_simple) at {cfg.arch['image_size']}x{cfg.arch['image_size']}, used as the offline default prior of DDRM/GDP
(`model={name}`, config `conf/model/{name}.yaml`). It is small and briefly trained: restorations are
meaningful but far weaker than with the 256x256 guided-diffusion prior (`model=adm_imagenet256`).

| | |
|---|---|
| weights | `{info['weights']}` (EMA, fp16 safetensors, {info['bytes']:,} bytes) |
| sha256 | `{info['sha256']}` |
| parameters | {info['parameters']:,} |
| architecture | {arch} |
| diffusion | T={d['steps']}, {d['schedule']} betas {d['beta_start']}..{d['beta_end']}, eps prediction, fixed variance |
| data | {n_images} images of `{cfg.data_root}` (ImageNet-sample-96, one per class), content sha256 `{data_sha}` |
| augmentation | random {cfg.arch['image_size']}x{cfg.arch['image_size']} crops + horizontal flips, scaled to [-1, 1] |
| optimisation | AdamW lr {cfg.lr} (linear warm-up {cfg.warmup} steps), weight decay {cfg.weight_decay}, \
grad clip {cfg.grad_clip}, batch {cfg.batch_size}, EMA decay {cfg.ema_decay} (warm-up (1+n)/(10+n)), seed {cfg.seed} |
| steps | {info['steps']} (of {cfg.steps} configured) |
| wall time | {info['wall_s'] / 60:.1f} min |
| device | {info['device']}; torch {torch.__version__} |
| final loss | {info['final_loss']:.4f} (mean of the last 100 steps) |

Held-out evaluation images (`dataset=sample`, scikit-image photographs) are not in the training data.

## Retrain

```
{cfg.command}
```

Runs are deterministic given the seed on one device type (each step's crops, timesteps and noise
come from a generator seeded by (seed, step)); checkpoints go to `results/train/{name}/last.pt` and a
rerun of the same command resumes from there. On a GPU, bf16 autocast is used (numbers differ slightly).

## Loss curve

![loss]({name}_loss.png)

{loss_table(losses)}
"""
