"""Degradation operators: linear ones in the DDRM ``H_functions`` convention, plus the non-linear LowLight
and JPEGCompression. Inpainting masks come from :mod:`.masks`.

Every operator is built as ``Cls(channels, size, device="cpu", *, seed=0, **params)``.
"""

from .base import LinearOperator
from .colorize import Colorization
from .deblur import Deblurring, GaussianDeblur, SeparableOperator, UniformDeblur, conv_matrix_1d
from .deblur_gdp import GDPDeblur, gdp_kernel
from .denoise import Denoising, SpectralOperator
from .inpaint import Inpainting
from .jpeg import JPEGCompression
from .lowlight import LowLight
from .superres import BicubicDownsample, SRConv, SuperResolution, bicubic_kernel

#: every concrete operator by its ``name``
OPERATORS = {
    cls.name: cls
    for cls in (
        Denoising,
        Inpainting,
        Colorization,
        SuperResolution,
        SRConv,
        BicubicDownsample,
        Deblurring,
        GaussianDeblur,
        UniformDeblur,
        GDPDeblur,
        LowLight,
        JPEGCompression,
    )
}

__all__ = [
    "LinearOperator",
    "SpectralOperator",
    "SeparableOperator",
    "Denoising",
    "Inpainting",
    "Colorization",
    "SuperResolution",
    "SRConv",
    "BicubicDownsample",
    "Deblurring",
    "GaussianDeblur",
    "UniformDeblur",
    "GDPDeblur",
    "LowLight",
    "JPEGCompression",
    "OPERATORS",
    "bicubic_kernel",
    "conv_matrix_1d",
    "gdp_kernel",
]
