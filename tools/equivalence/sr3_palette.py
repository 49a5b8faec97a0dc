"""Equivalence of our SR3 / Palette UNets and sampler with Janspiry's official code.

    python tools/equivalence/sr3_palette.py <sr3_checkout> <palette_checkout>

<sr3_checkout>: a clone of github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement (reads
``model/sr3_modules/{unet,diffusion}.py``); <palette_checkout>: a clone of
github.com/Janspiry/Palette-Image-to-Image-Diffusion-Models (``models/network.py``,
``models/guided_diffusion_modules/``, ``core/base_network.py``). Nothing is stubbed: the official modules need
only torch, numpy and tqdm. Nothing from the checkouts is copied into this project.

For each architecture, with the same small random config: the official wrapper (SR3 ``GaussianDiffusion``,
Palette ``Network``) is built with random weights; its full ``state_dict()`` (UNet under ``denoise_fn.`` plus
the schedule buffers, i.e. the released checkpoints' format) is loaded into ours strictly through
:func:`bench.models.conditional.official_unet_state`. Then, on identical inputs, it compares

* the UNet forward (eps) at several noise levels;
* one ``p_sample`` step at several t with identical noise (the official draws ``randn_like`` from the global
  RNG; the same draw is passed to ours);
* the whole official sampling loop (SR3 ``p_sample_loop``; Palette ``restoration`` with an inpainting mask,
  starting from the cond image and re-pasting the known pixels) against :func:`bench.methods.conditional_ddpm.sample`
  with T = 20 steps, batch 1, and a generator seeded like the official global RNG (same draw order).

Prints the max abs differences; exit code 1 if any exceeds 1e-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.methods.conditional_ddpm import conditional_schedule, p_sample, sample  # noqa: E402
from bench.models.conditional import official_unet_state, sampling_betas  # noqa: E402
from bench.models.palette_unet import PaletteUNet  # noqa: E402
from bench.models.sr3_unet import SR3UNet  # noqa: E402

TOL = 1e-5
T_LOOP = 20
SR3_ARCH = dict(in_channel=6, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=(1, 2, 2),
                attn_res=(8,), res_blocks=1, dropout=0.1, image_size=32)
PALETTE_ARCH = dict(image_size=16, in_channel=6, inner_channel=32, out_channel=3, res_blocks=1, attn_res=(2,),
                    dropout=0.1, channel_mults=(1, 2), num_head_channels=16)
SCHEDULE = {"schedule": "linear", "n_timestep": T_LOOP, "linear_start": 1e-4, "linear_end": 0.09}


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (also the official zero-initialised layers) so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _max(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def check_sr3(sr3_dir: Path) -> dict[str, float]:
    sys.path.insert(0, str(sr3_dir))
    from model.sr3_modules import diffusion as off_diffusion
    from model.sr3_modules import unet as off_unet
    sys.path.remove(str(sr3_dir))

    off_net = off_unet.UNet(**{k: v for k, v in SR3_ARCH.items()})
    gd = off_diffusion.GaussianDiffusion(off_net, image_size=32, channels=3, loss_type="l1", conditional=True)
    gd.set_new_noise_schedule(SCHEDULE, torch.device("cpu"))
    _randomize(gd, 0)
    gd.eval()
    ours = SR3UNet(**SR3_ARCH)
    ours.load_state_dict(official_unet_state(gd.state_dict()), strict=True)
    ours.eval()

    out = {}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 32, 32, generator=g)
    gamma = torch.tensor([[0.05], [0.93]])
    with torch.no_grad():
        out["sr3 unet forward"] = _max(off_net(x, gamma), ours(x, gamma))
    sched = conditional_schedule(sampling_betas("sr3", SCHEDULE), T_LOOP, "sqrt_abar", "cpu")
    c, xt = x[:, :3], x[:, 3:]
    diffs = []
    for t in (T_LOOP - 1, T_LOOP // 2, 1, 0):
        torch.manual_seed(100 + t)
        z = torch.randn_like(xt)
        torch.manual_seed(100 + t)
        ref = gd.p_sample(xt, t, condition_x=c)
        with torch.no_grad():
            diffs.append(_max(ref, p_sample(ours, xt, c, sched, t, z)))
    out["sr3 p_sample (t=19,10,1,0)"] = max(diffs)
    c1 = c[:1]
    torch.manual_seed(7)
    ref = gd.p_sample_loop(c1)
    mine = sample(ours, c1, sched, [torch.Generator().manual_seed(7)])
    out[f"sr3 p_sample_loop (T={T_LOOP})"] = _max(ref, mine)
    return out


def check_palette(palette_dir: Path) -> dict[str, float]:
    sys.path.insert(0, str(palette_dir))
    from models import network as off_network
    sys.path.remove(str(palette_dir))

    beta_schedule = {"train": SCHEDULE, "test": SCHEDULE}
    net = off_network.Network(unet=dict(PALETTE_ARCH), beta_schedule=beta_schedule, module_name="guided_diffusion")
    net.set_new_noise_schedule(device=torch.device("cpu"), phase="test")
    _randomize(net, 0)
    net.eval()
    ours = PaletteUNet(**PALETTE_ARCH)
    ours.load_state_dict(official_unet_state(net.state_dict()), strict=True)
    ours.eval()

    out = {}
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 16, 16, generator=g)
    gamma = torch.tensor([[0.01], [0.97]])
    with torch.no_grad():
        out["palette unet forward"] = _max(net.denoise_fn(x, gamma), ours(x, gamma))
    sched = conditional_schedule(sampling_betas("palette", SCHEDULE), T_LOOP, "abar", "cpu")
    c, yt = x[:, :3], x[:, 3:]
    diffs = []
    for t in (T_LOOP - 1, T_LOOP // 2, 1, 0):
        tt = torch.full((2,), t, dtype=torch.long)
        torch.manual_seed(200 + t)
        z = torch.randn_like(yt)
        torch.manual_seed(200 + t)
        ref = net.p_sample(yt, tt, y_cond=c)
        with torch.no_grad():
            diffs.append(_max(ref, p_sample(ours, yt, c, sched, t, z)))
    out["palette p_sample (t=19,10,1,0)"] = max(diffs)

    gt = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    hole = (torch.rand(1, 1, 16, 16, generator=g) < 0.3).float()  # Palette's mask: 1 = hole
    cond = gt * (1 - hole) + hole * torch.randn(1, 3, 16, 16, generator=g)
    torch.manual_seed(9)
    ref, _ = net.restoration(cond, y_t=cond, y_0=gt, mask=hole, sample_num=2)
    mine = sample(ours, cond, sched, [torch.Generator().manual_seed(9)], x_init=cond, y0=gt, keep=1 - hole)
    out[f"palette restoration, inpainting (T={T_LOOP})"] = _max(ref, mine)
    return out


#: the released checkpoints' configs (SR3 config/sr_sr3_16_128.json, sr_sr3_64_512.json; Palette
#: config/inpainting_celebahq.json = inpainting_places2.json): their state-dict keys and shapes must agree
RELEASED = {
    "sr3 16->128": dict(in_channel=6, out_channel=3, inner_channel=64, norm_groups=32, channel_mults=[1, 2, 4, 8, 8],
                        attn_res=[16], res_blocks=2, dropout=0.2, image_size=128),
    "sr3 64->512": dict(in_channel=6, out_channel=3, inner_channel=64, norm_groups=16, channel_mults=[1, 2, 4, 8, 16],
                        attn_res=[], res_blocks=1, dropout=0.0, image_size=512),
    "palette 256": dict(in_channel=6, out_channel=3, inner_channel=64, channel_mults=[1, 2, 4, 8], attn_res=[16],
                        num_head_channels=32, res_blocks=2, dropout=0.2, image_size=256),
}


def check_layouts(sr3_dir: Path, palette_dir: Path) -> dict[str, float]:
    """Build the official and our nets of the released configs on the meta device (no memory) and compare
    their state-dict layouts: 0 if keys and shapes agree, else the number of differing entries."""
    from model.sr3_modules import unet as off_sr3  # imported by check_sr3
    from models.guided_diffusion_modules import unet as off_palette  # imported by check_palette

    out = {}
    for name, arch in RELEASED.items():
        off_cls, our_cls = (off_sr3.UNet, SR3UNet) if name.startswith("sr3") else (off_palette.UNet, PaletteUNet)
        with torch.device("meta"):
            a = {k: tuple(v.shape) for k, v in off_cls(**arch).state_dict().items()}
            b = {k: tuple(v.shape) for k, v in our_cls(**arch).state_dict().items()}
        out[f"{name} state-dict layout ({len(a)} tensors)"] = float(len(set(a.items()) ^ set(b.items())))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    sr3_dir, palette_dir = (Path(a).resolve() for a in argv)
    for d, probe in ((sr3_dir, "model/sr3_modules/unet.py"), (palette_dir, "models/network.py")):
        if not (d / probe).is_file():
            print(f"{d} is not the expected checkout: {probe} is missing", file=sys.stderr)
            return 2
    torch.set_grad_enabled(False)
    results = {**check_sr3(sr3_dir), **check_palette(palette_dir)}
    sys.path[:0] = [str(sr3_dir), str(palette_dir)]
    results.update(check_layouts(sr3_dir, palette_dir))
    width = max(map(len, results))
    for name, diff in results.items():
        what = f"differing entries = {int(diff)}" if "layout" in name else f"max |diff| = {diff:.3e}"
        print(f"{name:<{width}}  {what}  {'ok' if diff <= TOL else 'FAIL'}")
    bad = [k for k, v in results.items() if not v <= TOL]
    print(f"{'FAIL' if bad else 'OK'}: {len(results) - len(bad)}/{len(results)} within {TOL:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
