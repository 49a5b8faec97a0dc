"""Check method=fps_smc against the official FPS-SMC code (ZehaoDou-official/FPS-SMC-2023) on identical inputs
and noise.

    python tools/equivalence/fps_smc.py /path/to/FPS-SMC-2023   # github.com/ZehaoDou-official/FPS-SMC-2023

It imports the official ``guided_diffusion`` package from that checkout (nothing of it is copied here; its unused
``motionblur`` import is stubbed) and runs official ``DDIM.p_sample_loop`` (``create_sampler`` with the official
``configs/diffusion_config.yaml`` values, respaced to a few steps, c_rate 0.95) against
:func:`bench.methods.fps_smc.fps_smc_sample` with ``official_index=true, official_init=true`` and sigma_y = 0.05
(official's hard-coded value), on:

* a tiny deterministic eps network (tools/equivalence/tiny_eps.py, 3 -> 6 channels), 256 x 256 images (official
  reshapes to 3 x 256 x 256 everywhere);
* our ``sr4``, ``deblur_gauss`` and ``inpaint`` SVD operators, handed to official as its ``task_Svd`` (an adapter:
  our V / Vt / U / Ut / singulars under official's own ``get_mean`` / ``get_noise`` / ``transpose``) and as its
  ``operator``, through official's generic SVD branch (``op`` = neither of its named tasks);
* float64 throughout (the net, the image, the noise: official computes in the image's dtype; in float32 its
  (I + A^T A / r)^-1 (m + A^T y / r) loses m in pixel space where r ~ 1e-7, printed as a documented difference);
* official's SR branch (``op="super_resolution"``) on ``sr4_bicubic``: y, its sequence and the weights through our
  bicubic operator, the proposal through our block-average ``SuperResolution`` (given to official in place of its
  own, whose SVD basis differs) vs ours with ``official_sr_operator=true`` (``measure_op``);
* the same normals (official draws from torch's global generator: the whole y-sequence, one init draw, then one
  draw per particle per step; ours gets them in that order) and the same resampling uniforms (official
  ``random.choices``; ours reads Python's ``random.random()`` after the same seed).

Official adds 1e-6 to v in r = a / (v + 1e-6) (``ex_values``); it is compared patched to r = a / v (ours) and the
unpatched difference is printed as a documented difference. Prints the max abs differences of the returned image
(particle 0's x0^, in [-1, 1]); exit code 1 if a patched difference exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import random
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.equivalence.tiny_eps import TinyEps  # noqa: E402
from tools.equivalence.verdict import verdict  # noqa: E402

TOL = 1e-4
K, P, SIZE = 8, 4, 256


def official_modules(checkout: str):
    sys.path.insert(0, str(Path(checkout).resolve()))
    stub = types.ModuleType("motionblur.motionblur")
    stub.Kernel = object
    sys.modules.setdefault("motionblur", types.ModuleType("motionblur"))
    sys.modules.setdefault("motionblur.motionblur", stub)
    from guided_diffusion import gaussian_diffusion, svd_replacement
    return gaussian_diffusion, svd_replacement


def adapter(svd_replacement, op, dtype):
    """Our operator as an official H_functions object: official's FPS methods on our SVD parts."""

    class Ours(svd_replacement.SuperResolution):  # its get_mean / get_noise / transpose only use the parts below
        def __init__(self):
            self.length, self.small_length = op.N, op.M
            self.all_singulars = op.add_zeros(op.singulars().to(dtype)[None])

        def V(self, vec):  # noqa: N802  official's V writes into buffers of the image dtype
            return op.V(vec.reshape(vec.shape[0], -1).to(dtype))

        def Vt(self, vec):  # noqa: N802
            return op.Vt(vec.reshape(vec.shape[0], -1).to(dtype))

        def U(self, vec):  # noqa: N802
            return op.U(vec.reshape(vec.shape[0], -1).to(dtype))

        def Ut(self, vec):  # noqa: N802
            return op.Ut(vec.reshape(vec.shape[0], -1).to(dtype))

        def singulars(self):
            return op.singulars().to(dtype)

        def add_zeros(self, vec):
            return op.add_zeros(vec.reshape(vec.shape[0], -1))

        def forward(self, vec, **_):  # measurements as (B, 1, 1, M): official tiles them with (M, 1, 1, 1)
            return op.A(vec.reshape(vec.shape[0], -1).to(dtype)).reshape(vec.shape[0], 1, 1, -1)

    return Ours()


def compare(gd, svd, net, task_name: str, patched: bool, dtype=torch.float64, sr_branch: bool = False) -> float:
    from bench.diffusion import make_betas
    from bench.methods.fps_smc import OFFICIAL_SIGMA_Y, fps_schedule, fps_smc_sample
    from bench.operators import SuperResolution
    from tests.methods.test_ddrm import task

    deg = task(task_name).build(SIZE)
    op = deg.operator
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=SIZE, mode="bilinear") * 2 - 1
    y = (op.A(x.reshape(1, -1)) + OFFICIAL_SIGMA_Y * torch.randn(1, op.M, generator=g)).to(dtype)
    net = net.to(dtype)

    sampler = gd.create_sampler(sampler="ddim", steps=1000, noise_schedule="linear", model_mean_type="epsilon",
                                model_var_type="learned_range", dynamic_threshold=False, clip_denoised=True,
                                rescale_timesteps=False, c_rate=0.95, particle_size=P, timestep_respacing=str(K))
    if patched:  # r = a / v (index 0, where v = 0, is never used: no proposal at t = 0)
        with np.errstate(divide="ignore"):
            sampler.ex_values = sampler.variance_diff / sampler.posterior_variance
    wrapped = adapter(svd, op, dtype)
    sampler.task_Svd = wrapped
    block = None
    if sr_branch:  # official's SR branch builds its block-average SVD itself: hand it ours (same basis as our run)
        block = SuperResolution(3, SIZE, factor=4)
        gd.SuperResolution = lambda **_: adapter(svd, block, dtype)
    torch.manual_seed(1)
    random.seed(2)
    ref = sampler.p_sample_loop(model=net, x_start=torch.randn(1, 3, SIZE, SIZE, dtype=dtype),
                                measurement=y.reshape(1, 1, 1, -1),
                                measurement_cond_fn=None, operator=wrapped,
                                op="super_resolution" if sr_branch else "svd", mask=None, record=False,
                                save_root=None).detach()

    # the same normals in official's order: x_start, K y-sequence draws, one init draw, then P per step
    torch.manual_seed(1)
    torch.randn(1, 3, SIZE, SIZE, dtype=dtype)
    y_noise = [torch.randn(1, 3, SIZE, SIZE, dtype=dtype).reshape(1, -1) for _ in range(K)]
    init = torch.randn(1, 3, SIZE, SIZE, dtype=dtype).reshape(1, 1, -1)
    random.seed(2)

    draws = [init]  # the first request is the init's (1, N), then (P, N) per step

    def noise_x(shape):
        if draws:
            return draws.pop()
        return torch.stack([torch.randn(1, 3, SIZE, SIZE, dtype=dtype).reshape(-1) for _ in range(P)])[None]

    ts, abar = fps_schedule(make_betas("linear", 1000), K)
    out, nfe = fps_smc_sample(lambda z, t: net(z, torch.full((z.shape[0],), t))[:, :3], block or op, y,
                              OFFICIAL_SIGMA_Y, ts,
                              abar, c=0.95, particles=P, clip=True, official_index=True, official_init=True,
                              noise_y=lambda: y_noise.pop(0), noise_x=noise_x,
                              uniform=lambda: torch.tensor([[random.random() for _ in range(P)]], dtype=torch.float64),
                              measure_op=op if sr_branch else None)
    assert nfe == (K - 1) * P
    return float((ref.detach() - out).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", help="path to a checkout of github.com/ZehaoDou-official/FPS-SMC-2023")
    args = ap.parse_args()
    gd, svd = official_modules(args.checkout)
    net = TinyEps()
    diffs, info = {}, {}
    for name in ("sr4", "deblur_gauss", "inpaint"):
        diffs[f"{name}: {K} steps x {P} particles, output image"] = compare(gd, svd, net, name, patched=True)
        info[f"{name}: official r = a / (v + 1e-6), unpatched"] = compare(gd, svd, net, name, patched=False)
    diffs[f"sr4_bicubic, official SR branch (block-average proposal, bicubic y and weights)"] = compare(
        gd, svd, net, "sr4_bicubic", patched=True, sr_branch=True)
    # official in float32 (its own precision): m + A^T y / r with r ~ 1e-7 at the top swamps m in pixel space
    info["sr4: float32 (official's dtype), patched"] = compare(gd, svd, net, "sr4", patched=True, dtype=torch.float32)
    return verdict(diffs, info, TOL)


if __name__ == "__main__":
    sys.exit(main())
