"""Tests for the guided-diffusion (ADM) UNet re-implementation (CPU only, a few seconds).

The expected state-dict layouts below are written out independently from a reading of
``openai/guided-diffusion`` (``guided_diffusion/unet.py``: ``UNetModel``, ``ResBlock``,
``AttentionBlock``, ``Downsample``/``Upsample``; ``nn.py``: ``normalization`` = GroupNorm(32, C),
``conv_nd``, ``linear``), not generated from the implementation under test.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.models.adm_layers import GroupNorm32, qkv_attention, timestep_embedding
from bench.models.adm_unet import ADMUNet, create_model, random_init_

# Official README flags of 256x256_diffusion_uncond.pt (notes §A8).
ADM256_FLAGS = dict(
    attention_resolutions="32,16,8", class_cond=False, image_size=256, learn_sigma=True,
    num_channels=256, num_head_channels=64, num_res_blocks=2, resblock_updown=True,
    use_fp16=True, use_scale_shift_norm=True,
)

TINY = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
            attention_resolutions="16", num_head_channels=16)


def _meta_model(**flags) -> ADMUNet:
    with torch.device("meta"):
        return create_model(**flags)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- 256 config
def test_adm256_parameter_count():
    model = _meta_model(**ADM256_FLAGS)
    assert sum(p.numel() for p in model.parameters()) == 552_814_086


def test_adm256_specific_keys():
    shapes = _shapes(_meta_model(**ADM256_FLAGS))
    expected = {
        "time_embed.0.weight": (1024, 256),
        "time_embed.2.weight": (1024, 1024),
        "input_blocks.0.0.weight": (256, 3, 3, 3),
        "input_blocks.3.0.in_layers.2.weight": (256, 256, 3, 3),   # resblock_updown: down ResBlock
        "input_blocks.7.0.skip_connection.weight": (512, 256, 1, 1),
        "input_blocks.10.1.qkv.weight": (1536, 512, 1),             # attention at 32x32 (ds 8)
        "input_blocks.13.0.skip_connection.weight": (1024, 512, 1, 1),
        "input_blocks.13.1.qkv.weight": (3072, 1024, 1),
        "input_blocks.17.1.proj_out.weight": (1024, 1024, 1),
        "middle_block.0.emb_layers.1.weight": (2048, 1024),         # scale-shift: 2 * 1024
        "middle_block.1.norm.weight": (1024,),
        "middle_block.1.qkv.weight": (3072, 1024, 1),
        "middle_block.2.out_layers.3.weight": (1024, 1024, 3, 3),
        "output_blocks.0.0.in_layers.0.weight": (2048,),
        "output_blocks.0.0.in_layers.2.weight": (1024, 2048, 3, 3),
        "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3),  # up ResBlock after attention
        "output_blocks.8.2.emb_layers.1.weight": (1024, 1024),
        "output_blocks.17.0.skip_connection.weight": (256, 512, 1, 1),
        "out.0.weight": (256,),
        "out.2.weight": (6, 256, 3, 3),
        "out.2.bias": (6,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    # 42 ResBlocks (10 keys, +2 for the 20 with a 1x1 skip conv), 16 attention blocks (6 keys),
    # time_embed (4), the input conv (2) and the output head (4).
    assert len(shapes) == 42 * 10 + 20 * 2 + 16 * 6 + 4 + 2 + 4 == 566
    assert not any(k.startswith("label_emb") for k in shapes)
    assert max(int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks")) == 17
    assert max(int(k.split(".")[1]) for k in shapes if k.startswith("output_blocks")) == 17
    assert not any(".op." in k or ".conv." in k for k in shapes)  # resampling is by ResBlocks


# ----------------------------------------------------------------------------- small configs
def _resblock(prefix, cin, cout, emb, scale_shift):
    keys = {
        f"{prefix}.in_layers.0.weight": (cin,), f"{prefix}.in_layers.0.bias": (cin,),
        f"{prefix}.in_layers.2.weight": (cout, cin, 3, 3), f"{prefix}.in_layers.2.bias": (cout,),
        f"{prefix}.emb_layers.1.weight": ((2 if scale_shift else 1) * cout, emb),
        f"{prefix}.emb_layers.1.bias": ((2 if scale_shift else 1) * cout,),
        f"{prefix}.out_layers.0.weight": (cout,), f"{prefix}.out_layers.0.bias": (cout,),
        f"{prefix}.out_layers.3.weight": (cout, cout, 3, 3), f"{prefix}.out_layers.3.bias": (cout,),
    }
    if cin != cout:
        keys[f"{prefix}.skip_connection.weight"] = (cout, cin, 1, 1)
        keys[f"{prefix}.skip_connection.bias"] = (cout,)
    return keys


def _attention(prefix, c):
    return {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
            f"{prefix}.qkv.weight": (3 * c, c, 1), f"{prefix}.qkv.bias": (3 * c,),
            f"{prefix}.proj_out.weight": (c, c, 1), f"{prefix}.proj_out.bias": (c,)}


def _expected_small(updown: bool, scale_shift: bool, class_cond: bool, learn_sigma: bool):
    """TINY flags: 32 base channels, mult (1, 2), one res block per level, attention at ds 2.

    Encoder skip channels [32, 32, 32, 64]; decoder inputs 64+64, 64+32 | 64+32, 32+32.
    """
    e, ss = 128, scale_shift
    exp = {"time_embed.0.weight": (e, 32), "time_embed.0.bias": (e,),
           "time_embed.2.weight": (e, e), "time_embed.2.bias": (e,),
           "input_blocks.0.0.weight": (32, 3, 3, 3), "input_blocks.0.0.bias": (32,)}
    if class_cond:
        exp["label_emb.weight"] = (1000, e)
    exp |= _resblock("input_blocks.1.0", 32, 32, e, ss)
    if updown:
        exp |= _resblock("input_blocks.2.0", 32, 32, e, ss)
    else:
        exp |= {"input_blocks.2.0.op.weight": (32, 32, 3, 3), "input_blocks.2.0.op.bias": (32,)}
    exp |= _resblock("input_blocks.3.0", 32, 64, e, ss) | _attention("input_blocks.3.1", 64)
    exp |= _resblock("middle_block.0", 64, 64, e, ss) | _attention("middle_block.1", 64)
    exp |= _resblock("middle_block.2", 64, 64, e, ss)
    exp |= _resblock("output_blocks.0.0", 128, 64, e, ss) | _attention("output_blocks.0.1", 64)
    exp |= _resblock("output_blocks.1.0", 96, 64, e, ss) | _attention("output_blocks.1.1", 64)
    if updown:
        exp |= _resblock("output_blocks.1.2", 64, 64, e, ss)
    else:
        exp |= {"output_blocks.1.2.conv.weight": (64, 64, 3, 3), "output_blocks.1.2.conv.bias": (64,)}
    exp |= _resblock("output_blocks.2.0", 96, 32, e, ss) | _resblock("output_blocks.3.0", 64, 32, e, ss)
    out = 6 if learn_sigma else 3
    exp |= {"out.0.weight": (32,), "out.0.bias": (32,), "out.2.weight": (out, 32, 3, 3), "out.2.bias": (out,)}
    return exp


@pytest.mark.parametrize("updown,scale_shift,class_cond,learn_sigma,n_keys", [
    (True, True, True, True, 145),
    (False, False, False, False, 128),
])
def test_small_state_dict_matches_official_layout(updown, scale_shift, class_cond, learn_sigma, n_keys):
    model = _meta_model(**TINY, resblock_updown=updown, use_scale_shift_norm=scale_shift,
                        class_cond=class_cond, learn_sigma=learn_sigma)
    shapes = _shapes(model)
    expected = _expected_small(updown, scale_shift, class_cond, learn_sigma)
    assert len(expected) == n_keys
    assert set(shapes) == set(expected), (sorted(set(shapes) - set(expected)), sorted(set(expected) - set(shapes)))
    assert shapes == expected
    # A few keys spelled out literally.
    assert shapes["input_blocks.1.0.in_layers.2.weight"] == (32, 32, 3, 3)
    assert shapes["middle_block.1.qkv.weight"] == (192, 64, 1)
    assert shapes["output_blocks.2.0.skip_connection.weight"] == (32, 96, 1, 1)
    assert shapes["out.2.weight"] == ((6 if learn_sigma else 3), 32, 3, 3)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("learn_sigma,class_cond,updown,new_order",
                         list(itertools.product([True, False], repeat=4)))
def test_tiny_forward_shapes(learn_sigma, class_cond, updown, new_order):
    model = create_model(**TINY, learn_sigma=learn_sigma, class_cond=class_cond, resblock_updown=updown,
                         use_new_attention_order=new_order, use_scale_shift_norm=updown)
    random_init_(model, seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([1, 999]) if class_cond else None
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]), y)
    assert out.shape == (2, 6 if learn_sigma else 3, 32, 32)
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and out.abs().max() > 0
    if class_cond:
        with pytest.raises(ValueError):
            model(x, torch.tensor([0, 1]))
    else:
        with pytest.raises(ValueError):
            model(x, torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_scalar_timestep_and_fresh_init_is_zero():
    model = create_model(**TINY, learn_sigma=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor(5)), torch.zeros(3, 6, 32, 32))  # official zero init
        random_init_(model, seed=1)
        assert torch.allclose(model(x, torch.tensor(5)), model(x, torch.full((3,), 5)))


def test_random_init_is_deterministic_and_leaves_global_rng():
    a = random_init_(create_model(**TINY), seed=3).state_dict()
    model = create_model(**TINY)
    state = torch.get_rng_state()
    b = random_init_(model, seed=3).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # draws come from a forked generator
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = random_init_(create_model(**TINY), seed=4).state_dict()
    assert not torch.equal(a["out.2.weight"], c["out.2.weight"])


def test_state_dict_round_trip(tmp_path):
    flags = dict(**TINY, learn_sigma=True, class_cond=True, resblock_updown=True, use_scale_shift_norm=True)
    src = random_init_(create_model(**flags), seed=0).eval()
    path = tmp_path / "adm_tiny.pt"
    torch.save(src.state_dict(), path)
    dst = random_init_(create_model(**flags), seed=123).eval()
    dst.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.tensor([3, 7])
    with torch.no_grad():
        assert torch.equal(src(x, t, y), dst(x, t, y))


def test_use_checkpoint_same_gradients():
    flags = dict(**TINY, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)
    ref = random_init_(create_model(**flags), seed=0)
    ckpt = random_init_(create_model(**flags, use_checkpoint=True), seed=0)
    x = torch.randn(2, 3, 32, 32)
    for m in (ref, ckpt):
        m(x, torch.tensor([1, 2])).square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), name


def test_fp16_flag_and_official_fp16_cast():
    model = random_init_(create_model(**TINY, learn_sigma=True, use_fp16=True), seed=0).eval()
    assert model.dtype == torch.float16 and model.autocast_dtype == torch.float16
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([50])
    with torch.no_grad():
        ref = model(x, t)  # CPU: no autocast, runs in float32
        model.convert_to_fp16()
        assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
        assert model.time_embed[0].weight.dtype == torch.float32 and model.out[2].weight.dtype == torch.float32
        half = model(x, t)
    assert half.dtype == torch.float32
    assert torch.allclose(ref, half, atol=1e-2)


# ----------------------------------------------------------------------------- layers
def _naive_attention(qkv, heads, legacy):
    """softmax(Q^T K / sqrt(d)) V in the official channel layouts (einsum-free, one head at a time)."""
    b, width, t = qkv.shape
    d = width // (3 * heads)
    outs = []
    for i in range(b):
        per_head = []
        for h in range(heads):
            if legacy:  # channels grouped as (head, [q|k|v], d)
                base = h * 3 * d
                q, k, v = (qkv[i, base + j * d: base + (j + 1) * d] for j in range(3))
            else:       # channels grouped as ([q|k|v], head, d)
                q, k, v = (qkv[i, j * heads * d + h * d: j * heads * d + (h + 1) * d] for j in range(3))
            w = torch.softmax(q.T @ k / math.sqrt(d), dim=-1)  # [T, T], rows = queries
            per_head.append(v @ w.T)                            # [d, T]
        outs.append(torch.cat(per_head, dim=0))
    return torch.stack(outs)


@pytest.mark.parametrize("legacy", [True, False])
def test_sdpa_attention_matches_naive(legacy):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 3 * 4 * 8, 37, generator=g)
    got = qkv_attention(qkv, num_heads=4, legacy_order=legacy)
    want = _naive_attention(qkv, 4, legacy)
    assert got.shape == (2, 32, 37)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    # The two orders read the channels differently, so they must disagree with > 1 head.
    assert not torch.allclose(got, qkv_attention(qkv, num_heads=4, legacy_order=not legacy), atol=1e-3)


def test_timestep_embedding_cos_then_sin():
    t = torch.tensor([0.0, 1.0, 250.5])
    emb = timestep_embedding(t, 6)
    freqs = torch.tensor([10000 ** (-i / 3) for i in range(3)])
    want = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    assert torch.allclose(emb, want, atol=1e-6)
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    odd = timestep_embedding(t, 7)
    assert odd.shape == (3, 7) and torch.equal(odd[:, -1], torch.zeros(3))


def test_groupnorm32_computes_in_float32():
    norm = GroupNorm32(32, 64)
    x = (torch.randn(2, 64, 5, 5) * 100 + 1000).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    ref = torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias, norm.eps)
    assert torch.equal(out, ref.to(torch.bfloat16))


def test_factory_flag_parsing():
    m = _meta_model(image_size=64, num_channels=64, num_res_blocks=1, attention_resolutions="32,16,8",
                    learn_sigma="True", class_cond="false", num_heads=4)
    assert m.channel_mult == (1, 2, 3, 4) and m.attention_resolutions == (2, 4, 8)
    assert m.out_channels == 6 and m.num_classes is None
    m = _meta_model(image_size=64, num_channels=64, num_res_blocks=1, channel_mult=[1, 2],
                    attention_resolutions=[16], class_cond=True)
    assert m.channel_mult == (1, 2) and m.attention_resolutions == (4,) and m.num_classes == 1000
    assert m.label_emb.weight.shape == (1000, 256)
    assert _meta_model(image_size=512, num_channels=256, num_res_blocks=2).channel_mult[0] == 0.5
    with pytest.raises(ValueError):
        create_model(image_size=48, num_channels=32, num_res_blocks=1)
