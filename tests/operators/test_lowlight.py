"""LowLight: y = scale * x ** gamma, a non-linear synthetic darkening."""

from __future__ import annotations

import json

import pytest
import torch

from bench.operators import LowLight


def test_formula_shape_dtype():
    op = LowLight(3, 4)
    assert op.linear is False and op.name == "lowlight" and op.x_shape == (3, 4, 4)
    for dtype in (torch.float32, torch.float64):
        x = torch.full((2, 3, 4, 4), 0.5, dtype=dtype)
        y = op(x)
        assert y.shape == (2, 3, 4, 4) and y.dtype == dtype
        assert torch.allclose(y, torch.full_like(y, 0.25 * 0.5**2))
        assert torch.equal(op.A(x.reshape(2, -1)), y) and torch.equal(op.measurement_image(y), y)
    json.dumps(op.describe())
    assert op.describe()["scale"] == 0.25 and op.describe()["gamma"] == 2.0


@pytest.mark.parametrize("scale, gamma", [(0.25, 2.0), (0.5, 1.0), (1.0, 3.0), (0.1, 1.5)])
def test_monotone_darkens_and_inverts(scale, gamma):
    op = LowLight(1, 16, scale=scale, gamma=gamma)
    x = torch.linspace(0.0, 1.0, 256, dtype=torch.float64).reshape(1, 1, 16, 16)
    y = op(x).flatten()
    assert bool((y[1:] > y[:-1]).all()), "strictly increasing on [0, 1]"
    assert bool((y <= x.flatten() + 1e-15).all()), "never brightens"
    assert bool((y[1:] < x.flatten()[1:]).all()) or scale == 1.0
    assert torch.allclose(op.inverse(op(x)), x, atol=1e-9)


def test_clamps_out_of_range_inputs():
    op = LowLight(1, 2)
    x = torch.tensor([[[[-0.5, 0.0], [1.0, 2.0]]]])
    assert torch.equal(op(x), torch.tensor([[[[0.0, 0.0], [0.25, 0.25]]]]))


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"scale": 0.0}, ["scale=0.0", "(0.0, 1.0]"]),
        ({"scale": 1.5}, ["scale=1.5", "(0.0, 1.0]"]),
        ({"gamma": 0.0}, ["gamma=0.0", "(0.0, inf]"]),
        ({"gamma": -2}, ["gamma=-2", "gamma=2.0"]),
    ],
)
def test_bad_parameters_raise(kw, words):
    with pytest.raises(ValueError) as err:
        LowLight(3, 8, **kw)
    for w in words:
        assert w in str(err.value)
