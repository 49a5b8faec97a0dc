"""Property tests for every linear operator (DDRM ``H_functions`` semantics), on tiny float64 images.

Each case pairs an operator with an independent direct implementation of its A (pooling, conv2d,
indexing, weighted sums, or a dense Kronecker matrix built here from explicit loops).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from bench.operators import (
    BicubicDownsample,
    Colorization,
    Deblurring,
    Denoising,
    GaussianDeblur,
    GDPDeblur,
    Inpainting,
    LinearOperator,
    SRConv,
    SuperResolution,
    UniformDeblur,
    bicubic_kernel,
    gdp_kernel,
)

F64 = torch.float64
W_GRAY = (0.3333, 0.3334, 0.3333)


# ---------------------------------------------------------------- independent references
def ref_matrix_1d(kernel, n, stride=1, reflect=False, official_taps=False):
    """Explicit-loop 1-D matrix: row r centred at r*stride + stride//2, tap t at offset t - k//2."""
    k = [float(v) for v in kernel]
    half = len(k) // 2
    taps = 2 * half if official_taps else len(k)
    h = torch.zeros(n // stride, n, dtype=F64)
    for r in range(n // stride):
        centre = r * stride + stride // 2
        for t in range(taps):
            j = centre - half + t
            if reflect and j < 0:
                j = -j - 1
            if reflect and j >= n:
                j = 2 * n - 1 - j
            if 0 <= j < n:
                h[r, j] += k[t]
    return h


def threshold_1d(h, thr):
    """h rebuilt from its SVD with singular values below thr set to 0 (official DDRM's ZERO rule)."""
    u, s, vh = torch.linalg.svd(h, full_matrices=False)
    return u @ torch.diag(torch.where(s < thr, torch.zeros_like(s), s)) @ vh


def apply_kron(h, x):
    """Per channel y_c = kron(h, h) @ vec(x_c): a dense 2-D matrix (tests only)."""
    big = torch.kron(h, h)
    b, c = x.shape[:2]
    return (x.reshape(b, c, -1) @ big.T).reshape(b, -1)


def conv_same(kernel, x):
    """Zero-padded 'same' correlation with outer(kernel, kernel), odd kernels (F.conv2d)."""
    k = torch.as_tensor(kernel, dtype=F64)
    w = torch.outer(k, k)[None, None]
    b, c, n, _ = x.shape
    return F.conv2d(x.reshape(b * c, 1, n, n), w, padding=k.numel() // 2).reshape(b, -1)


def conv_valid(kernel2d, x):
    """Per-channel valid correlation with a 2-D kernel (F.conv2d, padding=0), flat (B, C*m*m)."""
    w = torch.as_tensor(kernel2d, dtype=F64)[None, None]
    b, c, n, _ = x.shape
    return F.conv2d(x.reshape(b * c, 1, n, n), w, padding=0).reshape(b, -1)


def official_gkern(kernlen, nsig):
    """Official GDP ``gkern`` (scripts/sample_x0_blur.py), transcribed with scipy: a 2-D array."""
    import numpy as np
    import scipy.stats as st

    interval = (2 * nsig + 1.0) / kernlen
    x = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, kernlen + 1)
    kern1d = np.diff(st.norm.cdf(x))
    kernel_raw = np.sqrt(np.outer(kern1d, kern1d))
    return torch.from_numpy(kernel_raw / kernel_raw.sum())


def ref_kron(kernel, n, stride, reflect, thr, official_taps=False):
    h = threshold_1d(ref_matrix_1d(kernel, n, stride, reflect, official_taps), thr)
    return lambda op, x: apply_kron(h, x)


GAUSS1 = [math.exp(-0.5 * v * v) for v in (-2, -1, 0, 1, 2)]
GAUSS1 = [v / sum(GAUSS1) for v in GAUSS1]
GAUSS10 = [math.exp(-0.5 * (v / 10) ** 2) for v in (-2, -1, 0, 1, 2)]
GAUSS10 = [v / sum(GAUSS10) for v in GAUSS10]

# (id, factory, reference A)
CASES = [
    ("denoise", lambda d: Denoising(3, 8, d), lambda op, x: x.reshape(x.shape[0], -1)),
    (
        "inpaint",
        lambda d: Inpainting(3, 8, d, seed=3, missing=0.25),
        lambda op, x: x[:, :, op.mask.cpu()].reshape(x.shape[0], -1),
    ),
    (
        "colorize",
        lambda d: Colorization(3, 8, d),
        lambda op, x: (torch.tensor(W_GRAY, dtype=F64).view(1, 3, 1, 1) * x).sum(1).reshape(x.shape[0], -1),
    ),
    ("sr_block2", lambda d: SuperResolution(3, 8, d, factor=2), lambda op, x: F.avg_pool2d(x, 2).flatten(1)),
    ("sr_block3", lambda d: SuperResolution(3, 12, d, factor=3), lambda op, x: F.avg_pool2d(x, 3).flatten(1)),
    (
        "sr_conv_even",
        lambda d: SRConv(3, 8, d, kernel=[0.1, 0.3, 0.4, 0.2], stride=2, zero_threshold=0),
        ref_kron([0.1, 0.3, 0.4, 0.2], 8, 2, True, 0.0),
    ),
    (
        "sr_conv_odd",
        lambda d: SRConv(3, 12, d, kernel=[0.2, 0.5, 0.3], stride=3, zero_threshold=0),
        ref_kron([0.2, 0.5, 0.3], 12, 3, True, 0.0),
    ),
    ("sr_bicubic", lambda d: BicubicDownsample(3, 8, d, factor=2), ref_kron(bicubic_kernel(2), 8, 2, True, 3e-2)),
    (
        "deblur_exact",
        lambda d: Deblurring(3, 8, d, kernel=[0.2, 0.5, 0.3], zero_threshold=0),
        lambda op, x: conv_same([0.2, 0.5, 0.3], x),
    ),
    ("deblur_gauss", lambda d: GaussianDeblur(3, 12, d), ref_kron(GAUSS1, 12, 1, False, 3e-2)),
    (
        "deblur_gauss_official",
        lambda d: GaussianDeblur(3, 12, d, kernel_sigma=10, kernel_size=5, official_taps=True),
        ref_kron(GAUSS10, 12, 1, False, 3e-2, official_taps=True),
    ),
    (
        "deblur_uniform",
        lambda d: UniformDeblur(3, 12, d, kernel_size=5, zero_threshold=1e-6),
        ref_kron([0.2] * 5, 12, 1, False, 1e-6),
    ),
    ("deblur_gdp", lambda d: GDPDeblur(3, 12, d), lambda op, x: conv_valid(official_gkern(9, 2), x)),
    (
        "deblur_gdp_5",
        lambda d: GDPDeblur(3, 10, d, kernel_size=5, nsig=1.5),
        lambda op, x: conv_valid(official_gkern(5, 1.5), x),
    ),
]
# every mask kind of the inpaint_* tasks (bench/operators/masks.py); strokes need 16 px to be strokes
CASES += [
    (f"inpaint_{kind}", (lambda k, n: lambda d: Inpainting(3, n, d, seed=3, mask_kind=k))(kind, n),
     lambda op, x: x[:, :, op.mask.cpu()].reshape(x.shape[0], -1))
    for kind, n in (("box", 8), ("half", 8), ("expand", 8), ("lines", 8), ("sr2", 8), ("wide", 16), ("narrow", 16))
]
IDS = [c[0] for c in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    _, factory, ref = request.param
    return factory("cpu"), ref


def rand_x(op, b=2, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *op.x_shape, generator=g, dtype=dtype)


def close(a, b, tol=1e-9):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol * max(1.0, b.abs().max().item() if b.numel() else 0.0), err


def dense(fn, n):
    """Columns fn(e_i): the matrix of a linear map on (B, n) vectors."""
    return fn(torch.eye(n, dtype=F64)).T


# ---------------------------------------------------------------------------- properties
def test_is_linear_operator(case):
    op, _ = case
    assert isinstance(op, LinearOperator) and op.linear
    json.dumps(op.describe())
    assert op.describe()["operator"] == op.name


def test_A_is_svd_form_and_matches_direct(case):
    op, ref = case
    x = rand_x(op)
    s = op.singulars(F64)
    y = op.A(x)
    close(y, op.U(s * op.Vt(x)[:, : op.M]))
    close(y, ref(op, x))
    close(op.A(x.reshape(2, -1)), y)  # flat input gives the same answer


def test_V_and_U_orthonormal(case):
    op, _ = case
    v, vt = dense(op.V, op.N), dense(op.Vt, op.N)
    u, ut = dense(op.U, op.M), dense(op.Ut, op.M)
    for m, mt, n in ((v, vt, op.N), (u, ut, op.M)):
        eye = torch.eye(n, dtype=F64)
        close(m.T @ m, eye)
        close(m @ m.T, eye)
        close(mt, m.T)
    z = torch.randn(2, op.N, dtype=F64)
    close(op.Vt(op.V(z)), z)
    close(op.V(op.Vt(z)), z)


def test_At_is_adjoint(case):
    op, _ = case
    x, y = rand_x(op), torch.randn(2, op.M, dtype=F64)
    lhs = (op.A(x) * y).sum(1)
    rhs = (x.reshape(2, -1) * op.At(y)).sum(1)
    close(lhs, rhs)


def test_pinv_projects(case):
    op, _ = case
    x = rand_x(op)
    p = op.pinv(op.A(x))
    close(op.pinv(op.A(p)), p, 1e-7)  # P = pinv A is idempotent
    close(op.A(p), op.A(x), 1e-7)  # A pinv A = A
    x_row = op.At(torch.randn(2, op.M, dtype=F64))  # a vector in the row space
    close(op.pinv(op.A(x_row)), x_row, 1e-7)


def test_singulars_aligned(case):
    op, _ = case
    s = op.singulars(F64)
    assert s.shape == (op.M,) and bool((s >= 0).all())
    assert bool((s[:-1] >= s[1:]).all()), "singular values are sorted descending"
    spectral = torch.eye(op.N, dtype=F64)[: op.M]
    close(op.A(op.V(spectral)), s[:, None] * op.U(torch.eye(op.M, dtype=F64)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(case, dtype):
    op, _ = case
    x = rand_x(op, dtype=dtype)
    y = op.A(x)
    assert y.shape == (2, op.M) and y.dtype == dtype
    assert op.singulars(dtype).dtype == dtype
    for out, n in ((op.At(y), op.N), (op.pinv(y), op.N), (op.Vt(x), op.N), (op.V(x.flatten(1)), op.N),
                   (op.Ut(y), op.M), (op.U(y), op.M)):
        assert out.shape == (2, n) and out.dtype == dtype
    img = op.measurement_image(y)
    assert img.dim() == 4 and img.shape[:2] == (2, 3) and img.dtype == dtype
    if dtype == torch.float32:
        close(y.double(), op.A(x.double()), 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
@pytest.mark.parametrize("factory", [c[1] for c in CASES], ids=IDS)
def test_cuda_matches_cpu(factory):
    op_cpu, op = factory("cpu"), factory("cuda")
    x = rand_x(op_cpu, dtype=torch.float32)
    y = op.A(x.cuda())
    assert y.device.type == "cuda" and y.dtype == torch.float32
    close(y.cpu(), op_cpu.A(x), 1e-5)
    close(op.At(y).cpu(), op_cpu.At(op_cpu.A(x)), 1e-5)
    assert op.pinv(y).device.type == "cuda"


# ------------------------------------------------------------------------ per-operator facts
def test_inpainting_mask():
    op = Inpainting(3, 8, seed=5)
    assert op.mask.dtype == torch.bool and op.mask.shape == (8, 8)
    assert int((~op.mask).sum()) == 16 and op.M == 3 * 48  # exactly 25 % of 64 pixels missing
    assert torch.equal(op.mask, Inpainting(3, 8, seed=5).mask)
    assert not torch.equal(op.mask, Inpainting(3, 8, seed=6).mask)
    assert int((~Inpainting(3, 12, missing=0.5).mask).sum()) == 72
    x = rand_x(op)
    img = op.measurement_image(op.A(x))
    assert torch.equal(img, x * op.mask)  # kept pixels unchanged, missing ones 0 in every channel


def test_colorization_values():
    op = Colorization(3, 8)
    close(op.singulars(F64), torch.full((64,), math.sqrt(sum(w * w for w in W_GRAY)), dtype=F64))
    x = rand_x(op)
    gray = (torch.tensor(W_GRAY, dtype=F64).view(1, 3, 1, 1) * x).sum(1, keepdim=True)
    close(op.measurement_image(op.A(x)), gray.repeat(1, 3, 1, 1))


def test_block_sr_values():
    op = SuperResolution(3, 8, factor=4)
    close(op.singulars(F64), torch.full((12,), 0.25, dtype=F64))
    x = rand_x(op)
    close(op.measurement_image(op.A(x)), F.avg_pool2d(x, 4))


def test_srconv_matches_ddrm_centring_and_reflection():
    op = BicubicDownsample(3, 16, factor=4, zero_threshold=0)
    k = bicubic_kernel(4)
    h = op._masters["h_small"].cpu()
    close(h, ref_matrix_1d(k, 16, stride=4, reflect=True))
    # row 0 is centred at pixel 2: tap t reads pixel t - 6, and pixel -1 reflects onto pixel 0
    close(h[0, :4], torch.stack([k[6] + k[5], k[7] + k[4], k[8] + k[3], k[9] + k[2]]))
    close(h[1, 2:14], k[4:])  # row 1 is centred at pixel 6: tap t reads pixel t - 2
    close(h.sum(1), torch.ones(4, dtype=F64))
    odd = SRConv(1, 8, kernel=[0.2, 0.5, 0.3], stride=2, zero_threshold=0, official_taps=True)
    close(odd._masters["h_small"].cpu(), ref_matrix_1d([0.2, 0.5, 0.3], 8, 2, True, official_taps=True))


def test_bicubic_kernel_and_constant_image():
    for f in (2, 4):
        k = bicubic_kernel(f)
        assert k.shape == (4 * f,) and abs(k.sum().item() - 1) < 1e-12 and torch.equal(k, k.flip(0))
    k2 = bicubic_kernel(2)  # taps at x = (t - 3.5) / 2; Keys a=-0.5: W(0.25)=0.8671875, W(0.75)=0.2265625
    assert abs(k2[3].item() / k2[2].item() - 0.8671875 / 0.2265625) < 1e-12
    assert abs(k2[1].item() / k2[3].item() - (-0.0703125) / 0.8671875) < 1e-12  # W(1.25)
    op = BicubicDownsample(3, 32, factor=4)
    y = op.measurement_image(op.A(torch.full((1, 3, 32, 32), 0.7, dtype=F64)))
    close(y[:, :, 1:-1, 1:-1], torch.full_like(y[:, :, 1:-1, 1:-1], 0.7), 1e-6)


def test_deblur_exact_equals_conv_and_threshold_applies():
    x = rand_x(UniformDeblur(3, 12))
    exact = UniformDeblur(3, 12, kernel_size=5, zero_threshold=0)
    close(exact.A(x), conv_same([0.2] * 5, x))
    gauss = GaussianDeblur(3, 12, kernel_sigma=1.0, kernel_size=5)
    close(gauss.kernel, torch.tensor(GAUSS1, dtype=F64))
    s = gauss.singulars(F64)
    assert bool((s == 0).any()) and bool((s[s > 0] >= 3e-2**2).all())
    assert (gauss.A(x) - conv_same(GAUSS1, x)).abs().max() > 1e-4  # thresholding changed A
    taps = Deblurring(3, 12, kernel=GAUSS10, zero_threshold=0, official_taps=True)
    close(taps.A(x), conv_same(GAUSS10[:4] + [0.0], x))  # DDRM's loop drops the last odd tap


def test_deblur_threshold_modes():
    x = rand_x(UniformDeblur(3, 8))
    op1 = GaussianDeblur(3, 8, kernel_sigma=10)  # official "1d": products of kept 1-D values stay
    op2 = GaussianDeblur(3, 8, kernel_sigma=10, threshold_on="2d")
    s1, s2 = op1.singulars(F64), op2.singulars(F64)
    assert bool(((s1 > 0) & (s1 < 3e-2)).any()) and not bool(((s2 > 0) & (s2 < 3e-2)).any())
    big = torch.kron(*(2 * [ref_matrix_1d(GAUSS10, 8)]))
    u, s, vh = torch.linalg.svd(big)
    a2 = u @ torch.diag(torch.where(s < 3e-2, torch.zeros_like(s), s)) @ vh
    close(op2.A(x), (x.reshape(2, 3, -1) @ a2.T).reshape(2, -1))


def test_gdp_kernel_is_official_gkern():
    """GDP's gkern(9, 2): separable (the 2-D kernel is the outer product of our 1-D taps), std 2.18 px,
    and the operator is the valid convolution 256 -> 248 (row r of H1 reads pixels r .. r + 8)."""
    k = gdp_kernel(9, 2.0)
    close(torch.outer(k, k), official_gkern(9, 2), 1e-12)
    t = torch.arange(9, dtype=F64) - 4
    assert abs(float((k * t * t).sum().sqrt()) - 2.1839) < 1e-3
    close(k, k.flip(0), 1e-12)
    op = GDPDeblur(3, 256)
    assert op.M == 3 * 248 * 248 and op.small == 248 and op.describe()["measurement_size"] == 248
    h = op._masters["h_small"].cpu()
    assert h.shape == (248, 256)
    close(h[0, :9], k)
    close(h[247, 247:], k)
    assert float(h[0, 9:].abs().max()) == 0 and float(h[5, :5].abs().max()) == 0
    x = torch.rand(1, 3, 256, 256, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = op.A(x)
    close(y, conv_valid(official_gkern(9, 2), x))
    assert op.measurement_image(y).shape == (1, 3, 248, 248)
    s = op.singulars(F64)
    assert bool((s > 0).all()) and float(s.min()) < 1e-5  # exact blur: tiny but nonzero singular values
    thr = GDPDeblur(3, 32, zero_threshold=0.03)
    assert bool((thr.singulars(F64) == 0).any())


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: Inpainting(3, 8, missing=-0.1), ["missing=-0.1", "[0.0, 1.0)"]),
        (lambda: Inpainting(3, 8, missing=1.0), ["missing=1.0", "[0.0, 1.0)"]),
        (lambda: GaussianDeblur(3, 8, kernel_size=4), ["kernel_size=4", "odd", "kernel_size=5"]),
        (lambda: UniformDeblur(3, 8, kernel_size=0), ["kernel_size=0", ">= 1"]),
        (lambda: GaussianDeblur(3, 8, kernel_sigma=0), ["kernel_sigma=0", "(0.0, inf]"]),
        (lambda: SuperResolution(3, 8, factor=0), ["factor=0", ">= 1"]),
        (lambda: SuperResolution(3, 10, factor=4), ["size=10", "factor=4", "8 or 12"]),
        (lambda: BicubicDownsample(3, 10, factor=4), ["size=10", "factor=4"]),
        (lambda: SRConv(3, 8, kernel=[1.0], stride=3), ["size=8", "stride=3"]),
        (lambda: SRConv(3, 8, kernel=[], stride=2), ["kernel=[]", "1-D"]),
        (lambda: Deblurring(3, 8, kernel=[1.0], zero_threshold=-1), ["zero_threshold=-1", "[0.0, inf]"]),
        (lambda: Deblurring(3, 8, kernel=[1.0], threshold_on="3d"), ["threshold_on='3d'", "1d"]),
        (lambda: Colorization(1, 8), ["channels=1", "channels=3"]),
        (lambda: GDPDeblur(3, 8), ["size=8", ">= 9"]),
        (lambda: GDPDeblur(3, 16, kernel_size=4), ["kernel_size=4", "odd"]),
        (lambda: GDPDeblur(3, 16, nsig=0), ["nsig=0", "(0.0, inf]"]),
        (lambda: Denoising(3, 0), ["size=0", ">= 1"]),
    ],
)
def test_bad_parameters_raise(build, words):
    with pytest.raises(ValueError) as err:
        build()
    for w in words:
        assert w in str(err.value), (w, str(err.value))
