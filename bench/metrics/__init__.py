"""Image-quality metrics for the benchmark.

Modules (imported on demand so that a missing optional dependency in one metric never breaks another):

* ``bench.metrics.pixel``       - PSNR / SSIM (full reference; Wang et al.'s SSIM written here, = skimage).
* ``bench.metrics.lpips``       - LPIPS (alex / vgg) with the backbone from the asset cache.
* ``bench.metrics.consistency`` - ``||A(x^) - y||^2 / M`` and GDP's consistency (linear tasks).
* ``bench.metrics.per_image``   - the metrics a run stores per image (``conf/metrics``), and their versions.
* ``bench.metrics.loe``         - Lightness Order Error (Wang et al. 2013, MATLAB ``loe.m``), reference = the
  low-light *input*.
* ``bench.metrics.niqe``        - NIQE (Mittal et al. 2013; MATLAB / current BasicSR), the Ma et al. score
  (optional, via pyiqa) and the PIRM perceptual index PI = 0.5 * ((10 - Ma) + NIQE).
* ``bench.metrics.fid``         - FID / KID on torch-fidelity's Inception-v3 features.

Result convention
-----------------
Metric functions return plain floats or tensors of shape (B,). A metric that *cannot* be computed in the
current environment (an optional package or a weights file is missing) raises :class:`MetricUnavailable`
with a human-readable ``reason``; it never returns 0 or NaN as a stand-in. Callers record such a metric as
``"n/a (<reason>)"`` - :func:`compute_or_na` does exactly that - so that a table never silently mixes a
missing value with a real one.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["MetricUnavailable", "compute_or_na", "NA_PREFIX"]

#: prefix of the string recorded in place of a metric that could not be computed
NA_PREFIX = "n/a"


class MetricUnavailable(RuntimeError):
    """Raised when a metric cannot be computed here (missing optional package or weights).

    ``reason`` says what is missing and how to fix it; ``metric`` names the metric.
    """

    def __init__(self, reason: str, metric: str | None = None):
        self.reason = reason
        self.metric = metric
        super().__init__(f"{metric}: {reason}" if metric else reason)

    def as_record(self) -> str:
        """The value to store in a results table: ``"n/a (<reason>)"``."""
        return f"{NA_PREFIX} ({self.reason})"


def compute_or_na(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)``; on :class:`MetricUnavailable` return ``"n/a (<reason>)"`` instead.

    Only :class:`MetricUnavailable` is caught: real bugs still raise.
    """
    try:
        return fn(*args, **kwargs)
    except MetricUnavailable as err:
        return err.as_record()
