"""MCG-diff vs the official code (gabrielvc/mcg_diff): whole SMC runs on identical inputs and noise.

    python tools/equivalence/mcg_diff.py <checkout of gabrielvc/mcg_diff>

The official pieces run as they are: ``scripts/hugging_faces_models.py::run_mcg_diff`` (initial particles, the
``mcg_diff/particle_filter.py::mcg_diff`` filter, the final draw of one particle from the weights, V and the clamp)
with ``EpsilonNetSVD`` around a small random eps network (tools/equivalence/tiny_eps.py, added to the exact
eps of N(0, I) data so that the chains stay bounded) and our operators behind the DDRM ``H_funcs`` interface the
driver calls (V, Vt(for_H=False), to); U^T y, the singular values and the coordinate mask are prepared as the driver's ``load_operator`` does (SR: all M coordinates, mask padded with zeros;
deblur: zero singular values dropped; inpainting: the kept pixels). The official grid is
``linspace(0, 999, steps + 1).long()`` and alphas_cumprod is clipped to [1e-6, 1] as the driver does. Ours is
``bench.methods.mcg_diff.mcg_diff_sample`` with ``official_last_step=true`` and torch's default generator as the
one per-image generator, so both draw the same numbers in the same order (initial particles; per step the
ancestors, then the move noise; the final draw). Cases: noiseless sr4 and inpainting, noisy denoise and sr4_noisy
with enough steps that the observation times tau fall inside the filter (and the final likelihood reweighting runs).
Prints the max absolute differences before the clamp (relative to max(1, max |x|) for the verdict), the data
fit max |A x - y| of the official output and of ours with the default exact-y last step, and exits 1 above the
tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bench.diffusion import alphas_cumprod, make_betas
from bench.methods.mcg_diff import mcg_diff_sample

TOL = 1e-4
REPO = Path(__file__).resolve().parents[2]


class OfficialHFuncs:
    """Our operator behind the official driver's H_funcs calls (``V``, ``Vt(for_H=False)``, ``.to``)."""

    def __init__(self, op):
        self.op = op

    def V(self, x):  # noqa: N802
        self.last = self.op.V(x.reshape(x.shape[0], -1))  # the driver's last call maps the returned particle
        return self.last

    def Vt(self, x, for_H=True):  # noqa: N802, N803
        return self.op.Vt(x.reshape(x.shape[0], -1))

    def to(self, device):
        return self


class UNetOut:
    def __init__(self, sample):
        self.sample = sample


def main(checkout: str) -> int:
    root = Path(checkout).resolve()
    sys.path[:0] = [str(root), str(REPO)]
    from omegaconf import OmegaConf
    from scripts.hugging_faces_models import EpsilonNetSVD, run_mcg_diff
    from mcg_diff.sgm import ScoreModel
    from tests.methods.test_ddrm import task  # the task YAMLs, as the tests build them
    from tools.equivalence.tiny_eps import TinyEps

    net = TinyEps().eval().requires_grad_(False)
    abar64 = alphas_cumprod(make_betas("linear", 1000))

    def eps_core(x, t):
        """The exact eps of N(0, I) data plus the random network's (scaled) output: the chain stays bounded, as
        with a trained prior, while every step still depends on a non-trivial network."""
        return (1 - abar64[t[0]]).sqrt().float() * x + 0.3 * net(x, t)[:, :3]

    class UNet(torch.nn.Module):  # the diffusers call convention of the driver: unet(x, t).sample
        def forward(self, x, t):
            return UNetOut(eps_core(x, t.reshape(-1).expand(x.shape[0])))

    def eps_fn(x, t):
        return eps_core(x, torch.full((x.shape[0],), int(t)))

    official_abar = abar64.float().clip(1e-6, 1)
    worst = 0.0
    cases = (("sr4", None, 10, 8), ("inpaint", None, 10, 8), ("denoise", None, 40, 8), ("sr4_noisy", None, 40, 8))
    for name, sigma, steps, n in cases:
        deg = task(name, **({} if sigma is None else {"sigma": sigma})).build(8)
        op, sigma_y = deg.operator, 2 * deg.sigma
        g = torch.Generator().manual_seed(1)
        x_true = torch.rand(1, op.N, generator=g) * 2 - 1
        y = op.A(x_true) + sigma_y * torch.randn(1, op.M, generator=g)
        s = op.singulars()
        ut_y = op.Ut(y).flatten()
        if op.M < op.N:  # the driver's super_resolution / inpainting: all M coordinates, mask padded
            obs_y, diag = ut_y, s
            mask = torch.cat([s != 0, torch.zeros(op.N - op.M, dtype=torch.bool)])
        else:  # the driver's deblur_2d: zero singular values dropped
            mask = s != 0
            obs_y, diag = ut_y[mask], s[mask]
        grid = torch.linspace(0, 999, steps + 1).long()

        h_funcs = OfficialHFuncs(op)
        torch.manual_seed(7)
        run_mcg_diff(OmegaConf.create({"N_total": 1, "N_particles": n, "gaussian_var": 1e-4}),
                           ScoreModel(net=EpsilonNetSVD(OfficialHFuncs(op), UNet(), dim=op.x_shape),
                                      alphas_cumprod=official_abar, device="cpu"),
                           n_max_gpu=n, dim=op.N, U_t_y_0=obs_y, diag=diag, coordinates_mask=mask, sigma_y=sigma_y,
                           timesteps=grid, eta=1.0, H_funcs=h_funcs)
        ref = h_funcs.last  # before the driver's clamp: the comparison sees every value
        results = {}
        for last in (True, False):
            torch.manual_seed(7)
            out, info = mcg_diff_sample(eps_fn, op, y, sigma_y, abar64, steps, n, [torch.default_generator],
                                        official_last_step=last)
            results[last] = out.reshape(1, -1)
        diff = float((results[True] - ref).abs().max())
        scale = float(ref.abs().max())
        fit = [float((op.A(v) - y).abs().max()) for v in (ref, results[False])]
        print(f"{name} (sigma_y={sigma_y:g}, {steps} steps, {n} particles, min tau {info['min_tau']}): "
              f"max |ours - official| = {diff:.3e} (output max |x| {scale:.3f}); max |A x - y| official {fit[0]:.2e}, "
              f"ours with the default exact-y last step {fit[1]:.2e}; NFE ours {info['nfe_per_particle'] * n}")
        worst = max(worst, diff / max(scale, 1.0))
    ok = worst < TOL
    print(f"{'OK' if ok else 'FAIL'}: worst relative difference {worst:.3e} (tolerance {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
