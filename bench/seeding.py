"""Per-image randomness: every image gets its own ``torch.Generator`` seeded from (run seed, image id,
stream), so an image's result does not depend on batch size, shard or device count. Library code never
touches the global RNG.

``stream`` separates independent uses: "degrade" (measurement noise; shared by all methods of a run
seed, so every method sees the same y) and "restore" (the method's sampling noise).
"""

from __future__ import annotations

import hashlib

import torch


def image_seed(run_seed: int, image_id: str, stream: str) -> int:
    """A 63-bit seed from sha256("<run_seed>/<stream>/<image_id>")."""
    digest = hashlib.sha256(f"{int(run_seed)}/{stream}/{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generators(run_seed: int, ids: list[str], stream: str, device: torch.device | str = "cpu"):
    """One generator per image id, on ``device``."""
    gens = []
    for image_id in ids:
        g = torch.Generator(device=torch.device(device))
        g.manual_seed(image_seed(run_seed, image_id, stream))
        gens.append(g)
    return gens


def randn(generators: list[torch.Generator], shape: tuple[int, ...], device, dtype=torch.float32):
    """Stack of per-image standard normals, (len(generators), *shape)."""
    return torch.stack(
        [torch.randn(shape, generator=g, device=device, dtype=dtype) for g in generators]
    )


def rand(generators: list[torch.Generator], shape: tuple[int, ...], device, dtype=torch.float32):
    """Stack of per-image uniforms in [0, 1), (len(generators), *shape)."""
    return torch.stack(
        [torch.rand(shape, generator=g, device=device, dtype=dtype) for g in generators]
    )
