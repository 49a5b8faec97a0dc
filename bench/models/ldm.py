"""The latent-diffusion 4x super-resolution model (Rombach et al. 2022, "SRLDM") from diffusers parts.

An :class:`LDMSR` is the three parts of diffusers' ``LDMSuperResolutionPipeline``:

* ``unet``: ``UNet2DModel`` with 6 input channels (3 latent + 3 LR-image channels, concatenated) and 3
  output channels (the noise prediction eps), running at the LR resolution;
* ``vqvae``: ``VQModel`` first stage, f=4 (3 levels of blocks, 2 downsamplings), 3 latent channels;
* ``scheduler_config``: the ``DDIMScheduler`` config. A fresh scheduler is made per call
  (:meth:`LDMSR.make_scheduler`) because diffusers schedulers keep per-call state (timesteps).

Sources (:func:`load_ldm_sr`):

* a local diffusers-format directory with ``unet/``, ``vqvae/``, ``scheduler/`` subfolders as written by
  ``save_pretrained`` (config ``method.ldm.local_dir=/path``), e.g. made on a machine with internet by
  huggingface_hub's CLI: ``hf download CompVis/ldm-super-resolution-4x-openimages --local-dir /path``;
* the hub id ``CompVis/ldm-super-resolution-4x-openimages`` through the huggingface_hub cache
  (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``); with ``HF_HUB_OFFLINE=1`` / ``BENCH_OFFLINE=1`` only the cache
  is read (``local_files_only=True``) and a missing model is an :class:`AssetError` that says the fix.

* ``method.ldm.source=embedded`` (the CLI default): :data:`EMBEDDED_DIR`, the small model this project
  trained on an H100 and ships (card ``bench/priors/ldm_sr_tiny.md``; weak but meaningful).

:func:`tiny_ldm_sr` builds tiny randomly initialised parts with the same interfaces and the hub's
scheduler config, for tests (``method.ldm.source=tiny``). Its outputs are NOT meaningful restorations.

Facts (reference-implementations.md A5; CompVis ``models/ldm/bsr_sr/config.yaml``): ``linear_start 0.0015,
linear_end 0.0155, timesteps 1000``; CompVis' "linear" schedule is linspace of sqrt(beta), squared, which
is diffusers' ``scaled_linear``. The hub ``scheduler/scheduler_config.json`` is a ``DDIMScheduler`` with
``beta_start 0.0015, beta_end 0.0155, beta_schedule scaled_linear, clip_sample false, steps_offset 1,
set_alpha_to_one true`` (:data:`HUB_SCHEDULER_CONFIG`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.models.assets import AssetError, _is_offline

HUB_ID = "CompVis/ldm-super-resolution-4x-openimages"
#: the small LDM-SR model the package ships (``method.ldm.source=embedded``; card bench/priors/ldm_sr_tiny.md)
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "priors" / "ldm_sr_tiny"
SUBFOLDERS = ("unet", "vqvae", "scheduler")

#: the hub scheduler config (A5), as DDIMScheduler keyword arguments
HUB_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0155,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
}


@dataclass
class LDMSR:
    unet: torch.nn.Module  # diffusers.UNet2DModel
    vqvae: torch.nn.Module  # diffusers.VQModel
    scheduler_config: dict
    origin: str = ""  # where the weights came from (provenance)
    meta: dict = field(default_factory=dict)

    def make_scheduler(self):
        """A fresh ``DDIMScheduler`` from :attr:`scheduler_config` (schedulers are stateful)."""
        from diffusers import DDIMScheduler

        cfg = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        return DDIMScheduler.from_config(cfg)

    @property
    def scale_factor(self) -> int:
        """Output/LR side ratio = the VQ decoder's upsampling, 2 ** (levels - 1) (4 for the hub model)."""
        return 2 ** (len(self.vqvae.config.block_out_channels) - 1)

    @property
    def unet_multiple(self) -> int:
        """The UNet's total downsampling; the LR side must be a multiple of it (8 for the hub model)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def to(self, device) -> "LDMSR":
        self.unet.to(device)
        self.vqvae.to(device)
        return self

    def describe(self) -> dict:
        return {"origin": self.origin, "scale_factor": self.scale_factor,
                "unet_parameters": sum(p.numel() for p in self.unet.parameters()),
                "vqvae_parameters": sum(p.numel() for p in self.vqvae.parameters()),
                "scheduler": {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")},
                **self.meta}


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def _hf_cache_dir() -> str | None:
    """The hub cache directory from the environment *now* (huggingface_hub reads it once at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def _fix_text(source: str) -> str:
    return (f"Fix, one of:\n"
            f"  - on a machine with internet: hf download {source} --local-dir /path/ldm-sr, "
            f"copy it here, and pass method.ldm.local_dir=/path/ldm-sr\n"
            f"  - fill the hub cache (HF_HOME / HF_HUB_CACHE) with {source} and keep HF_HUB_OFFLINE=1\n"
            f"  - unset HF_HUB_OFFLINE / BENCH_OFFLINE to let it download\n"
            f"  - method.ldm.source=embedded for the small shipped model (offline, weak), or tiny (random)")


def load_ldm_sr(source: str | None, local_dir: str | None, device, *, cache_dir: str | None = None) -> LDMSR:
    """Load the LDM 4x SR parts from ``local_dir`` (takes precedence) or the hub id ``source``.

    ``cache_dir`` overrides the hub cache directory (default: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, else
    huggingface_hub's default). Offline (``HF_HUB_OFFLINE=1`` or ``BENCH_OFFLINE=1``) only cached files
    are used. Every failure to find or read the parts is an :class:`AssetError` naming the fix.
    """
    from diffusers import DDIMScheduler, UNet2DModel, VQModel

    if local_dir:
        root = Path(local_dir).expanduser()
        missing = [s for s in SUBFOLDERS if not (root / s).is_dir()]
        if missing:
            raise AssetError(
                f"method.ldm.local_dir={local_dir}: missing subfolder(s) {missing}; a diffusers-format "
                f"directory needs {list(SUBFOLDERS)} (as written by save_pretrained or "
                f"`hf download {HUB_ID} --local-dir {local_dir}`).")
        where, kw, origin = str(root), {"low_cpu_mem_usage": False}, f"local:{root.resolve()}"
    elif source:
        offline = _is_offline(None)
        where = source
        kw = {"cache_dir": cache_dir or _hf_cache_dir(), "local_files_only": offline, "low_cpu_mem_usage": False}
        origin = f"hub:{source}"
    else:
        raise AssetError(f"no LDM source: set method.ldm.source={HUB_ID} (or embedded | tiny) or "
                         f"method.ldm.local_dir=/path/to/diffusers-dir")
    try:
        unet = UNet2DModel.from_pretrained(where, subfolder="unet", **kw)
        vqvae = VQModel.from_pretrained(where, subfolder="vqvae", **kw)
        sched_cfg = dict(DDIMScheduler.load_config(where, subfolder="scheduler", **kw))
    except (OSError, ValueError) as e:  # diffusers/huggingface_hub raise EnvironmentError (OSError) subclasses
        if local_dir:
            raise AssetError(f"could not load the LDM SR parts from method.ldm.local_dir={local_dir}: {e}") from e
        state = ("is not in the hub cache "
                 f"{kw['cache_dir'] or '(huggingface_hub default)'} and downloads are off (HF_HUB_OFFLINE=1 "
                 "or BENCH_OFFLINE=1)" if kw["local_files_only"] else "could not be downloaded or read")
        raise AssetError(f"LDM SR model {source!r} {state}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}\n" + _fix_text(source)) from e
    if unet.config.in_channels != 2 * unet.config.out_channels:
        raise AssetError(f"{origin}: the UNet must take [latent, LR image] concatenated (in_channels = 2 * "
                         f"out_channels), got in={unet.config.in_channels}, out={unet.config.out_channels}")
    ldm = LDMSR(_frozen(unet), _frozen(vqvae), sched_cfg, origin=origin,
                meta={"name_or_path": str(getattr(unet.config, "_name_or_path", where))})
    return ldm.to(device)


def tiny_ldm_sr(seed: int = 0, device="cpu") -> LDMSR:
    """Tiny random LDM SR parts (UNet 6->3 channels with 2 levels, VQ f=4 with 3 latent channels) and the
    hub's DDIM scheduler config. Deterministic in ``seed``; the global RNG state is restored afterwards.
    For tests and the offline CLI default only: the outputs are NOT meaningful."""
    from diffusers import DDIMScheduler, UNet2DModel, VQModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DModel(
            sample_size=16, in_channels=6, out_channels=3, layers_per_block=1,
            block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8,
        )
        vqvae = VQModel(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
            latent_channels=3, num_vq_embeddings=32, vq_embed_dim=3, norm_num_groups=4, sample_size=32,
        )
    sched_cfg = dict(DDIMScheduler(**HUB_SCHEDULER_CONFIG).config)
    ldm = LDMSR(_frozen(unet), _frozen(vqvae), sched_cfg, origin=f"tiny-random(seed={int(seed)})",
                meta={"meaningful": False})
    return ldm.to(device)
