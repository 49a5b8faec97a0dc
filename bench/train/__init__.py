"""Training tooling for the small embedded priors that ship in ``bench/priors/`` (``python -m bench.train``).

Modules: :mod:`~bench.train.common` (shared helpers), :mod:`~bench.train.adm` (the pixel-space ADM prior),
:mod:`~bench.train.ldm` (the latent 4x SR model), :mod:`~bench.train.gan` (DGP's BigGAN-deep generator),
:mod:`~bench.train.gan_parts` (its discriminator, latents and standing statistics) and
:mod:`~bench.train.diffaugment`. Tooling imports the runtime, never the reverse (tests/test_layout.py).
"""
