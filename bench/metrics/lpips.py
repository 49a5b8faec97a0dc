"""LPIPS (Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018), per image, via the ``lpips`` package (v0.1 linear calibration).

``d(x, x0) = Σ_l 1/(H_l W_l) Σ_{h,w} || w_l ⊙ (ŷ^l_{hw} - ŷ^l_{0,hw}) ||²`` (eq. (1)): unit-normalised backbone
activations ``ŷ^l`` of five layers, channel weights ``w_l`` (the package's ``weights/v0.1/<net>.pth``, shipped
inside the wheel), spatial mean. Inputs in **[-1, 1]** (``2 x - 1`` of the 8-bit images / 255), as the
LPIPS API requires. GDP's evaluator (``evaluations/cal_all_metrics.py``) feeds [0, 1] images to
``lpips.LPIPS(net='vgg')`` without ``normalize=True``, so its LPIPS numbers are not on this scale.

Backbones (``net``): ``alex`` (the LPIPS paper's default, used by DPS, DDNM, DiffPIR, most restoration papers)
or ``vgg`` (GDP's evaluator). The ``lpips`` package would let torchvision download the ImageNet backbone on
first use; here it is fetched through the harness's asset cache instead (:data:`BACKBONES`: torchvision's file
name, URL and full sha256; ``$BENCH_CACHE``; offline -> :class:`MetricUnavailable` with what to place where,
recorded as n/a, never 0). ``backbone_path`` points at a local copy in torchvision's format (a state dict
with ``features.<i>.weight`` keys); its sha256 is recorded and compared with the official one
(``info["backbone"]["standard"]``), so a run scored with other weights is flagged, not silently mixed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from bench.metrics import MetricUnavailable

__all__ = ["BACKBONES", "LINEAR_SHA256", "NETS", "MIN_SIZE", "LPIPSMetric", "lpips_version"]

NETS = ("alex", "vgg")
#: torchvision's ImageNet backbones that ``lpips`` builds (``tv.alexnet`` / ``tv.vgg16``), as published
BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
             "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"),  # 244,408,911 bytes
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"),  # 553,433,881 bytes
}
#: sha256 of the v0.1 linear layers shipped in lpips 0.1.4 (``lpips/weights/v0.1/<net>.pth``)
LINEAR_SHA256 = {"alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
                 "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"}
VERSION = "lpips:lpips-package,v0.1 linear,inputs [-1,1] from 8-bit,spatial mean;v1"
#: smallest image side the backbone's pooling stack accepts (measured: AlexNet fails below 31 px, VGG-16 below 16)
MIN_SIZE = {"alex": 31, "vgg": 16}


def lpips_version(net: str) -> str:
    return f"{VERSION},net={net}"


def _asset(net: str):
    from bench.models.assets import Asset

    name, url, sha = BACKBONES[net]
    return Asset(name=name, url=url, sha256=sha, override="metrics.lpips.backbone_path")


def _resolve_backbone(net: str, backbone_path: str | Path | None, offline: bool | None) -> tuple[Path, dict]:
    """Verified local backbone file and its provenance; MetricUnavailable when it cannot be had."""
    from bench.models.assets import AssetError, fetch, fetched_assets

    asset = _asset(net)
    if backbone_path is not None:
        p = Path(backbone_path).expanduser()
        if not p.is_file():
            raise MetricUnavailable(f"metrics.lpips.backbone_path does not point to a file (expected a copy of "
                                    f"torchvision's {asset.name})", metric="lpips")
        # unpinned on purpose: the actual digest is recorded and compared with the official one below
        quiet = logging.getLogger("bench.models.assets")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = fetch(replace(asset, sha256=None, path=str(p)), offline=True)
        finally:
            quiet.setLevel(level)
        source = "metrics.lpips.backbone_path"
    else:
        try:
            path = fetch(asset, offline=offline, progress=False)
        except AssetError as err:
            lines = str(err).splitlines()
            why = "offline and not in the asset cache" if "offline" in lines[0] else lines[0].split(":", 1)[-1].strip()
            raise MetricUnavailable(
                f"LPIPS backbone {asset.name} unavailable ({why}); place it in $BENCH_CACHE (download "
                f"{asset.url}) or set metrics.lpips.backbone_path", metric="lpips") from err
        source = "cache"
    sha = fetched_assets()[asset.name]["sha256"]
    return path, {"name": asset.name, "sha256": sha, "standard": sha == asset.sha256, "source": source}


def _load_backbone(net_module: torch.nn.Module, state: dict[str, Tensor], file_name: str) -> None:
    """Copy torchvision ``features.<i>.<param>`` tensors into lpips' ``slice<k>.<i>.<param>`` modules."""
    target = {}
    for key in net_module.state_dict():
        slice_name, idx, param = key.split(".")
        target[f"features.{idx}.{param}"] = key
    missing = sorted(set(target) - set(state))
    if missing:
        raise MetricUnavailable(f"{file_name} is not a torchvision backbone state dict for LPIPS (missing "
                                f"{missing[:3]}{' ...' if len(missing) > 3 else ''})", metric="lpips")
    mapped = {target[k]: state[k] for k in target}
    bad = [k for k, v in mapped.items() if v.shape != net_module.state_dict()[k].shape]
    if bad:
        raise MetricUnavailable(f"{file_name}: tensor shapes do not match the LPIPS backbone ({bad[:3]})",
                                metric="lpips")
    net_module.load_state_dict(mapped, strict=True)


class LPIPSMetric:
    """Per-image LPIPS of uint8 (B,3,H,W) pairs -> (B,) float64. Construction raises MetricUnavailable
    (package or weights missing); ``info`` records the backbone and linear-layer digests."""

    def __init__(self, net: str = "alex", backbone_path: str | Path | None = None,
                 device: str | torch.device = "cpu", offline: bool | None = None):
        if net not in NETS:
            raise ValueError(f"metrics.lpips.net={net!r} is not one of {NETS} (or null to switch LPIPS off). "
                             "Fix: metrics.lpips.net=alex (the LPIPS paper's default) or vgg (GDP's evaluator)")
        try:
            import lpips as lpips_pkg
        except ImportError as err:
            raise MetricUnavailable(f"the lpips package is not installed ({err}); pip install lpips",
                                    metric="lpips") from err
        path, backbone = _resolve_backbone(net, backbone_path, offline)
        from bench.models.assets import AssetError, load_state_dict, sha256_file

        try:
            state = load_state_dict(path)
        except AssetError as err:
            raise MetricUnavailable(f"{backbone['name']} could not be read: {str(err).splitlines()[0]}",
                                    metric="lpips") from err
        with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` argument inside lpips
            warnings.simplefilter("ignore")
            # pnet_rand=True: lpips builds the backbone without torchvision's download; weights come next
            model = lpips_pkg.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone(model.net, state, backbone["name"])
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        linear = Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        lin_sha = sha256_file(linear)
        self.net = net
        self.info = {"net": net, "version": lpips_version(net), "backbone": backbone,
                     "linear": {"package": f"lpips {importlib.metadata.version('lpips')}", "sha256": lin_sha,
                                "standard": lin_sha == LINEAR_SHA256[net]}}

    def size_problem(self, h: int, w: int) -> str | None:
        """None when an h x w image can be scored, else why not (recorded as the n/a reason)."""
        need = MIN_SIZE[self.net]
        if min(h, w) < need:
            return f"images of {w}x{h} are too small for LPIPS-{self.net} (its backbone needs >= {need} px)"
        return None

    @torch.no_grad()
    def __call__(self, pred_u8: Tensor, target_u8: Tensor) -> Tensor:
        if pred_u8.dtype != torch.uint8 or target_u8.dtype != torch.uint8:
            raise TypeError(f"LPIPS takes the saved uint8 images, got {pred_u8.dtype} / {target_u8.dtype}")
        if pred_u8.shape != target_u8.shape:
            raise ValueError(f"shape mismatch: prediction {tuple(pred_u8.shape)} vs target {tuple(target_u8.shape)}")
        problem = self.size_problem(*pred_u8.shape[-2:])
        if problem:
            raise ValueError(f"LPIPS: {problem}")
        p = 2 * (pred_u8.to(self.device, torch.float32) / 255) - 1
        t = 2 * (target_u8.to(self.device, torch.float32) / 255) - 1
        return self.model(p, t).reshape(-1).to("cpu", torch.float64)
