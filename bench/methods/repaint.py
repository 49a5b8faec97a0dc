"""RePaint: inpainting with an unconditional DDPM by resampling (Lugmayr et al., CVPR 2022).

:func:`repaint_sample` is the sampler, one function mirroring official andreas128/RePaint ``guided_diffusion/
gaussian_diffusion.py::p_sample_loop_progressive`` (schedule_jump path) with its ``p_sample`` (known-region
injection, ``inpa_inj_sched_prev: true``, ``inpa_inj_sched_prev_cumnoise: false``, as every shipped conf) and
``undo``; :func:`reverse_step`, :func:`inject_known` and :func:`undo` are its pieces (``tools/equivalence/
repaint.py`` checks them against the official functions on identical inputs and noise). :class:`RePaint` wraps it.

Notation (paper Algorithm 1; code names in brackets), x in [-1, 1], m the keep-mask (1 = known) [gt_keep_mask]:

* t_T = ``steps`` respaced steps of the prior's T (guided-diffusion ``timestep_respacing: '250'`` over 1000:
  :func:`bench.diffusion.respaced_schedule`); j = 0 .. t_T-1 indexes them, the net is called with the
  original step t_j, beta'_j / abar_j are the respaced tables. The time list is :func:`bench.methods.
  repaint_schedule.jump_schedule` (t_T-1, ..., -1); a pair (j, j-1) is a reverse step, (j, j+1) an undo.
* reverse step at j (``p_sample``): draw z; from the second reverse step on, inject the known region at the
  current level with fresh noise z' (Algorithm 1 line 5, with sqrt(1 - abar) as the code has it; the paper
  prints (1 - abar)):  x_j <- m (sqrt(abar_j) x_known + sqrt(1 - abar_j) z') + (1 - m) x_j;
  x0^ = clip((x_j - sqrt(1 - abar_j) eps) / sqrt(abar_j), -1, 1); mu = coef1_j x0^ + coef2_j x_j;
  x_{j-1} = mu + [j > 0] sigma_j z, log sigma_j^2 = f log beta'_j + (1 - f) log beta~_j, f = (v + 1)/2 from the
  net's variance channels [learned_range]; nets without them use the prior's fixed rule (``method.variance``).
* undo (j -> j+1): x_{j+1} = sqrt(1 - beta'_{j+1}) x_j + sqrt(beta'_{j+1}) z (``inpa_inj_time_shift`` = 1).
* x_known is the measurement y mapped back to the image frame: pinv(y_pm) (= the ground truth on the kept pixels
  for the noiseless tasks RePaint runs, the official ``gt * gt_keep_mask``).
* output: the last reverse step's x, clamped to [-1, 1] and mapped to [0, 1]; the known pixels are NOT pasted
  back (official ``test.py`` saves ``result['sample']``); ``paste_known=true`` pastes them.

Defaults (official ``confs/face_example.yml``, ``test_{c256,p256,inet256}_*.yml``): t_T = 250, jump_length = 10,
jump_n_sample = 10, n_sample = 1, clip_denoised true: 2,410 network calls and 2,160 undo steps per image.

Deliberate differences from the official code (docs/methods.md, "Where we differ"):

1. Noisy tasks (sigma > 0) are skipped with a reason: RePaint is noiseless (the known pixels are replaced
   outright, there is no sigma_y anywhere in the code).
2. The official ImageNet setting (class-conditional ADM ``256x256_diffusion.pt``, ``256x256_classifier.pt`` guidance
   at scale 1.0 toward a random class) is an option, off by default (below); its random classes are drawn per
   image from the image's generator, where official draws ``th.randint(NUM_CLASSES, (batch_size,))`` from the
   global RNG once per batch (so there an image's class depends on its batch).
3. The official code only takes learned-sigma nets (its ``p_mean_variance`` has no fixed-variance branch);
   here a net without variance channels uses the prior's own rule (the embedded prior: fixed_small).
4. All randomness comes from the per-image generators (x_T, then per reverse step z before z', per undo z);
   official draws from the global RNG in the same order.

Class-conditional + classifier-guided variant (official ``confs/test_inet256_*.yml``; ``model=adm_imagenet256_cond
+classifier=adm_imagenet256``), equal to the official ``test.py`` + ``p_sample`` with ``cond_fn`` on identical
inputs and noise (``tools/equivalence/repaint_classifier.py``):

* labels: needed when the prior is class-conditional (``class_cond: true``: the net gets y at every call, official
  ``model_fn``) or a classifier guides; ``method.class_label`` = ``random_per_batch`` (official quirk: one uniform
  class in [0, 1000) per image, the first draw of the image's generator, before x_T as official draws the classes
  before the noise) or a fixed class index;
* guidance (``method.classifier`` = a ``conf/classifier/*.yaml`` block, null = off; ``method.classifier_scale`` s,
  official 1.0, 0 = off as official): after the injection, with the x_j and the original timestep t_j the net sees,
  mu <- mu + Sigma_j s grad_x log softmax(classifier(x_j, t_j))[label] (guided-diffusion ``condition_mean``; Sigma_j
  = exp(log sigma_j^2) of the step's variance rule, at j = 0 too, where no noise is added);
* cost: one classifier forward + backward per network call (``describe()["classifier"]``: forward_calls,
  backward_calls); only the classifier is differentiated (w.r.t. x_j), never the prior;
* weights: downloaded from the official URLs; no sha256 is pinned for them yet (none published), so
  :mod:`bench.models.assets` uses them with a warning and records them as unverified in the manifest.

Measured (embedded 64-px prior, ``task=inpaint`` (25 % random pixels missing), the first 2 sample photos, PSNR dB;
the masked input scores 11.99): t_T = 20 without jumps (20 NFE) 27.48; t_T = 20 with the official jumps 10 x 10
(110 NFE, the default there) 27.55; t_T = 20, jumps 2 x 4 (74 NFE) 29.59; t_T = 50 without jumps (50 NFE) 28.25;
t_T = 50, jumps 5 x 3 (140 NFE) 30.07. Jumps pay when their points cover the chain (the official 10 of 250 is 4 % of
it; 10 of 20 leaves one jump point, at j = 0). All 8 sample photos (``python -m bench method=repaint task=inpaint``,
input 12.67 dB / SSIM 0.276): the default 30.50 / 0.930 in 124 s of one CPU thread, ``method.jump_length=2
method.jump_n_sample=4`` 31.75 / 0.944 in 87 s (user time of the whole command on a shared 2-core machine).

Cost: NFE = the schedule's reverse steps (2,410 at the defaults; ``t_T + (jump_n_sample - 1) * jump_length *
(number of jump points)`` without nested levels), no backprop; the undo steps cost no network call; with a
classifier, as many classifier forward + backward passes on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench import seeding
from bench.diffusion import VARIANCES, RespacedSchedule, alphas_cumprod, resolve_variance, respaced_betas, \
    respaced_schedule
from bench.methods.prior_method import PriorMethod, check_choice, check_number, check_steps
from bench.models.adm_classifier import load_classifier
from bench.models.prior import to_plain
from bench.methods.repaint_schedule import NO_LIMIT, count_forward_steps, count_network_calls, jump_schedule
from bench.tasks import Degradation, Task

#: ``method.class_label`` value for the official ImageNet quirk: a random class per image (official: per batch)
RANDOM_PER_BATCH = "random_per_batch"


def inject_known(x: Tensor, known: Tensor, mask: Tensor, abar_j: Tensor, z: Tensor) -> Tensor:
    """Known-region injection at level j (official ``p_sample``): m (sqrt(abar) x_known + sqrt(1-abar) z) + (1-m) x."""
    return mask * (abar_j.sqrt() * known + (1 - abar_j).sqrt() * z) + (1 - mask) * x


def classifier_gradient(classifier, x: Tensor, t: Tensor, labels: Tensor, scale: float) -> Tensor:
    """scale * grad_x log softmax(classifier(x, t))[label] per image (official ``test.py::cond_fn``); only the
    classifier is differentiated, w.r.t. its input (its parameters stay frozen)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_probs = F.log_softmax(classifier(x_in, t), dim=-1)
        selected = log_probs[torch.arange(labels.shape[0], device=labels.device), labels]
        return torch.autograd.grad(selected.sum(), x_in)[0] * scale


def condition_mean(mean: Tensor, log_variance: Tensor, gradient: Tensor) -> Tensor:
    """mu + Sigma * gradient, Sigma = exp(log sigma^2) the step's variance (guided-diffusion ``condition_mean``)."""
    return mean.float() + torch.exp(log_variance) * gradient.float()


def reverse_step(model_output, sched: RespacedSchedule, variance: str, j: int, x: Tensor,
                 z: Tensor, guidance=None) -> tuple[Tensor, Tensor]:
    """One guided-diffusion ancestral step j -> j-1 (``p_mean_variance`` + sample): (x_{j-1}, clipped x0^).

    ``guidance(x, t)`` (optional) returns scale * grad_x log p(label | x, t) at the x and model timestep t the net
    sees; the mean moves by the step's variance times it (:func:`condition_mean`), at j = 0 too (as official)."""
    t = sched.timesteps[j].expand(x.shape[0])
    eps, v = model_output(x, t)
    x0 = (sched.sqrt_recip_abar[j] * x - sched.sqrt_recipm1_abar[j] * eps).clamp(-1, 1)
    mean = sched.coef1[j] * x0 + sched.coef2[j] * x
    if j > 0 or guidance is not None:
        log_var = sched.log_variance(variance, j, v)
        if guidance is not None:
            mean = condition_mean(mean, log_var, guidance(x, t))
        if j > 0:
            mean = mean + torch.exp(0.5 * log_var) * z
    return mean, x0


def draw_labels(generators, class_label, num_classes: int, device) -> Tensor:
    """The batch's class labels (B,): ``class_label`` for every image (an int), or ``random_per_batch``: one
    uniform draw in [0, num_classes) from each image's own generator (so an image's label does not depend on the
    batch it is in; official ``test.py`` draws ``th.randint(NUM_CLASSES, (batch_size,))`` from the global RNG
    once per batch, before the sampling noise, which is also when this is drawn)."""
    if class_label == RANDOM_PER_BATCH:
        return torch.stack([torch.randint(num_classes, (), generator=g, device=g.device) for g in generators]) \
            .to(device)
    return torch.full((len(generators),), int(class_label), dtype=torch.long, device=device)


def undo(x: Tensor, beta_next: Tensor, z: Tensor) -> Tensor:
    """The one-step forward noising q(x_{j+1} | x_j) with the respaced beta'_{j+1} (official ``_undo``)."""
    return (1 - beta_next).sqrt() * x + beta_next.sqrt() * z


def repaint_sample(model_output, sched: RespacedSchedule, variance: str, abar: Tensor, betas: Tensor,
                   times: list[int], known: Tensor, mask: Tensor, x_T: Tensor, noise,
                   guidance=None) -> tuple[Tensor, int]:
    """RePaint (Algorithm 1 with the jump schedule); see the module docstring.

    model_output(x, t (B,)) -> (eps, v or None); abar, betas: the respaced tables (t_T,); times: the jump
    schedule; known (B, C, H, W) in [-1, 1] (values under mask = 0 are ignored); mask broadcastable to it,
    1 = known; noise() -> a fresh standard normal like x; guidance: see :func:`reverse_step` (one classifier
    forward + backward per network call). Returns (the last x, not clipped; network calls).
    """
    x, started, nfe = x_T, False, 0
    for j, j_next in zip(times[:-1], times[1:]):
        if j_next < j:  # reverse: inject (from the second reverse step on), then one ancestral step
            z = noise()
            if started:
                x = inject_known(x, known, mask, abar[j], noise())
            x, _ = reverse_step(model_output, sched, variance, j, x, z, guidance)
            started, nfe = True, nfe + 1
        else:  # undo: back up one level
            x = undo(x, betas[j_next], noise())
    return x, nfe


class RePaint(PriorMethod):
    """RePaint on a pixel prior, for the inpainting tasks (operator ``bench.operators.Inpainting``), noiseless."""

    name = "repaint"

    def __init__(self, model: dict, steps: int = 250, jump_length: int = 10, jump_n_sample: int = 10,
                 n_sample: int = 1, jump2_length: int = 1, jump2_n_sample: int = 1, jump3_length: int = 1,
                 jump3_n_sample: int = 1, start_resampling: int = NO_LIMIT, paste_known: bool = False,
                 variance: str | None = None, classifier: dict | None = None, classifier_scale: float = 1.0,
                 class_label: str | int = RANDOM_PER_BATCH):
        super().__init__(model)
        self.steps = check_steps(self.name, steps, fix="steps=250 (official t_T)", maximum=self.train_steps)
        self.schedule_args = dict(t_T=self.steps, jump_length=jump_length, jump_n_sample=jump_n_sample,
                                  n_sample=n_sample, jump2_length=jump2_length, jump2_n_sample=jump2_n_sample,
                                  jump3_length=jump3_length, jump3_n_sample=jump3_n_sample,
                                  start_resampling=start_resampling)
        self.times = jump_schedule(**self.schedule_args)
        if not isinstance(paste_known, bool):
            raise ValueError(f"repaint: paste_known={paste_known!r} must be true or false. "
                             "Fix: method.paste_known=false (official: the known pixels are not pasted back)")
        self.paste_known = paste_known
        if variance is not None:
            check_choice(self.name, "variance", variance, VARIANCES)
        self.variance = variance
        if classifier is not None and not isinstance(to_plain(classifier), dict):
            raise ValueError(f"repaint: classifier={classifier!r} must be a classifier config or null. Fix: "
                             "+classifier=adm_imagenet256 (conf/classifier/), or method.classifier=null (no guidance)")
        self.classifier_cfg = None if classifier is None else to_plain(classifier)
        self.classifier_scale = check_number(self.name, "classifier_scale", classifier_scale, 0.0,
                                             fix="method.classifier_scale=1.0 (official ImageNet setting)")
        if not (class_label == RANDOM_PER_BATCH or (isinstance(class_label, int) and not isinstance(class_label, bool)
                                                    and class_label >= 0)):
            raise ValueError(f"repaint: class_label={class_label!r} is invalid; allowed: {RANDOM_PER_BATCH} or a class "
                             f"index >= 0. Fix: method.class_label={RANDOM_PER_BATCH} (the official ImageNet runs)")
        self.class_label = class_label
        self.classifier = None
        self.num_classes: int | None = None
        self.last_classifier_calls = 0
        self.sched: RespacedSchedule | None = None
        self.abar: Tensor | None = None
        self.betas: Tensor | None = None

    @property
    def nfe(self) -> int:
        return count_network_calls(self.times)

    def unsupported_reason(self, task: Task) -> str | None:
        reason = super().unsupported_reason(task)
        if reason is None and not task.masked:
            reason = (f"repaint needs a keep-mask: it runs the inpainting tasks (operator "
                      f"bench.operators.Inpainting), not {task.name!r}")
        if reason is None and task.sigma > 0:
            reason = (f"repaint is noiseless (the known pixels are replaced outright) and task {task.name!r} has "
                      f"sigma={task.sigma}; run it with task.sigma=0 or use a method with a noise model (ddnm_plus)")
        return reason

    def _prepared(self) -> None:
        self._prepare_classes()
        self.sched = respaced_schedule(self.prior.betas, self.steps, self.device)
        # the respaced beta'_j and abar_j in float64 (official SpacedDiffusion), then float32 as official extracts them
        b = respaced_betas(alphas_cumprod(self.prior.betas.to(torch.float64).cpu()), self.sched.timesteps.tolist())
        self.betas = b.to(self.device, torch.float32)
        self.abar = alphas_cumprod(b).to(self.device, torch.float32)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        reason = self.unsupported_reason(degradation.task)
        if reason is not None:
            raise ValueError(reason)
        self._require_prior()
        op = degradation.operator
        if self.classifier is not None and op.size != self.classifier.image_size:
            raise ValueError(f"repaint: the classifier {self.classifier_cfg.get('name')!r} takes "
                             f"{self.classifier.image_size}-px images (its attention pooling has a fixed size) but "
                             f"these are {op.size} px. Fix: dataset.image_size={self.classifier.image_size}, or "
                             "method.classifier=null")
        with torch.no_grad():
            y_pm, _ = self.measurement(y, degradation)
            known = op.image(op.pinv(y_pm))
            mask = op.mask.to(self.device, torch.float32)[None, None]
            noise = lambda: seeding.randn(generators, op.x_shape, self.device)  # noqa: E731
            model_output, guidance = self.prior.model_output, None
            if self.num_classes is not None:  # labels first (official: the classes, then the noise)
                labels = draw_labels(generators, self.class_label, self.num_classes, self.device)
                if getattr(self.prior, "num_classes", None) is not None:
                    model_output = lambda x, t: self.prior.model_output(x, t, labels)  # noqa: E731
                if self.guided:
                    guidance = lambda x, t: classifier_gradient(  # noqa: E731
                        self.classifier, x, t, labels, self.classifier_scale)
            x_T = noise()
            x, nfe = repaint_sample(model_output, self.sched, self.variance_rule(), self.abar,
                                    self.betas, self.times, known, mask, x_T, noise, guidance)
            if self.paste_known:
                x = mask * known + (1 - mask) * x
        self.last_nfe = nfe
        self.last_classifier_calls = nfe if guidance is not None else 0
        return self.to_image(x)

    @property
    def guided(self) -> bool:
        """Classifier guidance on: a classifier is configured and its scale is > 0 (as official ``test.py``)."""
        return self.classifier_cfg is not None and self.classifier_scale > 0

    def _prepare_classes(self) -> None:
        """Load the classifier (if guided) and fix the label count; fail on mismatches before any work."""
        prior_classes = getattr(self.prior, "num_classes", None)
        self.classifier = load_classifier(self.classifier_cfg, self.device) if self.guided else None
        clf_classes = None if self.classifier is None else self.classifier.out_channels
        if self.classifier is not None and self.classifier.image_size != self.prior.image_size:
            raise ValueError(f"repaint: the classifier {self.classifier_cfg.get('name')!r} is for "
                             f"{self.classifier.image_size}-px images but the prior {self.prior.info.get('model')!r} "
                             f"for {self.prior.image_size}-px ones. Fix: a classifier config with "
                             f"arch.image_size={self.prior.image_size}, or method.classifier=null")
        if prior_classes is not None and clf_classes is not None and prior_classes != clf_classes:
            raise ValueError(f"repaint: the prior has {prior_classes} classes but the classifier {clf_classes}. "
                             "Fix: a classifier trained on the prior's classes, or method.classifier=null")
        self.num_classes = clf_classes if clf_classes is not None else prior_classes
        if (self.num_classes is not None and self.class_label != RANDOM_PER_BATCH
                and self.class_label >= self.num_classes):
            raise ValueError(f"repaint: class_label={self.class_label} is out of range for {self.num_classes} "
                             f"classes. Fix: method.class_label=<0..{self.num_classes - 1}> or {RANDOM_PER_BATCH}")

    def classifier_info(self) -> dict | None:
        """Provenance and cost of the guidance: None when off."""
        if not self.guided:
            return None
        info = dict(getattr(self.classifier, "info", None) or {"name": self.classifier_cfg.get("name")})
        return {**info, "scale": self.classifier_scale, "class_label": self.class_label,
                "forward_calls": self.nfe, "backward_calls": self.nfe,
                "differentiated": "the classifier only, w.r.t. x_t (no backprop through the prior)"}

    def variance_rule(self) -> str:
        """``method.variance`` if set, else the prior's (official RePaint: learned_range)."""
        return resolve_variance(self.variance, self.prior, self.name)

    def describe(self) -> dict:
        return {"name": self.name, "algorithm": "RePaint (Algorithm 1, jump schedule)", "steps": self.steps,
                "nfe": self.nfe, "undo_steps": count_forward_steps(self.times), "schedule": self.schedule_args,
                "paste_known": self.paste_known, "sampler": "DDPM ancestral, respaced",
                "classifier": self.classifier_info(),
                "class_label": self.class_label if self.num_classes is not None else None,
                "variance": self.variance or getattr(self.prior, "variance", None), "model": self.model_info()}
