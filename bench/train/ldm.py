"""``python -m bench.train --config-name ldm_sr``: a small latent-diffusion 4x SR model in diffusers format.

The parts of diffusers' ``LDMSuperResolutionPipeline`` (see :mod:`bench.models.ldm`), trained in two
stages on random 64-crops (+ h-flips) x of the training images, in [-1, 1]:

Stage 1, first stage (Rombach et al. 2022 §3.1, without the adversarial/perceptual terms): a ``VQModel``
with f = 4 (three block levels) and 3 latent channels, z = E(x) (pre-quantisation, as the pipeline feeds
the decoder), x_rec = D(Q(z)) with the straight-through vector quantiser Q::

    L_AE = l1_weight |x - x_rec|_1 + l2_weight |x - x_rec|^2 + commit_weight L_VQ
    L_VQ = |sg[Q(z)] - z|^2 + beta |Q(z) - sg[z]|^2          (diffusers VectorQuantizer, beta 0.25)

Codebook care (the first shipped model collapsed to 30 of its 2048 codes, 19.6 dB): at step 0 the
codebook is set to encoder outputs of the first batch (``codebook_init``), and every ``restart_every``
steps each code no batch selected since the last check is moved onto a random encoder output of the
current batch ("dead-code restart", as in Jukebox / SoundStream / taming-transformers forks), so the
quantiser keeps using its whole codebook. Neither changes the model: the file is a plain ``VQModel``.
``vq_trainable=decoder`` freezes the encoder (and ``quant_conv``) and trains the codebook, ``post_quant_conv``
and the decoder only: z = E(x) is unchanged, so a UNet trained on E's latents (``unet_init``) stays valid
and stage 2 can be skipped (``unet_steps=0`` exports the initial UNet's weights unchanged).
Stage 1 has its own warm-up (``vq_warmup``; the first model's loss spiked at step ~100 under a 1e-3
peak lr). The export evaluates the autoencoder on the held-out ``dataset=sample`` photos (PSNR, never
trained on) and writes it into the card.

Stage 2, the latent diffusion model (LDM §3.3, concatenation conditioning): with E frozen,
z_0 = E(x), c = 4x block average of x (16x16, the `sr4` degradation), betas = the hub DDIM scheduler's
``scaled_linear`` 0.0015..0.0155 with T = 1000 (:data:`bench.models.ldm.HUB_SCHEDULER_CONFIG`, so that
``bench.methods.srldm`` samples it as it samples the CompVis model)::

    t ~ U{0..T-1}, eps ~ N(0, I), z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    L_LDM = |eps - eps_theta(cat[z_t, c], t)|^2                (UNet2DModel, in_channels 6)

Output: ``save_pretrained`` of ``vqvae/``, ``unet/`` (EMA weights) and ``scheduler/`` into
``<priors_dir>/<name>/`` (fp16 safetensors), the card ``<priors_dir>/<name>.md`` and loss curves. Use it
with ``python -m bench method=srldm method.ldm.local_dir=bench/priors/<name>``. Checkpointing, resume,
EMA, seeding per (seed, stage, step) and bf16 autocast on CUDA work as in :mod:`bench.train`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.diffusion import alphas_cumprod, make_betas
from bench.models.assets import sha256_file
from bench.train.common import (EMA, atomic_torch_save, device_name, final_mean, load_checkpoint, load_images, loss_table,
                         pick_device, plot_losses, random_crops, repo_path, repo_relative, step_generator, train_loop,
                         warmup_lr)

log = logging.getLogger("bench.train")


def _default_vq() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 32, 64], layers_per_block=1,
                latent_channels=3, num_vq_embeddings=1024, vq_embed_dim=3, norm_num_groups=16, sample_size=64)


def _default_unet() -> dict:
    return dict(sample_size=16, in_channels=6, out_channels=3, layers_per_block=1, block_out_channels=[64, 128],
                down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
                norm_num_groups=32, attention_head_dim=32)


@dataclass
class LDMTrainConfig:
    """Typed settings of the latent SR trainer (``bench/train/conf/ldm_sr.yaml`` documents each)."""

    name: str = "ldm_sr_tiny"
    vq: dict = field(default_factory=_default_vq)  # diffusers.VQModel kwargs
    unet: dict = field(default_factory=_default_unet)  # diffusers.UNet2DModel kwargs
    data_root: str = "../shared/data/imagenet-sample-96"
    data_limit: int | None = None
    crop: int = 64
    factor: int = 4  # LR = factor x block average of the crop
    vq_steps: int = 800
    unet_steps: int = 2000
    batch_size: int = 8
    vq_lr: float = 1e-3
    unet_lr: float = 1e-3
    warmup: int = 100
    vq_init: str | None = None  # start stage 1 from these VQModel weights (a diffusers vqvae/ dir)
    unet_init: str | None = None  # start stage 2 from these UNet2DModel weights (a diffusers unet/ dir)
    vq_warmup: int | None = None  # stage-1 warm-up steps (None: warmup)
    vq_trainable: str = "all"  # all | decoder (frozen encoder: the latent space, and a stage-2 UNet on it, stay valid)
    codebook_init: bool = True  # step 0: codebook = encoder outputs of the first batch
    restart_every: int = 50  # move codes unused over this many steps onto encoder outputs (0: never)
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    commit_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    ckpt_dir: str | None = None  # None: results/train/<name>
    ckpt_every: int = 100
    resume: bool = True
    max_minutes: float | None = None
    vq_max_minutes: float | None = None  # stage 1 ends after this long even before vq_steps (GPU budgets)
    priors_dir: str = "bench/priors"
    progress: bool = True
    num_threads: int | None = None  # torch CPU threads, applied by the CLI (python -m bench.train)
    command: str = "python -m bench.train --config-name ldm_sr"

    def train(self) -> dict:
        return train_ldm_sr(self)


def build_parts(cfg: LDMTrainConfig):
    from diffusers import UNet2DModel, VQModel

    if cfg.unet["in_channels"] != 2 * cfg.unet["out_channels"] or cfg.unet["out_channels"] != cfg.vq["latent_channels"]:
        raise ValueError("unet.in_channels must be 2 * unet.out_channels and out_channels = vq.latent_channels "
                         f"(latent + LR image concatenated); got unet {cfg.unet}, vq latent {cfg.vq['latent_channels']}")
    f = 2 ** (len(cfg.vq["block_out_channels"]) - 1)
    if f != cfg.factor:
        raise ValueError(f"the VQ model downsamples by {f} (2 ** (levels - 1)) but factor={cfg.factor}; the "
                         "latent must have the LR image's size. Fix: vq.block_out_channels with log2(factor)+1 levels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vq, unet = VQModel(**cfg.vq), UNet2DModel(**cfg.unet)
    for model, init in ((vq, cfg.vq_init), (unet, cfg.unet_init)):
        if init:
            _init_from(model, init)
    return vq, unet


def _init_from(model: torch.nn.Module, directory: str) -> None:
    """Strictly load ``<directory>/diffusion_pytorch_model.safetensors`` (a ``save_pretrained`` dir of the
    same architecture) into ``model``: fine-tuning a shipped part instead of starting from scratch."""
    from bench.models.assets import load_state_dict

    f = repo_path(directory) / "diffusion_pytorch_model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"init weights {f} do not exist. Fix: point vq_init/unet_init at a diffusers "
                                "part directory (e.g. bench/priors/ldm_sr_tiny/vqvae) or set it to null")
    try:
        model.load_state_dict(load_state_dict(f), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{f} does not fit the configured architecture (vq/unet kwargs must be those it was "
                         f"trained with): {str(e).splitlines()[0]}") from e


def vq_forward(vq, x: torch.Tensor):
    """``VQModel.forward`` spelled out (encode, quantise, decode) to also return the pre-quantisation
    latents z (B, C, h, w) and the selected code of every latent pixel (B*h*w,)."""
    z = vq.encode(x).latents
    zq, commit, (_, _, idx) = vq.quantize(z)
    rec = vq.decoder(vq.post_quant_conv(zq), zq if vq.config.norm_type == "spatial" else None)
    return rec, commit, z, idx.reshape(-1)


def vq_loss(vq, x: torch.Tensor, cfg: LDMTrainConfig):
    """L_AE of the module docstring; also returns (z, code indices) for the codebook care."""
    rec, commit, z, idx = vq_forward(vq, x)
    rec = rec.float()
    loss = (cfg.l1_weight * (rec - x).abs().mean() + cfg.l2_weight * (rec - x).pow(2).mean()
            + cfg.commit_weight * commit.float().mean())
    return loss, z, idx


@torch.no_grad()
def restart_codes(codebook: torch.Tensor, z: torch.Tensor, dead: torch.Tensor, g: torch.Generator) -> int:
    """Move the ``dead`` codes (bool mask over codebook rows) onto random latent vectors of ``z``
    (B, C, h, w), drawn with the CPU generator ``g``; returns how many moved."""
    n = int(dead.sum())
    if n:
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]).float()
        pick = torch.randint(0, flat.shape[0], (n,), generator=g).to(flat.device)
        codebook[dead.to(codebook.device)] = flat[pick].to(codebook.dtype)
    return n


@torch.no_grad()
def heldout_psnr(vq, device) -> list[float]:
    """PSNR (dB, [0, 1] images) of D(Q(E(x))) on the held-out ``dataset=sample`` photos at 64 px, as the
    SR pipeline decodes (``VQModel.decode`` quantises)."""
    from bench.data import SampleDataset

    ds = SampleDataset(image_size=int(vq.config.sample_size))
    x = torch.stack([ds[i].image for i in range(len(ds))]).to(device)
    rec = ((vq.decode(vq.encode(x * 2 - 1).latents).sample.float() + 1) / 2).clamp(0, 1)
    rec = (rec * 255).round() / 255  # as saved (8-bit PNG)
    return (10 * torch.log10(1 / (rec - x).pow(2).flatten(1).mean(1))).tolist()


def ldm_loss(unet, z0: torch.Tensor, c: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
             abar: torch.Tensor) -> torch.Tensor:
    """L_LDM of the module docstring."""
    a = abar[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    return F.mse_loss(unet(torch.cat([z_t, c], dim=1), t).sample.float(), eps)


def train_ldm_sr(cfg: LDMTrainConfig) -> dict:
    from bench.models.ldm import HUB_SCHEDULER_CONFIG as S

    device = pick_device(cfg.device)
    images, data_sha = load_images(cfg.data_root, cfg.data_limit)
    vq, unet = build_parts(cfg)
    vq, unet = vq.to(device), unet.to(device)
    cuda = device.type == "cuda"
    fused = {"fused": True} if cuda else {}
    if cuda:
        torch.backends.cudnn.benchmark = True
        images = images.to(device)  # crops are gathered on the GPU
    ema = EMA(unet, cfg.ema_decay)
    if cfg.vq_trainable not in ("all", "decoder"):
        raise ValueError(f"vq_trainable={cfg.vq_trainable!r} not in ['all', 'decoder']")
    if cfg.vq_trainable == "decoder":
        if not cfg.vq_init:
            raise ValueError("vq_trainable=decoder freezes the encoder: it needs a trained one (set vq_init)")
        vq.encoder.requires_grad_(False)
        vq.quant_conv.requires_grad_(False)
    vq_params = [p for p in vq.parameters() if p.requires_grad]
    vq_opt = torch.optim.AdamW(vq_params, lr=cfg.vq_lr, weight_decay=0.0, **fused)
    unet_opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0, **fused)
    betas = make_betas(S["beta_schedule"], S["num_train_timesteps"], S["beta_start"], S["beta_end"])
    abar, T = alphas_cumprod(betas.float()).to(device), betas.numel()
    identity = json.loads(json.dumps({"kind": "ldm_sr", "vq": cfg.vq, "unet": cfg.unet, "data_sha256": data_sha,
                                      "seed": cfg.seed, "batch_size": cfg.batch_size, "crop": cfg.crop,
                                      "vq_init": cfg.vq_init, "unet_init": cfg.unet_init,
                                      "vq_trainable": cfg.vq_trainable}))
    ckpt = repo_path(cfg.ckpt_dir or f"results/train/{cfg.name}") / "last.pt"
    n_codes = int(cfg.vq["num_vq_embeddings"])
    st = {"vq_step": 0, "unet_step": 0, "vq_losses": [], "unet_losses": [], "wall_s": 0.0, "vq_done": False,
          "vq_unused": torch.ones(n_codes, dtype=torch.bool), "vq_restarts": []}
    state = load_checkpoint(ckpt, identity) if cfg.resume else None
    if state is not None:
        vq.load_state_dict(state["vq"])
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        vq_opt.load_state_dict(state["vq_opt"])
        unet_opt.load_state_dict(state["unet_opt"])
        st = {k: state.get(k, st[k]) for k in st}
        log.info("resuming %s from %s (stage 1 step %d, stage 2 step %d)", cfg.name, ckpt, st["vq_step"],
                 st["unet_step"])
    t_start, wall_prev = time.perf_counter(), float(st["wall_s"])
    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes
    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def optimise(loss, params, opt, lr, s, warmup=cfg.warmup):
        warmup_lr(opt, lr, warmup, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()

    codebook = vq.quantize.embedding.weight
    vq_warmup = cfg.warmup if cfg.vq_warmup is None else cfg.vq_warmup

    def vq_step(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s, stream=1)
        x = random_crops(images, cfg.batch_size, cfg.crop, g).to(device)
        if s == 0 and cfg.codebook_init:
            with torch.no_grad(), autocast():
                z = vq.encode(x).latents
            restart_codes(codebook.data, z, torch.ones(n_codes, dtype=torch.bool), g)
        vq.train()
        with autocast():
            loss, z, idx = vq_loss(vq, x, cfg)
        unused = st["vq_unused"] = st["vq_unused"].to(device)  # kept on the device: no host sync per step
        unused[idx] = False
        if cfg.restart_every and (s + 1) % cfg.restart_every == 0:
            st["vq_restarts"].append(restart_codes(codebook.data, z, unused, g))
            st["vq_unused"] = torch.ones(n_codes, dtype=torch.bool, device=device)
        optimise(loss, vq_params, vq_opt, cfg.vq_lr, s, vq_warmup)
        return loss.detach()

    def unet_step(s: int) -> torch.Tensor:
        g = step_generator(cfg.seed, s, stream=2)
        x = random_crops(images, cfg.batch_size, cfg.crop, g).to(device)
        t = torch.randint(0, T, (cfg.batch_size,), generator=g).to(device)
        with torch.no_grad(), autocast():
            z0 = vq.encode(x).latents.float()
        eps = torch.randn(z0.shape, generator=step_generator(cfg.seed, s, stream=5, device=device) if cuda else g,
                          device=device)
        c = F.avg_pool2d(x, cfg.factor)
        unet.train()
        with autocast():
            loss = ldm_loss(unet, z0, c, t, eps, abar)
        optimise(loss, unet.parameters(), unet_opt, cfg.unet_lr, s)
        ema.update(unet)
        return loss.detach()

    def save(key: str):
        def _save(s: int) -> None:
            st[key] = s
            atomic_torch_save({"identity": identity, **st, "wall_s": wall_prev + time.perf_counter() - t_start,
                               "vq": vq.state_dict(), "unet": unet.state_dict(), "ema": ema.state_dict(),
                               "vq_opt": vq_opt.state_dict(), "unet_opt": unet_opt.state_dict()}, ckpt)
        return _save

    def minutes_left():
        return None if deadline is None else max(0.0, (deadline - time.perf_counter()) / 60)

    common = dict(ckpt_every=cfg.ckpt_every, progress=cfg.progress)
    if not st["vq_done"]:
        # stage 1 ends at vq_steps or after vq_max_minutes (then stage 2 starts from that VQ model)
        budget = [m for m in (minutes_left(), cfg.vq_max_minutes) if m is not None]
        train_loop(vq_step, st["vq_step"], cfg.vq_steps, losses=st["vq_losses"], save=save("vq_step"),
                   max_minutes=min(budget) if budget else None, desc=f"{cfg.name} stage 1 (VQ)", **common)
        out_of_time = deadline is not None and time.perf_counter() >= deadline  # the overall budget, not stage 1's
        if st["vq_step"] >= cfg.vq_steps or (cfg.vq_max_minutes is not None and not out_of_time):
            st["vq_done"] = True
            save("vq_step")(st["vq_step"])
    if not st["vq_done"]:
        raise TimeoutError(f"{cfg.name}: max_minutes ran out in stage 1 at step {st['vq_step']} of {cfg.vq_steps}; "
                           f"rerun the same command to resume from {ckpt}")
    vq.eval().requires_grad_(False)
    train_loop(unet_step, st["unet_step"], cfg.unet_steps, losses=st["unet_losses"], save=save("unet_step"),
               max_minutes=minutes_left(),
               desc=f"{cfg.name} stage 2 (LDM)", **common)
    wall = wall_prev + time.perf_counter() - t_start
    with torch.no_grad():
        x = random_crops(images, min(64, images.shape[0]), cfg.crop, step_generator(cfg.seed, 0, stream=3))
        latent_std = float(vq.encode(x.to(device)).latents.float().std())
    shipped = copy.deepcopy(vq).half().float()  # evaluate what ships: fp16-rounded weights
    quality = {"heldout_psnr": heldout_psnr(shipped, device), "codes_used": codes_used(shipped, images, device)}
    return export_ldm(cfg, vq, ema.model, st, wall, device, data_sha, images.shape[0], latent_std, quality)


def codes_used(vq, images: torch.Tensor, device, batch: int = 64) -> int:
    """How many codebook entries the (center 64-crops of the) training images select."""
    used = set()
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            x = images[i:i + batch].float().to(device) / 127.5 - 1
            h0 = (x.shape[-2] - int(vq.config.sample_size)) // 2
            x = x[..., h0:h0 + int(vq.config.sample_size), h0:h0 + int(vq.config.sample_size)]
            used.update(vq.quantize(vq.encode(x).latents)[2][2].reshape(-1).tolist())
    return len(used)


def save_diffusers_dir(out: Path, vq, unet) -> dict[str, str]:
    """``save_pretrained`` (fp16 safetensors) of vqvae/, unet/, scheduler/ into ``out``, replacing it
    atomically (written beside it, then renamed); returns the sha256 of each weights file."""
    from diffusers import DDIMScheduler

    from bench.models.ldm import HUB_SCHEDULER_CONFIG

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(vq).cpu().half().save_pretrained(tmp / "vqvae", safe_serialization=True)
    copy.deepcopy(unet).cpu().half().save_pretrained(tmp / "unet", safe_serialization=True)
    DDIMScheduler(**HUB_SCHEDULER_CONFIG).save_pretrained(tmp / "scheduler")
    for f in tmp.rglob("*"):
        os.chmod(f, 0o755 if f.is_dir() else 0o644)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return {f"{part}/{f.name}": sha256_file(f) for part in ("vqvae", "unet")
            for f in sorted((out / part).glob("*.safetensors"))}


def export_ldm(cfg: LDMTrainConfig, vq, unet_ema, st: dict, wall_s: float, device, data_sha: str,
               n_images: int, latent_std: float, quality: dict) -> dict:
    pri = repo_path(cfg.priors_dir)
    out = pri / cfg.name
    shas = save_diffusers_dir(out, vq, unet_ema)
    plot_losses(st["vq_losses"], pri / f"{cfg.name}_vq_loss.png", f"{cfg.name} stage 1: VQ autoencoder loss")
    unet_trained = bool(st["unet_losses"])
    if unet_trained:  # a UNet exported unchanged from unet_init keeps its own (earlier) curve
        plot_losses(st["unet_losses"], pri / f"{cfg.name}_unet_loss.png", f"{cfg.name} stage 2: latent eps loss")
    rel = repo_relative(out)
    info = {"name": cfg.name, "dir": str(rel), "sha256": shas, "vq_steps": st["vq_step"],
            "unet_steps": st["unet_step"], "vq_parameters": sum(p.numel() for p in vq.parameters()),
            "unet_parameters": sum(p.numel() for p in unet_ema.parameters()), "wall_s": round(wall_s, 1),
            "device": device_name(device), "final_vq_loss": final_mean(st["vq_losses"]),
            "final_unet_loss": final_mean(st["unet_losses"]), "latent_std": latent_std, **quality}
    ps = quality["heldout_psnr"]
    files = "\n".join(f"| `{k}` | `{v}` |" for k, v in shas.items())
    if unet_trained:
        stage2 = (f"{st['unet_step']} steps, batch {cfg.batch_size}, AdamW lr {cfg.unet_lr}, EMA {cfg.ema_decay}; "
                  f"final loss {info['final_unet_loss']:.4f}"
                  + (f"; started from `{cfg.unet_init}`" if cfg.unet_init else ""))
        stage2_table = loss_table(st["unet_losses"])
    else:
        stage2 = (f"not retrained: the UNet of `{cfg.unet_init}` exported unchanged (its latent space is kept: "
                  f"vq_trainable={cfg.vq_trainable})" if cfg.unet_init else "not trained (random UNet)")
        stage2_table = "(not retrained here; the curve `" + f"{cfg.name}_unet_loss.png` is the UNet's own training)"
    (pri / f"{cfg.name}.md").write_text(f"""# {cfg.name}: embedded latent-diffusion 4x SR model (diffusers format)

`LDMSuperResolutionPipeline` parts (`unet/`, `vqvae/`, `scheduler/`) in `{rel}/`, trained by
`bench/train/ldm.py`: a VQ autoencoder (f=4, 3 latent channels; L1 + L2 + commitment, no GAN), then a
UNet2DModel (in_channels 6: noisy latent + 4x block-averaged LR image) with the DDPM eps loss under the
hub model's scheduler (scaled_linear 0.0015..0.0155, T=1000). Small and briefly trained: NOT comparable
to `CompVis/ldm-super-resolution-4x-openimages`. Use: `python -m bench method=srldm method.ldm.local_dir={rel}`.

| | |
|---|---|
| files (fp16 safetensors; UNet = EMA weights) | see below |
| parameters | VQ {info['vq_parameters']:,}; UNet {info['unet_parameters']:,} |
| data | {n_images} images of `{cfg.data_root}`, content sha256 `{data_sha}`; random {cfg.crop}-crops + h-flips |
| stage 1 | {st['vq_step']} steps, batch {cfg.batch_size}, AdamW lr {cfg.vq_lr} (warm-up \
{cfg.warmup if cfg.vq_warmup is None else cfg.vq_warmup}); final loss {info['final_vq_loss']:.4f}; codebook init from \
encoder outputs: {cfg.codebook_init}, dead-code restart every {cfg.restart_every} steps \
({sum(st['vq_restarts'])} codes moved); started from `{cfg.vq_init or 'random init'}`, trained: {cfg.vq_trainable} |
| codebook | {quality['codes_used']} of {cfg.vq['num_vq_embeddings']} codes used by the center crops of the training images |
| first stage on held-out photos | PSNR {sum(ps) / len(ps):.2f} dB mean over the {len(ps)} `dataset=sample` photos at \
{cfg.crop} px ({min(ps):.1f}-{max(ps):.1f}), D(Q(E(x))) saved as 8-bit |
| stage 2 | {stage2} |
| latent std | {latent_std:.3f} (no latent rescaling, as the CompVis SR model) |
| wall time | {wall_s / 60:.1f} min on {info['device']}; torch {torch.__version__} |

| file | sha256 |
|---|---|
{files}

## Retrain

```
{cfg.command}
```

## Loss curves

![stage 1]({cfg.name}_vq_loss.png) ![stage 2]({cfg.name}_unet_loss.png)

Stage 1 (VQ autoencoder):

{loss_table(st['vq_losses'])}

Stage 2 (latent diffusion):

{stage2_table}
""")
    log.info("wrote %s (%s)", out, shas)
    return info
