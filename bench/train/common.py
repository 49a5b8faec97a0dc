"""Helpers shared by the trainers of the embedded priors (:mod:`bench.train.adm`, :mod:`bench.train.ldm`,
:mod:`bench.train.gan`): paths, seeded per-step generators, random crops, EMA, warm-up, atomic checkpoints,
the time-boxed training loop, fp16 safetensors export and the loss summaries of the model cards.

Every step's batch, timesteps and noise come from a generator seeded by (seed, step), so a resumed run sees
the same data as an uninterrupted one. Checkpoints (``<ckpt_dir>/last.pt``, written atomically) hold the
model, EMA, optimizer, step, per-step losses and accumulated wall time; a rerun with ``resume=true``
continues.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.models.assets import sha256_file

log = logging.getLogger("bench.train")

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the trainers' Hydra configs (not conf/train: the main app's ``--help`` would list them)
CONF_DIR = Path(__file__).resolve().parent / "conf"


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


class SingleNetState:
    """One network with its EMA and optimizer, checkpointed to ``ckpt`` (the ADM and SR3 trainers): resumes from
    a checkpoint of the same ``identity`` when ``resume`` (:func:`load_checkpoint`), keeps the loss list and the
    wall time across resumes, and saves atomically."""

    def __init__(self, ckpt: Path, identity: dict, net: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer, *,
                 resume: bool, name: str):
        self.ckpt, self.identity, self.net, self.ema, self.opt = ckpt, identity, net, ema, opt
        state = load_checkpoint(ckpt, json.loads(json.dumps(identity))) if resume else None
        self.step, self.losses, self.wall_prev = 0, [], 0.0
        if state is not None:
            net.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            self.step, self.losses, self.wall_prev = int(state["step"]), list(state["losses"]), float(state["wall_s"])
            log.info("resuming %s from %s at step %d", name, ckpt, self.step)
        self.t_start = time.perf_counter()

    def wall_s(self) -> float:
        """Training wall time so far, resumed runs included."""
        return self.wall_prev + time.perf_counter() - self.t_start

    def save(self, step: int) -> None:
        atomic_torch_save({"identity": self.identity, "step": step, "model": self.net.state_dict(),
                           "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "losses": self.losses,
                           "wall_s": self.wall_s()}, self.ckpt)

    def optimize(self, loss: torch.Tensor, grad_clip: float | None) -> None:
        """Backward, optional global-norm clipping, the optimizer step and the EMA update."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), grad_clip, foreach=True)
        self.opt.step()
        self.ema.update(self.net)


def export_ema(cfg, ema_net: torch.nn.Module, *, fmt: str, loss_title: str, step: int, losses: list[float],
               wall_s: float, device: torch.device, data_sha: str) -> dict:
    """Write ``<cfg.priors_dir>/<cfg.name>.safetensors`` (the EMA weights in fp16; ``fmt``, the arch and the data's
    sha256 in its metadata) and ``<name>_loss.png``; returns the facts the model card and ``conf/model`` entry use."""
    out = repo_path(cfg.priors_dir)
    weights = out / f"{cfg.name}.safetensors"
    n_params = sum(p.numel() for p in ema_net.parameters())
    meta = {"name": cfg.name, "step": str(step), "arch": json.dumps(cfg.arch), "data_sha256": data_sha, "format": fmt}
    sha = save_fp16_safetensors(ema_net.state_dict(), weights, meta)
    plot_losses(losses, out / f"{cfg.name}_loss.png", f"{cfg.name}: {loss_title}")
    log.info("wrote %s (%d parameters, sha256 %s)", weights, n_params, sha)
    return {"name": cfg.name, "weights": str(repo_relative(weights)), "sha256": sha, "parameters": n_params,
            "steps": step, "wall_s": round(wall_s, 1), "device": device_name(device),
            "final_loss": final_mean(losses), "bytes": weights.stat().st_size}


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


