"""Speed settings of a prior's network call: precision/autocast, channels_last, torch.compile, CUDA graphs,
cuDNN benchmark, fused GroupNorm+SiLU and fixed-shape micro-batches (the model config's ``speed:`` block).

The block (:class:`Precision`; absent = plain fp32 eager calls)::

    speed:
      precision: null        # null: as the arch says (ADM use_fp16 -> fp16 torso autocast on CUDA, else fp32)
                             # fp32 | bf16 | fp16: torch.autocast on CUDA; see "CPU" below
      channels_last: false   # weights and inputs in channels_last memory format
      compile: false         # torch.compile(net, dynamic=False), once per cached prior (= per process)
      compile_mode: null     # null | default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
      cuda_graph: false      # CUDA: replay the network call from CUDA graphs (bench/models/cuda_graph.py)
      cudnn_benchmark: null  # CUDA: set torch.backends.cudnn.benchmark (process-wide); null = leave it
      fused_norm: false      # ADM: GroupNorm -> (FiLM) -> SiLU in one function (same state_dict keys)
      micro_batch: null      # call the net on fixed-shape chunks of N images (bench/batching.py)
      sdpa: always           # attention is always F.scaled_dot_product_attention (recorded, not a switch)
      cpu_autocast: false    # CPU: allow bf16 autocast (correct, tested; fast only with AVX512-BF16/AMX)
      cpu_compile: false     # CPU: allow torch.compile

Autocast scope: for the ADM UNet on CUDA the net's own torso autocast is used (``net.autocast_dtype``;
time embedding and output head stay float32, as upstream's ``use_fp16``); otherwise (CPU opt-in, other
nets) the whole forward runs under ``torch.autocast``. CPU decision: bf16/fp16 requested on CPU run in
float32 with a logged note unless ``cpu_autocast: true`` (bf16 only; fp16 always falls back), and
``compile`` is ignored on CPU (logged) unless ``cpu_compile: true``. CUDA graphs: ``cuda_graph: true`` captures
the (compiled or eager) call per input shape with static input buffers and replays it (no-grad calls on
CUDA only; CPU, autograd and odd arguments run eagerly, recorded); ``compile_mode: reduce-overhead`` (and
``max-autotune``) use inductor's own CUDA graphs instead, so they exclude ``cuda_graph`` (an error names
both). With the inductor CUDA-graph modes each call is marked as a new step and its output copied, since
the next replay overwrites it. ``cudnn_benchmark`` lets cuDNN time its algorithms per shape (faster
convolutions, but the choice may differ between processes, so bit-reproducibility across runs is lost).
``micro_batch: N`` makes the results independent of ``run.batch_size`` (bit-exact on CPU, see
:mod:`bench.batching`). Whatever runs, :meth:`DiffusionPrior.
model_output` returns float32 tensors in the default memory format, and the requested and effective
settings (with the notes) are recorded in ``prior.info["speed"]`` (so in every run manifest). The speed
block is part of the model config, hence of the prior cache key and of the run's config hash. The sampler
math is unchanged: only the network call is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor

from bench.cli_errors import reject_unknown_keys
from bench.batching import micro_batched
from bench.models.cuda_graph import GraphedCall

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: torch.compile modes accepted by ``speed.compile_mode`` (null = torch's default)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the modes in which inductor replays CUDA graphs itself
GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The requested speed settings (a model config's ``speed:`` block; see the module docstring)."""

    precision: str | None = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cuda_graph: bool = False
    cudnn_benchmark: bool | None = None
    fused_norm: bool = False
    micro_batch: int | None = None
    sdpa: str = "always"
    cpu_autocast: bool = False
    cpu_compile: bool = False

    @classmethod
    def from_config(cls, block: Mapping | None) -> "Precision":
        block = dict(block or {})
        names = [f.name for f in fields(cls)]
        reject_unknown_keys("model.speed", block, names)
        prec = block.get("precision")
        if prec is not None and prec not in PRECISIONS:
            raise ValueError(f"model.speed.precision={prec!r}: use null, {' | '.join(PRECISIONS)}")
        if block.get("sdpa", "always") not in ("always", True):
            raise ValueError("model.speed.sdpa: attention always uses F.scaled_dot_product_attention; "
                             "only 'always' is accepted")
        for key in ("channels_last", "compile", "cpu_autocast", "cpu_compile", "cuda_graph", "fused_norm"):
            if not isinstance(block.get(key, False), bool):
                raise ValueError(f"model.speed.{key}={block[key]!r} must be true or false")
        if block.get("cudnn_benchmark") is not None and not isinstance(block["cudnn_benchmark"], bool):
            raise ValueError(f"model.speed.cudnn_benchmark={block['cudnn_benchmark']!r} must be null, true or false")
        mode = block.get("compile_mode")
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"model.speed.compile_mode={mode!r}: use null or one of {list(COMPILE_MODES)}")
        if block.get("cuda_graph") and mode in GRAPH_COMPILE_MODES:
            raise ValueError(f"model.speed.cuda_graph=true with compile_mode={mode!r}: that mode already "
                             "replays inductor's CUDA graphs. Fix: drop cuda_graph, or use compile_mode=default")
        mb = block.get("micro_batch")
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
            raise ValueError(f"model.speed.micro_batch={mb!r} must be null or a positive integer "
                             "(1 = every image through the network alone)")
        block["sdpa"] = "always"
        return cls(**block)

    def resolve(self, net: torch.nn.Module, device: torch.device | str) -> dict:
        """The settings that will actually run for ``net`` on ``device`` (+ notes for what was dropped)."""
        dev = torch.device(device)
        notes = []
        arch_fp16 = getattr(net, "autocast_dtype", None) == torch.float16 and self.precision is None
        prec = self.precision or ("fp16" if arch_fp16 else "fp32")
        torso = hasattr(net, "autocast_dtype")  # the ADM UNet autocasts its own torso on CUDA
        if (dev.type == "cuda" and prec == "bf16" and torch.cuda.is_available()
                and not torch.cuda.is_bf16_supported(including_emulation=False)):
            notes.append("bf16 requested but this GPU has no native bf16 (pre-Ampere): running fp32")
            prec = "fp32"
        if dev.type == "cuda" or PRECISIONS[prec] is None:
            scope = "none" if PRECISIONS[prec] is None else ("torso" if torso else "whole")
        elif prec == "bf16" and self.cpu_autocast:
            scope = "whole"
        else:
            if self.precision is not None:
                notes.append(f"precision {prec} requested on {dev.type}: running fp32"
                             + (" (set speed.cpu_autocast=true for bf16 autocast)" if prec == "bf16" else ""))
            prec, scope = "fp32", "none"
        compile_ = self.compile and (dev.type == "cuda" or self.cpu_compile)
        if self.compile and not compile_:
            notes.append(f"compile requested on {dev.type}: running eager (set speed.cpu_compile=true)")
        if compile_ and dev.type != "cuda" and self.compile_mode in GRAPH_COMPILE_MODES:
            notes.append(f"compile_mode={self.compile_mode} on {dev.type}: inductor's CUDA graphs do not apply")
        cuda = dev.type == "cuda" and torch.cuda.is_available()
        graph = self.cuda_graph and cuda
        if self.cuda_graph and not graph:
            notes.append(f"cuda_graph requested on {dev.type}: CUDA graphs exist on CUDA only; running eager")
        cudnn = self.cudnn_benchmark if cuda else None
        if self.cudnn_benchmark and not cuda:
            notes.append(f"cudnn_benchmark requested on {dev.type}: no cuDNN there; ignored")
        fused = self.fused_norm and hasattr(net, "set_fused_norm")
        if self.fused_norm and not fused:
            notes.append(f"fused_norm requested but {type(net).__name__} has no fused GroupNorm+SiLU path")
        return {"requested": asdict(self), "precision": prec, "autocast": scope,
                "channels_last": self.channels_last, "compile": compile_,
                "compile_mode": self.compile_mode if compile_ else None, "cuda_graph": graph,
                "cudnn_benchmark": cudnn, "fused_norm": fused, "micro_batch": self.micro_batch,
                "sdpa": "always", "device_type": dev.type, "notes": notes}


def _float_out(out):
    """float32, contiguous network output (a tensor, or a diffusers output with a ``sample`` tensor)."""
    if isinstance(out, Tensor):
        return out.float().contiguous()
    if hasattr(out, "sample"):
        out.sample = out.sample.float().contiguous()
    return out


class FastForward:
    """Calls ``net`` under resolved speed settings (:meth:`Precision.resolve`), float32 outputs.

    Order of the wrappers: micro-batching (outermost) -> CUDA graph -> channels_last + autocast +
    (compiled) net + float32 output, so a graph captures the casts and layout changes too.
    """

    def __init__(self, net: torch.nn.Module, settings: dict):
        self.net, self.settings = net, settings
        self.fn = (torch.compile(net, mode=settings["compile_mode"], dynamic=False) if settings["compile"]
                   else net)
        self.whole = PRECISIONS[settings["precision"]] if settings["autocast"] == "whole" else None
        # inductor's CUDA-graph modes: mark each call a new step and copy the output out of the graph pool
        self.step_marks = (settings["compile"] and settings["compile_mode"] in GRAPH_COMPILE_MODES
                           and settings["device_type"] == "cuda")
        self.graph = GraphedCall(self._call) if settings.get("cuda_graph") else None

    def _call(self, x: Tensor, *args, **kw):
        if self.settings["channels_last"] and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast(x.device.type, dtype=self.whole, cache_enabled=self.graph is None)
               if self.whole is not None else contextlib.nullcontext())
        if self.step_marks:
            torch.compiler.cudagraph_mark_step_begin()
        with ctx:
            out = _float_out(self.fn(x, *args, **kw))
        return out.clone() if self.step_marks and isinstance(out, Tensor) else out

    def _graphed(self, x: Tensor, *args, **kw):
        return self._call(x, *args, **kw) if self.graph is None else self.graph(x, *args, **kw)

    def __call__(self, x: Tensor, *args, **kw):
        if self.settings.get("micro_batch"):
            return micro_batched(self._graphed, self.settings["micro_batch"], x, *args, **kw)
        return self._graphed(x, *args, **kw)


def apply_speed(net: torch.nn.Module, speed: Precision, device) -> tuple[FastForward | None, dict]:
    """Configure ``net`` (already on ``device``) for ``speed``; returns (forward or None, settings).

    Mutates ``net``: its memory format (channels_last), the fused GroupNorm+SiLU switch and, for the ADM
    UNet with an explicit precision, ``net.autocast_dtype``; with ``cudnn_benchmark`` set on CUDA, also
    ``torch.backends.cudnn.benchmark`` (process-wide, recorded). None is returned when nothing differs
    from a plain call.
    """
    settings = speed.resolve(net, device)
    for note in settings["notes"]:
        log.warning("speed: %s", note)
    if speed.precision is not None and hasattr(net, "autocast_dtype"):
        net.autocast_dtype = PRECISIONS[settings["precision"]] if settings["autocast"] == "torso" else None
    if settings["channels_last"]:
        net.to(memory_format=torch.channels_last)
    if settings["fused_norm"]:
        net.set_fused_norm(True)
    if settings["cudnn_benchmark"] is not None:
        torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    plain = not (settings["channels_last"] or settings["compile"] or settings["autocast"] == "whole"
                 or settings["cuda_graph"] or settings["micro_batch"])
    return (None if plain else FastForward(net, settings)), settings
