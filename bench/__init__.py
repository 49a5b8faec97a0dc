"""restoration-bench: a reproducible benchmarking harness for diffusion-based image restoration."""

from bench.api import run  # noqa: F401  (bench.run(method=..., task=..., **overrides) -> run directory)

__version__ = "0.1.0"
