"""Stable Diffusion inpainting (the survey's latent inpainters): the 9-channel pipeline and latent blending.

Two paths (``method.mode``), both on Stable Diffusion parts (:mod:`bench.models.stable_diffusion`):

* ``pipeline`` (default): diffusers ``StableDiffusionInpaintPipeline`` with the inpainting fine-tune
  ``stable-diffusion-v1-5/stable-diffusion-inpainting`` (UNet input = [noisy latents 4, latent mask 1, latents of
  the masked image 4]), called with its own defaults: the checkpoint's scheduler (PNDM for SD 1.5), 50 steps,
  guidance 7.5, eta 0, strength 1; the prompt is ``method.prompt`` ("" by default); per-image generators. Given a
  4-channel checkpoint the same pipeline runs diffusers' own built-in blending (replacement after each step with
  the initial noise at the next timestep), which reproduces diffusers' 4-channel path.
* ``blend``: latent blending on a plain text-to-image checkpoint (4-channel UNet), the survey's "legacy"
  approach, with optional RePaint jumps ("RePaint in latent space"): :func:`sample_latent_blend`.

Notation: x picture in [0, 1]; m the pixel keep-mask (True = known); E/D the VAE encoder/decoder, latents scaled
by s = ``vae.config.scaling_factor``; z0k = s E(2 x_fill - 1) the encoder's mean of the hole-filled picture; M the
latent keep-mask; A_i = abar of the i-th of K kept timesteps (A_{-1} = 1); eps_g = eps_u + g (eps_c - eps_u)
(classifier-free guidance, one batched UNet call of 2B rows when g > 1).

Blend (one image; the RePaint time list i = K-1, ..., -1 of :func:`bench.methods.repaint_schedule.jump_schedule`
with t_T = K, ``jump_length``, ``jump_n_sample``; 1 = no jumps = the legacy approach)::

    z ~ N(0, I)
    for (a, b) in consecutive pairs of the time list:
        if b < a:   z = M * (sqrt(A_a) z0k + sqrt(1 - A_a) xi) + (1 - M) * z       # known region at the current level
                    x0 = (z - sqrt(1 - A_a) eps_g) / sqrt(A_a)
                    z = sqrt(A_b) x0 + sqrt(1 - A_b - sig^2) eps_g + sig xi'        # DDIM step, sig = eta * DDIM sigma
        else:       z = sqrt(1 - beta'_b) z + sqrt(beta'_b) xi                      # RePaint's undo, beta'_b = 1 - A_b / A_a
    z = M * z0k + (1 - M) * z;   x = (D(z / s) + 1) / 2

The K timesteps are those of the checkpoint's scheduler config (``DDIMScheduler.set_timesteps(K)``: "leading"
spacing with steps_offset 1 for SD, as the pipeline visits); abar comes from its betas in float64. Every xi is
drawn from the image's own generator.

Geometry (both paths). Latent mask rule: a latent cell is known when every pixel it covers is known (min-pool of
m over f x f cells, f the VAE factor), so no cell that covers a missing pixel is overwritten (the pipeline itself
resizes its hole mask with nearest interpolation, its own rule). Images are mapped to the model's resolution R
(UNet sample_size x f: 512 for SD 1.5, or ``method.resolution``): the longer side becomes R, the other keeps the
aspect ratio, both rounded to a multiple of f x the UNet's downsampling (64 for SD); the picture (holes filled
with 0.5 grey first, as the pipeline's masked image) is resized with antialiased bicubic interpolation and
clipped to [0, 1], the mask with nearest; the output is resized back with antialiased bicubic. Same size: no
resampling at all.

Output: with ``paste_known`` (default) the measured pixels are pasted back into the output at the original size,
so known pixels are exactly the measurement (the VAE round trip does not keep them; diffusers' docs warn of
it); ``paste_known: false`` returns the decoded output. Noisy tasks (sigma > 0) run: SD inpainting has no noise
model, so the measured (noisy) pixels are treated as known, encoded, and pasted as measured (clipped to [0, 1]).
Only inpainting tasks (names starting with ``inpaint``; the operator's ``.mask``) run; others are skipped.

Cost: ``last_nfe`` = UNet evaluations per image, counted at the UNet (a guided call counts 2; PNDM makes steps + 1
calls); the VAE encoder/decoder passes per image are counted too (:meth:`describe`). float16 on CUDA, float32 on
the CPU (``method.dtype``).
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor

from bench import seeding
from bench.cli_errors import reject_unknown_keys
from bench.diffusion import alphas_cumprod, respaced_betas
from bench.methods.base import Method
from bench.methods.repaint_schedule import jump_schedule
from bench.models.diffusers_prior import schedule_betas
from bench.models.stable_diffusion import DEFAULT_SOURCES, CallCounter, SDParts, check_revision, encode_text, load_sd
from bench.tasks import Degradation, Task

MODES = ("pipeline", "blend")
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16}
WEIGHT_KEYS = ("source", "revision", "local_dir")


def check_weights(weights: dict | None, mode: str) -> dict:
    """``method.weights``: ``source`` (hub id; null = the mode's default), ``revision`` (40-hex), ``local_dir``."""
    w = dict(weights or {})
    reject_unknown_keys("method.weights", w, WEIGHT_KEYS)
    source = w.get("source") or DEFAULT_SOURCES[mode]
    if "/" not in str(source):
        raise ValueError(f"method.weights.source={source!r} is not a hub id 'owner/name' (e.g. {DEFAULT_SOURCES[mode]}); "
                         "for a local copy use method.weights.local_dir=DIR")
    return {"source": str(source), "revision": check_revision(w.get("revision")), "local_dir": w.get("local_dir") or None}


def _number(key: str, value, low: float, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ValueError(f"sd_inpaint: {key}={value!r} must be a number >= {low}. Fix: {fix}")
    return float(value)


def _int(key: str, value, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"sd_inpaint: {key}={value!r} must be an integer in [{low}, {high}]. Fix: {fix}")
    return int(value)


def latent_keep_mask(keep: Tensor, f: int) -> Tensor:
    """(B, 1, H, W) pixel keep-mask -> (B, 1, H/f, W/f): a cell is known iff all its f x f pixels are (min-pool)."""
    return -F.max_pool2d(-keep.float(), kernel_size=f, stride=f)


@torch.no_grad()
def sample_latent_blend(unet, z0k: Tensor, keep: Tensor, cond: Tensor, uncond: Tensor | None, kept_t: list[int],
                        abar: Tensor, times: list[int], generators: list[torch.Generator], guidance: float,
                        eta: float, prediction_type: str = "epsilon") -> Tensor:
    """Latent blending with RePaint jumps (module docstring). ``kept_t``: the K model timesteps, ascending; ``abar``:
    float64 (T,); ``times``: the time list over indices K-1 .. -1; ``keep``: (B, 1, h, w) latent keep-mask in {0, 1};
    ``uncond`` None: no guidance (one UNet row per image). Returns the final latents with z0k pasted at M."""
    dev, dt = z0k.device, z0k.dtype
    A = abar[kept_t].to(torch.float64)
    beta = respaced_betas(abar.to(torch.float64), kept_t)  # beta'_i = 1 - A_i / A_{i-1}
    a = lambda i: float(A[i]) if i >= 0 else 1.0  # noqa: E731
    shape = tuple(z0k.shape[1:])
    noise = lambda: seeding.randn(generators, shape, dev, dt)  # noqa: E731
    M = keep.to(dt)
    emb = cond if uncond is None else torch.cat([uncond, cond])
    z = noise()
    for i, j in zip(times[:-1], times[1:]):
        if j > i:  # undo: q(z_j | z_i)
            z = (1 - beta[j]).sqrt().item() * z + beta[j].sqrt().item() * noise()
            continue
        ai, aj = a(i), a(j)
        z = M * (ai ** 0.5 * z0k + (1 - ai) ** 0.5 * noise()) + (1 - M) * z
        t = torch.full((z.shape[0],), kept_t[i], device=dev, dtype=torch.long)
        z_in, t_in = (z, t) if uncond is None else (torch.cat([z, z]), torch.cat([t, t]))
        out = unet(z_in, t_in, encoder_hidden_states=emb).sample
        if uncond is not None:
            out_u, out_c = out.chunk(2)
            out = out_u + guidance * (out_c - out_u)
        eps = out if prediction_type == "epsilon" else ai ** 0.5 * out + (1 - ai) ** 0.5 * z  # v -> eps
        x0 = (z - (1 - ai) ** 0.5 * eps) / ai ** 0.5
        sig = eta * ((1 - aj) / (1 - ai) * (1 - ai / aj)) ** 0.5
        z = aj ** 0.5 * x0 + max(1 - aj - sig ** 2, 0.0) ** 0.5 * eps
        if sig > 0:
            z = z + sig * noise()
    return M * z0k + (1 - M) * z


class SDInpaint(Method):
    name = "sd_inpaint"

    def __init__(self, steps: int = 50, mode: str = "pipeline", weights: dict | None = None, prompt: str = "",
                 negative_prompt: str = "", guidance_scale: float = 7.5, eta: float = 0.0, jump_length: int = 10,
                 jump_n_sample: int = 1, paste_known: bool = True, resolution: int | None = None,
                 dtype: str = "auto"):
        super().__init__()
        if mode not in MODES:
            close = difflib.get_close_matches(str(mode), MODES, 1)
            raise ValueError(f"sd_inpaint: mode={mode!r} is not one of {list(MODES)}"
                             + (f"; did you mean {close[0]!r}?" if close else "") + ". Fix: method.mode=pipeline")
        self.mode = mode
        self.steps = _int("steps", steps, 1, 1000, "e.g. steps=50 (the pipeline's default)")
        self.weights = check_weights(weights, mode)
        for key, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(text, str):
                raise ValueError(f"sd_inpaint: {key}={text!r} must be a string. Fix: quote it, method.{key}='\"a photo\"'")
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.guidance_scale = _number("guidance_scale", guidance_scale, 0.0, "method.guidance_scale=7.5 (diffusers' default)")
        self.eta = _number("eta", eta, 0.0, "method.eta=0 (diffusers' default)")
        if self.eta > 1:
            raise ValueError(f"sd_inpaint: eta={eta!r} must be in [0, 1] (0 = DDIM, 1 = DDPM-like). Fix: method.eta=0")
        self.jump_length = _int("jump_length", jump_length, 1, 1000, "method.jump_length=10 (RePaint's)")
        self.jump_n_sample = _int("jump_n_sample", jump_n_sample, 1, 1000,
                                  "method.jump_n_sample=1 (no jumps) or 10 (RePaint's)")
        if mode == "pipeline" and jump_n_sample > 1:
            raise ValueError("sd_inpaint: jumps (jump_n_sample > 1) need mode=blend; the pipeline has no resampling. "
                             "Fix: method.mode=blend, or method.jump_n_sample=1")
        if not isinstance(paste_known, bool):
            raise ValueError(f"sd_inpaint: paste_known={paste_known!r} must be true or false")
        self.paste_known = paste_known
        self.resolution = None if resolution is None else _int("resolution", resolution, 8, 4096,
                                                               "method.resolution=null (the model's own, 512 for SD)")
        if dtype not in DTYPES:
            raise ValueError(f"sd_inpaint: dtype={dtype!r} is not one of {list(DTYPES)}. Fix: method.dtype=auto "
                             "(float16 on CUDA, float32 on the CPU)")
        self.dtype_name = dtype
        self.sd: SDParts | None = None
        self.counter: CallCounter | None = None
        self.last_vae: dict = {}

    # ------------------------------------------------------------------------------------------------ setup
    def unsupported_reason(self, task: Task) -> str | None:
        if not task.masked:
            return (f"sd_inpaint fills masked pixels: it runs the inpainting tasks (inpaint, inpaint_box, ...), "
                    f"not {task.name!r}")
        return None

    def dtype_for(self, device: torch.device) -> torch.dtype:
        chosen = DTYPES[self.dtype_name]
        return chosen or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if self.sd is None:
            w = self.weights
            self.sd = load_sd(w["source"], w["revision"], w["local_dir"], device, self.dtype_for(device))
            self.check_parts(self.sd)
        self.sd.unet.to(device)
        self.sd.vae.to(device)
        self.sd.text_encoder.to(device)
        if self.counter is None:
            self.counter = CallCounter(unet=self.sd.unet, vae_encode=self.sd.vae.encoder, vae_decode=self.sd.vae.decoder)

    def check_parts(self, sd: SDParts) -> None:
        """pipeline: a 9-channel inpainting UNet, or a 4-channel one (diffusers' own built-in blending); blend: 4."""
        have = int(sd.unet.config.in_channels)
        allowed = (9, 4) if self.mode == "pipeline" else (4,)
        if have not in allowed:
            raise ValueError(f"sd_inpaint: mode={self.mode} needs a UNet with {' or '.join(map(str, allowed))} input "
                             f"channels but {sd.origin} has {have}. Fix: method.mode=pipeline (9-channel inpainting "
                             f"checkpoints such as {DEFAULT_SOURCES['pipeline']}), or the weights of a text-to-image "
                             f"checkpoint (e.g. {DEFAULT_SOURCES['blend']})")
        pred = sd.scheduler_config.get("prediction_type", "epsilon")
        if pred not in ("epsilon", "v_prediction"):
            raise ValueError(f"sd_inpaint: {sd.origin} has prediction_type={pred!r}; supported: epsilon, v_prediction")

    # ------------------------------------------------------------------------------------------- geometry
    def work_size(self, h: int, w: int) -> tuple[int, int]:
        """The model-side (height, width): longer side = R, aspect kept, multiples of the model's multiple."""
        R, m = self.resolution or self.sd.resolution, self.sd.multiple
        s = R / max(h, w)
        return max(m, round(h * s / m) * m), max(m, round(w * s / m) * m)

    @staticmethod
    def resize(x: Tensor, size: tuple[int, int], nearest: bool = False) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if nearest:
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)

    # -------------------------------------------------------------------------------------------- restore
    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator]) -> Tensor:
        mask = getattr(degradation.operator, "mask", None)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
            raise ValueError(f"sd_inpaint: task {degradation.name!r} has no (H, W) bool keep-mask operator.mask")
        if self.sd is None:
            self.setup(y.device)
        picture = degradation.frame_image(y).float().clamp(0, 1)
        B, (H, W) = picture.shape[0], picture.shape[-2:]
        keep = mask.to(picture.device).view(1, 1, H, W).expand(B, 1, H, W).float()
        filled = picture * keep + 0.5 * (1 - keep)
        size = self.work_size(H, W)
        x_w, keep_w = self.resize(filled, size), self.resize(keep, size, nearest=True)
        self.counter.reset()
        run = self._pipeline if self.mode == "pipeline" else self._blend
        out = run(x_w, keep_w, generators).float()
        out = self.resize(out, (H, W)).clamp(0, 1)
        per = self.counter.per_image(B)
        self.last_nfe = per["unet"]
        self.last_vae = {"encode": per["vae_encode"], "decode": per["vae_decode"]}
        return out * (1 - keep) + picture * keep if self.paste_known else out

    def _pipeline(self, x: Tensor, keep: Tensor, generators: list[torch.Generator]) -> Tensor:
        from diffusers import StableDiffusionInpaintPipeline

        sd = self.sd
        pipe = StableDiffusionInpaintPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                                              unet=sd.unet, scheduler=sd.make_scheduler(), safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        B = x.shape[0]
        return pipe(prompt=[self.prompt] * B, negative_prompt=[self.negative_prompt] * B if self.negative_prompt else None,
                    image=x, mask_image=1 - keep, height=x.shape[-2], width=x.shape[-1],
                    num_inference_steps=self.steps, guidance_scale=self.guidance_scale, eta=self.eta,
                    generator=list(generators), output_type="pt").images

    def _blend(self, x: Tensor, keep: Tensor, generators: list[torch.Generator]) -> Tensor:
        from diffusers import DDIMScheduler

        sd, dev = self.sd, x.device
        dt = next(sd.unet.parameters()).dtype
        s = float(sd.vae.config.scaling_factor)
        z0k = sd.vae.encode((x * 2 - 1).to(dt)).latent_dist.mode() * s
        M = latent_keep_mask(keep, sd.vae_factor)
        B = x.shape[0]
        cond = encode_text(sd, [self.prompt] * B, dev)
        uncond = encode_text(sd, [self.negative_prompt] * B, dev) if self.guidance_scale > 1 else None
        cfg = {k: v for k, v in sd.scheduler_config.items() if not k.startswith("_")}
        ddim = DDIMScheduler.from_config(cfg)
        ddim.set_timesteps(self.steps)
        kept_t = sorted(int(t) for t in ddim.timesteps)
        abar = alphas_cumprod(schedule_betas(sd.scheduler_config)[0]).to(dev)
        times = jump_schedule(t_T=len(kept_t), jump_length=self.jump_length, jump_n_sample=self.jump_n_sample)
        z = sample_latent_blend(sd.unet, z0k, M, cond, uncond, kept_t, abar, times, generators, self.guidance_scale,
                                self.eta, sd.scheduler_config.get("prediction_type", "epsilon"))
        return (sd.vae.decode(z / s).sample + 1) / 2

    def expected_nfe(self) -> int:
        """UNet evaluations per image that restore() makes (it also counts them: ``last_nfe``): the pipeline's
        scheduler timesteps (PNDM: steps + 1), or the descending steps of blend's time list; x2 with guidance."""
        if self.mode == "pipeline":
            sched = self.sd.make_scheduler()
            sched.set_timesteps(self.steps)
            calls = len(sched.timesteps)
        else:
            times = jump_schedule(t_T=self.steps, jump_length=self.jump_length, jump_n_sample=self.jump_n_sample)
            calls = sum(1 for i, j in zip(times[:-1], times[1:]) if j < i)
        return calls * (2 if self.guidance_scale > 1 else 1)

    def describe(self) -> dict:
        return {
            "name": self.name, "mode": self.mode, "steps": self.steps, "weights": dict(self.weights),
            "sd": self.sd.describe() if self.sd is not None else None,
            "prompt": self.prompt, "negative_prompt": self.negative_prompt, "guidance_scale": self.guidance_scale,
            "eta": self.eta, "jump_length": self.jump_length, "jump_n_sample": self.jump_n_sample,
            "paste_known": self.paste_known, "resolution": self.resolution, "dtype": self.dtype_name,
            **({"nfe_per_image": self.expected_nfe(), "vae_calls_per_image": {"encode": 1, "decode": 1}}
               if self.sd is not None else {}),
            "latent_mask": "known iff all f x f pixels known (min-pool)",
            "resize": "longer side to the model resolution, bicubic antialias (mask nearest), back bicubic antialias",
        }
