"""DDRM-SRLDM: the SRLDM latent 4x-SR model used as the denoiser inside DDRM (Liu, seed paper §3.3, §6.1,
Fig. 3 and Fig. 5). Reproduced as described, including its failure; nothing here "fixes" the method.

Notation: x_t pixel iterate in [-1, 1] units (B, 3, H, W); E = VQ encoder + quant_conv (diffusers
``VQModel.encode``), D = VQ decoder (``VQModel.decode``); c = y' the LR conditioning image in [-1, 1],
(B, 3, H/4, W/4); n_t = eps_theta(cat[z_t, c], t) the SRLDM UNet; a_t = abar_t of the LDM schedule;
t' = the next (smaller) DDRM timestep (-1 after the last, a_{-1} = 1).

DDRM (:func:`bench.methods.ddrm.ddrm_sample`, unchanged) needs eps_t, a noise prediction in pixel space,
at every step. Liu gets it from SRLDM, whose UNet predicts noise in the VQ latent space, in one of two
ways (Fig. 5; ``strategy``):

* strategy 1 (Fig. 3, the one Liu adopts)::

      z_t      = E(x_t)
      n_t      = eps_theta(cat[z_t, c], t)
      z_{t'}   = sqrt(a_t') (z_t - sqrt(1 - a_t) n_t) / sqrt(a_t) + sqrt(1 - a_t') n_t   (DDIM, eta = 0)
      x'_{t'}  = D(z_{t'})
      eps_t    = x_t - x'_{t'}                                                           (raw difference)

* strategy 2 (Fig. 5, the other variant; "generates complete noise"): eps_t = D(n_t), with n_t as above.

then DDRM's own update: x0_t = (x_t - sqrt(1 - a_t) eps_t) / sqrt(a_t) and eq. (8) in the spectral space.

Decisions where the text is silent or ambiguous (each one recorded in :meth:`DDRMSRLDM.describe`):

* eps formula. Fig. 3's caption: "The error prediction eps_t is obtained by x_t - D(z_{t-1})"; §3.3:
  "compute eps_t by taking the difference between x_t and x'_{t-1}". We use exactly that raw difference,
  with no rescaling. Ambiguity: the difference is a one-step increment, not a unit-variance noise; a
  normalised reading eps_t = (x_t - x'_{t-1}) / sqrt(1 - a_t) is not in the text (and would change little
  at large t, where sqrt(1 - a_t) ~ 1, and inflate eps at small t). Neither recovers eps even for a perfect
  model: with x'_{t-1} = sqrt(a_{t-1}) x0 + sqrt(1 - a_{t-1}) eps the difference is
  (sqrt(a_t) - sqrt(a_{t-1})) x0 + (sqrt(1 - a_t) - sqrt(1 - a_{t-1})) eps.
* quantisation. z_t = E(x_t) is NOT quantised: CompVis' LDM trains and samples the diffusion on the
  pre-quantisation latents of its VQ first stage (``VQModelInterface.encode`` returns h), and diffusers'
  ``VQModel.encode`` returns them too. D quantises, as the pipeline's final decode does
  (``VQModel.decode(..., force_not_quantize=False)``, the default); the same D decodes n_t in strategy 2.
* the latent step. "a noise scheduler" is the LDM's DDIM scheduler (hub config: scaled_linear betas
  0.0015..0.0155, T = 1000, clip_sample false, set_alpha_to_one true) stepping from DDRM's t to DDRM's
  next timestep t', with eta = 0 (diffusers' ``DDIMScheduler.step`` default; Liu does not name an eta).
  Written out above with the scheduler's ``alphas_cumprod`` / ``final_alpha_cumprod``; the test checks it
  against ``DDIMScheduler.step``.
* schedules. DDRM's a_t is the same LDM table, padded ([1, abar_0, ...]) so that a_{-1} = 1 as DDRM's
  ``compute_alpha``; timesteps are DDRM's uniform skip over T = 1000 (``range(0, 1000, 1000 // steps)``),
  and the UNet is called with DDRM's 0-based t (CompVis convention; diffusers' pipeline would use t + 1).
* conditioning. y is turned into a picture (``degradation.measurement_image``) and then into the LR
  input by SRLDM's own rule (:meth:`bench.methods.srldm.SRLDM.lr_input`): for ``sr4`` the H/4 measurement
  itself, otherwise the H x W picture downscaled 4x (bicubic, antialiased); clipped to [0, 1], mapped to
  [-1, 1], concatenated with z_t at every step. Liu: "down-scaled to resolution 64 x 64" for 256 images.
  If H/4 is not a multiple of the UNet's downsampling, z_t and c are padded (replicate) and n_t cropped.

Cost: per image and DDRM step, one UNet call, one VQ encode, one VQ decode; NFE = UNet calls =
``len(timesteps)`` (= ``steps`` when it divides 1000). Pixel-space DDRM plus two autoencoder passes per
step: Liu's throughput is 0.1 img/s, the same as DDRM.

Where the outputs go wrong (do not read them as restorations):

* Liu's Table 1 (SR 64 -> 256): PSNR 14.68 / SSIM 0.141 / FID 135, far below the bicubic baseline
  (25.8 / 0.745); deblur 18.2 / 0.309, denoise 22.1 / 0.588, noisy SR 13.4 / 0.109; "obvious artifacts and
  color distortion" (Fig. 4). Strategy 2 "generates complete noise" (§3.3, §6.1).
* Why (Liu's reading, and what the formulas show): the VQ autoencoder is trained on natural images, so
  neither E(x_t) of a noisy pixel iterate nor D(n_t) of a latent noise map is meaningful ("noise isn't
  transformed properly forth and back"); pixel noise (DDRM: unit variance in [-1, 1] pixels) and latent
  noise (the LDM's, per latent channel, at 1/16 of the pixels) differ in scale and statistics. And the
  raw difference makes DDRM's x0 prediction x0 = ((1 - sqrt(1 - a_t)) x_t + sqrt(1 - a_t) x'_{t'}) /
  sqrt(a_t), ~ 38 x'_{t'} at the first step (LDM schedule: a_999 = 7e-4, 1/sqrt(a) = 38): DDRM only pins
  the observed spectral coordinates to y, the unobserved ones carry whatever E/UNet/D make of the noise.
  In strategy 2, |D(n_t)| is not the unit pixel noise that x_t carries, so x0 = (x_t - sqrt(1 - a_t)
  D(n_t)) / sqrt(a_t) keeps most of x_t / sqrt(a_t) and the unobserved coordinates grow by
  sqrt(a_t' / a_t) per step, up to ~1 / sqrt(a_T) overall: the clamp to [0, 1] then shows pure noise.
* Tiny random model (``method.ldm.source=tiny``; measured once with scratch code on 4 ImageNet pictures
  at 32 x 32, 20 steps, and on one picture at 4 / 20 / 100 steps; not asserted by the tests). Its VQ
  decoder is almost input-independent (std 0.24 for D(E(x)) and for D(noise) alike), so:
  strategy 1: eps_t ~ x_t - const, DDRM never removes the initial noise in the unobserved coordinates:
  sr4 gives y's 4x4 block means under dense colour noise, PSNR 12.5 / 12.8 / 13.9 dB at 4 / 20 / 100
  steps vs 23.3 dB for bicubic (Liu's 14.68 is the real model at 256 px: not comparable), 4-8 % of the
  values clipped; deblur_gauss gives a recognisable picture with high-frequency colour noise in the thresholded directions, ~20.5-21.0 dB vs
  24.8 dB for the blurred input. Strategy 2: x_t's std grows from 1 to ~30 over the steps; the outputs
  are saturated colour noise (90-99 % of the values at 0 or 1, PSNR 5.5-6.3 dB on both tasks), as Liu
  reports ("complete noise").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.diffusion import timesteps
from bench.methods.base import Method
from bench.methods.ddrm import ddrm_sample
from bench.methods.prior_method import PriorMethod, measurement_pm
from bench.methods.srldm import SRLDM
from bench.tasks import Degradation

STRATEGIES = (1, 2)
SCHEDULES = ("ldm",)


def ddim_latent_step(n_t: Tensor, z_t: Tensor, a_t: Tensor, a_next: Tensor) -> Tensor:
    """DDIM (eta = 0, eps-prediction, no clipping) from z_t to z_{t'}: the LDM scheduler's update."""
    z0 = (z_t - (1 - a_t).sqrt() * n_t) / a_t.sqrt()
    return a_next.sqrt() * z0 + (1 - a_next).sqrt() * n_t


def make_eps_fn(unet, vqvae, c: Tensor, abar_padded: Tensor, seq: list[int], strategy: int, multiple: int = 1):
    """The pixel-space eps_fn(x_t, t) that DDRM calls, built from SRLDM (module docstring, strategy 1/2).

    c: LR conditioning in [-1, 1], (B, 3, h, w) with (h, w) = the latent size; abar_padded (T+1,):
    [1, abar_0, ...] of the LDM scheduler (a_{-1} = 1 = its ``final_alpha_cumprod``); seq: DDRM's increasing
    timesteps (the next step of seq[k] is seq[k-1], -1 after seq[0]); multiple: the UNet's downsampling
    (z_t and c are padded to it, n_t cropped back).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"ddrm_srldm: strategy={strategy!r}; allowed: {list(STRATEGIES)}")
    t_next = dict(zip(seq, [-1] + list(seq[:-1])))
    dtype = next(unet.parameters()).dtype
    h, w = c.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    c_in = F.pad(c, (0, pw, 0, ph), mode="replicate") if ph or pw else c
    c_in = c_in.to(dtype)

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        step = int(t[0])  # DDRM calls with one t for the whole batch
        z_t = vqvae.encode(x_t.to(dtype)).latents  # pre-quantisation latents (no Q)
        if tuple(z_t.shape[-2:]) != (h, w):
            raise ValueError(f"ddrm_srldm: the latent is {tuple(z_t.shape[-2:])} but the LR input is {(h, w)}")
        z_in = F.pad(z_t, (0, pw, 0, ph), mode="replicate") if ph or pw else z_t
        n_t = unet(torch.cat([z_in, c_in], dim=1), t).sample[..., :h, :w]
        if strategy == 2:
            eps = vqvae.decode(n_t).sample  # D(n_t): "decoding noise" (Fig. 5 right)
        else:
            a = abar_padded.to(z_t.device, z_t.dtype)
            z_next = ddim_latent_step(n_t, z_t, a[step + 1], a[t_next[step] + 1])
            x_next = vqvae.decode(z_next).sample  # x'_{t-1} = D(z_{t-1}) (quantised, as the pipeline)
            eps = x_t.to(dtype) - x_next  # Fig. 3: eps_t = x_t - D(z_{t-1}), raw difference
        return eps.to(x_t.dtype)

    return eps_fn


class DDRMSRLDM(Method):
    """DDRM's update with an eps built from SRLDM (``conf/method/ddrm_srldm.yaml``; Liu: 100 steps)."""

    name = "ddrm_srldm"
    requires_linear = True

    def __init__(self, ldm: dict | None = None, steps: int = 100, eta: float = 0.85, eta_b: float = 1.0,
                 strategy: int = 1, schedule: str = "ldm"):
        super().__init__()
        for key, val in (("eta", eta), ("eta_b", eta_b)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 <= val <= 1.0:
                raise ValueError(f"ddrm_srldm: {key}={val!r} must be a number in [0, 1]. Fix: method.{key}=0.85")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"ddrm_srldm: steps={steps!r} must be an integer in [1, 1000]. Fix: steps=100")
        if isinstance(strategy, bool) or strategy not in STRATEGIES:
            raise ValueError(f"ddrm_srldm: strategy={strategy!r}; allowed: {list(STRATEGIES)} (1 = decode "
                             f"the DDIM-stepped latent and take the difference with x_t, 2 = decode the "
                             f"predicted latent noise). Fix: method.strategy=1")
        if schedule not in SCHEDULES:
            raise ValueError(f"ddrm_srldm: schedule={schedule!r}; allowed: {list(SCHEDULES)} (DDRM's abar is "
                             f"the LDM scheduler's, since SRLDM is the denoiser)")
        # the SRLDM method owns loading (tiny | hub | local_dir) and the LR input rule; we reuse both
        self._srldm = SRLDM(ldm if ldm is not None else {"source": "tiny"}, steps=steps)
        self.steps, self.eta, self.eta_b = steps, float(eta), float(eta_b)
        self.strategy, self.schedule = int(strategy), schedule
        self.seq = timesteps(steps, 1000, "uniform")
        self.abar_padded: Tensor | None = None

    @property
    def ldm(self):
        return self._srldm.ldm

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self._srldm.setup(device)
        sched = self.ldm.make_scheduler()
        cfg = sched.config
        if cfg.prediction_type != "epsilon" or cfg.clip_sample or cfg.thresholding:
            raise ValueError(f"ddrm_srldm: the LDM scheduler must be eps-prediction DDIM without clipping or "
                             f"thresholding (the hub config); got prediction_type={cfg.prediction_type!r}, "
                             f"clip_sample={cfg.clip_sample}, thresholding={cfg.thresholding}")
        T = int(cfg.num_train_timesteps)
        if T != 1000:
            raise ValueError(f"ddrm_srldm: the LDM scheduler has {T} training timesteps; DDRM's uniform skip "
                             f"here assumes 1000 (the hub model)")
        final = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32).reshape(1)
        self.abar_padded = torch.cat([final, sched.alphas_cumprod.float()])

    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        if self.ldm is None or self.abar_padded is None:
            self.setup(self.device)
        op = degradation.operator
        H, W = op.x_shape[-2:]
        f = self.ldm.scale_factor
        if H % f or W % f:
            raise ValueError(f"ddrm_srldm: image size {H}x{W} must be divisible by the VQ factor {f} "
                             f"(z_t = E(x_t) has to match the LR input)")
        with torch.no_grad():
            y = y.to(self.device, torch.float32).reshape(y.shape[0], -1)
            lr, _ = self._srldm.lr_input(degradation.frame_image(y), (H, W))
            c = lr.clamp(0, 1) * 2 - 1
            eps_fn = make_eps_fn(self.ldm.unet, self.ldm.vqvae, c, self.abar_padded, self.seq, self.strategy,
                                 self.ldm.unet_multiple)
            y_pm, sigma_y = measurement_pm(y, degradation, self.device)  # as DDRM: 2y - A(1), 2 sigma
            x0 = ddrm_sample(eps_fn, op, y_pm, sigma_y, self.abar_padded, self.seq, self.eta, self.eta_b,
                             generators)
        self.last_nfe = len(self.seq)
        return PriorMethod.to_image(x0)

    def describe(self) -> dict:
        n = len(self.seq)
        eps = {1: "eps_t = x_t - D(DDIM_eta0(z_t = E(x_t), n_t, t -> t_next)) (raw difference, Fig. 3)",
               2: "eps_t = D(n_t) (decoded latent noise, Fig. 5)"}[self.strategy]
        return {
            "name": self.name, "steps": self.steps, "strategy": self.strategy, "eps": eps,
            "eta": self.eta, "eta_b": self.eta_b, "schedule": "ldm scheduler alphas_cumprod (scaled_linear)",
            "timesteps": list(self.seq), "latent_step": "DDIM eta=0 to the next DDRM timestep",
            "encode": "VQModel.encode (pre-quantisation)", "decode": "VQModel.decode (quantised)",
            "lr_input": "SR: measurement picture; other tasks: bicubic antialias downscale by the model factor",
            "nfe": n, "nfe_per_image": n, "unet_calls_per_image": n, "vae_encodes_per_image": n,
            "vae_decodes_per_image": n, "sigma_y_units": "[-1, 1] (2 x task sigma)",
            "ldm": {**self._srldm.ldm_cfg, **(self.ldm.describe() if self.ldm is not None else {})},
        }
