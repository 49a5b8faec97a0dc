"""LDG, learned-degradation guidance: Hu's proposal "General Image Restoration via Conditional Diffusion
Probabilistic Model" (``../shared/papers/004_*``), Algorithm 1, on any pixel prior.

The name: the proposal names no method; what sets it apart from GDP (``gdp.py``), its closest relative, is
that the degradation F_Phi is *learned* for every task (GDP learns one only for low-light), hence
"learned-degradation guidance", ``method=ldg``. There is no official code: every choice below is ours and
is recorded in ``describe()`` (the run manifest) and docs/methods.md.

Notation map (Algorithm 1; code names in brackets), x in [-1, 1], pictures in [0, 1]:

    x_{0|t} [x0]     eq. (5) from the prior's eps (clipped to [-1, 1], guided-diffusion's default)
    mu_t, sigma_t    eq. (4) posterior mean / variance [coef1 x0 + coef2 x_t, log_var]
    F_Phi(x)         N_Phi(V(H x)): V(H .) the task's known part, N_Phi learnable (ldg_models.py)
    L_total          lambda1 L_fid(y, F_Phi(x0)) + lambda2 L_perc  [fidelity, perceptual], per image
    eta, s           learning rate of Phi [lr], gradient step [scale]

    per step:  L_total(Phi, x0);  Phi <- Phi - eta grad_Phi L_total;  x_{t-1} = mu_t - s n grad_x0 L_total + sigma_t z

Choices (the proposal leaves them open, or its formulas disagree with its text):

* F_Phi. Linear tasks: ``H x + M`` with H the task's operator seen through GDP's guidance view V
  (:func:`bench.methods.gdp.official_view`: ``pinv(A x)`` for sr / inpaint, the measurement picture for
  deblur / colorize / denoise), then the learnable ``affine`` N_Phi: per-channel gain g and offset M
  (init 0). Non-linear or unknown tasks (``lowlight``, ``jpeg``): V = identity and the ``conv`` N_Phi,
  ``g * (z + conv residual)`` (ldg_models.py; W1 random from the image's generator, the proposal's
  randomly initialised Phi), offset fixed at 0 (``offset: null``: fitted together with g on the early,
  nearly flat x0 it absorbs mean(y), g stays ~0 and the guidance vanishes; lowlight, 2 validation
  photos, 20 steps: affine 10.96 dB with the offset, 11.81 without). Gain start (``gain_init: null``):
  1 where the degradation is near the identity (linear tasks: H is known; ``jpeg`` and any other
  non-linear task), 0.01 for the exposure tasks (:data:`EXPOSURE_TASKS`: ``lowlight``; GDP's low-light
  factor starts at ``randn/100``; a random per-channel start can be negative and inverts that channel:
  6 validation photos, 14.82 dB with GDP's random start vs 16.04 with 0.01): F_Phi ~ 0 at first, x is
  barely guided while g takes up the exposure. ``degradation``, ``gain_init`` and ``offset`` override
  these. Phi is per image (batch independent), fresh for every image.
* L_fid = MSE, a mean over the picture's n values (GDP's official ``mse``; ``distance=ssim`` = 1 - SSIM).
  L_perc (optional, ``perceptual`` = lambda2, default 0) = LPIPS-VGG(F_Phi(x0), y): the proposal names
  VGG-16 but gives L_perc only x0 as argument; a no-reference VGG loss is not defined, so we use the
  usual full-reference VGG feature distance in the degraded space. Needs the VGG-16 weights from the
  asset cache (bench/metrics/lpips.py); missing weights are a clear error when it is asked for.
* Phi step: plain gradient step (Algorithm 1 line 7, ``optimizer=sgd``; ``adam`` as an option) on the
  per-value mean loss; ``lr: null`` = 0.05 near the identity, 1.0 for exposure tasks (official GDP's
  low-light step is 1 on the same mean). Near the identity Phi starts right; fitted fast on the early,
  clipped high-contrast x0, g drifts to ~0.5-0.7 and the guidance then over-brightens x (sr4, 2
  validation photos, 20 steps: 17.1 dB with eta = 0.5, 21.15 with 0.05, 21.49 with Phi frozen, bicubic
  22.06; jpeg (quality 10, 4 validation photos, input 22.88): 15.94 dB with eta = 1, 22.08 with 0.05,
  23.12 frozen). Exposure: g must travel from 0.01 to ~0.1 within few steps (6 validation photos,
  s = 100: 16.04 dB with eta = 1, 12.60 with 2; at s = 40 14.56 with 1, 13.47 with 0.5). The conv
  residual sits inside the gain and is scaled by 1/sqrt(9 x 16) (ldg_models.py), so plain SGD at
  these rates stays stable (unscaled, jpeg's Phi diverged to NaN at eta = 1).
  ``phi_steps`` Phi steps per diffusion step (default 1 = Algorithm 1).
* Guided step (line 8): on x_{0|t}, as the proposal says ("the conditional signal y can be instead
  conducted on x_{0|t}"), the gradient does not go through the prior (``backprop_through_prior =
  False``), and it is added to mu_t with a MINUS sign: line 8 writes ``+ s grad L_total``, which raises the
  loss; eq. (6)-(7) mean log p(y|x) ~ -L. The gradient is that of eq. (9)'s squared norm, a sum over the
  n compared values (= n x the mean that Phi uses), so ``scale`` does not depend on the image size: with
  g = 1 and a projection view, each step moves x0 by -s r in [-1, 1] units (r the [0, 1] residual), i.e.
  s = 2 would remove the residual of x0 at once. In general the step is -s g (F - y): it carries g, and
  the residual itself g times the error in x, so the correction per step is ~ s g^2. ``scale: null`` =
  1 near the identity (g ~ 1: half the residual per step; sr4, 2 validation photos: 21.30 / 21.15 /
  20.61 dB at s = 0.5 / 1 / 2) and 100 for exposure tasks (g ~ 0.1 for ``lowlight``, so s g^2 ~ 1 as
  well; 6 validation photos: 12.85 / 14.56 / 16.04 / 11.54 dB at s = 10 / 40 / 100 / 300, 16.61 with
  the final conv scaling; GDP-x0 on the same photos 15.79; s = 100 on jpeg, where g ~ 1: 5.7 dB).
  Line 8 uses grad of the same L_total as line 7 (Phi before its update; one forward and backward for
  both).
  No rescaling with the step count: each respaced step is one gradient step (the proposal has none).
* Sampler: the proposal's DDPM ancestral step eq. (4) on the prior's schedule respaced to ``steps``
  (guided-diffusion's SpacedDiffusion, :func:`bench.diffusion.respaced_schedule`; Algorithm 1 runs all
  T), through GDP-x0's sampler loop (:func:`bench.methods.gdp.sample_gdp_x0`, the same structure).
  Variance: eq. (4)'s posterior variance beta~_t (``fixed_small``; the proposal calls it sigma_t);
  ``variance: null`` takes the prior's rule. Algorithm 1's lines 3-4 have typos (1/sqrt(alpha_t) for
  1/sqrt(abar_t); sqrt(alpha_{t-1} beta_t)): we use eq. (4)-(5) as written in the text.
* Measurement noise sigma is not modelled (as GDP). Cost: NFE = steps, no backprop through the prior;
  the F_Phi forward / backward is negligible next to the network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import VARIANCES, RespacedSchedule, resolve_variance, respaced_schedule
from bench.methods.gdp import VIEWS, official_view, sample_gdp_x0
from bench.methods.gdp_losses import DISTANCES, distance_fn
from bench.methods.ldg_models import KINDS, OPTIMIZERS, LearnedDegradation, PhiOptimizer, VGGPerceptual
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps
from bench.tasks import Degradation


#: the defaults of ``scale``, ``lr`` and ``gain_init`` left null (module docstring): degradations near the
#: identity (every linear task through its known operator, ``jpeg`` and other non-linear tasks) and the
#: exposure tasks, whose F_Phi starts far from the identity (:data:`EXPOSURE_TASKS`)
DEFAULTS = {"near_identity": {"scale": 1.0, "lr": 0.05, "gain_init": 1.0},
            "exposure": {"scale": 100.0, "lr": 1.0, "gain_init": 0.01}}
#: task-name prefixes that take the ``exposure`` defaults
EXPOSURE_TASKS = ("lowlight",)


def task_defaults(task_name: str) -> dict:
    """The ``scale`` / ``lr`` / ``gain_init`` defaults of a task (:data:`DEFAULTS`)."""
    return DEFAULTS["exposure" if task_name.startswith(EXPOSURE_TASKS) else "near_identity"]


class LearnedGuidance:
    """Lines 6-8 of Algorithm 1 for a batch: ``guidance(x0) -> mean shift`` (and a Phi update)."""

    def __init__(self, known, target: Tensor, model: LearnedDegradation, optimizer: PhiOptimizer, scale: float,
                 fidelity: float, distance, perceptual: float = 0.0, perceptual_fn=None, phi_steps: int = 1):
        self.known, self.target, self.model, self.optimizer = known, target, model, optimizer
        self.scale, self.fidelity, self.distance = scale, fidelity, distance
        self.perceptual, self.perceptual_fn, self.phi_steps = perceptual, perceptual_fn, phi_steps
        #: L_total per image before each Phi update, one (B,) tensor per call
        self.history: list[Tensor] = []

    def loss(self, z: Tensor, params: dict[str, Tensor]) -> Tensor:
        """L_total per image (B,) for the known picture z = V(H x) and parameters Phi."""
        pred = self.model(z, params)
        total = self.fidelity * self.distance(pred, self.target)
        if self.perceptual:
            total = total + self.perceptual * self.perceptual_fn(pred, self.target)
        return total

    def _phi_step(self, z: Tensor, x_in: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """One Phi step on L_total(z); with ``x_in`` also grad_x of the same L_total. Returns (loss, grad_x)."""
        with torch.enable_grad():
            learned = self.model.learned
            params = {k: v.detach().requires_grad_(k in learned) for k, v in self.model.params.items()}
            total = self.loss(z, params)
            wrt = [params[k] for k in learned] + ([x_in] if x_in is not None else [])
            grads = torch.autograd.grad(total.sum(), wrt)
        self.optimizer.step(self.model.params, dict(zip(learned, (g.detach() for g in grads))))
        return total.detach(), (grads[-1] if x_in is not None else None)

    def __call__(self, x0: Tensor) -> Tensor:
        with torch.enable_grad():
            x_in = x0.detach().requires_grad_(True)
            z = self.known((x_in + 1) / 2)
        n = z[0].numel()  # values compared per image: eq. (9)'s sum = n x the mean
        total, grad_x = self._phi_step(z, x_in)  # line 7 (and line 8's gradient, same L_total)
        self.history.append(total)
        for _ in range(self.phi_steps - 1):
            self._phi_step(z.detach())
        return -self.scale * n * grad_x  # line 8: mu_t - s grad_{x0} ||y - F_Phi(x0)||^2 (+ lambda2 L_perc)


class LDG(PriorMethod):
    """Learned-degradation guidance (Hu's Algorithm 1) on a pixel prior, every task."""

    name = "ldg"
    requires_linear = False
    backprop_through_prior = False

    def __init__(self, model: dict, steps: int = 1000, scale: float | None = None, lr: float | None = None,
                 optimizer: str = "sgd", phi_steps: int = 1, fidelity: float = 1.0, perceptual: float = 0.0,
                 distance: str = "mse", degradation: str | None = None, gain_init: float | None = None,
                 offset: bool | None = None, view: str | None = None, variance: str | None = "fixed_small",
                 clip_denoised: bool = True,
                 vgg_path: str | None = None):
        super().__init__(model)
        self.steps = check_steps(self.name, steps, fix="steps=1000 (the proposal: all T) or fewer",
                                 maximum=self.train_steps)
        self.scale = check_number(self.name, "scale", scale, 0.0, allow_none=True, fix="method.scale=1.0")
        self.lr = check_number(self.name, "lr", lr, 0.0, allow_none=True, fix="method.lr=0.5")
        self.optimizer = check_choice(self.name, "optimizer", optimizer, OPTIMIZERS)
        if isinstance(phi_steps, bool) or not isinstance(phi_steps, int) or phi_steps < 1:
            raise ValueError(f"ldg: phi_steps={phi_steps!r} is invalid: it must be an integer >= 1 (Phi updates "
                             "per diffusion step). Fix: method.phi_steps=1 (Algorithm 1)")
        self.phi_steps = phi_steps
        self.fidelity = check_number(self.name, "fidelity", fidelity, 0.0, fix="method.fidelity=1.0")
        self.perceptual = check_number(self.name, "perceptual", perceptual, 0.0, fix="method.perceptual=0")
        self.distance = check_choice(self.name, "distance", distance, DISTANCES)
        self.degradation = None if degradation is None else check_choice(self.name, "degradation", degradation,
                                                                          KINDS)
        self.gain_init = check_number(self.name, "gain_init", gain_init, -1e3, 1e3, allow_none=True,
                                      fix="method.gain_init=null (1 for linear tasks, 0.01 for others)")
        if offset is not None and not isinstance(offset, bool):
            raise ValueError(f"ldg: offset={offset!r} is invalid: use null (learned for linear tasks, 0 for "
                             "non-linear), true or false. Fix: method.offset=null")
        self.offset = offset
        self.view = None if view is None else check_choice(self.name, "view", view, VIEWS)
        self.variance = None if variance is None else check_choice(self.name, "variance", variance, VARIANCES)
        self.clip_denoised, self.vgg_path = bool(clip_denoised), vgg_path
        self.sched: RespacedSchedule | None = None
        self.variance_rule: str | None = None
        self._perceptual_fn = None
        #: after restore: the LearnedDegradation (per-image Phi) and the per-step L_total history
        self.last_degradation: LearnedDegradation | None = None
        self.last_losses: Tensor | None = None

    def setup(self, device: torch.device) -> None:
        if self.perceptual:  # before the prior: a missing VGG is the first and only error
            self._perceptual_fn = VGGPerceptual(device, self.vgg_path)
        super().setup(device)

    def _prepared(self) -> None:
        self.sched = respaced_schedule(self.prior.betas, self.steps, self.device)
        self.variance_rule = resolve_variance(self.variance, self.prior, self.name)

    # ------------------------------------------------------------------------------ pieces
    def p_mean_variance(self, x_t: Tensor, j: int) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. (5) x_{0|t} and eq. (4) mu_t, log sigma_t^2 at kept step j."""
        s = self.sched
        eps, v = self.prior.model_output(x_t, s.timesteps[j].expand(x_t.shape[0]))
        x0 = s.sqrt_recip_abar[j] * x_t - s.sqrt_recipm1_abar[j] * eps.to(x_t.dtype)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        log_var = s.log_variance(self.variance_rule, j, None if v is None else v.to(x_t.dtype))
        return s.coef1[j] * x0 + s.coef2[j] * x_t, log_var.expand_as(x_t), x0

    def known_part(self, degradation: Degradation, y: Tensor, image_hw) -> tuple:
        """(V(H .), V(y)): the task's known operator seen through GDP's view; identity for non-linear tasks."""
        if not degradation.linear:
            return (lambda x: x), y
        op = degradation.operator
        picture = op.measurement_image(y)
        same = tuple(picture.shape[-2:]) == tuple(image_hw)
        view = self.view or official_view(degradation.task.name) or ("measurement" if same else "pinv")
        if view == "measurement":
            return (lambda x: op.measurement_image(op.A(x))), picture
        return (lambda x: op.image(op.pinv(op.A(x)))), op.image(op.pinv(y))

    def guidance(self, y: Tensor, degradation: Degradation, generators, image_hw) -> LearnedGuidance:
        known, target = self.known_part(degradation, y, image_hw)
        kind = self.degradation or ("affine" if degradation.linear else "conv")
        linear = degradation.linear
        default = task_defaults(degradation.task.name)
        gain = self.gain_init if self.gain_init is not None else default["gain_init"]
        offset = self.offset if self.offset is not None else linear
        model = LearnedDegradation(kind, target.shape[1], generators, self.device, gain, offset)
        lr = self.lr if self.lr is not None else default["lr"]
        scale = self.scale if self.scale is not None else default["scale"]
        return LearnedGuidance(known, target, model, PhiOptimizer(self.optimizer, lr), scale,
                               self.fidelity, distance_fn(self.distance), self.perceptual, self._perceptual_fn,
                               self.phi_steps)

    # ------------------------------------------------------------------------------ restore
    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        self._require_prior()
        op = degradation.operator
        shape = tuple(op.x_shape) if hasattr(op, "x_shape") else tuple(y.shape[1:])
        y = y.to(self.device, torch.float32)
        x_T = seeding.randn(generators, shape, self.device)  # line 1
        guidance = self.guidance(y, degradation, generators, shape[-2:])  # Phi drawn after x_T
        with torch.no_grad():
            x0 = sample_gdp_x0(self.p_mean_variance, x_T, self.sched.num_steps, guidance,
                               lambda: seeding.randn(generators, shape, self.device))
        self.last_nfe = self.sched.num_steps
        self.last_degradation = guidance.model
        self.last_losses = torch.stack(guidance.history, 1)  # (B, steps)
        return self.to_image(x0)

    def describe(self) -> dict:
        return {
            "name": self.name, "algorithm": "Hu's learned-degradation guidance (Algorithm 1), guidance on x_{0|t}",
            "steps": self.steps, "nfe": self.steps, "defaults": {**DEFAULTS, "exposure_tasks": list(EXPOSURE_TASKS)},
            "scale": self.scale if self.scale is not None else "by task (defaults)",
            "scale_rule": "mu_t - s * grad_{x0} of sum-over-values L_total per step (no step/size rescaling)",
            "lr": self.lr if self.lr is not None else "by task (defaults)", "offset": self.offset,
            "optimizer": self.optimizer, "phi_steps": self.phi_steps,
            "fidelity": self.fidelity, "perceptual": self.perceptual,
            "perceptual_loss": "LPIPS-VGG(F_Phi(x0), y)" if self.perceptual else None, "distance": self.distance,
            "degradation": self.degradation or "affine (linear tasks) / conv (non-linear)",
            "degradation_models": {"affine": "g*V(Hx) + M, per-channel g, M",
                                   "conv": "g*(z + W2*relu(W1*z + b1) + b2) + M, 3x3, 16 hidden, replicate pad"},
            "gain_init": self.gain_init if self.gain_init is not None else "by task (defaults)",
            "view": self.view or "GDP's official view per task, else measurement picture if full size",
            "variance": self.variance_rule or (self.variance or "prior's rule"),
            "clip_denoised": self.clip_denoised, "sampler": "DDPM ancestral eq. (4), respaced",
            "backprop_through_prior": False, "model": self.model_info(),
        }
