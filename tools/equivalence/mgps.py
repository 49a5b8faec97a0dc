"""MGPS vs the official code (YazidJanati/mgps): whole sampler runs on identical inputs and noise.

    python tools/equivalence/mgps.py <checkout of YazidJanati/mgps>

The official functions run as they are: ``src/posterior_samplers/mgps.py::mgps`` (with ``mgps_vi_step``,
``mgps_vi_tmid_step``, ``mgps_vi_t0_step``, ``_rb_elbo``, ``_elbo``, ``kl_mvn``) and ``diffusion_utils.py::
EpsilonNet`` / ``bridge_kernel_statistics`` / ``sample_bridge_kernel``, on a small random eps network
(tools/equivalence/tiny_eps.py's, added as a bounded perturbation to the exact eps of a N(0, I) prior so that
the chain stays O(1)), the ``sr4`` operator and the official likelihood ``log_pot`` (-||y - H x||^2 /
(2 std^2), std 0.05). The imports those files make for the checkpoints they load (guided-diffusion's UNet, LDM,
``local_paths``, the imaging utilities) are stubbed: nothing of them is called. Ours is
``bench.methods.mgps.mgps_sample`` with ``official_time_offset=true`` (the network at level t, abar_{t-1}).
Both draw their noise from torch's global generator in the same order after the same seed, so the outputs must
agree to float32 rounding. Two runs: the official default gradient-step rules (12 steps: warm start and plain
steps both occur) and the FFHQ block (40 steps: the noisiest / every-10th / plain rules). The forward and
backward passes through the network are counted on the official side and compared with ``mgps_cost``.
Prints the max absolute differences and exits 1 above the tolerance.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from bench.diffusion import make_betas
from bench.methods.mgps import Counter, gradient_steps, level_grid, mgps_cost, mgps_sample, padded_abar
from tools.equivalence.tiny_eps import TinyEps

TOL = 1e-4
#: the official rule blocks of configs/experiments/sampler/mgps.yaml (alpha 0.5)
RULES = {
    "default": [("i <= 20", 2), ("i >= n_steps - 10", 10), ("i % 10 == 0", 2), ("default", 2)],
    "ffhq": [("i <= 20", 2), ("i >= n_steps - 5", 20), ("i % 10 == 0", 20), ("default", 2)],
}
OURS = {"default": {}, "ffhq": {"noisy_count": 5, "noisy_grad_steps": 20, "every": 10, "every_grad_steps": 20}}


def _stub(name: str, **attrs) -> None:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_official(root: Path):
    """The official ``diffusion_utils`` and ``mgps`` modules, with the checkpoint-loading imports stubbed."""
    never = lambda *a, **k: None  # noqa: E731
    for pkg in ("utils", "guided_diffusion", "ldm", "posterior_samplers"):
        _stub(pkg)
        sys.modules[pkg].__path__ = []
    _stub("utils.utils", load_yaml=never, fwd_mixture=never, display=never)
    _stub("utils.im_invp_utils", InverseProblem=object)
    _stub("guided_diffusion.unet", create_model=never)
    _stub("guided_diffusion.gaussian_diffusion", create_sampler=never)
    _stub("ldm.util", instantiate_from_config=never)
    _stub("local_paths", REPO_PATH=root)
    du = _load(root / "src/posterior_samplers/diffusion_utils.py", "posterior_samplers.diffusion_utils")
    mg = _load(root / "src/posterior_samplers/mgps.py", "posterior_samplers.mgps")
    return du, mg


class _CountBackward(torch.autograd.Function):
    """Identity that counts the backward passes through the network's output."""
    count = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        _CountBackward.count += 1
        return g


class StableEps(TinyEps):
    """eps(x, t) = sqrt(1 - abar[t]) x + 0.1 tanh(TinyEps(x, t)): the exact eps of N(0, I) plus a nonlinear term."""

    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.abar = abar

    def forward(self, x, t, **_):
        out = super().forward(x, t)
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        return torch.cat([(1 - a).sqrt() * x + 0.1 * torch.tanh(out[:, :3]), out[:, 3:]], dim=1)


def main(checkout: str) -> int:
    root = Path(checkout).resolve()
    du, mg = load_official(root)
    calls = {"forward": 0}

    class OfficialUNet(torch.nn.Module):  # official diffusion_utils.UNet: self.unet(x, t)[:, :3]
        def forward(self, x, t):
            calls["forward"] += 1
            out = net(x, t.reshape(-1).expand(x.shape[0]))[:, :3]
            return _CountBackward.apply(out) if out.requires_grad else out

    # official load_epsilon_net: guided-diffusion's float64 numpy table, .float(), clip, 1.0 prepended
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    acp = torch.tensor(np.cumprod(1.0 - betas, axis=0)).float().clip(1e-6, 1)
    acp = torch.cat([torch.tensor([1.0]), acp])
    ours_abar = padded_abar(make_betas("linear", 1000))
    net = StableEps(acp).eval().requires_grad_(False)
    print(f"abar tables: max |ours - official| = {float((ours_abar - acp).abs().max()):.3e}")

    from tests.methods.test_ddrm import task  # the task YAMLs, as the tests build them
    deg = task("sr4").build(8)
    op = deg.operator
    g = torch.Generator().manual_seed(1)
    x_true = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    std = 0.05
    y = op.A(x_true.reshape(2, -1)) + std * torch.randn(2, op.M, generator=g)

    def official_log_pot(x):  # official generate_invp.log_pot, for a batch (official runs one image)
        return -0.5 * torch.norm(y - op.A(x.reshape(x.shape[0], -1))) ** 2 / std**2

    def our_log_lik(x):  # MGPS.restore's
        return -0.5 * (y - op.A(x.reshape(x.shape[0], -1))).pow(2).sum() / std**2

    worst = 0.0
    for block, n in (("default", 12), ("ffhq", 40)):
        rules = OmegaConf.create({
            "alpha_fn": {"conditions": [{"condition": "default", "return": 0.5}]},
            "gradient_steps_fn": {"conditions": [{"condition": c, "return": r} for c, r in RULES[block]]}})
        eps_net = du.EpsilonNet(net=OfficialUNet(), alphas_cumprod=acp, timesteps=torch.linspace(0, 999, n).long())
        torch.manual_seed(5)
        x_T = torch.randn(2, 3, 8, 8)
        calls["forward"], _CountBackward.count = 0, 0
        ref = mg.mgps(initial_noise=x_T, epsilon_net=eps_net, inverse_problem=types.SimpleNamespace(
            log_pot=official_log_pot), alpha_fn=rules.alpha_fn, gradient_steps_fn=rules.gradient_steps_fn,
            optimizer="adam", lr=3e-2, threshold=700)
        off_fwd, off_bwd = calls["forward"], _CountBackward.count

        torch.manual_seed(5)
        x_T = torch.randn(2, 3, 8, 8)
        x0_fn = Counter(lambda x, t: net(x, torch.full((x.shape[0],), t))[:, :3], ours_abar,
                        official_time_offset=True)
        levels = level_grid(n, 1000)

        def steps_fn(i, n=n, block=block):
            return gradient_steps(i, n, **OURS[block])

        ours = mgps_sample(x0_fn, our_log_lik, levels, x_T, alpha=0.5, lr=3e-2, threshold=700, steps_fn=steps_fn,
                           noise=lambda: torch.randn(2, 3, 8, 8))
        diff = float((ours - ref).abs().max())
        scale = float(ref.abs().max())
        cost = mgps_cost(levels, 0.5, 700, steps_fn)
        print(f"{block} rules, {n} steps: max |ours - official| = {diff:.3e} (output max |x| {scale:.3f}); "
              f"network calls official {off_fwd} forward / {off_bwd} backward, ours {x0_fn.forward} / {x0_fn.vjp}, "
              f"mgps_cost {cost[0]} / {cost[1]}")
        if (off_fwd, off_bwd) != (x0_fn.forward, x0_fn.vjp) or cost != (off_fwd, off_bwd):
            print("FAIL: the network-call counts differ")
            return 1
        worst = max(worst, diff / max(scale, 1.0))
        if block == "default":  # the control: our default (no time offset) is a different chain
            torch.manual_seed(5)
            x_T = torch.randn(2, 3, 8, 8)
            fixed = mgps_sample(Counter(x0_fn.eps_fn, ours_abar), our_log_lik, levels, x_T, alpha=0.5, lr=3e-2,
                                threshold=700, steps_fn=steps_fn, noise=lambda: torch.randn(2, 3, 8, 8))
            print(f"  control (official_time_offset=false, our default): max |ours - official| = "
                  f"{float((fixed - ref).abs().max()):.3e}")
    ok = worst < TOL
    print(f"{'OK' if ok else 'FAIL'}: worst relative difference {worst:.3e} (tolerance {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
