"""Network architectures (diffusion priors) used by the benchmark."""
