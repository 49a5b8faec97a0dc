"""The tiny network the official-code comparisons feed to both implementations (tools/equivalence/*.py)."""

from __future__ import annotations

import torch


class TinyEps(torch.nn.Module):
    """A deterministic timestep-dependent 3 -> 6 channel network (eps, variance values in [-1, 1])."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))

    def forward(self, x, t, **_):
        out = self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)
        return torch.cat([out[:, :3], torch.tanh(out[:, 3:])], dim=1)
