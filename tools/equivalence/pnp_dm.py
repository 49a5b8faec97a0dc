"""Check method=pnp_dm against the official PnP-DM code (zihuiwu/PnP-DM-public) on identical inputs and noise.

    python tools/equivalence/pnp_dm.py /path/to/PnP-DM-public   # a checkout of github.com/zihuiwu/PnP-DM-public

It imports the official ``pnpdm`` package from that checkout (nothing of it is copied here) and compares, on a
tiny deterministic timestep-dependent eps network (3 -> 6 channels, 8x8 images, the ``sr4`` SVD operator):

1. the EDM grid and the start index: official ``Denoiser_EDM.t_steps`` (``discretization=edm``, 100 steps,
   ``VPPrecond``'s sigma range) vs :func:`bench.methods.pnp_dm.edm_grid` with ``official_vp_time=true``;
2. the VP-to-EDM denoiser: official ``VPPrecond.forward`` vs :meth:`PnPDM.denoiser` (``official_vp_time=true``,
   and the default discrete t(sigma) to report the size of that documented difference);
3. the likelihood step: official ``LinearSVDOperator.proximal_generator`` (on an adapter exposing our operator's
   V / Vt / U / Ut / singulars, so both use one SVD) vs :func:`likelihood_sample`, same global-RNG noise;
4. the prior step: official ``Denoiser_EDM.__call__`` (``edm_sde`` and ``edm``) vs :func:`edm_prior_step` at
   rho = 10, 0.3, 0.1, same noise;
5. five whole Gibbs iterations (official order: ``A_pinv`` init, ``rho_iter``, ``proximal_generator``, ``edm``)
   vs :func:`pnp_dm_sample` with one image, whose per-image generator is seeded like the global RNG.

Prints the max abs differences relative to the largest magnitude (float32 arithmetic); exit code 1 if any
official-mode difference exceeds 1e-5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.equivalence.tiny_eps import TinyEps  # noqa: E402
from tools.equivalence.verdict import verdict  # noqa: E402

TOL = 1e-5


class GaussianTinyEps(TinyEps):
    """:class:`TinyEps`'s conv on top of a stable denoiser (ADM layout: eps + variance channels)."""

    def forward(self, x, t, **_):
        # eps of a unit Gaussian prior (sqrt(1 - abar) x_t, abar ~ 1 - t / T) plus a small random conv: a stable
        # denoiser, so differences are not amplified by an exploding chain
        a = (t.float() / 1000).clamp(0, 1).view(-1, 1, 1, 1)
        return torch.cat([a.sqrt() * x, x], 1) + 0.05 * self.conv(x) * (1 + a)


def rel(ref: torch.Tensor, x: torch.Tensor) -> float:
    """max |ref - x| / max(1, max |ref|)."""
    return float((ref - x).abs().max() / max(1.0, float(ref.abs().max())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", help="path to a checkout of github.com/zihuiwu/PnP-DM-public")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(Path(args.checkout).resolve()))
    from pnpdm.models.edm.edm import VPPrecond
    from pnpdm.samplers.pnp_edm.denoiser_edm import Denoiser_EDM
    from pnpdm.tasks import LinearSVDOperator

    from bench.diffusion import make_betas
    from bench.methods.pnp_dm import (PnPDM, edm_prior_step, likelihood_sample, pnp_dm_sample, rho_schedule,
                                      sample_iterations, start_index)
    from bench.methods.ddrm import _spectral_setup
    from bench.models.prior import DiffusionPrior
    from tests.methods.test_ddrm import task

    torch.set_grad_enabled(False)
    net = GaussianTinyEps()
    model = {"name": "tiny_eps", "kind": "adm", "diffusion": {"steps": 1000}}
    prior = DiffusionPrior(net=net, image_size=8, betas=make_betas("linear", 1000), learn_sigma=True,
                           info={"model": "tiny_eps"})
    ours = {}
    for flag in (True, False):
        m = PnPDM(model, steps=5, edm_steps=100, official_vp_time=flag)
        m.use_prior(prior, "cpu")
        ours[flag] = m
    off_net = VPPrecond(net, img_resolution=8)
    kw = dict(num_steps=100, sigma_min=None, sigma_max=None, rho=7, solver="euler", discretization="edm",
              schedule="linear", scaling="none")
    official = {sde: Denoiser_EDM(off_net, "cpu", **kw, mode="sde" if sde else "pfode") for sde in (True, False)}
    diffs: dict[str, float] = {}
    info: dict[str, float] = {}

    # 1. grid and start index
    diffs["EDM grid (t_steps)"] = rel(official[True].t_steps.double(), ours[True].grid)
    for rho in (10.0, 1.0, 0.3, 0.1, 0.02):
        i_off = int(torch.min(torch.nonzero(official[True].sigma(official[True].t_steps) < rho)))
        diffs[f"start index at rho={rho}"] = float(abs(i_off - start_index(ours[True].grid, rho)))

    # 2. the denoiser
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for sig in (0.0105, 0.3, 2.0, 79.0):
        d_off = off_net(x, torch.tensor(sig))
        diffs[f"D(x; {sig})"] = rel(d_off, ours[True].denoiser(x, sig))
        info[f"D(x; {sig}), default discrete t(sigma)"] = rel(d_off, ours[False].denoiser(x, sig))

    # 3. the likelihood step on one SVD
    deg = task("sr4", sigma=0.05).build(8)
    op = deg.operator

    class Adapter(LinearSVDOperator):
        def V(self, v): return op.V(v)  # noqa: E704
        def Vt(self, v): return op.Vt(v)  # noqa: E704
        def U(self, v): return op.U(v)  # noqa: E704
        def Ut(self, v): return op.Ut(v)  # noqa: E704
        def singulars(self): return op.singulars().to(torch.float32)  # noqa: E704
        def add_zeros(self, v): return op.add_zeros(v)  # noqa: E704

    adapter = Adapter()
    xi = torch.randn(1, op.N, generator=torch.Generator().manual_seed(2))
    y = op.A(xi) + 0.1 * torch.randn(1, op.M, generator=torch.Generator().manual_seed(3))
    s, observed, _, ybar = _spectral_setup(op, y)
    for rho in (10.0, 0.3):
        x0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
        torch.manual_seed(5)
        z_off = adapter.proximal_generator(x0, y, 0.1, rho)
        torch.manual_seed(5)
        noise = torch.randn_like(x0).reshape(1, -1)
        z = likelihood_sample(op, x0.reshape(1, -1), s, observed, s * ybar, 0.1, rho, noise).reshape(x0.shape)
        diffs[f"likelihood draw at rho={rho}"] = rel(z_off, z)

    # 4. the prior step
    z0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    for sde in (True, False):
        for rho in (10.0, 0.3, 0.1):
            torch.manual_seed(7)
            x_off = official[sde](z0 * 1.0, rho)
            torch.manual_seed(7)
            x_us, _ = edm_prior_step(ours[True].denoiser, z0 * 1.0, rho, ours[True].grid, sde,
                                     lambda: torch.randn_like(z0))
            diffs[f"prior step ({'edm_sde' if sde else 'edm'}) at rho={rho}"] = rel(x_off, x_us)

    # 5. five Gibbs iterations (official loop order), one image
    rhos = rho_schedule(10.0, 0.5, 0.3, 5)
    torch.manual_seed(11)
    xg = adapter.A_pinv(y.clone()).reshape(1, 3, 8, 8)
    samples = []
    for i in range(5):
        rho_iter = max(10.0 * 0.5**i, 0.3)
        zg = adapter.proximal_generator(xg, y, 0.1, rho_iter)
        xg = official[True](zg, rho_iter)
        if i in sample_iterations(5, 1, 3):
            samples.append(xg)
    for output, ref in (("last", xg), ("mean", torch.cat(samples).mean(0, keepdim=True))):
        gen = torch.Generator().manual_seed(11)
        out, _ = pnp_dm_sample(ours[True].denoiser, op, y, 0.1, rhos, ours[True].grid, True,
                               sample_iterations(5, 1, 3), output, [gen])
        diffs[f"5 Gibbs iterations, output={output}"] = rel(ref, out)

    return verdict(diffs, info, TOL)


if __name__ == "__main__":
    sys.exit(main())
