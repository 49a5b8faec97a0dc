"""RED-diff: a variational perspective on solving inverse problems with diffusion models (Mardani, Song,
Kautz & Vahdat, ICLR 2024).

:func:`red_diff_sample` is the optimiser loop, one function mirroring official ``algos/reddiff.py::
REDDIFF.sample`` of NVlabs/RED-diff; :class:`REDDiff` wraps it. No sampler chain and no backprop through
the network: the network's eps is a stop-gradient regulariser on mu (score matching = RED).

Notation (paper eq. (9)-(12), Algorithm 1; code names in brackets), x in [-1, 1]:

* mu_0 = A^+ y (NOT noised); Adam(mu; lr, betas = (0.9, 0.99), no weight decay), one step per t over the
  same ts as PiGDM (0, T/N, ..., walked in reverse).
* per step: x0 = mu + sigma_x0 xi [x0_pred] (sigma_x0 = 0 by default), x_t = sqrt(abar_t) x0 +
  sqrt(1 - abar_t) e with fresh e [noise_xt], eps = eps_theta(x_t, t) detached;
  loss = w_t mean((eps - e)_sg * x0) + v/2 mean((y - A x0)^2)   [loss_noise, loss_obs]
  w_t = lambda * f(SNR_t^{-1/2}) with SNR^{-1/2} = sqrt(1 - abar_t) / sqrt(abar_t) and f one of
  linear (default), sqrt, square, log (log(1 + .)), trunc_linear (min(., 1)), const, power2over3;
  v = obs_weight. Then one Adam step on mu.
* output: x0 of the LAST step, i.e. mu before the last Adam step (official returns ``x0_pred``).

Means are over tensor elements, as official: the regulariser over the image's C*H*W values and the
observation term over the measurement's M values *in this harness's representation* (official sr4's y is
3 x 64^2 as here; official ``Inpainting2``'s y is the full-size masked image, 3 x 256^2, whereas our
inpainting y holds the kept entries only, so its obs term weighs N / M = 1/(1 - missing) more than
official's for the same lambda). Means are taken per image and summed over the batch (official: one mean
over the batch tensor), which, Adam being element-wise, makes each image's result independent of the
batch (official's differ only by Adam's epsilon).

Defaults (``grad_term_weight`` / ``lr`` null = by the task's noise, :data:`DEFAULTS`): noiseless tasks the
README's documented run and the scripts' deblur / JPEG / HDR settings, lambda [grad_term_weight] = 0.25 and
lr = 0.5; noisy tasks the scripts' only noisy run (``sample_test.sh``, inpainting at sigma_y 0.1), lambda =
1.0 and lr = 0.25. 100 steps, obs_weight 1, linear weighting, sigma_x0 = 0 (the YAML's lr 0.1 goes with its
50-step default; ``sample_batch.sh`` runs sr4 / inpainting at 1000 steps, lambda 1). Measured on the
embedded prior (2 sample photos, 100 steps, PSNR dB input -> output): deblur_gauss 22.93 -> 27.50; denoise
26.19 -> 26.88 with the noiseless setting but 29.00 with the noisy one, hence the split. Adam's per-element
step is ~lr whatever the gradient scale, so few steps do not converge: deblur_gauss at 20 / 50 steps gave
16.3 / 23.4 dB. sigma_y is never used (as official): only y is noisy. ``cond_awd``, ``eta`` and c1/c2 are computed but
unused upstream and are not reproduced.

Cost: NFE = steps, forward only, plus an autograd pass through A; memory close to plain sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import padded_alphas_cumprod, timesteps
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps
from bench.tasks import Degradation

#: official ``denoise_term_weight`` options: f(SNR^{-1/2})
#: (lambda, lr) by measurement noise: noiseless (README run) / noisy (sample_test.sh's noisy inpainting run)
DEFAULTS = {"noiseless": (0.25, 0.5), "noisy": (1.0, 0.25)}
WEIGHTINGS = {
    "linear": lambda r: r,
    "sqrt": lambda r: r.sqrt(),
    "square": lambda r: r**2,
    "log": lambda r: torch.log(r + 1.0),
    "trunc_linear": lambda r: r.clamp(max=1.0),
    "power2over3": lambda r: r ** (2 / 3),
    "const": lambda r: torch.ones_like(r),
}


def red_diff_sample(eps_fn, operator, y_pm: Tensor, abar_padded: Tensor, seq: list[int], lam: float,
                    obs_weight: float, lr: float, weighting: str, sigma_x0: float,
                    generators: list[torch.Generator], losses: list | None = None) -> Tensor:
    """RED-diff (Algorithm 1); see the module docstring. eps_fn(x_t, t: int) -> eps (called without
    gradients); y_pm (B, M) in [-1, 1] units. Appends per-step (loss, obs) per image to ``losses``."""
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    shape = (B, *operator.x_shape)
    abar = abar_padded.to(dev, dt)
    f = WEIGHTINGS[weighting]
    mu = operator.pinv(y_pm).reshape(shape).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    x0 = mu.detach()
    for t in reversed(seq):
        a_t = abar[t + 1]
        xi = seeding.randn(generators, operator.x_shape, dev, dt)
        e = seeding.randn(generators, operator.x_shape, dev, dt)
        with torch.enable_grad():
            x0 = mu + sigma_x0 * xi
            with torch.no_grad():
                eps = eps_fn(a_t.sqrt() * x0 + (1 - a_t).sqrt() * e, t)
            w_t = lam * f((1 - a_t).sqrt() / a_t.sqrt())
            loss_noise = ((eps - e) * x0).flatten(1).mean(1)  # (eps - e) carries no graph
            loss_obs = (y_pm - operator.A(x0.reshape(B, -1))).pow(2).mean(1) / 2
            loss = w_t * loss_noise + obs_weight * loss_obs
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # per-image losses: each image's gradient is its own
        opt.step()
        if losses is not None:
            losses.append((loss.detach(), loss_obs.detach()))
    return x0.detach()


class REDDiff(PriorMethod):
    """RED-diff: Adam on mu from A^+ y with the network as a stop-gradient regulariser."""

    name = "red_diff"

    def __init__(self, model: dict, steps: int = 100, grad_term_weight: float | None = None, obs_weight: float = 1.0,
                 lr: float | None = None, denoise_term_weight: str = "linear", sigma_x0: float = 0.0):
        super().__init__(model)
        self.steps = check_steps(self.name, steps, fix="steps=100 (README) or 1000 (sample_batch.sh)",
                                 maximum=self.train_steps)
        self.lam = check_number(self.name, "grad_term_weight", grad_term_weight, 0.0, allow_none=True,
                                fix="method.grad_term_weight=0.25 (official lambda)")
        self.obs_weight = check_number(self.name, "obs_weight", obs_weight, 0.0, fix="method.obs_weight=1.0")
        self.lr = check_number(self.name, "lr", lr, 0.0, low_open=True, allow_none=True,
                               fix="method.lr=0.5 (README)")
        self.weighting = check_choice(self.name, "denoise_term_weight", denoise_term_weight, WEIGHTINGS)
        self.sigma_x0 = check_number(self.name, "sigma_x0", sigma_x0, 0.0, fix="method.sigma_x0=0")
        self.seq = timesteps(self.steps, self.train_steps, "uniform")
        self.abar_padded: Tensor | None = None
        #: after restore: per step (loss (B,), obs term (B,)), in the order the steps ran
        self.last_losses: list[tuple[Tensor, Tensor]] = []

    def params(self, sigma: float) -> tuple[float, float]:
        """(lambda, lr): the explicit values, else :data:`DEFAULTS` for a noiseless / noisy task."""
        lam, lr = DEFAULTS["noisy" if sigma > 0 else "noiseless"]
        return (self.lam if self.lam is not None else lam, self.lr if self.lr is not None else lr)

    def _prepared(self) -> None:
        self.abar_padded = padded_alphas_cumprod(self.prior.betas)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        with torch.no_grad():
            y_pm, _ = self.measurement(y, degradation)
        self.last_losses = []
        lam, lr = self.params(degradation.sigma)
        x0 = red_diff_sample(self.eps, degradation.operator, y_pm, self.abar_padded, self.seq, lam,
                             self.obs_weight, lr, self.weighting, self.sigma_x0, generators, self.last_losses)
        self.last_nfe = len(self.seq)
        return self.to_image(x0)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "RED-diff (Adam on mu, stop-gradient score regulariser)",
                "steps": self.steps, "nfe": len(self.seq), "timesteps": list(self.seq),
                "grad_term_weight": self.lam if self.lam is not None else "by noise", "lr": self.lr if self.lr
                is not None else "by noise", "defaults_by_noise": DEFAULTS, "obs_weight": self.obs_weight,
                "adam_betas": [0.9, 0.99], "denoise_term_weight": self.weighting, "sigma_x0": self.sigma_x0,
                "output": "x0 before the last Adam step (official)", "model": self.model_info()}
