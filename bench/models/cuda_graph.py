"""Manual CUDA-graph capture of a fixed-shape network call (``model.speed.cuda_graph``).

A sampling loop calls the network with the same shapes at every step; on a GPU each eager forward of the
ADM UNet is ~1000 kernel launches, and between them the GPU idles while Python issues the next one.
:class:`GraphedCall` records the launches once per input signature into a ``torch.cuda.CUDAGraph`` and
replays them: per call, the inputs are copied into static buffers, the graph is replayed, and a copy of the
static output is returned (the next replay overwrites it).

Taken only where it is correct:

* the input ``x`` is a CUDA tensor and every other argument is a tensor (moved to ``x``'s device once, into
  its static buffer); keyword arguments, non-tensor arguments and CPU inputs run eagerly;
* autograd is off or nothing in the call requires grad: a graph replays the forward only, so methods that
  back-propagate through the prior (``backprop_through_prior``) run eagerly, exactly as without the flag;
* the first call of a signature runs ``warmup`` eager calls on a side stream (torch.compile compiles there,
  cuDNN picks its algorithms, the allocator warms up) before the capture; all graphs share one memory pool
  (safe here: every output is copied out before the next replay).

A capture that fails (an operation that cannot be captured, e.g. a host synchronisation inside the network)
is logged once, recorded in :attr:`GraphedCall.failures`, and that signature runs eagerly from then on: the
run continues with eager numbers instead of stopping. A replay runs the kernels the eager call ran on the
same values, so it equals the eager call to float rounding (tested on CUDA within 1e-6, tests/test_perf.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    inputs: list[Tensor]
    output: object


def _copy_out(out):
    if isinstance(out, Tensor):
        return out.clone()
    if hasattr(out, "sample"):  # diffusers UNet2DOutput: a new object around a copy of the static tensor
        return type(out)(sample=out.sample.clone())
    raise TypeError(f"cuda_graph: unsupported network output {type(out).__name__}")


class GraphedCall:
    """``fn(x, *tensors)`` replayed from one CUDA graph per input signature (see the module docstring)."""

    def __init__(self, fn: Callable, warmup: int = 2):
        self.fn, self.warmup = fn, int(warmup)
        self.graphs: dict[tuple, _Graph | None] = {}
        self.failures: dict[str, str] = {}
        self.replays = self.eager_calls = 0
        self._pool = None

    @staticmethod
    def _key(args) -> tuple:
        return tuple((tuple(a.shape), a.dtype, a.stride()) for a in args)

    def _graphable(self, x, args, kwargs) -> bool:
        if kwargs or not isinstance(x, Tensor) or x.device.type != "cuda":
            return False
        if not all(isinstance(a, Tensor) for a in args):
            return False
        if torch.is_grad_enabled() and any(a.requires_grad for a in (x, *args)):
            return False
        return not torch.cuda.is_current_stream_capturing()

    def __call__(self, x: Tensor, *args, **kwargs):
        if not self._graphable(x, args, kwargs):
            self.eager_calls += 1
            return self.fn(x, *args, **kwargs)
        inputs = [x, *(a.to(x.device) for a in args)]
        key = self._key(inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs, key)
        entry = self.graphs[key]
        if entry is None:  # capture failed for this signature: eager from now on
            self.eager_calls += 1
            return self.fn(*inputs)
        for static, new in zip(entry.inputs, inputs):
            static.copy_(new)
        entry.graph.replay()
        self.replays += 1
        return _copy_out(entry.output)

    def _capture(self, inputs: list[Tensor], key: tuple) -> _Graph | None:
        static = [a.clone() for a in inputs]  # same strides (clone keeps the memory format)
        try:
            stream = torch.cuda.Stream(device=static[0].device)
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.no_grad():
                for _ in range(self.warmup):
                    self.fn(*static)
            torch.cuda.current_stream().wait_stream(stream)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
                output = self.fn(*static)
            torch.cuda.synchronize(static[0].device)
            return _Graph(graph, static, output)
        except RuntimeError as e:  # e.g. "operation not permitted when stream is capturing"
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.failures[str(key)] = msg
            log.warning("cuda_graph: capture failed for inputs %s (%s); this shape runs eagerly", key, msg)
            torch.cuda.synchronize(static[0].device)
            return None

    def describe(self) -> dict:
        return {"graphs": sum(g is not None for g in self.graphs.values()), "replays": self.replays,
                "eager_calls": self.eager_calls, "failures": dict(self.failures)}
