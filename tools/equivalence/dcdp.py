"""Check method=dcdp against the official DCDP code on identical inputs and noise.

    python tools/equivalence/dcdp.py /path/to/checkout
    # a checkout of github.com/Morefre/Decoupled-Data-Consistency-with-Diffusion-Purification-for-Image-Restoration

Nothing of the official code is copied here. It imports the official ``guided_diffusion`` package (``create_sampler``,
the ``vanilla`` conditioning) and takes ``Purification_Schedule`` and ``CSGM_Solver_Pixel_Space`` out of the
official ``dcdp.py`` by parsing it (importing that file would build a torchmetrics VGG LPIPS, which downloads
weights); ``motionblur`` (a separate repository the official setup clones, used only by the motion-blur operator)
is stubbed. It compares, on a harness operator wrapped as the official ``operator.forward``:

1. the schedule: ``Purification_Schedule(K, T_0, T_end, 'linear')`` vs :func:`bench.methods.dcdp.purification_schedule`;
2. the data fit: official ``CSGM_Solver_Pixel_Space`` (SGD, momentum 0.9, autograd through A) vs
   :func:`~bench.methods.dcdp.data_fit` (the analytic gradient) at the official sr / deblur learning rates;
3. one purification: official ``q_sample(x, T_k - 1)`` with a given noise, then the official ``DDIM`` sampler's
   ``p_sample_loop`` (``steps=T_k``, ``timestep_respacing=min(20, T_k)``, learned range, clip) vs
   :func:`~bench.methods.dcdp.purify` (T_k = 400, 15 and the last level 1 with ``official_last_level``);
4. a whole 3-iteration loop composed of the official pieces as ``Diffusion_Purified_CSGM`` chains them vs
   :func:`~bench.methods.dcdp.dcdp_sample` with ``official_last_level=True``, the noises drawn from the same
   per-image generators.

One deterministic network on both sides: a small random convolution with 2C output channels (eps and variance
values) whose output depends on the timestep (so the respaced timestep map is checked). Prints max abs differences;
exit code 1 if any exceeds 1e-5 (schedules must match exactly).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.equivalence.tiny_eps import TinyEps  # noqa: E402

TOL = 1e-5



def official_functions(checkout: Path, names: tuple[str, ...]) -> dict:
    """The named top-level functions of the official ``dcdp.py``, executed without its module-level code."""
    tree = ast.parse((checkout / "dcdp.py").read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns = {"np": np, "torch": torch, "partial": partial}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(checkout / "dcdp.py"), "exec"), ns)
    return ns


class OfficialOperator:
    """The harness operator as the official ``operator.forward`` (flat y, autograd through A)."""

    def __init__(self, op):
        self.op = op

    def forward(self, x, **_):
        return self.op.A(x.reshape(x.shape[0], -1))


@contextlib.contextmanager
def fixed_randn_like(z: torch.Tensor):
    """Official ``q_sample`` draws ``torch.randn_like(x_start)``: hand it ``z`` instead (one call)."""
    orig = torch.randn_like
    torch.randn_like = lambda x, *a, **k: z.to(x.dtype).clone()  # noqa: E731
    try:
        yield
    finally:
        torch.randn_like = orig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout))
    sys.path.insert(0, str(REPO))
    stub = types.ModuleType("motionblur.motionblur")
    stub.Kernel = object
    sys.modules.setdefault("motionblur", types.ModuleType("motionblur"))
    sys.modules.setdefault("motionblur.motionblur", stub)
    from guided_diffusion.condition_methods import get_conditioning_method
    from guided_diffusion.gaussian_diffusion import create_sampler

    from bench import seeding
    from bench.diffusion import make_betas, padded_alphas_cumprod
    from bench.methods.dcdp import DCDP, OFFICIAL, data_fit, dcdp_sample, ddim_levels, purification_schedule, purify
    from tests.methods.solvers_common import problem

    off = official_functions(args.checkout, ("Purification_Schedule", "CSGM_Solver_Pixel_Space", "normalize_image",
                                             "torch_to_np"))
    worst, failures = 0.0, []

    def report(what: str, diff: float, exact: bool = False):
        nonlocal worst
        worst = max(worst, diff)
        bad = diff != 0 if exact else diff > TOL
        if bad:
            failures.append(what)
        print(f"{'FAIL' if bad else 'ok  '} {what}: max |diff| = {diff:.3g}")

    # 1. schedule
    for K, t0, t_end in [(10, 400, 0), (20, 700, 0), (200, 1000, 50), (200, 1000, 20), (7, 333, 0), (1, 400, 0)]:
        ref = off["Purification_Schedule"](K, t0, t_end, "linear").tolist()
        ours = purification_schedule(K, t0, t_end)
        report(f"schedule K={K} T0={t0} Tend={t_end}", float(max(abs(a - b) for a, b in zip(ref, ours))) +
               float(len(ref) != len(ours)), exact=True)

    net = TinyEps().double()
    abar = padded_alphas_cumprod(make_betas("linear", 1000))
    cond = get_conditioning_method("vanilla", None, None, scale=0)

    def eps_fn(x, t):
        return net(x, torch.full((x.shape[0],), t, dtype=torch.long))[:, :3]

    def official_purify(x, t_k, z):
        base = create_sampler(sampler="ddpm", steps=1000, noise_schedule="linear", model_mean_type="epsilon",
                              model_var_type="learned_range", dynamic_threshold=False, clip_denoised=True,
                              rescale_timesteps=False, timestep_respacing=1000)
        with fixed_randn_like(z):
            x_noisy = base.q_sample(x, t_k - 1)
        if t_k == 1:
            t_k += 1
        sampler = create_sampler(sampler="ddim", steps=t_k, noise_schedule="linear", model_mean_type="epsilon",
                                 model_var_type="learned_range", dynamic_threshold=False, clip_denoised=True,
                                 rescale_timesteps=False, timestep_respacing=int(min(t_k, 20)))
        out, _ = sampler.p_sample_loop(model=net, x_start=x_noisy, measurement=None,
                                       measurement_cond_fn=cond.conditioning, record=False, save_root=None)
        return out.detach()

    for name in ("sr4", "deblur_gauss", "inpaint"):
        deg, _, y = problem(name, size=16, n=1)
        op = deg.operator
        lr = DCDP.effective_lr(OFFICIAL[name.rstrip("4").split("_")[0]][2], op)
        g = torch.Generator().manual_seed(5)
        x0 = 0.3 * torch.randn(1, *op.x_shape, generator=g, dtype=torch.float64)
        # 2. data fit
        ref, _ = off["CSGM_Solver_Pixel_Space"](y, x0, 100, "cpu", OfficialOperator(op), optimizer="SGD",
                                                 momentum=0.9, lr=lr)
        ours = data_fit(op, x0.reshape(1, -1), y, 100, lr, 0.9).reshape(x0.shape)
        report(f"{name}: 100 SGD steps (lr {lr:g} at 16 px)", float((ref - ours).abs().max()))
        # 3. purification
        for t_k in (400, 15, 1):
            z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
            ref = official_purify(x0, t_k, z)
            start, kept = ddim_levels(t_k, 20, official_last_level=True)
            with torch.no_grad():
                ours, nfe = purify(eps_fn, x0, abar, start, kept, z)
            report(f"{name}: purification T_k={t_k} ({nfe} NFE)", float((ref - ours).abs().max()))
        # 4. a whole loop: K = 3, T_0 = 400, 30 SGD steps
        levels = purification_schedule(3, 400)
        gens = seeding.make_generators(0, ["a"], "restore")
        noises = [seeding.randn(gens, op.x_shape, "cpu", torch.float64) for _ in levels]  # dcdp_sample's order
        x = torch.zeros(1, *op.x_shape, dtype=torch.float64)
        for t_k, z in zip(levels, noises):
            x, _ = off["CSGM_Solver_Pixel_Space"](y, x, 30, "cpu", OfficialOperator(op), optimizer="SGD",
                                                   momentum=0.9, lr=lr)
            x = official_purify(x, t_k, z)
        with torch.no_grad():
            ours, nfe = dcdp_sample(eps_fn, op, y, abar, levels, 30, lr, 0.9, 20,
                                    seeding.make_generators(0, ["a"], "restore"), official_last_level=True)
        report(f"{name}: whole loop K=3 (levels {levels}, {nfe} NFE)", float((x - ours).abs().max()))

    print(f"{'OK' if not failures else 'FAILED'}: worst difference {worst:.3g}; every difference <= {TOL:g}"
          if not failures else f"FAILED: {', '.join(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
