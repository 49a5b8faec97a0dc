"""The per-image metrics a run stores in ``rows/<id>.json`` (and ``per_image.parquet``), in one place.

:class:`MetricsConfig` is the typed form of ``conf/metrics/*.yaml`` (every key changes stored values, so the
group is part of the run hash); :class:`PerImageMetrics` computes, for a batch,

* full reference (needs the ground truth): ``psnr``, ``ssim`` (:mod:`bench.metrics.pixel`, ``channel`` and
  ``crop_border`` conventions) and ``lpips`` (:mod:`bench.metrics.lpips`; ``None`` plus ``lpips_na`` = the reason
  when the backbone weights are unavailable, never 0);
* measurement consistency (linear tasks, :mod:`bench.metrics.consistency`): ``consistency``,
  ``consistency_psnr`` and GDP's ``consistency_gdp`` (super-resolution only); ``None`` otherwise.

Every stored key is present in every row (``None`` when not applicable), so tables have fixed columns.
:meth:`PerImageMetrics.manifest_entry` is the run manifest's ``metrics`` entry: the configuration, one
``version`` string per metric and the LPIPS weights' digests (or the reason LPIPS is n/a).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from bench.metrics import MetricUnavailable
from bench.metrics.consistency import (CONSISTENCY_VERSION, GDP_CONSISTENCY_VERSION, gdp_consistency,
                                       measurement_consistency)
from bench.metrics.pixel import CHANNELS, pixel_version, psnr_ssim

__all__ = ["MetricsConfig", "PerImageMetrics", "ROW_KEYS", "FULL_REFERENCE_KEYS", "CONSISTENCY_KEYS"]

FULL_REFERENCE_KEYS = ("psnr", "ssim", "lpips", "lpips_na")
CONSISTENCY_KEYS = ("consistency", "consistency_psnr", "consistency_gdp")
ROW_KEYS = FULL_REFERENCE_KEYS + CONSISTENCY_KEYS


@dataclass(frozen=True)
class MetricsConfig:
    channel: str = "rgb"
    crop_border: int = 0
    lpips_net: str | None = "alex"
    lpips_backbone_path: str | None = None
    consistency: bool = True

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"metrics.channel={self.channel!r} is not one of {CHANNELS}. Fix: metrics.channel=rgb")
        if not isinstance(self.crop_border, int) or isinstance(self.crop_border, bool) or self.crop_border < 0:
            raise ValueError(f"metrics.crop_border={self.crop_border!r} must be an integer >= 0. "
                             "Fix: metrics.crop_border=0 (or 4 as GDP's evaluator)")

    @classmethod
    def from_config(cls, d: Mapping | None) -> "MetricsConfig":
        """From the resolved ``metrics`` config group; unknown keys are an error (a typo must not pass)."""
        d = dict(d or {})
        allowed = {"channel", "crop_border", "lpips", "consistency"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown metrics config keys {unknown}; allowed: {sorted(allowed)} "
                             "(see conf/metrics/default.yaml)")
        lp = dict(d.get("lpips") or {})
        bad = sorted(set(lp) - {"net", "backbone_path"})
        if bad:
            raise ValueError(f"unknown metrics.lpips keys {bad}; allowed: ['backbone_path', 'net']")
        return cls(channel=d.get("channel", "rgb"), crop_border=d.get("crop_border", 0),
                   lpips_net=lp.get("net", "alex"), lpips_backbone_path=lp.get("backbone_path"),
                   consistency=bool(d.get("consistency", True)))


def _listify(t: Tensor | None, n: int) -> list:
    if t is None:
        return [None] * n
    return [float(v) for v in t.detach().cpu().tolist()]


class PerImageMetrics:
    """Computes the stored per-image metrics; LPIPS is set up once (its reason kept when unavailable)."""

    def __init__(self, cfg: MetricsConfig | None = None, device: torch.device | str = "cpu",
                 offline: bool | None = None):
        from bench.metrics.lpips import LPIPSMetric

        self.cfg = cfg or MetricsConfig()
        self.lpips: LPIPSMetric | None = None
        self.lpips_na: str | None = None
        if self.cfg.lpips_net is None:
            self.lpips_na = "LPIPS switched off (metrics.lpips.net=null)"
        else:
            try:
                self.lpips = LPIPSMetric(self.cfg.lpips_net, self.cfg.lpips_backbone_path, device, offline)
            except MetricUnavailable as err:
                self.lpips_na = err.reason

    # ------------------------------------------------------------------ provenance
    def manifest_entry(self) -> dict:
        cfg = asdict(self.cfg)
        versions = {**pixel_version(self.cfg.channel, self.cfg.crop_border)}
        lp = self.lpips.info if self.lpips is not None else {"na": self.lpips_na}
        if self.cfg.consistency:
            versions.update({"consistency": CONSISTENCY_VERSION, "consistency_gdp": GDP_CONSISTENCY_VERSION})
        if self.lpips is not None:
            versions["lpips"] = self.lpips.info["version"]
        return {"config": cfg, "versions": versions, "lpips": lp, "stored": list(ROW_KEYS),
                "report_time": "FID/KID, NIQE/PI and LOE are computed by bench.report from the saved PNGs "
                               "(versions in <run>/dataset_metrics.json)"}

    # ------------------------------------------------------------------ computation
    def full_reference(self, out_u8: Tensor, gt_u8: Tensor | None) -> dict[str, list]:
        """``psnr``, ``ssim``, ``lpips``, ``lpips_na`` lists for a (B,3,H,W) uint8 batch (None without gt)."""
        n = out_u8.shape[0]
        if gt_u8 is None:
            return {k: [None] * n for k in FULL_REFERENCE_KEYS}
        psnr, ssim = psnr_ssim(out_u8, gt_u8, self.cfg.channel, self.cfg.crop_border)
        lp, na = None, self.lpips_na
        if self.lpips is not None:
            na = self.lpips.size_problem(*out_u8.shape[-2:])
            lp = self.lpips(out_u8, gt_u8) if na is None else None
        return {"psnr": _listify(psnr, n), "ssim": _listify(ssim, n), "lpips": _listify(lp, n),
                "lpips_na": [na] * n}

    def consistency(self, degradation, out_u8: Tensor, y: Tensor, degraded_u8: Tensor) -> dict[str, list]:
        """Consistency lists for a batch on the measurement's device (None for non-linear tasks / off)."""
        n = out_u8.shape[0]
        if not self.cfg.consistency or not degradation.linear:
            return {k: [None] * n for k in CONSISTENCY_KEYS}
        mse, db = measurement_consistency(degradation.operator, out_u8.to(y.device, torch.float32) / 255, y)
        lr = degraded_u8.shape[-2] < out_u8.shape[-2] or degraded_u8.shape[-1] < out_u8.shape[-1]
        gdp = gdp_consistency(out_u8, degraded_u8.to(out_u8.device)) if lr else None  # SR only (module doc)
        return {"consistency": _listify(mse, n), "consistency_psnr": _listify(db, n),
                "consistency_gdp": _listify(gdp, n)}
