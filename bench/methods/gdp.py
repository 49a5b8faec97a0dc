"""GDP: Generative Diffusion Prior (Fei et al., CVPR 2023), variants GDP-x0 (Algorithm 2) and
GDP-xt (Algorithm 1), on guided-diffusion's DDPM ancestral sampler.

Notation map (slides' Algorithms 1-2; code names in brackets):

    x_t [x_t]      current sample in [-1, 1];  x~0 [x0]: eps-predicted, clipped clean image
    mu, Sigma      guided-diffusion posterior mean / variance of p(x_{t-1} | x_t) [mean, log_var]
    D_phi          degradation: the task's operator (linear: seen through the official "view",
                   below), or the blind low-light model y = f x + M with phi = (f, M) [f, mask]
    L, Q           distance (official: MSE) and optional Zero-DCE quality losses (gdp_losses.py)
    s, l           guidance scale [scale], degradation learning rate [lr_degradation]

    GDP-x0:  L_tot = L(y, D_phi(x~0)) + Q(x~0);  phi <- phi - l grad_phi L_tot;
             x_{t-1} ~ N(mu + s grad_{x~0}(-L_tot), Sigma)
    GDP-xt:  the same with x_t in place of x~0 (and a fixed D).

Facts checked in the official code (Fayeben/GenerativeDiffusionPrior, ``scripts/``):

* ``guided_diffusion/gaussian_diffusion_x0.py::condition_mean``: ``cond_fn`` gets ``pred_xstart``
  (clipped to [-1, 1]) and the result is ``mean + gradient``: no variance scaling (openai's
  ``condition_mean`` multiplies by the variance) and no backprop through the UNet (the whole loop
  runs under ``no_grad``; ``cond_fn`` differentiates ``x.detach()``). The Adam optimizer built
  there never steps on anything. ``gaussian_diffusion.py`` (GDP-xt) calls ``cond_fn(x_t)``, same
  ``mean + gradient``.
* ``sample_x0_{sr4,inp,blur,color}.py`` (and ``sample_*.py`` for GDP-xt):
  ``loss = -s * sum_b mean_chw((view(H((x+1)/2)) - (y_img+1)/2)^2)`` and ``grad(loss, x)``, with
  ``view = H_pinv`` (sr, inp), the 248x248 valid-blurred picture itself (blur: ``gkern(9, 2)``, task
  ``deblur_gdp``) and the gray image repeated to 3 channels (color; ``gray_dgp``, weights 1/3 each).
  ``y_img`` is the matching picture of the measurement (``save_random_images_*.py``). We use the
  same per-task rule (:data:`OFFICIAL_VIEWS`, by task-name prefix: ``pinv`` or the operator's
  ``measurement_image``); other tasks compare ``measurement_image`` when it has the image's size
  (denoise), else ``pinv``; ``method.view`` overrides. Measurement noise sigma is not modelled
  (official neither).
* Colorization adds a colour-constancy term: ``loss = -s * mse - 500 * mean_b(L_color(x))`` with
  MyLoss ``L_color`` on x in [-1, 1] (x~0 resp. x_t), :func:`gdp_losses.color_loss`. Only the
  low-light script has its quality losses commented out.
* Default ``--img_guidance_scale``: sr4 2000, blur 6000, color 6000, inp 4000, low-light 80000
  (:data:`OFFICIAL_SCALES`), all for 1000 unspaced DDPM steps on 3x256x256 images.
* Low-light (``sample_x0_enhancement_low_light.py`` + ``gaussian_diffusion_x0_enhancement_direct.py``):
  ``light_factor = randn(1)/100``, ``light_mask = rand(400, 600)/1e4``, prediction
  ``(x0+1)/2 * f + M``, updates ``f <- f - grad(mse, f)``, ``M <- M - grad(mse, M)`` (lr 1) with
  the pre-update loss also guiding x; 256-px patches at stride 128: each patch's mse is a mean over
  its 3x256x256 values, each patch takes its own (f, M) step from the pre-step values, and the new
  f and M are the means over patches (M: over the patches covering a pixel); outputs (mean,
  log-variance, x0) are averaged over overlaps. Quirk not reproduced: upstream calls
  ``condition_mean`` twice per patch with the same x0, adding the gradient twice (an effective 2s).
* The sampler is guided-diffusion's ``p_sample`` with the model's variance type: learned range for
  the 256x256 ImageNet model (learn_sigma), ``FIXED_LARGE`` (``[beta~_1, beta_1, ..., beta_{T-1}]``)
  as guided-diffusion's default without learned sigma.

Choices made here (see ``describe()``):

* Scale units: ``scale`` is in official units. Per respaced step we use
  ``s_eff = s * (T / K) * (N / N_ref)`` with T the prior's training steps, K = ``steps``,
  N = C*H*W of the image and N_ref = 3*256*256. Respacing: each of the K steps stands for T/K
  original ones, each of which added ``s * grad`` to the mean, so the total pull is kept
  (guided-diffusion's own classifier guidance gets this for free from its ``Sigma`` factor; GDP has
  none). Size: the official loss is a mean over 3*256*256 values, so N/N_ref keeps the per-pixel
  pull of the official runs at any image size (and equals the upstream per-256-patch mean when
  tiling). With T = 1000, K = 1000 and 256x256 images ``s_eff = s``. ``rescale=false`` uses s as is.
  Few steps with a large s overshoot (explicit-Euler-like): for a projection view (sr4, inpaint,
  colorize) x~0 moves by s*T/(2*K*N_ref) times its residual per step, > 2 for K < 3 (sr4), 6
  (inpaint), 8 (colorize, deblur) with the official scales.
* Colour term (``color_colorize``, default 500 = official, on ``colorize*`` tasks only; 0 turns it
  off): in official units, i.e. the weight of ``L_color`` of the [-1, 1] image (= 4 x ``L_color`` of
  the [0, 1] image: channel-mean differences double, their squares' squares grow 16x, the root 4x),
  absolute (not multiplied by s) and rescaled by the same ``(T / K) * (N / N_ref)`` as s (its
  gradient is also a per-pixel mean). Per image: upstream averages over its batch
  (``torch.mean`` over B), so its default ``batch_size=10`` weights each image by 500/10 = 50
  (``method.color_colorize=50`` reproduces that); 500 equals upstream at batch size 1 and keeps
  results batch independent. The generic ``color`` weight (relative to s, any task) is separate.
* Images larger than the prior (``patch_size``, default the prior's image_size = official 256)
  are sampled in overlapping patches (stride default patch_size // 2 = official 128) with averaged
  overlaps; an image of exactly the prior's size is one patch (whole-image sampling). The x-guidance
  acts on the whole overlap-averaged image; for pixel-wise degradations and MSE that equals
  upstream's per-patch gradients averaged (with ``N_ref`` = one 256-px patch). The blind (f, M)
  update is upstream's per-patch rule (:func:`gdp_losses.degradation_step` with the grid): each
  patch's L_tot is a mean over that patch, M's step is therefore H*W/p^2 times larger than a
  whole-image mean would give (3.66x at LOL's 400x600 with p = 256). Difference: the residuals use
  the overlap-averaged x~0 (upstream: each patch's own x~0; equal where the patches agree).
  ``last_nfe`` = steps x patches (UNet evaluations at the prior's resolution per image).
* The blind low-light model is used for non-linear tasks (``learn_degradation=None``); f (B,) and M
  (B, 1, H, W) are per image, drawn from the per-image generators after x_T, exposed after each
  batch as ``last_degradation``. ``learn_degradation=False`` guides through the task's own operator.
  GDP-xt fits (f, M) on x_t (Algorithm 1 assumes a fixed D; the paper still reports GDP-xt on LOL).
  Algorithm 2's phi-step uses L_tot, so ``tv`` regularises M (upstream's commented TV term, taken
  w.r.t. x only, could not act on anything).
* Tasks with no official script: ``jpeg`` (:class:`bench.operators.JPEGCompression`, non-linear and not
  differentiable) runs the blind ``f x + M`` model exactly as low-light (nothing in that path is
  low-light specific; only the scale table lacked an entry), with our scale :data:`OUR_SCALES`
  (jpeg 20000: the best of 500 / 6000 / 20000 / 80000 for GDP-x0 at 20 steps on the embedded
  ``adm64_imagenet96`` prior, 2 sample photos at 64 px: 9.74 / 13.60 / 16.02 / 9.16 dB PSNR; the
  decoded JPEG itself scores 22.98 dB there, so the blind model does not restore JPEG at this budget).
  Official scales take precedence (:func:`default_scale`).
* Variance (``variance``): null = the prior's own rule (``prior.variance``: ``learned_range`` for
  learned-sigma nets, guided-diffusion's ``frac*log(beta) + (1-frac)*log(posterior variance)``;
  else the model config's ``diffusion.variance``, default ``fixed_large``). ``fixed_small`` (the
  posterior variance) or ``fixed_large`` override it, also for learned-sigma nets (their variance
  channels are then ignored). The rule used is in ``describe()["variance"]`` (the run manifest).
  Measured (GDP-x0, embedded ``adm64_imagenet96`` with ``model.diffusion.variance=fixed_large``; the
  8 sample photos at 64 px, PSNR dB / SSIM, fixed_large vs fixed_small): sr4 18.25 / 0.270 vs 20.88 / 0.505 at 100 steps,
  14.29 / 0.134 vs 21.87 / 0.560 at 20; inpaint 24.65 / 0.665 vs 27.73 / 0.865 at 100 steps,
  20.88 / 0.483 vs 30.43 / 0.928 at 20 (the respaced beta'_t is a lot of fresh noise per step when the
  steps are few). The faithful rule stays the default for every released checkpoint; the embedded
  prior's own pipeline is this project's, and its config says ``fixed_small`` for that reason.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import seeding
from bench.diffusion import RespacedSchedule, resolve_variance, respaced_schedule
from bench.methods import gdp_losses as losses
from bench.methods.base import Method
from bench.methods.gdp_losses import Guidance
from bench.models.latent import refuse_latent
from bench.tasks import Degradation, Task, per_task

#: official ``--img_guidance_scale`` defaults by task-name prefix (1000 DDPM steps, 3x256x256)
OFFICIAL_SCALES = {"sr": 2000.0, "deblur": 6000.0, "colorize": 6000.0, "inpaint": 4000.0, "lowlight": 80000.0}
#: our defaults for tasks upstream has no script for (module docstring "Choices made here")
OUR_SCALES = {"jpeg": 20000.0}
#: the official scripts' guidance view by task-name prefix: compare pinv(A x) with pinv(y), or the
#: measurement pictures (``operator.measurement_image``) of A x and y
OFFICIAL_VIEWS = {"sr": "pinv", "inpaint": "pinv", "deblur": "measurement", "colorize": "measurement"}
VIEWS = ("measurement", "pinv")
#: ``variance`` choices (null = the prior's own rule)
VARIANCE_OVERRIDES = ("fixed_small", "fixed_large")
#: values the official loss averages over (one 3x256x256 image or patch)
REFERENCE_PIXELS = 3 * 256 * 256
VARIANTS = ("x0", "xt")


def official_scale(task_name: str) -> float | None:
    """The official default scale for a task (by name prefix), None when upstream has none."""
    return per_task(OFFICIAL_SCALES, task_name)


def default_scale(task_name: str) -> float | None:
    """The official scale of a task, else ours (:data:`OUR_SCALES`), None when there is neither."""
    official = official_scale(task_name)
    return official if official is not None else per_task(OUR_SCALES, task_name)


def official_view(task_name: str) -> str | None:
    """The official guidance view for a task (by name prefix), None when upstream has none."""
    return per_task(OFFICIAL_VIEWS, task_name)


def effective_scale(scale: float, train_steps: int, steps: int, n_pix: int) -> float:
    """Per-step scale for K = ``steps`` respaced steps on an image of ``n_pix`` = C*H*W values:
    ``s * (T / K) * (n_pix / (3*256*256))`` (== s for the official 1000 steps at 256x256)."""
    return float(scale) * (train_steps / steps) * (n_pix / REFERENCE_PIXELS)


# ----------------------------------------------------------------------------------- samplers
def sample_gdp_x0(p_mean_variance, x_T: Tensor, num_steps: int, guidance, noise) -> Tensor:
    """Algorithm 2 (GDP-x0): guidance computed on x~0, added to the posterior mean."""
    x_t = x_T
    for j in reversed(range(num_steps)):
        mean, log_var, x0 = p_mean_variance(x_t, j)  # mu, Sigma = mu_theta(x_t), Sigma_theta(x_t); x~0
        mean = mean + guidance(x0)  # phi <- phi - l grad_phi L_tot;  mu + s grad_{x~0}(-L_tot)
        x_t = mean + torch.exp(0.5 * log_var) * noise() if j > 0 else mean
    return x_t


def sample_gdp_xt(p_mean_variance, x_T: Tensor, num_steps: int, guidance, noise) -> Tensor:
    """Algorithm 1 (GDP-xt): guidance computed on x_t itself, added to the posterior mean."""
    x_t = x_T
    for j in reversed(range(num_steps)):
        mean, log_var, _ = p_mean_variance(x_t, j)  # mu, Sigma = mu_theta(x_t), Sigma_theta(x_t)
        mean = mean + guidance(x_t)  # mu + s grad_{x_t}(-L_tot(y, D(x_t)))
        x_t = mean + torch.exp(0.5 * log_var) * noise() if j > 0 else mean
    return x_t


SAMPLERS = {"x0": sample_gdp_x0, "xt": sample_gdp_xt}


# ----------------------------------------------------------------------------------- method
class GDP(Method):
    """GDP-x0 / GDP-xt for every task (linear through its operator, non-linear blind low-light)."""

    name = "gdp_x0"

    def __init__(self, model: dict, steps: int = 100, variant: str = "x0", scale: float | None = None,
                 rescale: bool = True, distance: str = "mse", exposure: float = 0.0,
                 exposure_level: float = 0.3, exposure_patch: int = 8, color: float = 0.0, tv: float = 0.0,
                 color_colorize: float = 500.0, lr_degradation: float = 1.0,
                 learn_degradation: bool | None = None, patch_size: int | None = None,
                 patch_stride: int | None = None, clip_denoised: bool = True, view: str | None = None,
                 variance: str | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"GDP variant={variant!r} is invalid: use one of {VARIANTS} (method=gdp_x0|gdp_xt)")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"GDP steps={steps!r} is invalid: pass a positive integer, e.g. steps=100")
        if scale is not None and not (isinstance(scale, (int, float)) and scale >= 0):
            raise ValueError(f"GDP scale={scale!r} is invalid: use null (official per-task default) or >= 0")
        losses.distance_fn(distance)
        if view is not None and view not in VIEWS:
            raise ValueError(f"GDP view={view!r} is invalid: use null (official per task) or one of {VIEWS}")
        if variance is not None and variance not in VARIANCE_OVERRIDES:
            raise ValueError(f"GDP variance={variance!r} is invalid: use null (the prior's own rule, "
                             f"prior.variance) or one of {VARIANCE_OVERRIDES}")
        for key, val in {"exposure": exposure, "color": color, "tv": tv, "lr_degradation": lr_degradation,
                         "color_colorize": color_colorize}.items():
            if not isinstance(val, (int, float)) or val < 0:
                raise ValueError(f"GDP {key}={val!r} is invalid: it must be a number >= 0")
        for key, val in {"patch_size": patch_size, "patch_stride": patch_stride}.items():
            if val is not None and (not isinstance(val, int) or val < 1):
                raise ValueError(f"GDP {key}={val!r} is invalid: use null (prior's size, half of it) "
                                 "or an int >= 1")
        self.model, self.steps, self.variant, self.scale, self.rescale = dict(model), steps, variant, scale, rescale
        refuse_latent(self.model, "gdp")
        self.distance, self.clip_denoised = distance, bool(clip_denoised)
        self.quality = dict(exposure=float(exposure), exposure_level=float(exposure_level),
                            exposure_patch=int(exposure_patch), color=float(color), tv=float(tv))
        self.color_colorize = float(color_colorize)
        self.lr_degradation, self.learn_degradation = float(lr_degradation), learn_degradation
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.view, self.variance = view, variance
        #: the variance rule in use (set by use_prior: ``variance`` or the prior's own rule)
        self.variance_rule: str | None = None
        self.prior = None
        self._schedule: RespacedSchedule | None = None
        #: after restore: {"f": (B,), "mask": (B, 1, H, W)} for the blind low-light model, else None
        self.last_degradation: dict | None = None
        #: after restore: the per-step scale actually used
        self.last_scale: float | None = None

    # ------------------------------------------------------------------------------ setup
    def unsupported_reason(self, task: Task) -> str | None:
        if self.scale is None and default_scale(task.name) is None:
            return (f"GDP has no official guidance scale for task {task.name!r} (official: "
                    f"{OFFICIAL_SCALES}; ours: {OUR_SCALES}); pass one, e.g. method.scale=2000")
        if self.learn_degradation and task.linear:
            return f"learn_degradation=true is the blind low-light model; {task.name!r} is linear"
        target = getattr(task.operator, "func", task.operator)
        if self.learn_degradation is False and not task.linear and not getattr(target, "differentiable", True):
            return (f"learn_degradation=false guides through the task's operator, and {task.name!r} is not "
                    "differentiable; use learn_degradation=null (the blind f x + M model)")
        return super().unsupported_reason(task)

    def setup(self, device: torch.device) -> None:
        from bench.models.prior import load_prior

        self.use_prior(load_prior(self.model, device), device)

    def use_prior(self, prior, device: torch.device | str) -> None:
        """Attach an already loaded :class:`bench.models.prior.DiffusionPrior` (or a duck-typed one)."""
        self.device, self.prior = torch.device(device), prior
        T = int(prior.betas.numel())
        if self.steps > T:
            raise ValueError(f"GDP steps={self.steps} exceeds the prior's {T} training steps; use steps <= {T}")
        self._schedule = respaced_schedule(prior.betas, self.steps, self.device)
        self.variance_rule = resolve_variance(self.variance, prior, "GDP")

    # ------------------------------------------------------------------------------ sampling
    def _p_mean_variance(self, x_t: Tensor, j: int, grid: losses.PatchGrid):
        """guided-diffusion ``p_mean_variance`` (eps model, clipped x0), patch-averaged like upstream."""
        s = self._schedule
        xp = grid.tile(x_t)
        eps, v = self.prior.model_output(xp, s.timesteps[j].expand(xp.shape[0]))
        x0 = s.sqrt_recip_abar[j] * xp - s.sqrt_recipm1_abar[j] * eps.to(xp.dtype)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        # fixed_small / fixed_large ignore a learned-sigma net's variance channels
        log_var = s.log_variance(self.variance_rule, j, None if v is None else v.to(xp.dtype))
        log_var = grid.untile(log_var) if log_var.ndim else log_var.expand_as(x_t)
        x0 = grid.untile(x0)
        return s.coef1[j] * x0 + s.coef2[j] * x_t, log_var, x0

    def guidance_view(self, task_name: str, picture_hw: tuple, image_hw: tuple) -> str:
        """``method.view``, else the official view of the task (:data:`OFFICIAL_VIEWS`), else the
        measurement picture when it has the image's size and ``pinv`` otherwise."""
        if self.view is not None:
            return self.view
        official = official_view(task_name)
        if official is not None:
            return official
        return "measurement" if tuple(picture_hw) == tuple(image_hw) else "pinv"

    def _guidance(self, y: Tensor, degradation: Degradation, shape, generators, grid=None) -> Guidance:
        task = degradation.task.name
        s = self.scale if self.scale is not None else default_scale(task)
        if s is None:
            raise ValueError(self.unsupported_reason(degradation.task))
        factor = (effective_scale(1.0, int(self.prior.betas.numel()), self.steps, shape[0] * shape[1] * shape[2])
                  if self.rescale else 1.0)
        self.last_scale = float(s) * factor
        color_pm = self.color_colorize * factor if task.startswith("colorize") else 0.0
        kw = dict(scale=self.last_scale, distance=losses.distance_fn(self.distance), lr=self.lr_degradation,
                  color_pm=color_pm, **self.quality)
        op = degradation.operator
        if degradation.linear:
            if self.learn_degradation:
                raise ValueError(self.unsupported_reason(degradation.task))
            picture = op.measurement_image(y)
            if self.guidance_view(task, picture.shape[-2:], shape[-2:]) == "measurement":  # deblur, colorize
                return Guidance(lambda x: op.measurement_image(op.A(x)), picture, **kw)
            return Guidance(lambda x: op.image(op.pinv(op.A(x))), op.image(op.pinv(y)), **kw)  # sr, inpaint
        if self.learn_degradation is False:
            return Guidance(op.A, y, **kw)
        B, dev = y.shape[0], y.device
        f = seeding.randn(generators, (1, 1, 1), dev) / 100  # official randn(1)/100
        mask = seeding.rand(generators, (1, *shape[-2:]), dev) / 1e4  # official rand(H, W)/1e4
        return Guidance(None, y, f=f.reshape(B, 1, 1, 1), mask=mask, grid=grid, **kw)

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        if self.prior is None:
            raise RuntimeError("GDP.restore called before setup(device); the runner calls setup first")
        shape = tuple(degradation.operator.x_shape) if degradation.linear else tuple(y.shape[1:])
        p = self.patch_size or int(self.prior.image_size)
        grid = losses.PatchGrid(shape[1], shape[2], p, self.patch_stride or max(p // 2, 1))
        x_T = seeding.randn(generators, shape, self.device)
        guidance = self._guidance(y.to(self.device), degradation, shape, generators, grid)
        with torch.no_grad():
            x0 = SAMPLERS[self.variant](
                lambda x_t, j: self._p_mean_variance(x_t, j, grid), x_T, self._schedule.num_steps,
                guidance, lambda: seeding.randn(generators, shape, self.device))
        self.last_nfe = self._schedule.num_steps * grid.count
        self.last_degradation = (None if guidance.f is None else
                                 {"f": guidance.f.reshape(-1), "mask": guidance.mask})
        return ((x0 + 1) / 2).clamp(0, 1)

    def describe(self) -> dict:
        return {
            "name": self.name, "variant": self.variant, "steps": self.steps,
            "algorithm": "GDP-x0 (Algorithm 2)" if self.variant == "x0" else "GDP-xt (Algorithm 1)",
            "scale": self.scale if self.scale is not None else "official default per task (else ours)",
            "official_scales": OFFICIAL_SCALES, "our_scales": OUR_SCALES, "rescale": self.rescale,
            "scale_rule": ("per step s*(T/steps)*(C*H*W/(3*256*256)) on the mean-over-pixels loss"
                           if self.rescale else "per step s on the mean-over-pixels loss"),
            "distance": self.distance, **self.quality, "lr_degradation": self.lr_degradation,
            "view": self.view or f"official per task {OFFICIAL_VIEWS}, else measurement picture if full size",
            "color_colorize": self.color_colorize,
            "color_colorize_rule": ("colorize* tasks: + color_colorize * L_color(x in [-1, 1]) per image, "
                                    "rescaled like s, not multiplied by s"),
            "variance": self.variance_rule or (self.variance or "prior's rule"),
            "variance_requested": self.variance or "null (prior's own rule)",
            "learn_degradation": self.learn_degradation, "clip_denoised": self.clip_denoised,
            "patch_size": self.patch_size or "prior image_size",
            "patch_stride": self.patch_stride or "patch_size//2",
            "model": self.model.get("name"), "sampler": "guided-diffusion DDPM ancestral, respaced",
            "nfe": "steps x patches per image",
            "degradation_update": "blind (f, M): per-patch L_tot means, per-patch steps averaged (official)",
            "prior": getattr(self.prior, "info", None),
        }
