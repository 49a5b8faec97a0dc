"""LOE (Wang et al. 2013): definition checks against a naive O(N^2) loop, invariances, the protocol, and the
default (uint8, MATLAB ``loe.m``) against an independent transcription of loe.m on real low-light photos."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.metrics.loe import lightness, loe, loe_downsampled_shape, loe_protocol, loe_version
from tests.metrics import matlab_ref

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _naive_loe(enh: torch.Tensor, ref: torch.Tensor) -> float:
    """Literal RD(x) = sum_y U(L(x),L(y)) xor U(Le(x),Le(y)); LOE = mean_x RD(x), pure Python."""
    lr = ref.amax(dim=0).flatten().tolist()
    le = enh.amax(dim=0).flatten().tolist()
    total = 0
    for i in range(len(lr)):
        for j in range(len(lr)):
            total += (lr[i] >= lr[j]) != (le[i] >= le[j])
    return total / len(lr)


def _rand(b=2, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)


def test_identity_is_zero():
    x = _rand()
    assert torch.equal(loe(x, x, short_side=None), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(loe(x, x), torch.zeros(2, dtype=torch.float64))  # with the default resize
    assert torch.equal(loe(x, x, quantize_8bit=False), torch.zeros(2, dtype=torch.float64))


def test_monotone_brightening_is_zero_and_reversal_positive():
    x = _rand(h=9, w=11)
    f = dict(short_side=None, quantize_8bit=False)  # float lightness: any monotone map keeps every order
    assert torch.all(loe(x ** 0.5, x, **f) == 0)
    assert torch.all(loe(0.2 + 0.8 * x, x, **f) == 0)
    assert torch.all(loe(1 - x, x, **f) > 0)


def test_scale_free():
    x, y = _rand(seed=1), _rand(seed=2)
    f = dict(short_side=None, quantize_8bit=False)
    assert torch.equal(loe(y, x, **f), loe(255 * y, 255 * x, **f))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_loop(seed):
    ref, enh = _rand(b=2, seed=seed), _rand(b=2, seed=seed + 10)
    enh[1] = ref[1].clamp(0.3, 0.7)  # create ties: U(a, b) = 1 when a >= b, ties included
    got = loe(enh, ref, short_side=None, quantize_8bit=False, chunk=5)  # chunk < N exercises the chunking
    want = [_naive_loe(enh[i], ref[i]) for i in range(2)]
    assert got.tolist() == pytest.approx(want, abs=0)


def test_lightness_is_channel_max():
    x = _rand()
    assert torch.equal(lightness(x), torch.maximum(torch.maximum(x[:, 0], x[:, 1]), x[:, 2]))


def test_downsampled_shape_and_protocol_record():
    # MATLAB loe.m: r = 50 / min(M, N); [round(M r), round(N r)], round half away from zero
    assert loe_downsampled_shape(400, 600) == (50, 75)
    assert loe_downsampled_shape(600, 400) == (75, 50)
    assert loe_downsampled_shape(100, 101) == (50, 51)  # 50.5 -> 51
    assert loe_downsampled_shape(37, 53, None) == (37, 53)
    assert "short side 50" in loe_protocol(50) and "low-light input" in loe_protocol(50)
    assert "full resolution" in loe_protocol(None)


def test_resize_is_applied():
    """LOE at short side s equals the naive loop on the MATLAB-resized lightness maps of that size."""
    from bench.metrics.niqe import imresize_matlab

    ref, enh = _rand(b=1, h=24, w=30, seed=3), _rand(b=1, h=24, w=30, seed=4)
    size = loe_downsampled_shape(24, 30, 8)
    assert size == (8, 10)
    lr, le = (imresize_matlab(lightness(t), size=size) for t in (ref, enh))
    want = _naive_loe(le.expand(3, -1, -1), lr.expand(3, -1, -1))
    f = dict(quantize_8bit=False)
    assert loe(enh, ref, short_side=8, **f).item() == pytest.approx(want, abs=0)
    assert loe(enh, ref, short_side=8, **f).item() != loe(enh, ref, short_side=None, **f).item()


def test_uint8_imresize_equals_the_loop_transcription():
    """imresize of a uint8 image: every pass rounded (half away from zero) and saturated, smaller scale first."""
    from bench.metrics.niqe import imresize_matlab

    g = torch.Generator().manual_seed(5)
    img = (torch.rand(37, 53, generator=g, dtype=torch.float64) * 255).round()
    for size in ((18, 26), (19, 25), (50, 60)):  # the row / column scale smaller, and an up-scale
        got = imresize_matlab(img, size=size, uint8=True).numpy()
        want = matlab_ref.imresize(img.numpy(), size, uint8=True)
        assert np.array_equal(got, want), size
        assert np.array_equal(got, np.round(got)) and got.min() >= 0 and got.max() <= 255
    # the per-pass rounding is not the same as rounding once
    once = np.floor(imresize_matlab(img, size=(18, 26)).numpy().clip(0, 255) + 0.5)
    assert not np.array_equal(once, imresize_matlab(img, size=(18, 26), uint8=True).numpy())


def _u8(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _t(a):
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].double() / 255


@pytest.mark.parametrize("name", ["lol_eval_low_1.png", "lime_3.png", "dicm_02.jpg"])
def test_default_equals_loe_m_on_real_photos(name):
    """Real low-light photos (600x400, 500x375, 480x640) enhanced by gamma 0.4 and by CLAHE (a local, order
    changing enhancement), saved as 8 bit: our default LOE == the loe.m transcription, exactly."""
    from skimage import exposure

    path = DATA / "lowlight" / name
    if not path.is_file():
        pytest.skip(f"shared low-light image {path} not found (see shared/data/README.md)")
    low = _u8(path)
    gamma = np.clip(np.round(255 * (low / 255.0) ** 0.4), 0, 255).astype(np.uint8)
    clahe = np.round(exposure.equalize_adapthist(low, clip_limit=0.02) * 255).astype(np.uint8)
    for enh in (gamma, clahe):
        got = loe(_t(enh), _t(low)).item()
        assert got == matlab_ref.loe_m(low, enh)
    assert loe(_t(clahe), _t(low)).item() > loe(_t(gamma), _t(low)).item()
    assert loe(_t(low), _t(low)).item() == 0


def test_protocol_and_version_name_the_uint8_path():
    assert "uint8" in loe_protocol() and "float" in loe_protocol(quantize_8bit=False)
    assert loe_version().startswith("loe:") and "short side 50" in loe_version() and loe_version().endswith("v2")


def test_real_lowlight_images():
    folder = DATA / "lowlight"
    if not folder.is_dir():
        pytest.skip(f"shared low-light images not found at {folder} (see shared/data/README.md)")
    from PIL import Image

    img = np.asarray(Image.open(folder / "lol_eval_low_1.png").convert("RGB"), dtype=np.float64) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    assert x.shape[-2:] == (400, 600)
    f = dict(quantize_8bit=False)
    gamma = loe(x ** 0.4, x, **f)  # global monotone curve: order kept up to resize interpolation effects
    flipped = loe(1 - x, x, **f)
    assert 0 <= gamma.item() < 0.05 * flipped.item()  # ~0.015 here
    assert flipped.item() > 1000  # on a 50x75 grid (3750 pixels), most orders are reversed
