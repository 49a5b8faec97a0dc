"""DAPS vs the official code (zhangbingliang2019/DAPS ``main``): whole annealing runs on identical inputs and noise.

    python tools/equivalence/daps.py <checkout of zhangbingliang2019/DAPS> [<folder holding torchdiffeq>]

The official classes run as they are: ``sampler.py::DAPS`` (its EDM annealing scheduler, ``DiffusionPFODE`` with
torchdiffeq's Euler, ``MCMCSampler`` with Langevin or HMC), ``model/precond.py::VPPrecond`` around a small random
eps network, and ``forward_operator.Operator`` (its autograd data gradient) around our ``sr4`` operator. Ours is
``bench.methods.daps.daps_sample`` with the same network through ``EDMDenoiser(time_map="vp")`` and
``data_weight=2`` (official ``main``'s loss), i.e. ``official_data_weight=true, time_map=vp``. Both draw their noise
from torch's global generator in the same order after the same seed (start, per-step Langevin/HMC noise, re-noise),
so the outputs must agree to float32 rounding. Needs torchdiffeq importable (pip install torchdiffeq).
Prints the max absolute differences and exits 1 above the tolerance.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from bench.methods.daps import EDMDenoiser, annealing_sigmas, daps_sample
from bench.diffusion import make_betas

TOL = 1e-4


def _load(checkout: Path, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, checkout / rel)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class TinyEps(torch.nn.Module):
    """A small random eps network with a sinusoidal time input (6 output channels: learned sigma, dropped)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 6, 3, padding=1)
        self.temb = torch.nn.Linear(8, 16)
        for p in self.parameters():
            p.data = 0.2 * torch.randn(p.shape, generator=g)

    def forward(self, x, t):
        freqs = torch.exp(-torch.arange(4, dtype=torch.float32) * 2.0)
        ang = t.float()[:, None] * freqs[None] / 100
        h = torch.tanh(self.conv1(x) + self.temb(torch.cat([ang.cos(), ang.sin()], 1))[:, :, None, None])
        return self.conv2(h)


def main(checkout: str) -> int:
    root = Path(checkout).resolve()
    sys.path.insert(0, str(root))
    from forward_operator import Operator
    from sampler import DAPS as OfficialDAPS
    precond = _load(root, "model/precond.py", "daps_official_precond")

    net = TinyEps().eval()
    for p in net.parameters():
        p.requires_grad_(False)

    class OfficialModel(torch.nn.Module):  # official model/__init__.py::DDPM without its UNet loader
        def __init__(self):
            super().__init__()
            self.model = precond.VPPrecond(model=net, learn_sigma=True, conditional=False)

        def tweedie(self, x, sigma):
            return self.model(x, torch.as_tensor(sigma).to(x.device))

        def score(self, x, sigma):
            return (self.tweedie(x, sigma) - x) / sigma**2

    from tests.methods.test_ddrm import task  # the task YAMLs, as the tests build them
    deg = task("sr4").build(8)
    op = deg.operator

    class Wrapped(Operator):
        def __call__(self, x):
            return op.A(x.reshape(x.shape[0], -1))

    worst = 0.0
    for algo, extra in (("langevin", {}), ("hmc", {"momentum": 0.9})):
        K, ode, lsteps, lr, tau, ratio_min = 4, 3, 6, 1e-4, 0.01, 0.01
        cfg = dict(annealing_scheduler_config={"name": "edm", "num_steps": K, "sigma_max": 100, "sigma_min": 0.1,
                                               "timestep": "poly-7"},
                   diffusion_scheduler_config={"name": "edm", "num_steps": ode, "sigma_min": 0.01,
                                               "timestep": "poly-7"},
                   mcmc_sampler_config={"num_steps": lsteps, "lr": lr, "tau": tau, "lr_min_ratio": ratio_min,
                                        "mc_algo": algo, "prior_solver": "gaussian", **extra})
        g = torch.Generator().manual_seed(1)
        x_true = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
        y = op.A(x_true.reshape(2, -1)) + 0.05 * torch.randn(2, op.M, generator=g)

        torch.manual_seed(7)
        official = OfficialDAPS(**cfg)
        x_start = torch.randn(2, 3, 8, 8) * official.annealing_scheduler.get_prior_sigma()
        ref = official.sample(OfficialModel(), x_start, Wrapped(sigma=0.05), y)

        torch.manual_seed(7)
        den = EDMDenoiser(lambda x, t: net(x, t)[:, :3], make_betas("linear", 1000), "vp")
        ours = daps_sample(den, op, y, annealing_sigmas(K, 100.0, 0.1, 7.0), ode_steps=ode, ode_sigma_min=0.01,
                           rho=7.0, langevin_steps=lsteps, lr=lr, lr_min_ratio=ratio_min, tau=tau, data_weight=2.0,
                           mc_algo=algo, momentum=extra.get("momentum", 0.9),
                           noise=lambda: torch.randn(2, 3, 8, 8))
        diff = float((ours - ref).abs().max())
        scale = float(ref.abs().max())
        print(f"{algo}: K={K} x {ode} ODE steps, {lsteps} MCMC steps: max |ours - official| = {diff:.3e} "
              f"(output max |x| {scale:.3f}); NFE ours {den.nfe}")
        worst = max(worst, diff / max(scale, 1.0))
        torch.manual_seed(7)  # the control: the paper's data weight (our default) is a different chain
        paper = daps_sample(den, op, y, annealing_sigmas(K, 100.0, 0.1, 7.0), ode_steps=ode, ode_sigma_min=0.01,
                            rho=7.0, langevin_steps=lsteps, lr=lr, lr_min_ratio=ratio_min, tau=tau, data_weight=1.0,
                            mc_algo=algo, momentum=extra.get("momentum", 0.9), noise=lambda: torch.randn(2, 3, 8, 8))
        print(f"  control (data_weight=1, the paper's): max |paper - official| = {float((paper - ref).abs().max()):.3e}")
    ok = worst < TOL
    print(f"{'OK' if ok else 'FAIL'}: worst relative difference {worst:.3e} (tolerance {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.path[1:1] = sys.argv[2:]  # where torchdiffeq lives, if not on the path
    sys.exit(main(sys.argv[1]))
