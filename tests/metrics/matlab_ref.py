"""Independent, loop-based transcriptions of MATLAB code the metrics reproduce (test helpers, no bench imports).

* :func:`imresize` - ``imresize.m`` with its default bicubic kernel: ``contributions`` (kernel stretched by
  1/scale when antialiasing a down-scale, weights normalised, indices mirrored with
  ``aux = [1:in_length, in_length:-1:1]``), ``dimensionOrder`` (smallest scale first; ``sort`` is stable) and
  ``resizeAlongDim`` one output pixel at a time; for a uint8 image every pass is converted back to uint8
  (round half away from zero, saturate), because ``imresizemex`` returns the class of its input.
* :func:`loe_m` - the common ``loe.m``: ``L = max(I,[],3)``, ``r = 50/min(M,N)``, ``imresize(L,[Nd Md])``,
  ``RD(x,y) = sum(xor(Ld(x,y) >= Ld, Led(x,y) >= Led))``, ``LOE = sum(RD(:))/(Md*Nd)``.
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a ** 3 - 2.5 * a ** 2 + 1) * (a <= 1)
            + (-0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True):
    """(weights, 0-based indices), each (out_length, P), as imresize.m's ``contributions``."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        def h(x):
            return scale * _cubic(scale * x)
        kernel_width = kernel_width / scale
    else:
        h = _cubic
    weights, indices = [], []
    aux = list(range(1, in_length + 1)) + list(range(in_length, 0, -1))
    p = int(math.ceil(kernel_width)) + 2
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        ind = [left + j for j in range(p)]
        w = [float(h(np.array(u - i))) for i in ind]
        total = sum(w)
        weights.append([v / total for v in w])
        indices.append([aux[(i - 1) % len(aux)] - 1 for i in ind])
    return np.array(weights), np.array(indices)


def _matlab_uint8(v: np.ndarray) -> np.ndarray:
    """Round half away from zero and saturate; values within 1e-9 of k + 0.5 are that exact half (the tie
    rule bench.metrics.niqe documents: independent of the float summation order)."""
    return np.clip(np.floor(np.round(np.clip(v, 0, 255), 9) + 0.5), 0, 255)


def imresize(img: np.ndarray, out_size: tuple[int, int] | None = None, scale: float | None = None,
             uint8: bool = False) -> np.ndarray:
    """2-D ``imresize(img, scale)`` or ``imresize(img, [rows cols])``; ``uint8`` = the image's class is uint8."""
    a = np.asarray(img, dtype=np.float64)
    if out_size is None:
        out_size = (int(math.ceil(scale * a.shape[0])), int(math.ceil(scale * a.shape[1])))
        scales = (scale, scale)
    else:
        scales = (out_size[0] / a.shape[0], out_size[1] / a.shape[1])
    order = sorted(range(2), key=lambda d: scales[d])  # stable: rows first on a tie
    for dim in order:
        w, ind = contributions(a.shape[dim], out_size[dim], scales[dim])
        src = a if dim == 0 else a.T
        out = np.zeros((out_size[dim], src.shape[1]))
        for k in range(out_size[dim]):  # one output line at a time (all columns at once)
            v = sum(w[k, j] * src[ind[k, j], :] for j in range(w.shape[1]))
            out[k] = _matlab_uint8(v) if uint8 else v
        a = out if dim == 0 else out.T
    return a


def loe_m(ipic_u8: np.ndarray, epic_u8: np.ndarray) -> float:
    """loe.m on two (H, W, 3) uint8 images (input low-light, enhanced)."""
    n_rows, m_cols = ipic_u8.shape[:2]
    lit = ipic_u8.max(axis=2).astype(np.float64)
    lit_e = epic_u8.max(axis=2).astype(np.float64)
    r = 50 / min(m_cols, n_rows)
    md, nd = math.floor(m_cols * r + 0.5), math.floor(n_rows * r + 0.5)
    ld = imresize(lit, (nd, md), uint8=True)
    led = imresize(lit_e, (nd, md), uint8=True)
    rd = np.zeros((nd, md))
    for y in range(md):
        for x in range(nd):
            e = np.logical_xor(ld[x, y] >= ld, led[x, y] >= led)
            rd[x, y] = e.sum()
    return float(rd.sum() / (md * nd))
