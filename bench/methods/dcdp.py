"""DCDP: decoupled data consistency with diffusion purification (Li et al., "Decoupled Data Consistency
with Diffusion Purification for Image Restoration").

:func:`dcdp_sample` is the outer loop, one function mirroring official ``dcdp.py::Diffusion_Purified_CSGM``
(Morefre/Decoupled-Data-Consistency-with-Diffusion-Purification-for-Image-Restoration, pixel space);
:func:`data_fit` is its ``CSGM_Solver_Pixel_Space``, :func:`purify` the purification (``q_sample`` + the
``DDIM`` sampler), :func:`purification_schedule` its ``Purification_Schedule(..., 'linear')``;
:class:`DCDP` wraps them. No backprop through the network and no autograd: the MSE gradient is
``2/M A^T (A x - y)`` through the operator's exact adjoint.

Notation (code names in brackets), x in [-1, 1]:

* x_0 = 0; T_k = the linear schedule from T_0 down to T_end [ddim_init_timestep, ddim_end_timestep]:
  ``round(linspace(0, 1, K) (T_0 - T_end) + 1e-6)`` reversed, plus T_end, zeros set to 1, e.g.
  400, 356, 311, 267, 222, 178, 133, 89, 44, 1 for K = 10, T_0 = 400.
* for k = 1..K:
  1. data fit: ``dc_steps`` SGD steps (momentum 0.9, a fresh optimiser each k, no weight decay) on the mean over
     the measurement's elements of (A x - y)^2, from the current x [csgm_num_iterations, lr, momentum];
  2. purification: x_T = sqrt(abar_{T_k - 1}) x + sqrt(1 - abar_{T_k - 1}) z, then DDIM (eta = 0) over
     ``space_timesteps(T_k, [min(ddim_steps, T_k)])`` of the 1000 training steps down to 0, each step with
     x0 clipped to [-1, 1] and eps recomputed from the clipped x0 [clip_denoised=True]; x = the final x0.
     ``purification=tweedie`` is official ``full_ddim: False``: one clipped x0 estimate at t = T_k - 1.
* output: x after the last purification (official's "after purification" number; ``final_purification=false``
  gives its "before purification" one, the last data fit, and skips that purification's NFE).

Per-task defaults (:data:`OFFICIAL`, ``purification_configurations/*.yaml``; K, dc_steps, lr, T_0): sr (10, 100,
1e3, 400), deblur (10, 100, 1e5, 400), inpaint (20, 50, 1e3, 700); ours: denoise deblur's (A = I: the data fit
converges to y, the purification does the work), colorize sr's lr (a contracting operator like the Resizer).
T_end 0, 20 DDIM steps, momentum 0.9 everywhere.

Units. Official lr multiplies the gradient of a *mean* over a 256-px image's measurement (the per-element step is
2 lr / M_256). The same per-element step at other sizes needs lr (H W) / 256^2, which is what runs here (``lr`` in
the YAML stays in official units; :meth:`DCDP.effective_lr`). Our inpainting y holds the kept entries only (official
``Inpainting``'s y is the full masked image), so the mean there is over fewer elements and the step is
1 / (1 - missing) larger for the same lr. sigma_y never enters the solver (as official): only y is noisy.

Where we differ (docs/methods.md): the last level T_k = 1 is noised to abar_0 and then, officially, the DDIM
sampler is rebuilt with T_k bumped to 2, so the network is called at t = 1 and t = 0 on an x noised to t = 0
(2 NFE). Here the noise level and the first network call agree (t = 0, 1 NFE); ``official_last_level=true``
reproduces the bump. The DDIM purification runs under fp16 autocast officially; here in the prior's dtype.
All noise comes from the per-image generators. The official purification wastes a DDIM noise draw per step
(eta = 0); not reproduced.

Cost: NFE = sum_k min(ddim_steps, T_k) (official 182 for K = 10 / T_0 = 400 with the bump, 181 here; 382 / 381
for inpainting) plus K * dc_steps A / A^T pairs; memory close to plain sampling. Measured on the embedded 64-px
prior (2 sample photos, PSNR dB, 2 shared CPU threads under load): deblur_gauss input 22.90 -> 34.02 at the official
K = 10 (181 NFE, ~300 s per image; the network dominates: 1,000 A / A^T pairs take ~4 s), 33.38 at steps=3 (41
NFE, ~46 s per image);
sr4: 19.73 at K = 10 (~250 s per image), 19.43 at steps=3 (~17 s per image); bicubic 20.94 (this prior does not
beat bicubic on SR, as DiffPIR).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import eps_to_x0, padded_alphas_cumprod, space_timesteps, x0_to_eps
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps, per_task
from bench.tasks import Degradation, Task

#: official (K, dc_steps, lr, T_0) per task-name prefix; denoise / colorize are ours (module docstring)
OFFICIAL = {"sr": (10, 100, 1e3, 400), "deblur": (10, 100, 1e5, 400), "inpaint": (20, 50, 1e3, 700),
            "denoise": (10, 100, 1e5, 400), "colorize": (10, 100, 1e3, 400)}
#: the image size the official lr values were set for (FFHQ 256 px)
REFERENCE_PIXELS = 256 * 256
PURIFICATIONS = ("ddim", "tweedie")


def purification_schedule(iterations: int, t0: int, t_end: int = 0) -> list[int]:
    """Official ``Purification_Schedule(K, T_0, T_end, 'linear')``: decreasing levels, zeros replaced by 1."""
    if not 1 <= iterations <= t0:
        raise ValueError(f"dcdp: iterations={iterations} must be in [1, t0={t0}] (official assert). "
                         "Fix: method.iterations=10 or a larger method.t0")
    if not 0 <= t_end < t0:
        raise ValueError(f"dcdp: t_end={t_end} must be in [0, t0={t0}). Fix: method.t_end=0")
    fr = [0.0] if iterations == 1 else [i / (iterations - 1) for i in range(iterations)]
    levels = [round(f * (t0 - t_end) + 1e-6) + t_end for f in reversed(fr)]
    return [max(t, 1) for t in levels]


def ddim_levels(t_k: int, ddim_steps: int, official_last_level: bool = False) -> tuple[int, list[int]]:
    """(the noise level t the purification starts from, the increasing model timesteps of its DDIM run): official
    ``q_sample(x, T_k - 1)`` then ``space_timesteps(T_k, [min(ddim_steps, T_k)])`` (T_k = 1 bumped to 2 when
    ``official_last_level``)."""
    start = t_k - 1
    if official_last_level and t_k == 1:
        t_k = 2
    return start, space_timesteps(t_k, [min(ddim_steps, t_k)])


def data_fit(operator, x: Tensor, y_pm: Tensor, steps: int, lr: float, momentum: float,
             residuals: list | None = None) -> Tensor:
    """``steps`` SGD steps (PyTorch's heavy ball, a fresh buffer) on mean_m (A x - y)^2 per image; x (B, N).
    The gradient 2/M A^T (A x - y) is per image, so images never interact. Appends ||A x - y|| (B,) before each
    step and after the last to ``residuals``."""
    M = y_pm.shape[1]
    x = x.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
    for _ in range(steps):
        r = operator.A(x.detach()) - y_pm
        if residuals is not None:
            residuals.append(r.norm(dim=1))
        x.grad = operator.At(r) * (2.0 / M)
        opt.step()
    if residuals is not None:
        residuals.append((operator.A(x.detach()) - y_pm).norm(dim=1))
    return x.detach()


def purify(eps_fn, x: Tensor, abar_padded: Tensor, start: int, kept: list[int], noise: Tensor,
           tweedie: bool = False) -> tuple[Tensor, int]:
    """Noise x to ``start`` (``abar_padded[start + 1]``) with ``noise``, then DDIM eta = 0 with clipped x0 over
    ``kept`` (increasing; walked in reverse, the last step lands on x0), or, ``tweedie``, one clipped x0 at
    ``kept[-1]``. Returns (x0, NFE)."""
    a = abar_padded.to(x.device, x.dtype)
    x = a[start + 1].sqrt() * x + (1 - a[start + 1]).sqrt() * noise
    steps = kept[-1:] if tweedie else kept[::-1]
    for j, t in enumerate(steps):
        a_t = a[t + 1]
        x0 = eps_to_x0(x, eps_fn(x, t), a_t).clamp(-1, 1)
        if j == len(steps) - 1:
            return x0, len(steps)
        a_prev = a[steps[j + 1] + 1]
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * x0_to_eps(x, x0, a_t)
    raise ValueError("dcdp: purify needs at least one timestep")


def dcdp_sample(eps_fn, operator, y_pm: Tensor, abar_padded: Tensor, levels: list[int], dc_steps: int, lr: float,
                momentum: float, ddim_steps: int, generators: list[torch.Generator], *, tweedie: bool = False,
                official_last_level: bool = False, final_purification: bool = True,
                residuals: list | None = None) -> tuple[Tensor, int]:
    """DCDP (module docstring): x_0 = 0, then per level T_k a data fit and a purification. eps_fn(x_t, t: int);
    y_pm (B, M) in [-1, 1] units; lr already in this image size's units. Returns (x in [-1, 1], NFE)."""
    B, dev, dt = y_pm.shape[0], y_pm.device, y_pm.dtype
    shape = (B, *operator.x_shape)
    x = torch.zeros(B, operator.N, device=dev, dtype=dt)
    nfe = 0
    for k, t_k in enumerate(levels):
        x = data_fit(operator, x, y_pm, dc_steps, lr, momentum, residuals)
        if k == len(levels) - 1 and not final_purification:
            return x.reshape(shape), nfe
        start, kept = ddim_levels(t_k, ddim_steps, official_last_level)
        z = seeding.randn(generators, operator.x_shape, dev, dt)
        x0, n = purify(eps_fn, x.reshape(shape), abar_padded, start, kept, z, tweedie)
        x, nfe = x0.reshape(B, -1), nfe + n
    return x.reshape(shape), nfe


def check_int(key: str, value, low: int, high: int | None = None, *, fix: str, allow_none: bool = False) -> int | None:
    """``value`` as an int in [low, high], else a ValueError naming ``method.<key>``, the range and the fix."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        none = " or null (the official per-task value)" if allow_none else ""
        raise ValueError(f"dcdp: {key}={value!r} is invalid: it must be an integer {rng}{none}. Fix: {fix}")
    return int(value)


class DCDP(PriorMethod):
    """DCDP on a pixel prior; ``null`` hyper-parameters = the per-task official values of :data:`OFFICIAL`."""

    name = "dcdp"

    def __init__(self, model: dict, steps: int | None = None, dc_steps: int | None = None, lr: float | None = None,
                 momentum: float = 0.9, t0: int | None = None, t_end: int = 0, ddim_steps: int = 20,
                 purification: str = "ddim", final_purification: bool = True, official_last_level: bool = False):
        super().__init__(model)
        self.steps = check_steps(self.name, steps, allow_none=True,
                                 fix="steps=10 (official sr/deblur K) or steps=null (per task)")
        self.dc_steps = check_int("dc_steps", dc_steps, 1, fix="method.dc_steps=100 (official sr/deblur) or null "
                                  "(per task)", allow_none=True)
        self.lr = check_number(self.name, "lr", lr, 0.0, low_open=True, allow_none=True,
                               fix="method.lr=1000 (official sr) or null (per task)")
        self.momentum = check_number(self.name, "momentum", momentum, 0.0, 1.0, fix="method.momentum=0.9")
        if self.momentum >= 1.0:
            raise ValueError(f"dcdp: momentum={momentum!r} is invalid: it must be < 1 (heavy ball diverges). "
                             "Fix: method.momentum=0.9")
        self.t0 = check_int("t0", t0, 1, self.train_steps, fix="method.t0=400 (official sr/deblur) or null (per task)",
                            allow_none=True)
        self.t_end = check_int("t_end", t_end, 0, self.train_steps - 1, fix="method.t_end=0 (official)")
        self.ddim_steps = check_int("ddim_steps", ddim_steps, 1, fix="method.ddim_steps=20 (official)")
        self.purification = check_choice(self.name, "purification", purification, PURIFICATIONS)
        self.final_purification, self.official_last_level = bool(final_purification), bool(official_last_level)
        if self.steps is not None and self.t0 is not None:
            purification_schedule(self.steps, self.t0, self.t_end)  # fail before any work
        self.abar_padded: Tensor | None = None
        #: after restore: the levels T_k and ||A x - y|| (B,) around every SGD step, in order
        self.last_levels: list[int] = []
        self.last_residuals: list[Tensor] = []

    def params(self, task_name: str) -> tuple[int, int, float, int]:
        """(K, dc_steps, lr in official units, T_0): the explicit values, else the task's :data:`OFFICIAL` ones."""
        off = per_task(OFFICIAL, task_name)
        if off is None and None in (self.steps, self.dc_steps, self.lr, self.t0):
            raise ValueError(self.unsupported_reason_name(task_name))
        off = off or (None,) * 4
        vals = (self.steps, self.dc_steps, self.lr, self.t0)
        return tuple(v if v is not None else o for v, o in zip(vals, off))  # type: ignore[return-value]

    def unsupported_reason_name(self, task_name: str) -> str:
        return (f"dcdp has no official settings for task {task_name!r} (defaults for {sorted(OFFICIAL)}); pass "
                "steps=10 method.dc_steps=100 method.lr=1000 method.t0=400")

    def unsupported_reason(self, task: Task) -> str | None:
        reason = super().unsupported_reason(task)
        if reason is None and per_task(OFFICIAL, task.name) is None and \
                None in (self.steps, self.dc_steps, self.lr, self.t0):
            reason = self.unsupported_reason_name(task.name)
        return reason

    @staticmethod
    def effective_lr(lr: float, operator) -> float:
        """The official lr (256-px units) at this operator's image size: lr H W / 256^2 (module docstring)."""
        _, h, w = operator.x_shape
        return lr * h * w / REFERENCE_PIXELS

    def _prepared(self) -> None:
        self.abar_padded = padded_alphas_cumprod(self.prior.betas)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        K, dc_steps, lr, t0 = self.params(degradation.task.name)
        levels = purification_schedule(K, t0, self.t_end)
        op = degradation.operator
        with torch.no_grad():
            y_pm, _ = self.measurement(y, degradation)
        self.last_levels, self.last_residuals = levels, []
        with torch.no_grad():
            x, nfe = dcdp_sample(self.eps, op, y_pm, self.abar_padded, levels, dc_steps, self.effective_lr(lr, op),
                                 self.momentum, self.ddim_steps, generators,
                                 tweedie=self.purification == "tweedie", official_last_level=self.official_last_level,
                                 final_purification=self.final_purification, residuals=self.last_residuals)
        self.last_nfe = nfe
        return self.to_image(x)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "DCDP (SGD data fit, then DDIM purification from T_k)",
                "steps": self.steps if self.steps is not None else "official per task (K)",
                "dc_steps": self.dc_steps, "lr": self.lr, "t0": self.t0, "official_per_task": OFFICIAL,
                "lr_units": "official (256-px MSE); runs lr*H*W/256^2", "momentum": self.momentum,
                "t_end": self.t_end, "ddim_steps": self.ddim_steps, "purification": self.purification,
                "final_purification": self.final_purification, "official_last_level": self.official_last_level,
                "model": self.model_info()}
