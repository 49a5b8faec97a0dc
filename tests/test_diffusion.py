"""bench.diffusion: schedules, DDRM/guided-diffusion timestep conventions, eps <-> x0."""

from __future__ import annotations

import math

import pytest
import torch

from bench import diffusion as D


def test_linear_betas_endpoints_monotone():
    b = D.linear_betas()
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert (b[1:] > b[:-1]).all()


def test_scaled_linear_and_errors():
    b = D.make_betas("scaled_linear", 1000, 0.00085, 0.012)
    assert b[0].item() == pytest.approx(0.00085) and b[-1].item() == pytest.approx(0.012)
    assert (b[1:] > b[:-1]).all()
    assert b[500].item() < (0.00085 + 0.012) / 2  # convex: below the linear midpoint
    assert torch.equal(D.make_betas("quad", 1000, 0.00085, 0.012), b)
    assert torch.equal(D.make_betas("linear"), D.linear_betas())
    with pytest.raises(ValueError, match="linear, scaled_linear"):
        D.make_betas("cosine")


def test_alphas_cumprod_matches_product():
    b = D.linear_betas()
    a = D.alphas_cumprod(b)
    for t in (0, 1, 10, 500, 999):
        assert a[t].item() == pytest.approx(math.prod(1 - b[s].item() for s in range(t + 1)), rel=1e-12)
    assert (a[1:] < a[:-1]).all()


def test_abar_at_ddrm_padding_convention():
    b = D.linear_betas()
    a, ap = D.alphas_cumprod(b), D.padded_alphas_cumprod(b)
    assert ap.shape == (1001,) and ap[0].item() == 1.0
    assert D.abar_at(ap, -1).item() == 1.0
    assert D.abar_at(ap, 0).item() == pytest.approx(1 - 1e-4)
    t = torch.tensor([-1, 0, 50, 999])
    assert torch.equal(D.abar_at(ap, t), torch.cat([torch.ones(1, dtype=a.dtype), a[t[1:]]]))
    with pytest.raises(IndexError):
        D.abar_at(ap, 1000)


def test_timesteps_uniform_matches_ddrm():
    assert D.timesteps(20) == list(range(0, 1000, 50))
    assert D.timesteps(20)[-1] == 950
    assert len(D.timesteps(300)) == 334  # skip 3: more steps than asked, as in official DDRM
    assert len(D.timesteps(1000)) == 1000
    with pytest.raises(ValueError):
        D.timesteps(0)
    with pytest.raises(ValueError):
        D.timesteps(20, kind="linear")


def test_space_timesteps_docstring_example():
    # 300 steps in three sections of 100, strided to 10, 15 and 20 steps.
    # section 0: stride 99/9 = 11 exactly -> 0, 11, ..., 99
    s0 = list(range(0, 100, 11))
    # section 1: stride 99/14; the running float sum reaches 49.4999... at k = 7 -> round 49
    s1 = [100 + i for i in (0, 7, 14, 21, 28, 35, 42, 49, 57, 64, 71, 78, 85, 92, 99)]
    # section 2: stride 99/19 = 5.2105...: round(k * 5.2105)
    s2 = [200 + i for i in (0, 5, 10, 16, 21, 26, 31, 36, 42, 47, 52, 57, 63, 68, 73, 78, 83, 89, 94, 99)]
    got = D.space_timesteps(300, [10, 15, 20])
    assert got == s0 + s1 + s2 and len(got) == 45
    assert D.space_timesteps(300, "10,15,20") == got


def test_space_timesteps_uneven_and_ddim():
    # 10 steps into 3 sections: sizes 4, 3, 3 (the first T % k sections get one extra)
    assert D.space_timesteps(10, [2, 1, 3]) == [0, 3, 4, 7, 8, 9]
    assert D.space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert D.timesteps(25, kind="ddim") == list(range(0, 1000, 40))
    r = D.timesteps(250, kind="respaced")
    assert len(r) == 250 and r[0] == 0 and r[-1] == 999
    with pytest.raises(ValueError, match="exactly 300"):
        D.space_timesteps(1000, "ddim300")
    with pytest.raises(ValueError, match="cannot divide"):
        D.space_timesteps(10, [6, 1])


def test_respaced_betas_keep_abar():
    a = D.alphas_cumprod(D.linear_betas())
    keep = D.space_timesteps(1000, "ddim50")
    nb = D.respaced_betas(a, set(keep))
    assert nb.shape == (50,) and ((nb > 0) & (nb < 1)).all()
    assert torch.allclose(D.alphas_cumprod(nb), a[keep], rtol=1e-12, atol=0)
    assert torch.allclose(D.respaced_betas(a, range(1000)), D.linear_betas(), rtol=1e-9)


@pytest.mark.parametrize("abar", [0.3, torch.tensor(0.7), torch.tensor([0.9, 0.5, 0.01])])
def test_eps_x0_round_trip(abar):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    a = torch.as_tensor(abar).view(-1, 1, 1, 1) if torch.as_tensor(abar).ndim else torch.as_tensor(abar)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    assert torch.allclose(D.eps_to_x0(x_t, eps, abar), x0, atol=1e-4)
    assert torch.allclose(D.x0_to_eps(x_t, x0, abar), eps, atol=1e-4)


def test_split_model_output():
    out = torch.randn(2, 6, 4, 4)
    eps, v = D.split_model_output(out)
    assert eps.shape == v.shape == (2, 3, 4, 4)
    assert torch.equal(eps, out[:, :3]) and torch.equal(v, out[:, 3:])
    eps, v = D.split_model_output(out[:, :3])
    assert eps.shape == (2, 3, 4, 4) and v is None
    with pytest.raises(ValueError, match="learned sigma"):
        D.split_model_output(torch.randn(2, 4, 4, 4))
