"""Stable Diffusion parts (text-conditioned latent diffusion) for ``method=sd_inpaint``: load, pin, count.

:class:`SDParts` holds what both of sd_inpaint's paths need, loaded component by component (no safety checker,
no feature extractor: a benchmark must not blank images, and they are 1.2 GB we do not use):

* ``unet``: ``UNet2DConditionModel`` (9 input channels for an inpainting checkpoint, 4 for a text-to-image one);
* ``vae``: ``AutoencoderKL`` (f = 2 ** (levels - 1), 8 for SD; latents scaled by ``vae.config.scaling_factor``);
* ``text_encoder`` + ``tokenizer``: transformers' ``CLIPTextModel`` and ``CLIPTokenizer``;
* ``scheduler_config``: the checkpoint's ``scheduler/scheduler_config.json`` (its ``_class_name`` names the class).

Sources (``method.weights``), in this order:

* ``local_dir``: a diffusers-format directory with ``unet/ vae/ text_encoder/ tokenizer/ scheduler/`` (what
  ``save_pretrained`` or ``hf download <id> --local-dir DIR`` writes); no network, no revision;
* ``source`` (a hub id) at ``revision`` (a 40-hex commit) through the huggingface_hub cache (``$HF_HUB_CACHE`` or
  ``$HF_HOME/hub``); offline (``HF_HUB_OFFLINE=1`` / ``BENCH_OFFLINE=1``) only the cache is read. A hub id without a
  pinned commit is refused: :data:`PINNED_REVISIONS` holds the commits this project pins, and it has none yet
  (no session could reach the Hub to read them; the fix is in the error).

transformers is an optional dependency (``pip install -e ".[sd]"``); a missing one is an :class:`AssetError` that
says so. Parts are frozen (eval, no grad) and moved to the device in the requested dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.models.assets import AssetError, _is_offline
from bench.models.ldm import _frozen, _hf_cache_dir

#: the default checkpoint of each sd_inpaint path: the 9-channel inpainting fine-tune and the plain text-to-image
#: model it was initialised from (both CreativeML OpenRAIL-M; docs/methods.md "Stable Diffusion weights")
DEFAULT_SOURCES = {"pipeline": "stable-diffusion-v1-5/stable-diffusion-inpainting",
                   "blend": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
#: hub id -> pinned commit (40 hex). PLACEHOLDER: None = not pinned yet; the loader refuses an unpinned hub id
#: (pass method.weights.revision=<commit> or method.weights.local_dir=DIR). Fill in the commit you verified.
PINNED_REVISIONS: dict[str, str | None] = {src: None for src in DEFAULT_SOURCES.values()}
#: the unconditional latent diffusion prior of conf/model/ldm_celebahq256.yaml (bench/models/latent.py): unpinned too
PINNED_REVISIONS["CompVis/ldm-celebahq-256"] = None
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class SDParts:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    origin: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def vae_factor(self) -> int:
        """Pixel side / latent side: 2 ** (VAE levels - 1) (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def multiple(self) -> int:
        """Pixel sides must be multiples of this: the VAE factor times the UNet's downsampling (64 for SD)."""
        return self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The training resolution in pixels: UNet ``sample_size`` x VAE factor (512 for SD 1.x)."""
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * self.vae_factor

    def make_scheduler(self):
        """A fresh scheduler of the checkpoint's class and config (schedulers keep per-call state)."""
        import diffusers

        cfg = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        return getattr(diffusers, self.scheduler_config.get("_class_name", "PNDMScheduler")).from_config(cfg)

    def describe(self) -> dict:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"origin": self.origin, "unet_in_channels": int(self.unet.config.in_channels),
                "resolution": self.resolution, "vae_factor": self.vae_factor,
                "dtype": str(next(self.unet.parameters()).dtype).replace("torch.", ""),
                "parameters": {"unet": count(self.unet), "vae": count(self.vae), "text_encoder": count(self.text_encoder)},
                "scheduler": self.scheduler_config.get("_class_name"), **self.meta}


def check_revision(revision, key: str = "method.weights") -> str | None:
    """None or a 40-hex commit (lower case); anything else (a branch, a tag, a short hash) is a ValueError.
    ``key``: the config node the value came from (``method.weights`` for sd_inpaint, ``model`` for latent priors)."""
    if revision in (None, ""):
        return None
    rev = str(revision).strip().lower()
    if not _COMMIT.match(rev):
        raise ValueError(f"{key}.revision={revision!r} must be a full 40-hex commit hash (a branch or tag such "
                         "as 'main' moves, so runs would not be reproducible). Fix: copy the commit from the model "
                         f"page's 'Files and versions' history, or set {key}.local_dir=DIR")
    return rev


def _fix_text(source: str, key: str = "method.weights") -> str:
    return (f"Fix, one of:\n"
            f"  - on a machine with internet: hf download {source} --revision <commit> --local-dir /path/sd "
            f"(the model's subfolders are enough), copy it here, pass {key}.local_dir=/path/sd\n"
            f"  - pass {key}.revision=<40-hex commit of {source}> with the hub cache (HF_HOME / HF_HUB_CACHE) "
            f"filled, or downloads allowed (unset HF_HUB_OFFLINE / BENCH_OFFLINE)")


#: transformers >= 5 swaps layers for kernels downloaded from the Hub unless told not to (and fails without the
#: ``kernels`` package): off, so a run uses the checkpoint's own layers and never reaches the network for code
_NO_HUB_KERNELS: dict = {}


def _classes():
    try:
        import transformers
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as e:
        raise AssetError("Stable Diffusion parts (method=sd_inpaint, model kind sd) need the transformers package (CLIP "
                         "text encoder and tokenizer), which is "
                         f"not installed ({e}). Fix: pip install -e \".[sd]\" (or pip install transformers)") from e
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    if int(transformers.__version__.split(".")[0]) >= 5:
        _NO_HUB_KERNELS["use_kernels"] = False
    return UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer, DDIMScheduler


def resolve_source(source: str | None, revision: str | None, local_dir: str | None, subfolders,
                   key: str = "method.weights") -> tuple[str, dict, str]:
    """``(where, from_pretrained kwargs, origin)`` of a diffusers-format model: ``local_dir`` (takes precedence; must
    hold ``subfolders``) or the hub id ``source`` at ``revision`` (else the pinned commit of :data:`PINNED_REVISIONS`;
    an unpinned hub id is refused) through the hub cache (offline: cache only). Failures are :class:`AssetError` s."""
    if local_dir:
        root = Path(local_dir).expanduser()
        missing = [s for s in subfolders if not (root / s).is_dir()]
        if missing:
            raise AssetError(f"{key}.local_dir={local_dir}: missing subfolder(s) {missing}; a diffusers-format "
                             f"directory needs {list(subfolders)} (as save_pretrained or `hf download` writes them)")
        return str(root), {}, f"local:{root.resolve()}"
    if source:
        revision = check_revision(revision, key) or PINNED_REVISIONS.get(source)
        if revision is None:
            raise AssetError(f"{key}.source={source} has no pinned revision: this project pins hub weights by "
                             f"commit (bench/models/stable_diffusion.py PINNED_REVISIONS has a placeholder for it) and "
                             f"will not load a moving branch.\n" + _fix_text(source, key))
        kw = {"cache_dir": _hf_cache_dir(), "local_files_only": _is_offline(None), "revision": revision}
        return source, kw, f"hub:{source}@{revision}"
    raise AssetError(f"{key} needs source=<hub id> (+ revision) or local_dir=/path/to/diffusers-dir")


def load_error(e: Exception, source: str | None, revision: str | None, local_dir: str | None, kw: dict,
               what: str, key: str = "method.weights") -> AssetError:
    """The :class:`AssetError` for a diffusers / transformers load failure ``e`` (missing files, bad configs)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if local_dir:
        return AssetError(f"could not load the {what} from {key}.local_dir={local_dir}: {type(e).__name__}: {first}")
    state = (f"is not in the hub cache {kw['cache_dir'] or '(huggingface_hub default)'} and downloads are off "
             "(HF_HUB_OFFLINE=1 or BENCH_OFFLINE=1)" if kw["local_files_only"] else "could not be downloaded or read")
    return AssetError(f"{what} {source}@{revision} {state}: {type(e).__name__}: {first}\n" + _fix_text(source, key))


def load_sd(source: str | None, revision: str | None, local_dir: str | None, device, dtype: torch.dtype,
            key: str = "method.weights") -> SDParts:
    """The SD parts from ``local_dir`` (takes precedence) or the hub id ``source`` at ``revision`` (else the pinned
    commit of :data:`PINNED_REVISIONS`); every failure to find or read them is an :class:`AssetError` naming the fix.
    ``key``: the config node the arguments came from, for the messages."""
    UNet, VAE, TextModel, Tokenizer, Sched = _classes()
    where, kw, origin = resolve_source(source, revision, local_dir, SUBFOLDERS, key)
    revision = kw.get("revision")
    try:
        unet = UNet.from_pretrained(where, subfolder="unet", low_cpu_mem_usage=False, torch_dtype=dtype, **kw)
        vae = VAE.from_pretrained(where, subfolder="vae", low_cpu_mem_usage=False, torch_dtype=dtype, **kw)
        text_encoder = TextModel.from_pretrained(where, subfolder="text_encoder", **kw, **_NO_HUB_KERNELS)
        tokenizer = Tokenizer.from_pretrained(where, subfolder="tokenizer", **kw)
        sched = dict(Sched.load_config(where, subfolder="scheduler", **kw))
    except (OSError, ValueError) as e:  # huggingface_hub / transformers raise EnvironmentError (OSError) subclasses
        raise load_error(e, source, revision, local_dir, kw, "SD parts" if local_dir else "SD model", key) from e
    # the diffusers models are loaded in dtype (keeping any module they mark float32); the text encoder is cast
    return SDParts(_frozen(unet).to(device), _frozen(vae).to(device), _frozen(text_encoder).to(device=device, dtype=dtype),
                   tokenizer, sched, origin=origin)


def encode_text(parts: SDParts, prompts: list[str], device) -> torch.Tensor:
    """CLIP embeddings of ``prompts`` padded to the tokenizer's length (as the SD pipelines encode them)."""
    tok = parts.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return parts.text_encoder(ids.to(device))[0]


class CallCounter:
    """Counts the rows (images) that pass through modules: UNet, VAE encoder, VAE decoder. ``per_image(B)`` turns
    the totals of one restore call of B images into counts per image (a classifier-free-guidance call of 2B rows
    counts 2)."""

    def __init__(self, **modules: torch.nn.Module):
        self.rows = dict.fromkeys(modules, 0)
        for name, module in modules.items():
            module.register_forward_pre_hook(self._hook(name), with_kwargs=True)

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            self.rows[name] += int(x.shape[0])
        return hook

    def reset(self) -> None:
        self.rows = dict.fromkeys(self.rows, 0)

    def per_image(self, batch: int) -> dict[str, float]:
        return {k: (v / batch if v % batch else v // batch) for k, v in self.rows.items()}
