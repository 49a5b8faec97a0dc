"""The learnable degradation N_Phi of learned-degradation guidance (``bench/methods/ldg.py``), its
optimiser and the optional VGG perceptual loss: tensor code, no config.

Every parameter tensor has a leading batch dimension (one Phi per image): a loss that is a sum of
per-image terms gives per-image gradients, and SGD and Adam act elementwise, so an image's Phi does not
depend on the other images of its batch.

* ``affine``: ``N_Phi(z) = g * z + m`` with a per-channel gain g and offset m, both (B, C, 1, 1)
  (6 values per RGB image): Hu's ``H x + M`` with H the task's known operator and M a constant offset.
* ``conv``: ``N_Phi(z) = g * (z + R(z)) + m`` with a two-layer convolutional residual
  ``R(z) = W2 * relu(W1 * z + b1) + b2``: W1 3x3, C -> ``hidden`` (16), W2 3x3, hidden -> C, replicate
  padding, 5x5 receptive field (883 + 6 values per RGB image). W1 is Kaiming-normal from the image's
  generator (std sqrt(2 / (9 C))), b1, W2, b2 are zero, so at the start N_Phi is the affine map and the
  residual grows as Phi is fitted (it can express pixel-wise curves such as low-light's gamma and local
  effects such as JPEG's 8x8 blocking, which the affine map cannot). Inside the gain, R's gradient
  carries the factor g: while g is small (the random start) R moves slowly, which keeps plain SGD stable.
* ``learn_offset=False`` keeps m at 0 (not learned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bench import seeding

KINDS = ("affine", "conv")
OPTIMIZERS = ("sgd", "adam")
#: Adam's constants (torch defaults)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def _grouped_conv(z: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Per-image 3x3 convolution: z (B, Cin, H, W), w (B, Cout, Cin, 3, 3), b (B, Cout)."""
    B, c_in, H, W = z.shape
    c_out = w.shape[1]
    z = F.pad(z.reshape(1, B * c_in, H, W), (1, 1, 1, 1), mode="replicate")
    out = F.conv2d(z, w.reshape(B * c_out, c_in, 3, 3), b.reshape(-1), groups=B)
    return out.reshape(B, c_out, H, W)


class LearnedDegradation:
    """N_Phi for a batch: ``kind`` (:data:`KINDS`), one parameter set per image.

    ``gain`` is the initial gain (every channel); the conv residual's W1 is drawn from each image's generator.
    """

    def __init__(self, kind: str, channels: int, generators: list[torch.Generator], device,
                 gain: float = 1.0, learn_offset: bool = True, hidden: int = 16):
        if kind not in KINDS:
            raise ValueError(f"degradation model {kind!r} is invalid; allowed: {', '.join(KINDS)}")
        B, C = len(generators), channels
        self.kind = kind
        #: names of the parameters that are learned (the offset stays 0 when ``learn_offset`` is false)
        self.learned = ["gain"] + (["offset"] if learn_offset else [])
        self.params: dict[str, Tensor] = {"gain": torch.full((B, C, 1, 1), float(gain), device=device),
                                          "offset": torch.zeros(B, C, 1, 1, device=device)}
        if kind == "conv":
            w1 = seeding.randn(generators, (hidden, C, 3, 3), device) * math.sqrt(2.0 / (9 * C))
            self.params.update(w1=w1, b1=torch.zeros(B, hidden, device=device),
                               w2=torch.zeros(B, C, hidden, 3, 3, device=device),
                               b2=torch.zeros(B, C, device=device))
            self.learned += ["w1", "b1", "w2", "b2"]

    def __call__(self, z: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        p = self.params if params is None else params
        if self.kind == "conv":
            h = torch.relu(_grouped_conv(z, p["w1"], p["b1"]))
            z = z + _grouped_conv(h, p["w2"] / math.sqrt(9 * h.shape[1]), p["b2"])
        return p["gain"] * z + p["offset"]


class PhiOptimizer:
    """Phi <- Phi - lr * grad (``sgd``: the proposal's Algorithm 1 line 7) or Adam (``adam``, torch's
    update rule with bias correction), elementwise on the per-image tensors of a :class:`LearnedDegradation`."""

    def __init__(self, kind: str, lr: float):
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer {kind!r} is invalid; allowed: {', '.join(OPTIMIZERS)}")
        self.kind, self.lr, self.t = kind, float(lr), 0
        self.m: dict[str, Tensor] = {}
        self.v: dict[str, Tensor] = {}

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        if self.kind == "sgd":
            for k, g in grads.items():
                params[k] = params[k] - self.lr * g
            return
        self.t += 1
        b1, b2 = ADAM_BETAS
        for k, g in grads.items():
            self.m[k] = b1 * self.m.get(k, torch.zeros_like(g)) + (1 - b1) * g
            self.v[k] = b2 * self.v.get(k, torch.zeros_like(g)) + (1 - b2) * g * g
            m_hat, v_hat = self.m[k] / (1 - b1**self.t), self.v[k] / (1 - b2**self.t)
            params[k] = params[k] - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)


class VGGPerceptual:
    """LPIPS-VGG (the project's :class:`bench.metrics.lpips.LPIPSMetric` network, VGG-16 backbone from the
    asset cache) as a differentiable per-image loss of two [0, 1] pictures, (B,).

    Raises ValueError saying where to put the weights when they are missing (offline)."""

    def __init__(self, device, backbone_path: str | None = None, offline: bool | None = None):
        from bench.metrics import MetricUnavailable
        from bench.metrics.lpips import BACKBONES, LPIPSMetric

        try:
            self.model = LPIPSMetric("vgg", backbone_path=backbone_path, device=device, offline=offline).model
        except MetricUnavailable as err:
            name, url, _ = BACKBONES["vgg"]
            raise ValueError(
                f"ldg: perceptual > 0 needs the VGG-16 weights ({name}), which are unavailable: {err}. Fix: "
                f"place {name} (from {url}) in $BENCH_CACHE or pass method.vgg_path=/path/to/{name}, "
                "or switch the term off with method.perceptual=0") from err

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return self.model(2 * a - 1, 2 * b - 1).reshape(-1)
