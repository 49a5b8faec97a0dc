"""JPEGCompression: a per-image PIL round trip at a quality, non-linear, deterministic."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.operators import OPERATORS, JPEGCompression
from tests.methods.test_ddrm import task


def smooth(b=2, h=16, w=16, seed=0):
    """Smooth random images (JPEG keeps them well), (B, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def test_a_is_the_pil_round_trip_of_the_8bit_image():
    x = smooth()
    y = JPEGCompression(3, 16, quality=10).A(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(2):
        u8 = np.round(x[i].permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=10)
        ref = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert torch.equal((y[i] * 255).round().to(torch.uint8), torch.from_numpy(ref).permute(2, 0, 1))


def test_per_image_deterministic_and_quality_orders_the_error():
    x = smooth(3, 32, 24)  # non-square works
    op = JPEGCompression(3, (32, 24))
    y = op.A(x)
    assert torch.equal(op.A(x[1:2]), y[1:2]) and torch.equal(op.A(x), y)
    assert torch.equal(op.A(x.reshape(3, -1)), y)
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and torch.equal(op.measurement_image(y), y)
    errs = [float((JPEGCompression(3, (32, 24), quality=q).A(x) - x).abs().mean()) for q in (5, 10, 50, 95)]
    assert errs == sorted(errs, reverse=True) and errs[0] > 0.01 and errs[-1] < 0.01, errs
    # not linear: A(2 x) != 2 A(x) on images that stay in range
    assert float((op.A(x / 2) * 2 - y).abs().max()) > 1 / 255


def test_grayscale_out_of_range_and_float64():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64) * 1.4 - 0.2
    y = JPEGCompression(1, 16).A(x)
    assert y.shape == (1, 1, 16, 16) and y.dtype == torch.float64 and 0 <= float(y.min()) <= float(y.max()) <= 1


def test_registered_non_linear_task():
    assert OPERATORS["jpeg"] is JPEGCompression
    t = task("jpeg")
    assert not t.linear and t.params == {"quality": 10}
    d = t.build(16).describe()["operator"]
    assert d["quality"] == 10 and d["operator"] == "jpeg" and d["libjpeg"]


@pytest.mark.parametrize("kwargs, words", [
    ({"quality": 0}, ["quality=0", "1..95"]), ({"quality": 96}, ["quality=96", "1..95"]),
    ({"quality": 9.5}, ["quality=9.5", "integer"]), ({"channels": 2}, ["channels=2", "1 (grayscale) or 3"]),
])
def test_bad_parameters_raise(kwargs, words):
    with pytest.raises(ValueError) as err:
        JPEGCompression(**{"channels": 3, "size": 16, **kwargs})
    for w in words:
        assert w in str(err.value), (w, str(err.value))
