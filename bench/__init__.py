"""restoration-bench: a reproducible benchmarking harness for diffusion-based image restoration."""

__version__ = "0.1.0"
