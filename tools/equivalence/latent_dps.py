"""Check method=latent_dps against ReSample's Latent-DPS inner step on identical inputs.

    python tools/equivalence/latent_dps.py /path/to/checkout   # a checkout of github.com/soominkwon/resample

Nothing of the official code is copied here. It imports the official ``DDIMSampler`` (``ldm/models/diffusion/
ddim.py``: ``make_schedule``, ``p_sample_ddim``) and the ``ps`` conditioning (``ldm_inverse/condition_methods.py``:
``PosteriorSampling``), and runs the inner loop of ``resample_sampling`` without its hard data consistency (which
is ReSample's, not Latent-DPS's): per DDIM step ``out, pred_x0, pseudo_x0 = p_sample_ddim(img, ...)`` then
``img = conditioning(x_t=out, x_prev=img, x_0_hat=pseudo_x0, scale=a_t * args.scale)``. Patches, so it runs on a CPU:
``einops`` is stubbed (only used by functions not called here) and ``DDIMSampler.register_buffer`` keeps tensors
where they are (upstream moves them to CUDA).

Both sides use one model: a float64 copy of a tiny random latent prior with an AutoencoderKL (a smooth decoder:
VQ quantisation would turn float rounding into codebook jumps), wrapped as the official ``LatentDiffusion``
(``apply_model``, ``differentiable_decode_first_stage``, its schedule tensors). Ours: :func:`bench.methods.latent_dps.
latent_dps_sample` with ``pseudo_x0=True`` (``method.official_pseudo_x0=true``), zeta_t = 0.5 abar_t, on the
official timesteps (CompVis ``make_ddim_timesteps``: ``range(0, T, T // K) + 1``) and the official final alpha
(abar_0: ``set_alpha_to_one: false``), B = 1 (official; its norm is over the whole batch), sr4 at 32 px. The harness
operator is wrapped as the official ``operator.forward``. At ReSample's zeta_t = 0.5 abar_t and at 50 abar_t (where the
guidance is large enough that the default Tweedie loss point visibly differs) it prints the max abs differences of the
final latents and of the decoded output; exit code 1 above 1e-5 (upstream rounds its abar tables to float32).
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
TOL = 1e-5


def tiny_prior():
    """A float64 tiny latent prior (UNet2DModel + AutoencoderKL), final alpha abar_0 as CompVis DDIM."""
    import copy

    import yaml

    from bench.models.latent import LatentPrior, load_latent_prior

    tiny = yaml.safe_load((REPO / "conf/model/latent_tiny.yaml").read_text())
    unet = {**tiny["arch"]["unet"], "in_channels": 4, "out_channels": 4}
    vae = {"block_out_channels": [8, 16], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
           "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
    p = load_latent_prior({**tiny, "name": "equivalence_kl", "arch": {"unet": unet, "vae": vae}}, "cpu")
    return LatentPrior(p.kind, copy.deepcopy(p.unet).double(), copy.deepcopy(p.vae).double(), p.betas,
                       p.scaling_factor, p.image_size, {**p.scheduler_config, "set_alpha_to_one": False})


class OfficialModel:
    """Our prior as the official ``LatentDiffusion`` object the sampler and the conditioning read."""

    def __init__(self, prior):
        self.prior, self.device = prior, torch.device("cpu")
        self.betas = prior.betas
        self.alphas_cumprod = prior.abar
        self.alphas_cumprod_prev = torch.cat([prior.abar.new_ones(1), prior.abar[:-1]])
        self.num_timesteps = prior.num_train_steps
        self.parameterization = "eps"

    def apply_model(self, x, t, c):
        return self.prior.eps(x, t)

    def differentiable_decode_first_stage(self, z):
        return self.prior.decode(z)


class OfficialOperator:
    def __init__(self, op):
        self.op = op

    def forward(self, x, **kwargs):
        return self.op.A(x.reshape(x.shape[0], -1))


def official_modules(checkout: Path):
    sys.modules.setdefault("einops", types.SimpleNamespace(repeat=None, rearrange=None))
    sys.path.insert(0, str(checkout))
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm_inverse.condition_methods import PosteriorSampling

    DDIMSampler.register_buffer = lambda self, name, attr: setattr(self, name, attr)  # keep tensors on the CPU
    return DDIMSampler, PosteriorSampling


def compare(prior, DDIMSampler, PosteriorSampling, steps: int, scale: float) -> tuple[float, float, float, float]:
    """(|z_0 ours - official|, |D(z_0) ours - official|, guidance size, |z_0 Tweedie loss point - official|)."""
    from bench.methods.latent_dps import latent_dps_sample
    from bench.operators import SuperResolution

    model, op = OfficialModel(prior), SuperResolution(3, 32)
    g = torch.Generator().manual_seed(0)
    y = op.A(torch.rand(1, op.N, generator=g, dtype=torch.float64) * 2 - 1)
    z_T = torch.randn(1, *prior.latent_shape(32), generator=g, dtype=torch.float64)
    sampler = DDIMSampler(model)
    sampler.make_schedule(steps, ddim_eta=0.0, verbose=False)
    cond = PosteriorSampling(model=model, operator=OfficialOperator(op), noiser=types.SimpleNamespace(__name__="gaussian"))
    img, kept = z_T.clone().requires_grad_(), np.flip(sampler.ddim_timesteps)
    for i, step in enumerate(kept):  # resample_sampling's loop, without the hard data consistency
        index = len(kept) - i - 1
        a_t = torch.full((1, 1, 1, 1), sampler.ddim_alphas[index])
        out, _, pseudo_x0 = sampler.p_sample_ddim(img, None, torch.full((1,), int(step), dtype=torch.long), index=index)
        img, _ = cond.conditioning(x_t=out, measurement=y, noisy_measurement=y, x_prev=img, x_0_hat=pseudo_x0,
                                   scale=a_t * scale)
    official = img.detach()
    ts = [int(s) for s in kept]
    zeta = lambda t: scale * float(prior.abar[t])  # noqa: E731
    ours, _ = latent_dps_sample(prior, op.A, y, ts, zeta, z_T, pseudo_x0=True)
    tweedie, _ = latent_dps_sample(prior, op.A, y, ts, zeta, z_T)
    unguided, _ = latent_dps_sample(prior, op.A, y, ts, lambda t: 0.0, z_T)
    with torch.no_grad():
        x_diff = (prior.decode(ours) - prior.decode(official)).abs().max().item()
    d = lambda a: (a - official).abs().max().item()  # noqa: E731
    return d(ours), x_diff, d(unguided), d(tweedie)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    DDIMSampler, PosteriorSampling = official_modules(args.checkout.resolve())
    prior = tiny_prior()
    worst, ok = 0.0, True
    for scale in (0.5, 50.0):  # ReSample's 0.5 abar_t; 50 abar_t makes the guidance large enough to discriminate
        dz, dx, size, tweedie = compare(prior, DDIMSampler, PosteriorSampling, args.steps, scale)
        worst = max(worst, dz, dx)
        print(f"sr4, {args.steps} DDIM steps, zeta_t = {scale} abar_t: max |z_0 ours - official| = {dz:.2e}, decoded "
              f"{dx:.2e}; guidance moved z_0 by {size:.2e}; the Tweedie loss point (default) differs by {tweedie:.2e}")
        if scale > 1 and tweedie < 10 * TOL:
            ok = False
            print("FAIL: the comparison does not tell the loss points apart")
    ok = ok and worst <= TOL
    print(f"{'OK' if ok else 'FAIL'}: worst difference {worst:.2e} (tolerance {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
