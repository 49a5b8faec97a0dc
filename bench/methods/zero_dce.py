"""Zero-DCE (Guo, Li et al., CVPR 2020): zero-reference deep curve estimation for low-light enhancement.

A low-light baseline in GDP's LOL table. The pretrained weights ``Zero-DCE_code/snapshots/Epoch99.pth``
of the official repository (Li-Chongyi/Zero-DCE) are licensed **CC BY-NC 4.0** (non-commercial use only);
they are fetched through the asset cache and never shipped with this package.

DCE-Net (official ``Zero-DCE_code/model.py::enhance_net_nopool``; our own code, same state-dict keys
``e_conv1..e_conv7`` so the checkpoint loads with ``strict=True``): seven 3x3 convolutions (stride 1,
padding 1, bias) with 32 channels, ReLU after the first six, symmetric skip concatenations
(conv5 <- [x3, x4], conv6 <- [x2, x5], conv7 <- [x1, x6]), no down-sampling, and a tanh head with
24 = 8 iterations x 3 channels of pixel-wise curve parameters r_n in [-1, 1].

Light-enhancement curve, applied n = 1..8 times (paper eq. (2)): LE_n(x) = LE_{n-1}(x) + a_n LE_{n-1}(x)
(1 - LE_{n-1}(x)). The official code computes ``x + r_n * (x**2 - x)``, i.e. a_n = -r_n; we follow the
code because the weights were trained with it. Input: the low-light RGB image in [0, 1] (the official test
script divides 8-bit values by 255); output: the 8th iterate (the official ``enhance_image``), clamped to
[0, 1] (the official script saves with ``torchvision.utils.save_image``, which clamps). One network
evaluation per image (NFE = 1); no randomness; any image size.

Subnormal weights: Epoch99.pth holds ~19k float32 weights below the smallest normal float (|w| < 1.2e-38,
left by training). Subnormal arithmetic makes CPU convolutions ~30x slower, so :func:`load_dce_net` sets
them to exactly 0 after the strict load (counted in :attr:`ZeroDCE.describe`); their largest possible
contribution to any activation is ~1e-36, far below float32 resolution, so outputs do not change.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from bench.methods.base import Method
from bench.models.assets import Asset, AssetError, fetch, load_state_dict
from bench.tasks import Degradation

WEIGHTS_URL = "https://raw.githubusercontent.com/Li-Chongyi/Zero-DCE/master/Zero-DCE_code/snapshots/Epoch99.pth"
WEIGHTS_SHA256 = "a4395acb874f320375d9704997cef874eaaaaa26a1777ceb29a92b70f74c3612"
WEIGHTS_NAME = "zero_dce_Epoch99.pth"
WEIGHT_KEYS = ("path", "url", "sha256")

ITERATIONS = 8
FEATURES = 32


class DCENet(nn.Module):
    """DCE-Net; returns the enhanced image (8th curve iterate) and the curve maps (B, 24, H, W)."""

    def __init__(self, features: int = FEATURES, iterations: int = ITERATIONS):
        super().__init__()
        f = features
        self.iterations = iterations

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)

        self.e_conv1, self.e_conv2, self.e_conv3, self.e_conv4 = conv(3, f), conv(f, f), conv(f, f), conv(f, f)
        self.e_conv5, self.e_conv6 = conv(2 * f, f), conv(2 * f, f)
        self.e_conv7 = conv(2 * f, 3 * iterations)

    def curves(self, x: Tensor) -> Tensor:
        """The curve-parameter maps r = tanh(conv7(...)), (B, 3 * iterations, H, W)."""
        x1 = torch.relu(self.e_conv1(x))
        x2 = torch.relu(self.e_conv2(x1))
        x3 = torch.relu(self.e_conv3(x2))
        x4 = torch.relu(self.e_conv4(x3))
        x5 = torch.relu(self.e_conv5(torch.cat([x3, x4], dim=1)))
        x6 = torch.relu(self.e_conv6(torch.cat([x2, x5], dim=1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], dim=1)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r = self.curves(x)
        le = x
        for r_n in torch.split(r, 3, dim=1):
            le = le + r_n * (le * le - le)  # official form; = LE + a_n LE (1 - LE) with a_n = -r_n
        return le, r


def weights_asset(weights: dict | None) -> Asset:
    """The Epoch99.pth asset; ``weights`` may override ``path`` (a local file), ``url`` and ``sha256``."""
    w = dict(weights or {})
    unknown = sorted(set(w) - set(WEIGHT_KEYS))
    if unknown:
        raise ValueError(f"zero_dce: unknown method.weights key(s) {unknown}; allowed: {list(WEIGHT_KEYS)}")
    return Asset(name=WEIGHTS_NAME, url=w.get("url") or WEIGHTS_URL, sha256=w.get("sha256") or WEIGHTS_SHA256,
                 path=w.get("path") or None, override="method.weights.path")


def load_dce_net(asset: Asset, device="cpu") -> DCENet:
    """Fetch (cache / override / download, sha256-verified) and load the weights with ``strict=True``."""
    try:
        path = fetch(asset)
    except AssetError as e:  # fetch's message already names method.weights.path (the asset's override)
        raise AssetError(f"{e}\n(zero_dce's weights are Li-Chongyi/Zero-DCE Zero-DCE_code/snapshots/Epoch99.pth, "
                         f"CC BY-NC 4.0.)") from e
    net = DCENet()
    state = load_state_dict(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AssetError(f"zero_dce: {path} is not a Zero-DCE enhance_net_nopool state dict: {e}") from e
    net.eval().requires_grad_(False)
    net.flushed_subnormals = flush_subnormals_(net)
    return net.to(device)


@torch.no_grad()
def flush_subnormals_(module: nn.Module) -> int:
    """Set subnormal parameters (0 < |w| < finfo.tiny) to 0 in place; returns how many were set."""
    count = 0
    for p in module.parameters():
        sub = (p != 0) & (p.abs() < torch.finfo(p.dtype).tiny)
        count += int(sub.sum())
        p.masked_fill_(sub, 0.0)
    return count


class ZeroDCE(Method):
    name = "zero_dce"
    tasks = ("lowlight",)
    steps = None

    def __init__(self, weights: dict | None = None):
        super().__init__()
        self.asset = weights_asset(weights)
        self.net: DCENet | None = None

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if self.net is None:
            self.net = load_dce_net(self.asset, device)
        self.net.to(device)

    @torch.no_grad()
    def enhance(self, low: Tensor) -> Tensor:
        """Low-light picture in [0, 1] (B, 3, H, W) -> enhanced picture in [0, 1]."""
        if self.net is None:
            self.setup(low.device)
        out, _ = self.net(low.clamp(0, 1).to(next(self.net.parameters()).dtype))
        return out.clamp(0, 1)

    def restore(self, y: Tensor, degradation: Degradation, generators) -> Tensor:
        x = self.enhance(degradation.measurement_image(y))
        self.last_nfe = 1
        return x

    def describe(self) -> dict:
        return {"name": self.name, "steps": None, "nfe_per_image": 1, "license": "CC BY-NC 4.0 (weights)",
                "weights": {"name": self.asset.name, "url": self.asset.url, "sha256": self.asset.sha256,
                            "path": self.asset.path},
                "curve": "x + r*(x^2 - x), 8 iterations (official code)",
                "subnormal_weights_zeroed": getattr(self.net, "flushed_subnormals", None)}
