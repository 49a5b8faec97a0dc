"""Inpainting: a pixel mask (a missing pixel is missing in every channel) of a kind from :mod:`.masks`."""

from __future__ import annotations

import torch
from torch import Tensor

from . import masks
from .denoise import SpectralOperator, to_rgb


class Inpainting(SpectralOperator):
    """H keeps the entries of x at the kept pixels and drops the rest: y = x[kept].

    Matches official DDRM ``functions/svd_replacement.py::Inpainting`` (``--deg inp``): a missing
    pixel is missing in all channels, U = I, s = ones(M), and V^T is a permutation that puts the
    kept entries first and the missing ones after. Differences, all deliberate: the missing
    fraction is a parameter (official ``inp`` drops half the pixels, ``image_size**2 // 2``), the
    mask is drawn with ``torch.randperm`` from a CPU ``torch.Generator().manual_seed(seed)`` (so it is
    the same on every device and run), and entries are ordered channel-major, in (C, H, W) raster
    order, instead of DDRM's pixel-interleaved order.

    * ``mask`` (H, W) bool, True = kept. ``mask_kind`` picks the pattern (:data:`masks.MASKS`): the default
      ``"random"`` drops exactly ``round(missing * H * W)`` random pixels (``task=inpaint``); ``box``,
      ``half``, ``expand``, ``lines``, ``sr2``, ``wide``, ``narrow`` are the ``inpaint_<kind>`` tasks. The
      remaining keyword arguments are that kind's parameters (e.g. ``missing`` for random, ``box`` for box).
    * M = C * (number of kept pixels); y lists the kept entries in (C, H, W) raster order.

    One mask per operator, i.e. per run: built from the run seed, shared by every image (as official DDRM
    shares its mask files), so every method and batch size sees the same y.
    """

    name = "inpaint"

    def __init__(
        self,
        channels: int,
        size: int,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        mask_kind: str = "random",
        **mask_params,
    ):
        super().__init__(channels, size, device, seed=seed)
        self.mask_kind = mask_kind
        self.mask_params = masks.resolve(mask_kind, mask_params)
        mask = masks.make_mask(mask_kind, size, self.seed, **self.mask_params).reshape(-1)  # CPU, True = kept
        self.n_missing = int((~mask).sum())
        self.missing = float(self.mask_params["missing"]) if mask_kind == "random" else self.n_missing / (size * size)
        self.mask = mask.reshape(size, size).to(self.device)
        full = mask.repeat(channels)  # (C*H*W,) in (C, H, W) raster order
        perm = torch.cat([full.nonzero().squeeze(1), (~full).nonzero().squeeze(1)])
        self._perm = perm.to(self.device)
        self._inv_perm = torch.argsort(perm).to(self.device)
        self._register("s", torch.ones(int(full.sum()), dtype=torch.float64))

    # ---------------------------------------------------------------- SVD parts
    def Vt(self, vec: Tensor) -> Tensor:  # noqa: N802
        """Kept entries first, then missing ones (each group in (C, H, W) raster order)."""
        return self._flat(vec, self.N)[:, self._perm]

    def V(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.N)[:, self._inv_perm]

    def U(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    def Ut(self, vec: Tensor) -> Tensor:  # noqa: N802
        return self._flat(vec, self.M).clone()

    # ------------------------------------------------------------------ output
    def measurement_image(self, y: Tensor) -> Tensor:
        """The masked image, missing pixels set to 0 (pinv(y) reshaped), (B, C, H, W)."""
        return to_rgb(self.image(self.pinv(y)))

    def describe(self) -> dict:
        base = {**super().describe(), "missing": self.missing, "n_missing": self.n_missing, "seed": self.seed}
        if self.mask_kind == "random":  # unchanged since task inpaint v1
            return base
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.mask_params.items()}
        return {**base, "mask_kind": self.mask_kind, "mask_params": params}
