"""What the PSLD and ReSample comparisons share: importing the official CompVis ``ldm`` sampler modules of a checkout
on a CPU, and the official ``LatentDiffusion`` attributes those samplers read, served by a latent prior of this
project (the tiny random ``conf/model/latent_tiny.yaml``: a diffusers UNet2DModel + VQModel).

Changes to the official modules, none of which alters a number (printed by the scripts as well):

* ``einops`` (imported by ``ldm/modules/diffusionmodules/util.py`` for ``timestep_embedding`` only, unused by the
  samplers) is stubbed when it is not installed;
* ``DDIMSampler.register_buffer`` moves every table to CUDA; here it keeps them where they are (CPU);
* ``noise_like`` (DDIM's ``sigma_t * noise``) returns zeros: both officials run eta = 0, where sigma_t = 0 multiplies
  it anyway, and the global RNG is then consumed only where noise matters (ReSample's stochastic resampling).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


def import_official(root: Path, module: str):
    """``module`` (e.g. ``ldm.models.diffusion.ddim``) of the official checkout ``root``, patched for a CPU run."""
    try:
        importlib.import_module("einops")
    except ImportError:
        sys.modules["einops"] = types.SimpleNamespace(repeat=None, rearrange=None)
    sys.path.insert(0, str(root))
    mod = importlib.import_module(module)
    mod.DDIMSampler.register_buffer = lambda self, name, attr: setattr(self, name, attr)
    mod.noise_like = lambda shape, device, repeat=False: torch.zeros(shape, device=device)
    return mod


def task(name: str, **overrides):
    """A task of conf/task/ (noiseless unless ``sigma`` is given) as the CLI builds it."""
    from bench.cli import build_task

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml"))
    return build_task({**cfg, "sigma": 0.0, **overrides})


def tiny_prior(dtype=torch.float32):
    """The random ``latent_tiny`` prior (a fresh build, modules cast to ``dtype``)."""
    from bench.models.latent import _build

    prior = _build(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "latent_tiny.yaml")), "cpu")
    prior.unet.to(dtype)
    prior.vae.to(dtype)
    prior.dtype = dtype
    return prior


class OfficialLDM:
    """The attributes of CompVis ``LatentDiffusion`` that the official samplers use, on a project latent prior:
    float32-valued schedule buffers (as ``register_schedule``; stored in the default dtype), ``apply_model`` = eps,
    the first-stage calls = decode / encode (``get_first_stage_encoding``: the prior's encode already returns scaled
    latents)."""

    def __init__(self, prior):
        self.prior = prior
        self.num_timesteps = prior.num_train_steps
        self.device = torch.device("cpu")
        self.betas = prior.betas.float().to(torch.get_default_dtype())
        self.alphas_cumprod = prior.abar.float().to(torch.get_default_dtype())
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), prior.abar[:-1]]).float()

    def apply_model(self, x, t, c):
        return self.prior.eps(x, t)

    def differentiable_decode_first_stage(self, z):
        return self.prior.decode(z)

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.prior.decode(z)

    def encode_first_stage(self, x):
        return self.prior.encode(x)

    def get_first_stage_encoding(self, e):
        return e


class OfficialOperator:
    """A harness operator as the official DPS-style operator: ``forward`` = A (flat measurement), ``transpose`` =
    the back-projection given (PSLD's gluing); ``mask`` keyword accepted and ignored (the operator has its own)."""

    def __init__(self, op, back=None):
        self.op, self.back = op, back

    def forward(self, x, **kwargs):
        return self.op.A(x)

    def transpose(self, y, **kwargs):
        return self.back(y).reshape(y.shape[0], *self.op.x_shape)


def report(results: list[tuple[str, float]], tol: float) -> int:
    """Print each comparison; exit code 1 when one exceeds ``tol``."""
    worst, failures = 0.0, []
    for what, diff in results:
        bad = not diff <= tol
        print(f"{'FAIL' if bad else 'ok  '} {what}: max |diff| = {diff:.3g}")
        worst = max(worst, diff)
        if bad:
            failures.append(what)
    print(f"OK: worst difference {worst:.3g}; every difference <= {tol:g}" if not failures
          else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0
