"""PSLD: posterior sampling with latent diffusion (Rout et al., NeurIPS 2023, "Solving linear inverse problems
provably via posterior sampling with latent diffusion models"; official LituRout/PSLD
``stable-diffusion/ldm/models/diffusion/psld.py::p_sample_ddim``, branches ``inpainting`` / ``general_inverse``).

:func:`psld_sample` is the sampler (one function mirroring the official DDIM loop); :func:`gluing_residual` is
its "goodness of fit" term, a function of encoder / decoder callables. :class:`PSLD` runs it on a latent prior.

Notation (paper Algorithm 2, eq. (7); code names in brackets), z latents, x images in [-1, 1]:

* CompVis DDIM on the prior's schedule (:mod:`bench.methods.latent_ddim`; official: 1000 steps, eta 0);
* eps = eps_theta(z_t, tau) [e_t], z0^ = (z_t - sqrt(1 - a) eps) / sqrt(a) [pred_z_0], z' = DDIM(z0^, eps);
* x^ = D(z0^) [image_pred], differentiable;
* measurement term L_y = ||A x^ - y||_2, NOT squared [meas_error] (per image here);
* gluing term L_g = ||E(P_y x^) - z0^||_2 [inpaint_error] with the projection onto {Ax = y}:
  P_y x = B y + (x - B A x), B = A^+ (``glue: pinv``, default), A^T (``adjoint``) or the official DPS
  operators' ``transpose`` (``glue: official``: identity for blur, nearest upsampling for SR, the mask for
  inpainting). For inpainting and block-averaging SR all three coincide (A has orthogonal rows there); for blur
  the official "transpose" is the identity, so its P_y x = x + y - A x is not a projection;
* z_{t-1} = z' - grad_{z_t} (omega L_y + gamma L_g), fixed step sizes, no normalisation (gamma = 0 is
  latent DPS, the paper's LDPS baseline).

Official quirks kept as options (off by default, docs/methods.md "where we differ"):
``noised_prediction``: the official code adds fresh measurement noise to A x^ inside L_y (``noiser(meas_pred)``);
``glue: official``; official inpainting pastes the CLEAN reference into the known pixels of the output, which a
benchmark cannot do: ``paste_known: true`` pastes y there instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.diffusion import ddim_step
from bench import seeding
from bench.methods.latent_solver import LatentDDIM, LatentSolver
from bench.methods.prior_method import check_choice, check_number
from bench.tasks import Degradation

GLUES = ("pinv", "adjoint", "official")
COUNT_KEYS = ("unet_forward", "unet_vjp", "decoder_forward", "decoder_vjp", "encoder_forward", "encoder_vjp")


def back_projector(operator, task_name: str, glue: str) -> Callable[[Tensor], Tensor]:
    """B: (B, M) measurement -> (B, N) image vector for the gluing projection (module docstring)."""
    if glue == "pinv":
        return operator.pinv
    if glue == "adjoint":
        return operator.At
    if glue != "official":
        raise ValueError(f"psld: glue={glue!r} is invalid; allowed: {', '.join(GLUES)}. Fix: method.glue=pinv")
    size = operator.x_shape[-1]
    if task_name.startswith("deblur"):  # DPS blur operators: transpose(y) = y
        return lambda v: operator.measurement_image(v).reshape(v.shape[0], -1)
    if task_name.startswith("sr"):  # DPS SuperResolution: transpose = nearest F.interpolate
        return lambda v: F.interpolate(operator.measurement_image(v), size=(size, size),
                                       mode="nearest").reshape(v.shape[0], -1)
    return operator.At  # inpainting: the mask; denoising: the identity (both == A^T)


def gluing_residual(x_hat: Tensor, z0: Tensor, y: Tensor, A: Callable, back: Callable, encode: Callable) -> Tensor:
    """||E(B y + x^ - B A x^) - z0^||_2 per image: x^ (B, C, H, W) in [-1, 1], z0^ latents, y (B, M)."""
    flat = x_hat.reshape(x_hat.shape[0], -1)
    glued = back(y) + flat - back(A(flat))
    return (encode(glued.reshape(x_hat.shape)) - z0).flatten(1).norm(dim=1)


def psld_sample(eps_fn, decode, encode, A, back, y: Tensor, tab: LatentDDIM, z_T: Tensor, noise, *,
                omega: float, gamma: float, eta: float = 0.0, measurement_noise: Callable[[], Tensor] | None = None,
                counts: dict | None = None) -> Tensor:
    """PSLD (module docstring); returns z_0. eps_fn(z, t: int) -> eps; decode(z) -> x in [-1, 1]; encode(x) -> z;
    A(x) -> (B, M); back(v (B, M)) -> (B, N); y (B, M) in [-1, 1]; noise() -> standard normal of z's shape
    (used only when eta > 0); ``measurement_noise()`` -> noise added to A x^ (the official quirk) or None.
    gamma = 0 skips the encoder. ``counts`` accumulates :data:`COUNT_KEYS` summed over images."""
    counts = counts if counts is not None else {}
    for k in COUNT_KEYS:
        counts.setdefault(k, 0)
    B = z_T.shape[0]
    z = z_T
    for i in reversed(range(tab.num_steps)):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = eps_fn(z, tab.tau[i])
            z_prime, z0 = ddim_step(z, eps, tab.a[i], tab.a_prev[i], eta, noise() if eta > 0 else None)
            x_hat = decode(z0)
            Ax = A(x_hat)
            if measurement_noise is not None:
                Ax = Ax + measurement_noise()
            loss = omega * (Ax - y).norm(dim=1)
            if gamma:
                loss = loss + gamma * gluing_residual(x_hat, z0, y, A, back, encode)
            grad = torch.autograd.grad(loss.sum(), z)[0]
        z = (z_prime - grad).detach()
        for k in ("unet_forward", "unet_vjp", "decoder_forward", "decoder_vjp"):
            counts[k] += B
        if gamma:
            counts["encoder_forward"] += B
            counts["encoder_vjp"] += B
    return z.detach()


def official_weights(kind: str, task_name: str) -> tuple[float, float]:
    """(omega, gamma) of the official run scripts: LDM FFHQ-256 (``run/*_ldm.sh``) 0.1 / 0.1, super-resolution
    omega 0.9; Stable Diffusion (``run/inverse*.sh``, the CLI defaults) 1.0 / 0.1 (box inpainting: 0.1 / 0.01, not
    a task here: ``inpaint`` is random pixels, whose SD script uses the defaults)."""
    if kind == "sd":
        return 1.0, 0.1
    return (0.9 if task_name.startswith("sr") else 0.1), 0.1


class PSLD(LatentSolver):
    """PSLD on a latent prior. ``omega`` / ``gamma`` null: :func:`official_weights` for the prior's kind and the
    task; ``rescale: true`` multiplies both by 1000 / steps (the official 1000-step total pull over fewer steps; off
    by default, as latent_dps: the official code does not rescale)."""

    name = "psld"
    official_steps = 1000

    def __init__(self, model: dict, steps: int = 1000, eta: float = 0.0, omega: float | None = None,
                 gamma: float | None = None, rescale: bool = False, glue: str = "pinv",
                 noised_prediction: bool = False, paste_known: bool = False):
        super().__init__(model, steps, eta)
        n = self.name
        self.omega = check_number(n, "omega", omega, 0.0, allow_none=True, fix="method.omega=null (official)")
        self.gamma = check_number(n, "gamma", gamma, 0.0, allow_none=True, fix="method.gamma=null (official)")
        self.glue = check_choice(n, "glue", glue, GLUES)
        self.rescale, self.noised_prediction, self.paste_known = bool(rescale), bool(noised_prediction), bool(
            paste_known)
        #: after restore: the (omega, gamma) per step actually used
        self.last_weights: tuple[float, float] | None = None

    def weights(self, task_name: str) -> tuple[float, float]:
        om, ga = official_weights(self.prior.kind if self.prior is not None else self.model["kind"], task_name)
        om, ga = (om if self.omega is None else self.omega), (ga if self.gamma is None else self.gamma)
        f = self.official_steps / self.tab.num_steps if self.rescale else 1.0
        return om * f, ga * f

    def sample(self, y_pm, sigma_pm, degradation, z_T, noise, generators, counts) -> Tensor:
        p, op = self.prior, degradation.operator
        omega, gamma = self.last_weights = self.weights(degradation.task.name)
        meas_noise = None
        if self.noised_prediction:
            meas_noise = lambda: sigma_pm * seeding.randn(generators, (op.M,), self.device)  # noqa: E731
        return psld_sample(p.eps, p.decode, p.encode, op.A, back_projector(op, degradation.task.name, self.glue),
                           y_pm, self.tab, z_T, noise, omega=omega, gamma=gamma, eta=self.eta,
                           measurement_noise=meas_noise, counts=counts)

    def finish(self, x_pm: Tensor, y_pm: Tensor, degradation: Degradation) -> Tensor:
        if not (self.paste_known and degradation.task.masked):
            return x_pm
        op, flat = degradation.operator, x_pm.reshape(x_pm.shape[0], -1)
        return (flat + op.pinv(y_pm - op.A(flat))).reshape(x_pm.shape)

    def describe(self) -> dict:
        return {**super().describe(), "algorithm": "PSLD (Algorithm 2; DDIM + measurement and gluing gradients)",
                "omega": self.omega if self.omega is not None else "official per prior kind and task",
                "gamma": self.gamma if self.gamma is not None else "official per prior kind and task",
                "rescale": self.rescale, "weight_rule": "x 1000/steps per step" if self.rescale else "as given",
                "glue": self.glue, "noised_prediction": self.noised_prediction, "paste_known": self.paste_known}
