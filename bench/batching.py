"""Batch sizes: ``run.batch_size=auto`` (a memory model) and fixed-shape micro-batches of the network call.

**Auto batch** (:func:`resolve_batch_size`, called once by the CLI after ``method.setup``)::

    b_mem = floor((free - fixed) / (safety * per_image))     # what fits
    b     = clamp(b_mem, 1, min(AUTO_MAX_BATCH, n_pending))  # never more than there is to do
    b     = ceil(n / ceil(n / b))                             # balanced: equal batches, no ragged tail

* CUDA: ``free`` = ``torch.cuda.mem_get_info`` free bytes + what PyTorch's cache holds unused (reserved -
  allocated); ``fixed`` and ``per_image`` come from a probe: one EAGER network call (the method's prior
  net, or the LDM UNet at the latent size) at batch 1 and at batch 2, with autograd (forward + backward)
  when the method back-propagates through the prior; ``per_image`` = peak(2) - peak(1) (the activation
  memory of one more image), ``fixed`` = peak(1) - per_image (workspaces, cast weights). ``safety`` = 1.5
  covers the sampler's own tensors (a few images' worth: x_t, x0, eps, spectral vectors) and allocator
  fragmentation; compiled code and CUDA graphs need no more than eager (inductor reuses buffers). The
  probe bypasses torch.compile, so it costs no compilation; its inputs come from a private generator.
* CPU: :data:`CPU_BATCH` (4): on the 2-core CI machine throughput is flat beyond 4 (1 -> 4 images per
  call: 1.17x), and RAM is rarely the limit; ``MemAvailable`` (/proc/meminfo) is still recorded, and the
  memory bound applies when a caller passes ``per_image``.
* A method without a network this module knows how to probe (no ``prior.net`` / ``ldm.unet``) gets
  :data:`CPU_BATCH` on either device, said so in the recorded rule.

The choice and the rule (every number above) are returned as a dict that the runner stores in each
invocation's ``timing/<id>.json`` under ``batch_rule``.

**Micro-batches** (:func:`micro_batched`, used by ``model.speed.micro_batch``): the network is called on
fixed-shape chunks of ``m`` images; the last chunk is padded by repeating its last image, and padded
outputs are dropped. CPU kernels (oneDNN convolutions, MKL GEMMs) choose their blocking per *shape*, so
the same image gave results differing by ~1e-6 at batch 1, 2 and 4 (measured: 2 of 16 PNGs of DDRM
``deblur_gauss`` at 64 px changed by one 8-bit level); within one shape each row's result does not depend
on the other rows (tested). With a fixed ``m`` every network call has the same shape whatever
``run.batch_size`` is, so outputs are bit-identical across batch sizes (tests/test_batch_independence.py);
it also keeps one shape for torch.compile / CUDA graphs when the last batch is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

#: documented CPU default for ``run.batch_size=auto``
CPU_BATCH = 4
#: upper bound of an automatic batch (beyond it GPU throughput no longer improves measurably)
AUTO_MAX_BATCH = 128
#: multiplier on the probed per-image memory
SAFETY = 1.5
#: the probe's batch sizes
PROBE_BATCHES = (1, 2)


def parse_batch_size(value) -> int | str:
    """``run.batch_size``: a positive int or "auto"; anything else is a ValueError naming the fix."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"run.batch_size={value!r}: use a positive integer or auto. "
                     "Fix: run.batch_size=4 or run.batch_size=auto")


def choose_batch(free_bytes: float, per_image_bytes: float, n_images: int, *, fixed_bytes: float = 0.0,
                 safety: float = SAFETY, cap: int = AUTO_MAX_BATCH) -> int:
    """The memory model: the largest batch with ``fixed + safety * b * per_image <= free``, at least 1,
    at most ``min(cap, n_images)``, then balanced so that ``n_images`` splits into equal batches."""
    if per_image_bytes <= 0:
        raise ValueError(f"per_image_bytes={per_image_bytes} must be > 0")
    n = max(int(n_images), 1)
    room = max(free_bytes - fixed_bytes, 0.0) / (safety * per_image_bytes)
    fit = int(cap) if math.isinf(room) else math.floor(room)
    b = max(1, min(fit, int(cap), n))
    return math.ceil(n / math.ceil(n / b))


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), None elsewhere."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def probe_target(method, image_size: int):
    """(call(x), per-image input shape, backprop) for the method's network, or None when unknown."""
    backprop = bool(getattr(method, "backprop_through_prior", False))
    prior = getattr(method, "prior", None)
    if prior is not None and hasattr(prior, "net"):
        net, settings = prior.net, (prior.info or {}).get("speed", {})
        whole = settings.get("autocast") == "whole"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.get("precision"))

        def call(x: Tensor) -> Tensor:
            t = torch.full((x.shape[0],), 500, device=x.device, dtype=torch.long)
            if settings.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=dtype, enabled=whole and dtype is not None):
                return net(x, t)
        return call, (int(getattr(net, "in_channels", 3)), image_size, image_size), backprop
    ldm = getattr(method, "ldm", None)
    if ldm is not None and hasattr(ldm, "unet"):
        unet, lat = ldm.unet, max(image_size // int(ldm.scale_factor), 1)

        def call(x: Tensor) -> Tensor:
            out = unet(x, torch.tensor(500, device=x.device))
            return out.sample if hasattr(out, "sample") else out
        return call, (int(unet.config.in_channels), lat, lat), backprop
    ddpm = getattr(method, "ddpm", None)  # SR3 / Palette (bench/models/conditional.py): net(cat[c, x_t], gamma)
    if ddpm is not None and hasattr(ddpm, "net"):
        def call(x: Tensor) -> Tensor:
            return ddpm.net(x, torch.full((x.shape[0],), 0.5, device=x.device))
        return call, (int(ddpm.info["arch"]["in_channel"]), image_size, image_size), backprop
    return None


def probe_memory(call: Callable[[Tensor], Tensor], shape: tuple[int, ...], device: torch.device,
                 backprop: bool) -> dict:
    """Peak CUDA memory above the baseline of one call at each of :data:`PROBE_BATCHES`."""
    gen = torch.Generator(device=device).manual_seed(0)  # private: no global RNG state is touched
    peaks = {}
    for b in PROBE_BATCHES:
        x = torch.randn((b, *shape), generator=gen, device=device)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.set_grad_enabled(backprop):
            if backprop:
                x.requires_grad_(True)
            out = call(x)
            if backprop:
                torch.autograd.grad(out.float().square().mean(), x)
        torch.cuda.synchronize(device)
        peaks[b] = torch.cuda.max_memory_allocated(device) - base
        del x, out
    b1, b2 = PROBE_BATCHES
    per_image = max((peaks[b2] - peaks[b1]) / (b2 - b1), peaks[b2] / b2 / 2, 1.0)
    return {"probe_peaks_bytes": {str(k): int(v) for k, v in peaks.items()}, "per_image_bytes": int(per_image),
            "fixed_bytes": int(max(peaks[b1] - per_image * b1, 0))}


def resolve_batch_size(requested, method, n_images: int, device: torch.device, image_size: int) -> tuple[int, dict]:
    """``run.batch_size`` -> (batch size, rule record). Integers pass through; "auto" uses the memory model."""
    value = parse_batch_size(requested)
    if value != "auto":
        return value, {"requested": value, "chosen": value, "rule": "fixed (run.batch_size)"}
    device = torch.device(device)
    rec = {"requested": "auto", "n_images": int(n_images), "cap": AUTO_MAX_BATCH, "safety": SAFETY}
    target = probe_target(method, int(image_size)) if device.type == "cuda" else None
    if device.type == "cuda" and target is not None:
        call, shape, backprop = target
        rec.update(probe_memory(call, shape, device, backprop), backprop=backprop,
                   probe_input_shape=list(shape))
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        torch.cuda.empty_cache()
        rec["free_bytes"] = int(free)
        chosen = choose_batch(free, rec["per_image_bytes"], n_images, fixed_bytes=rec["fixed_bytes"])
        rec["rule"] = ("CUDA: floor((free - fixed) / (safety * per_image)) from an eager probe at batch 1 "
                       "and 2, capped by cap and the pending images, balanced to equal batches")
    else:
        rec["mem_available_bytes"] = mem_available_bytes()
        chosen = choose_batch(float("inf"), 1.0, n_images, cap=CPU_BATCH)
        why = "CPU" if device.type != "cuda" else "no probe-able network (prior.net / ldm.unet)"
        rec["rule"] = (f"{why}: the documented default {CPU_BATCH}, capped by the pending images, "
                       "balanced to equal batches")
    rec["chosen"] = chosen
    return chosen, rec


def _split(arg, start: int, stop: int, batch: int, size: int):
    """Rows [start, stop) of a batched tensor argument, padded to ``size`` rows by repeating the last."""
    if not (isinstance(arg, Tensor) and arg.ndim > 0 and arg.shape[0] == batch):
        return arg
    part = arg[start:stop]
    pad = size - part.shape[0]
    return part if pad == 0 else torch.cat([part, part[-1:].expand(pad, *part.shape[1:])])


def micro_batched(fn: Callable, size: int, x: Tensor, *args, **kwargs):
    """``fn(x, *args)`` evaluated on fixed-shape chunks of ``size`` rows (see the module docstring).

    Tensor arguments whose first dimension equals ``x``'s are chunked alike; others pass through. The
    output may be a tensor, or an object with a ``sample`` tensor (diffusers); chunks are concatenated.
    Autograd flows through (padding rows get zero gradient).
    """
    if size < 1:
        raise ValueError(f"micro_batch={size} must be >= 1")
    batch = x.shape[0]
    if batch == size:
        return fn(x, *args, **kwargs)
    outs = []
    for start in range(0, batch, size):
        stop = min(start + size, batch)
        call_args = [_split(a, start, stop, batch, size) for a in (x, *args)]
        call_kw = {k: _split(v, start, stop, batch, size) for k, v in kwargs.items()}
        out = fn(*call_args, **call_kw)
        outs.append((out, stop - start))
    first = outs[0][0]
    if isinstance(first, Tensor):
        return torch.cat([o[:n] for o, n in outs])
    if hasattr(first, "sample"):
        first.sample = torch.cat([o.sample[:n] for o, n in outs])
        return first
    raise TypeError(f"micro_batched: unsupported network output {type(first).__name__}")

