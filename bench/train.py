"""``python -m bench.train``: train the small embedded priors that ship in ``bench/priors/``.

Two trainers, one Hydra app (configs in ``bench/train_conf/``, apart from the main app's ``conf/`` so that
``python -m bench --help`` does not list them; the config's ``_target_`` names the typed config class,
whose ``.train()`` runs it)::

    python -m bench.train                                   # adm64: pixel-space ADM prior (DDPM)
    python -m bench.train steps=20 name=speedtest           # any field can be overridden
    python -m bench.train --config-name ldm_sr              # latent SR model (bench/train_ldm.py)

The ADM prior (Ho et al. 2020, Algorithm 1 "Training")::

    x_0 ~ data (random 64-crop of a 96x96 image, random h-flip, scaled to [-1, 1])
    t ~ U{0, ..., T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    loss = || eps - eps_theta(x_t, t) ||^2          (mean over pixels; "L_simple")

with T = 1000 linear betas 1e-4..0.02 (``bench.diffusion.make_betas``), AdamW, linear warm-up, an EMA
of the weights (decay ``min(ema_decay, (1+n)/(10+n))``), bf16 autocast on CUDA only. Every step's
batch, timesteps and noise come from a generator seeded by (seed, step), so a resumed run sees the same
data as an uninterrupted one. Checkpoints (``<ckpt_dir>/last.pt``, written atomically) hold model, EMA,
optimizer, step, per-step losses and accumulated wall time; a rerun with ``resume=true`` continues.

Outputs: ``<priors_dir>/<name>.safetensors`` (EMA weights, fp16), ``<name>.md`` (model card),
``<name>_loss.png`` and ``<model_conf_dir>/<name>.yaml`` (a normal ``conf/model`` entry whose
``asset.path`` is relative to the repo root when the weights lie inside it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.diffusion import alphas_cumprod, make_betas
from bench.models.assets import sha256_file

log = logging.getLogger("bench.train")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(__file__).resolve().parent / "train_conf"  # not conf/train: the main app would list it


# ----------------------------------------------------------------------------- shared helpers
def repo_path(p: str | os.PathLike) -> Path:
    """A config path: absolute as given, relative ones against the repo root (not the CWD)."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def repo_relative(p: Path) -> Path:
    """``p`` resolved, relative to the repo root when it lies inside it (what model cards and configs record)."""
    try:
        return Path(p).resolve().relative_to(REPO_ROOT)
    except ValueError:
        return Path(p).resolve()


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def load_images(root: str | os.PathLike, limit: int | None = None) -> tuple[torch.Tensor, str]:
    """All images of a folder (sorted), as uint8 (N, 3, H, W) of one size, and a content digest
    (sha256 over file names and file hashes) for the model card."""
    from bench.imageio import IMAGE_SUFFIXES, load_image

    folder = repo_path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"training data folder {folder} does not exist. Fix: data_root=/path/to/images "
                                "(default ../shared/data/imagenet-sample-96 beside the repo)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise FileNotFoundError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    digest = hashlib.sha256()
    imgs = []
    for f in files:
        digest.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
        imgs.append((load_image(f) * 255).round().to(torch.uint8))
    sizes = {tuple(i.shape) for i in imgs}
    if len(sizes) != 1:
        raise ValueError(f"training images in {folder} have several sizes {sorted(sizes)[:4]}; resize them to one")
    return torch.stack(imgs), digest.hexdigest()


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one training step: a function of (seed, stream, step) only, so resuming is exact.
    ``device`` puts it on an accelerator (the step's noise is then drawn there, with no host copy)."""
    return torch.Generator(device).manual_seed((int(seed) * 1_000_003 + int(stream)) * 100_000_007 + int(step))


def random_crops(images: torch.Tensor, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """``batch`` random ``crop`` x ``crop`` crops (images drawn with replacement), each flipped
    horizontally with probability 1/2; float in [-1, 1], (batch, 3, crop, crop), on ``images.device``.
    The draws come from the CPU generator ``g`` (so crops do not depend on where the images live); the
    gather is one indexing op on the images' device."""
    n, c, h, w = images.shape
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the training images ({h}x{w})")
    idx = torch.randint(0, n, (batch,), generator=g)
    top = torch.randint(0, h - crop + 1, (batch,), generator=g)
    left = torch.randint(0, w - crop + 1, (batch,), generator=g)
    flip = torch.rand(batch, generator=g) < 0.5
    r = torch.arange(crop)
    rows = top[:, None] + r  # (batch, crop)
    cols = torch.where(flip[:, None], left[:, None] + crop - 1 - r, left[:, None] + r)  # flipped: reversed columns
    dev = images.device
    out = images[idx.to(dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows.to(dev)[:, None, :, None], cols.to(dev)[:, None, None, :]]
    return out.float() / 127.5 - 1.0


class EMA:
    """Exponential moving average of a model's weights with warm-up: decay_n = min(decay, (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = float(decay), 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - d)  # one fused launch
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def warmup_lr(opt: torch.optim.Optimizer, lr: float, warmup: int, step: int) -> None:
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, identity: dict) -> dict | None:
    """The checkpoint at ``path`` (None if absent); it must have been written for the same ``identity``
    (architecture and data settings), else training would silently continue a different model."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("identity") != identity:
        raise ValueError(f"checkpoint {path} was written for another configuration:\n  it: "
                         f"{state.get('identity')}\n  now: {identity}\nFix: delete {path.parent}, pass "
                         "another ckpt_dir/name, or resume=false to start over")
    return state


def train_loop(step_fn: Callable[[int], torch.Tensor | float], start: int, total: int, *, losses: list[float],
               save: Callable[[int], None], ckpt_every: int, max_minutes: float | None, progress: bool, desc: str,
               sync_every: int = 25) -> int:
    """Run ``step_fn(step) -> loss`` for steps start..total-1 with a progress bar; checkpoint every
    ``ckpt_every`` steps and at the end; stop early (after a checkpoint) past ``max_minutes``.

    Losses (0-dim tensors, possibly on the GPU) are read back to the host every ``sync_every`` steps,
    not every step, so the GPU never waits for the Python loop; they are appended to ``losses`` and
    checked for NaN/inf before any checkpoint is written (a diverged state is never saved)."""
    from tqdm.auto import tqdm

    pending: list = []

    def flush() -> None:
        if not pending:
            return
        vals = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in pending]).cpu().tolist()
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                raise FloatingPointError(f"{desc}: loss is {v} at step {step - len(vals) + i}; "
                                         "lower lr or check the data")
        losses.extend(vals)
        pending.clear()
        bar.set_postfix(loss=f"{vals[-1]:.4f}", refresh=False)

    t0, step = time.perf_counter(), start
    with tqdm(initial=start, total=total, desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        while step < total:
            pending.append(step_fn(step))
            step += 1
            bar.update(1)
            due = bool(ckpt_every) and step % ckpt_every == 0 and step < total
            if len(pending) >= max(1, sync_every) or due:
                flush()
            if due:
                save(step)
            if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
                log.warning("%s: stopping at step %d of %d (max_minutes=%s)", desc, step, total, max_minutes)
                break
        flush()
    save(step)
    return step


def save_fp16_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    """Write float tensors as fp16 (atomically); returns the file's sha256."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # shipped with the package: readable by all
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_file(path)


def final_mean(losses: list[float], n: int = 100) -> float:
    """Mean of the last ``n`` losses (0.0 for none): the model cards' "final loss"."""
    return sum(losses[-n:]) / max(1, len(losses[-n:]))


def window_means(losses: list[float], n: int = 20) -> list[tuple[int, int, float]]:
    """(first step, last step, mean loss) over ``n`` equal windows of the loss curve (1-based steps)."""
    size = max(1, math.ceil(len(losses) / n))
    return [(i + 1, min(i + size, len(losses)), sum(losses[i:i + size]) / len(losses[i:i + size]))
            for i in range(0, len(losses), size)]


def plot_losses(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, means = zip(*[((a + b) / 2, m) for a, b, m in window_means(losses, 50)]) if losses else ((), ())
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.35, label="per step")
    ax.plot(steps, means, lw=1.5, label="window mean (50 windows)")
    ax.set(xlabel="step", ylabel="loss", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def loss_table(losses: list[float]) -> str:
    rows = ["| steps | mean loss |", "|---|---|"]
    rows += [f"| {a}-{b} | {m:.4f} |" for a, b, m in window_means(losses)]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- ADM prior
@dataclass
class ADMTrainConfig:
    """Typed settings of the pixel-space prior (``bench/train_conf/adm64.yaml`` documents each)."""

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
    state = load_checkpoint(ckpt, json.loads(json.dumps(identity))) if cfg.resume else None
    step, losses, wall_prev = 0, [], 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, losses, wall_prev = int(state["step"]), list(state["losses"]), float(state["wall_s"])
        log.info("resuming %s from %s at step %d", cfg.name, ckpt, step)
    t_start = time.perf_counter()

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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip, foreach=True)
        opt.step()
        ema.update(net)
        return loss.detach()

    def save(s: int) -> None:
        atomic_torch_save({"identity": identity, "step": s, "model": net.state_dict(), "ema": ema.state_dict(),
                           "opt": opt.state_dict(), "losses": losses,
                           "wall_s": wall_prev + time.perf_counter() - t_start}, ckpt)

    step = train_loop(step_fn, step, cfg.steps, losses=losses, save=save, ckpt_every=cfg.ckpt_every,
                      max_minutes=cfg.max_minutes, progress=cfg.progress, desc=cfg.name)
    wall = wall_prev + time.perf_counter() - t_start
    return export_adm(cfg, ema.model, step=step, losses=losses, wall_s=wall, device=device,
                      data_sha=data_sha, n_images=images.shape[0])


def export_adm(cfg: ADMTrainConfig, ema_net: torch.nn.Module, *, step: int, losses: list[float], wall_s: float,
               device: torch.device, data_sha: str, n_images: int) -> dict:
    """Write the fp16 EMA weights, the loss curve, the model card and the ``conf/model`` entry."""
    out = repo_path(cfg.priors_dir)
    weights = out / f"{cfg.name}.safetensors"
    n_params = sum(p.numel() for p in ema_net.parameters())
    meta = {"name": cfg.name, "step": str(step), "arch": json.dumps(cfg.arch), "data_sha256": data_sha,
            "format": "bench.models.adm_unet.create_model(**arch) state dict, EMA weights, fp16"}
    sha = save_fp16_safetensors(ema_net.state_dict(), weights, meta)
    plot_losses(losses, out / f"{cfg.name}_loss.png", f"{cfg.name}: DDPM eps loss")
    rel = repo_relative(weights)
    info = {"name": cfg.name, "weights": str(rel), "sha256": sha, "parameters": n_params, "steps": step,
            "wall_s": round(wall_s, 1), "device": device_name(device), "final_loss": final_mean(losses),
            "bytes": weights.stat().st_size}
    write_model_conf(cfg, rel, sha, n_params, step, info["device"])
    (out / f"{cfg.name}.md").write_text(adm_card(cfg, info, losses, data_sha, n_images))
    log.info("wrote %s (%d parameters, sha256 %s)", weights, n_params, sha)
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


# ----------------------------------------------------------------------------- CLI
def run_config(cfg: dict) -> dict:
    """Build the typed config named by ``_target_`` from a plain mapping and train it."""
    from hydra.utils import instantiate

    return instantiate(cfg, _convert_="all").train()


def _main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="adm64")
    def main(cfg: DictConfig) -> None:
        plain = OmegaConf.to_container(cfg, resolve=True)
        hc = HydraConfig.get()
        args = ([f"--config-name {hc.job.config_name}"] if hc.job.config_name != "adm64" else [])
        plain["command"] = " ".join(["python -m bench.train", *args, *map(shlex.quote, hc.overrides.task)])
        if plain.get("num_threads"):
            torch.set_num_threads(int(plain["num_threads"]))
        info = run_config(plain)
        print(json.dumps(info, indent=2, default=str))

    main()


if __name__ == "__main__":
    _main()

